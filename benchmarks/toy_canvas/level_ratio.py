"""Where in the noise schedule an erased toy canvas model's target loss rose.

For each weights file written by SurgUn Train (the demo's ``demo_00001.safetensors``, or any run on the
bundled toy canvas model), the erased model's denoising loss on fresh samples of the target style's
prompts (one per object, twice, rendered by the untouched model at ``--seed``) is divided by the untouched
model's, per tenth of the schedule (noisiest first), at the same noise. The guard's probe averages over
the schedule; this shows which levels carry the rise.

``--probe-seeds N`` also reads each file as SurgUn Train's guard reads it: the guard's own probe
(``surgun_core.guard.AscentGuard`` at SurgUn Train's defaults, on these fresh samples, one group per
object) under N probe seeds, so the spread of its reading can be set against the per-level measure.

    scripts/bench.sh toy_canvas.level_ratio [--style neon] [--seed 987654] [--probe-seeds 0] [--out FILE.json] WEIGHTS...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

log = logging.getLogger("surgun.level_ratio")
DRAWS = 3


def per_level(model, bench, x: torch.Tensor, prompts: list[str]) -> list[float]:
    """Mean loss of latents ``x`` under ``prompts`` at the centre of each of the profile's ``BINS`` parts
    of the schedule (tenths; the same ``DRAWS`` noise draws for every model)."""
    from ...surgun_comfy.deltas import TrainableDeltas
    from ...surgun_comfy.losses import denoising
    from ...surgun_core.levels import BINS, bin_centres

    centres = bin_centres(BINS)
    with torch.inference_mode(False), TrainableDeltas(model, []) as td:
        x0 = td.work.model.process_latent_in(x.clone()).clone()
        loss = denoising(td, bench.bank)
        with torch.no_grad():
            return [float(torch.stack([loss(x0, prompts, torch.Generator().manual_seed(k),
                                            percents=torch.full((len(prompts),), float(c))).mean() for k in range(DRAWS)]).mean())
                    for c in centres]


def guard_readings(model, erased, bench, x: torch.Tensor, prompts: list[str], seeds: int) -> list[float]:
    """The ratio the guard's probe reads for ``erased`` over ``model``, once per probe seed ``0..seeds-1``:
    SurgUn Train's probe (its default samples and draws), one group per distinct prompt."""
    from ...surgun_comfy.deltas import TrainableDeltas
    from ...surgun_comfy.losses import denoising
    from ...surgun_core.guard import AscentGuard
    from ...surgun_core.train import TrainConfig

    cfg = TrainConfig()
    with torch.inference_mode(False), TrainableDeltas(model, []) as before:  # one model patched at a time
        x0 = before.work.model.process_latent_in(x.clone()).clone()
        groups = [(p, x0[[i for i, q in enumerate(prompts) if q == p]]) for p in dict.fromkeys(prompts)]
        guards = [AscentGuard(denoising(before, bench.bank), groups, cfg.ascent_cap, (), cfg.guard_every, cfg.guard_draws,
                              cfg.guard_samples, seed) for seed in range(seeds)]
    with torch.inference_mode(False), TrainableDeltas(erased, []) as after:
        out = []
        for guard in guards:
            guard.loss_fn = denoising(after, bench.bank)
            out.append(guard.measure() / guard.reference)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="+", type=Path, help="weights files written by SurgUn Train on the toy canvas model")
    ap.add_argument("--style", default="neon", help="the erased style (default: neon)")
    ap.add_argument("--seed", type=int, default=987654, help="seed of the fresh samples (default 987654, no demo seed)")
    ap.add_argument("--probe-seeds", type=int, default=0, help="also read each file with the guard's probe under this many seeds (default 0: off)")
    ap.add_argument("--out", type=Path, help="also write the ratios here as JSON")
    args = ap.parse_args()
    log.addHandler(logging.StreamHandler(sys.stdout))  # plain messages, whatever ComfyUI does to the root logger
    log.setLevel(logging.INFO)
    log.propagate = False
    missing = [str(p) for p in args.weights if not p.is_file()]
    if missing:
        sys.exit(f"[SurgUn] level_ratio: no weights file at {', '.join(missing)}; pass files written by SurgUn Train")

    from safetensors.torch import load_file

    from . import run, world

    bench = run.Bench(run.Settings())  # starts ComfyUI headless: comfy is importable from here on
    import comfy.sd
    prompts = [world.prompt_for(o, args.style) for o in world.OBJECTS] * 2
    x = bench.sample(bench.model, prompts, args.seed)
    base = per_level(bench.model, bench, x, prompts)
    log.info("[SurgUn] loss on fresh '%s' samples per tenth of the schedule (noisiest first), erased / untouched", args.style)
    log.info("%-40s %s", "untouched (loss)", " ".join(f"{v:.4f}" for v in base))
    rows = {}
    for path in args.weights:
        erased, _ = comfy.sd.load_lora_for_models(bench.model, None, load_file(str(path)), 1.0, 0)
        now = per_level(erased, bench, x, prompts)
        ratios = [n / b for n, b in zip(now, base)]
        rows[str(path)] = {"per_level": [round(r, 4) for r in ratios], "mean": round(sum(now) / sum(base), 4)}
        log.info("%-40s %s  mean x%.2f", str(path)[-40:], " ".join(f"x{r:.2f}" for r in ratios), rows[str(path)]["mean"])
        if args.probe_seeds > 0:
            read = guard_readings(bench.model, erased, bench, x, prompts, args.probe_seeds)
            t = torch.tensor(read)
            rows[str(path)]["guard_readings"] = [round(r, 4) for r in read]
            log.info("%-40s the guard's probe reads x%.2f (sd %.2f, x%.2f..x%.2f over %d probe seeds)", "", float(t.mean()),
                     float(t.std()) if len(read) > 1 else 0.0, float(t.min()), float(t.max()), len(read))
    if args.out:
        args.out.write_text(json.dumps({"style": args.style, "seed": args.seed, "untouched": base, "erased": rows}, indent=2))


if __name__ == "__main__":
    main()
