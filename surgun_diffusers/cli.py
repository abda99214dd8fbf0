"""``python -m surgun_diffusers`` / ``surgun-diffusers``: erase one concept or a list from a
diffusers model, and write the pack's weights file and a diffusers LoRA for each.

    surgun-diffusers --model ./sd15 --concept "Van Gogh" --kind artist \\
        --retain "a photo of a dog" --retain "a city street at night" --out erased/

Under ``accelerate launch`` a list of concepts is shared out between the processes (each writes
its own files; finished concepts are skipped on a rerun; the main process writes
``summary.json``), or with ``--data-parallel`` every concept is trained by all processes together.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from surgun_core.errors import SurgUnError

log = logging.getLogger("SurgUn")

# Per family: sampling resolution, guidance and the LoRA loader's view of the family.
FAMILY_DEFAULTS = {
    "sd1": {"size": 512, "cfg": 7.5},
    "sd2": {"size": 768, "cfg": 7.5},
    "sdxl": {"size": 1024, "cfg": 5.0},
    "sana": {"size": 1024, "cfg": 4.5},
}
SIZE_MULTIPLE = {"sana": 32}
"""Families whose pipeline requires sizes in a coarser grid than 8 pixels (checked once the family is known)."""
DONE = "done"


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where it is a value (not for switches, required arguments or empty lists)."""

    def _get_help_string(self, action):
        d = action.default
        if action.required or d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, (list, str)) and not d):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="surgun-diffusers",
        description="Erase concepts from a diffusers model with SurgUn (competition: ascent on the concept, descent on "
                    "paired distractors, a retain term). Writes, per concept, the pack's weights file (loads in ComfyUI "
                    "for SD1.x/SD2.x/SDXL) and a LoRA for diffusers' load_lora_weights.",
        formatter_class=Help,
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", required=True, help="a diffusers folder, a single .safetensors checkpoint, or a Hub id")
    m.add_argument("--family", default="auto", choices=["auto", "sd1", "sd2", "sdxl", "sana"], help="for single files")
    m.add_argument("--config", default=None, help="single files: the pipeline's configs (a local diffusers folder of the same family, or a Hub id)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    m.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="weights dtype (auto: fp32 on CPU, fp16/bf16 on GPU); deltas train in fp32")

    c = p.add_argument_group("what to erase")
    c.add_argument("--concept", action="append", default=[], help="a concept name (repeatable)")
    c.add_argument("--concepts", default=None, help="a file with one concept name per line (# comments)")
    c.add_argument("--target", action="append", default=[], help="a target phrasing with a {} slot for the concept (repeatable); default: the kind's template")
    c.add_argument("--kind", default="custom", choices=["artist", "character", "object", "nsfw", "custom"], help="concept kind: its template and built-in distractor pool")
    c.add_argument("--distractors", nargs="+", default=[], help="distractor names; default: chosen from the kind's pool")
    c.add_argument("--k", type=int, default=8, help="distractors chosen from the pool")
    c.add_argument("--protected", nargs="+", default=[], help="never used as distractors")
    c.add_argument("--unpaired", action="store_true", help="distractors in the kind's template instead of each target line with the concept swapped")
    c.add_argument("--no-retain-distractors", action="store_true",
                   help="do not also retain each distractor's own prompt (by default the target line with the distractor "
                        "swapped in joins the retain prompts, so the distractors stay themselves)")
    c.add_argument("--retain-nearest-first", action="store_true",
                   help="draw the retain prompts nearest the target (by the text encoder) more often, weight 1/rank "
                        "(default: every retain prompt equally often, the setting the benchmark measured)")
    c.add_argument("--no-shared-noise", action="store_true",
                   help="every training image and step draws its own noise (by default target and distractor images start "
                        "from the same noises and each step trains them at the same noise and level)")
    c.add_argument("--ascent-until-tie", action="store_true",
                   help="run each step's ascent only while the target image is still explained better by the target prompt "
                        "than its distractors' images at the same noise and level (needs shared noise; default: every step "
                        "until the guard stops it)")
    c.add_argument("--ascent-until-erased", action="store_true",
                   help="run the ascent only while the sampler still draws the target: every 10 steps 8 target images (their "
                        "own noise, none the training's; 4 sets read in turn) are rendered through the first 40%% of the "
                        "sampling steps and compared with the untouched model's images of the target and of its distractors "
                        "from the same noise; while none is nearer the target's, the ascent is held off (needs shared noise "
                        "and more than 10 steps; off: the ascent runs until the guard stops it)")
    c.add_argument("--text-subspace", action="store_true",
                   help="confine the chosen layers that read the prompt (cross-attention to_k, to_v; SD1.x, SD2.x, SDXL) to "
                        "the text directions where the target lines differ from their distractor prompts more than the kept "
                        "prompts vary; the other chosen layers train freely (default: every chosen layer trains freely)")
    c.add_argument("--adversary-steps", type=int, default=0,
                   help="train against a soft-prompt attack as well: each step moves a soft prompt per target line (from the "
                        "line's own text embeddings) this many Adam steps (lr 1e-2) toward bringing the concept back, then "
                        "trains the competition under it too (0: off, the prompts only)")
    c.add_argument("--retain", action="append", default=[], help="an unrelated prompt to keep (repeatable)")
    c.add_argument("--retain-file", default=None, help="a file with one retain prompt per line")

    t = p.add_argument_group("training")
    t.add_argument("--steps", type=int, default=200, help="training steps (one Adam step each)")
    t.add_argument("--lr", type=float, default=1e-5, help="learning rate of the trained weight differences (Adam)")
    t.add_argument("--seed", type=int, default=0, help="seed of the training samples' noise and of every training draw")
    t.add_argument("--ascent-cap", type=float, default=2.0, help="guard: the target loss is capped at this multiple of its start (0 = off)")
    t.add_argument("--weights", type=float, nargs=3, default=[1.0, 1.0, 1.0], metavar=("ASCENT", "DISTRACT", "RETAIN"),
                   help="weights of the competition's three terms (0 switches a term off)")
    t.add_argument("--distractors-per-step", type=int, default=2,
                   help="distractors drawn per step, an unbiased estimate of the mean over all (0: all of them every step)")
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient-norm clip (0: off)")
    t.add_argument("--preset", default="cross_attention", choices=["cross_attention", "self_attention", "all_attention"],
                   help="which attention layers train (--blocks replaces it)")
    t.add_argument("--blocks", default="", help="layers to train instead of the preset: names/suffixes separated by commas, or re:<regex> (diffusers names)")
    t.add_argument("--localize", action="store_true", help="choose blocks with the pixel-grounded localiser first")
    t.add_argument("--keep", type=int, default=4, help="localiser: blocks kept")
    t.add_argument("--probe-steps", type=int, default=10,
                   help="localiser: steps of the one short update on all candidates (each block's part applied at steps / probe-steps)")
    t.add_argument("--min-fraction", type=float, default=0.5,
                   help="localiser: eligible blocks reach this fraction of the best block's erase (0 = any above the noise floor)")
    t.add_argument("--no-noise-floor", action="store_true",
                   help="localiser: eligible blocks reach --erase-threshold instead of the measured noise floor")
    t.add_argument("--erase-threshold", type=float, default=0.0, help="localiser: the erase a block must reach with --no-noise-floor")
    t.add_argument("--max-blocks", type=int, default=16, help="localiser: candidates probed (0 = all)")
    t.add_argument("--no-gradient-checkpointing", action="store_true", help="faster, far more memory")
    t.add_argument("--method", default="surgun", help="surgun, or an ablation/baseline of surgun_diffusers.methods (e.g. esd_x)")

    s = p.add_argument_group("self-generated training samples")
    s.add_argument("--sample-size", type=int, default=0, help="pixels (0: the family's native size)")
    s.add_argument("--sample-steps", type=int, default=20, help="sampler steps of each training image (and of the render stop's renders)")
    s.add_argument("--samples-per-prompt", type=int, default=2, help="training images made per prompt")
    s.add_argument("--sample-cfg", type=float, default=0.0, help="guidance (0: the family's usual value)")
    s.add_argument("--no-sana-instruction", action="store_true", help="SANA: encode prompts without the pipeline's complex human instruction")

    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="output folder (one set of files per concept, and summary.json)")
    o.add_argument("--lora-energy", type=float, default=0.9, help="LoRA rank per layer: smallest rank keeping this share of the delta's energy")
    o.add_argument("--lora-max-rank", type=int, default=0, help="cap on the LoRA rank (0 = none)")
    o.add_argument("--lora-check-images", type=int, default=2, help="images per prompt to measure the LoRA's error on (0 = skip)")
    o.add_argument("--no-lora", action="store_true", help="write the weights file only, no LoRA")
    o.add_argument("--save-dtype", default="model", choices=["model", "float32", "float16", "bfloat16"],
                   help="dtype of the saved weight differences (model: the model's own)")
    o.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "surgun", "embeddings"),
                   help="pool embeddings cache")
    o.add_argument("--data-parallel", action="store_true", help="under accelerate launch: all processes train each concept together")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")
    return s[:80] or "concept"


def read_lines(path: str | None) -> list[str]:
    if not path:
        return []
    p = Path(path)
    if not p.is_file():
        raise SurgUnError(f"[SurgUn] file not found: {path!r}.")
    return [x.strip() for x in p.read_text(encoding="utf-8").splitlines() if x.strip() and not x.lstrip().startswith("#")]


def concept_list(args) -> list[str]:
    names = [*args.concept, *read_lines(args.concepts)]
    seen, out = set(), []
    for n in (x.strip() for x in names):
        if n and n.lower() not in seen:
            seen.add(n.lower())
            out.append(n)
    if not out:
        raise SurgUnError("[SurgUn] nothing to erase: give --concept NAME (repeatable) or --concepts FILE.")
    slugs = [slug(n) for n in out]
    dup = {s for s in slugs if slugs.count(s) > 1}
    if dup:
        raise SurgUnError(f"[SurgUn] concepts {[n for n in out if slug(n) in dup]} share the file name {sorted(dup)[0]!r}; rename one.")
    return out


def outputs(out: Path, name: str) -> dict[str, Path]:
    s = slug(name)
    return {"weights": out / f"{s}.safetensors", "lora": out / f"{s}.lora.safetensors", "record": out / f"{s}.json"}


NOT_SETTINGS = ("out", "concept", "concepts", "no_progress", "quiet", "cache_dir", "device", "data_parallel")
"""Arguments that do not change what a concept's files hold (where they go, what is shown, which concepts run)."""


def settings(args) -> dict:
    """The arguments that decide a concept's files, as the record keeps them (to tell a resume run with other ones)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_SETTINGS}


def changed_settings(record: dict, args) -> list[str]:
    """Where a done concept's record says it was trained with other settings than ``args``: ``--flag: there, now``."""
    kept = record.get("settings")
    if kept is None:  # a record from before the settings were kept
        return []
    now = json.loads(json.dumps(settings(args)))

    def shown(v) -> str:
        return "on" if v is True else "off" if v is False else "unset" if v is None else json.dumps(v)

    return [f"--{k.replace('_', '-')}: {shown(kept.get(k))} there, {shown(now.get(k))} now" for k in sorted(set(kept) | set(now))
            if kept.get(k) != now.get(k)]


def done_record(out: Path, name: str, want_lora: bool) -> dict | None:
    """The concept's record where it says done and its files are there, else None (the concept is still to do)."""
    o = outputs(out, name)
    if not o["record"].is_file():
        return None
    try:
        rec = json.loads(o["record"].read_text())
    except json.JSONDecodeError:
        return None
    done = rec.get("status") == DONE and o["weights"].is_file() and (o["lora"].is_file() or not want_lora)
    return rec if done else None


def make_request(args, name: str, family_id: str):
    from surgun_core.objective import CompetitionWeights
    from surgun_core.train import TrainConfig

    from .erase import EraseRequest, LocalizeOptions, SamplingOptions

    d = FAMILY_DEFAULTS.get(family_id, {"size": 512, "cfg": 5.0})
    grid = SIZE_MULTIPLE.get(family_id)  # the multiple of 8 every family needs is checked before loading
    if grid and args.sample_size % grid:
        raise SurgUnError(f"[SurgUn] --sample-size must be a multiple of {grid} for {family_id} (its pipeline's latent grid), "
                          f"got {args.sample_size}. Try {max(grid, args.sample_size // grid * grid)}, or 0 for the family's "
                          f"native size ({d['size']}).")
    train = TrainConfig(steps=args.steps, learning_rate=args.lr, weights=CompetitionWeights(*args.weights),
                        ascent_cap=args.ascent_cap, distractors_per_step=args.distractors_per_step,
                        max_grad_norm=args.max_grad_norm, seed=args.seed, shared_noise=not args.no_shared_noise,
                        ascent_until_tie=args.ascent_until_tie, ascent_until_erased=args.ascent_until_erased,
                        adversary_steps=args.adversary_steps)
    return EraseRequest(
        concept=name, targets=tuple(args.target), kind=args.kind, distractors=tuple(args.distractors), k=args.k,
        protected=tuple(args.protected), paired=not args.unpaired,
        retain_distractors=not args.no_retain_distractors, retain_nearest_first=args.retain_nearest_first,
        retain=tuple([*args.retain, *read_lines(args.retain_file)]), train=train, preset=args.preset, blocks=args.blocks,
        localize=LocalizeOptions(keep=args.keep, probe_steps=args.probe_steps, max_blocks=args.max_blocks, min_fraction=args.min_fraction,
                                 noise_floor=not args.no_noise_floor, erase_threshold=args.erase_threshold) if args.localize else None,
        sampling=SamplingOptions(size=args.sample_size or d["size"], steps=args.sample_steps, per_prompt=args.samples_per_prompt,
                                 cfg=args.sample_cfg or d["cfg"]),
        gradient_checkpointing=not args.no_gradient_checkpointing, sana_instruction=not args.no_sana_instruction,
        text_subspace=args.text_subspace, method=args.method,
    )


def write_outputs(args, pipe, erasure, req, files: dict[str, Path], process: str = "0/1") -> dict:
    """The weights file, the LoRA (+ its measured error) and the record; the record last (it marks the concept done)."""
    import torch

    from .check import lora_image_error
    from .export import save_weights_file
    from .lora import lora_from_deltas, save_lora

    family = erasure.family
    save_dtype = None if args.save_dtype == "model" else getattr(torch, args.save_dtype)
    save_weights_file(str(files["weights"]), pipe, family, erasure.deltas, erasure.metadata, save_dtype)
    record = {"status": DONE, "concept": req.concept, "family": family.id, "weights_file": files["weights"].name,
              "process": process, "data_parallel": erasure.metadata.get("data_parallel"),
              "comfyui": family.in_comfyui, "layers": len(erasure.modules), "steps": req.train.steps,
              "final": erasure.metadata["final"], "timing_s": erasure.metadata["timing_s"],
              **({"ascent_until_erased": erasure.metadata["ascent_until_erased"]} if "ascent_until_erased" in erasure.metadata else {}),
              "targets": erasure.metadata["targets"], "distractors": erasure.metadata["distractors"], "settings": settings(args)}
    if not args.no_lora:
        t = time.monotonic()
        sd, report = lora_from_deltas(erasure.deltas, args.lora_energy, args.lora_max_rank)
        save_lora(pipe, family, sd, str(files["lora"]), {"concept": req.concept, **report.summary()})
        record["lora_file"] = files["lora"].name
        record["lora"] = report.summary()
        if args.lora_check_images > 0:
            log.info("[SurgUn] %r: measuring the LoRA's image error on %d image(s) per prompt (--lora-check-images 0 skips it)",
                     req.concept, args.lora_check_images)
            s = req.sampling
            prompts = [erasure.plan.groups[0][0], *erasure.plan.retain[:2]]
            record["lora"]["image_error"] = lora_image_error(
                pipe, family, erasure.deltas, str(files["lora"]), prompts, args.lora_check_images, s.steps, s.cfg, s.size,
                req.train.seed + 2, req.sana_instruction)
        record["timing_s"]["lora"] = round(time.monotonic() - t, 3)
    tmp = files["record"].with_suffix(f".json.partial-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, files["record"])
    return record


def cell(v, width: int, digits: int) -> str:
    """A number for the end table, or a dash where there is none (the ascent off at the last step, no LoRA check)."""
    return f"{v:>{width}.{digits}f}" if isinstance(v, (int, float)) and v == v else f"{'-':>{width}}"


def summary_lines(records: list[dict]) -> list[str]:
    lines = [f"{'concept':<28} {'status':<8} {'layers':>6} {'loss':>9} {'target':>9} {'lora rank (med/max)':>20} {'LoRA px err':>11} {'time s':>8}"]
    for r in records:
        lo = r.get("lora", {})
        ie = lo.get("image_error", {}).get("lora_vs_exact", {})
        f = r.get("final", {})
        lines.append(
            f"{r.get('concept', '?')[:28]:<28} {r.get('status', '?'):<8} {r.get('layers') or '-':>6} {cell(f.get('loss'), 9, 4)} "
            f"{cell(f.get('target'), 9, 4)} {str(lo.get('rank_median', '-')) + '/' + str(lo.get('rank_max', '-')):>20} "
            f"{cell(ie.get('mean_abs'), 11, 5)} {cell(r.get('timing_s', {}).get('total'), 8, 1)}"
        )
    return lines


def delta_digest(deltas: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(deltas):
        h.update(name.encode())
        h.update(deltas[name].float().contiguous().numpy().tobytes())
    return h.hexdigest()


def probe_digest(result) -> dict:
    """What steered the ascent in one process: the guard's reference and stops, the render checks."""
    return {"guard_reference": result.reference_target_loss, "guard_stops": list(result.guard_stops),
            "render_checks": [[step, fractions] for step, fractions in result.drawn]}


def check_combinations(args) -> None:
    """Values and flags that cannot work, refused before any model loads, in the command line's own terms."""
    from surgun_core.objective import CompetitionWeights

    from .erase import refuse_until_erased, require_retain
    from .methods import METHODS

    for flag, v, lo in (("--steps", args.steps, 1), ("--sample-steps", args.sample_steps, 1),
                        ("--samples-per-prompt", args.samples_per_prompt, 1), ("--sample-size", args.sample_size, 0)):
        if v < lo:
            raise SurgUnError(f"[SurgUn] {flag} must be at least {lo}, got {v}" + ("; 0 is the family's native size." if lo == 0 else "."))
    if args.sample_size % 8:  # every family's latent grid is a multiple of 8 pixels (SANA's of 32, checked once it is known)
        raise SurgUnError(f"[SurgUn] --sample-size must be a multiple of 8 (the latent grid), got {args.sample_size}. Try "
                          f"{max(8, args.sample_size // 8 * 8)}, or 0 for the family's native size.")
    if not (args.lr > 0 and args.lr < float("inf")):
        raise SurgUnError(f"[SurgUn] --lr must be a finite number above 0, got {args.lr}. Try 1e-5.")
    if args.method in METHODS:  # an unknown method is named by the request's own check
        require_retain(args.method, CompetitionWeights(*args.weights), [*args.retain, *read_lines(args.retain_file)])
    for flag, on in (("--ascent-until-tie", args.ascent_until_tie), ("--ascent-until-erased", args.ascent_until_erased)):
        if on and args.no_shared_noise:
            raise SurgUnError(f"[SurgUn] {flag} compares the target's images with its distractors' images from the same "
                              f"noise, so it needs shared noise; --no-shared-noise turns that off. Drop --no-shared-noise, or "
                              f"drop {flag}.")
    if args.ascent_until_erased:
        refuse_until_erased(args.method)


def run(args) -> int:
    from .distributed import Dist
    from .erase import erase
    from .families import detect_family
    from .loading import load_pipeline, resolve_device
    from .progress import Progress
    from .sampling import sample_latents

    check_combinations(args)
    out = Path(args.out)
    names = concept_list(args)
    device = resolve_device(args.device)
    dist = Dist(device)
    if dist.state is not None and device.type == "cuda":
        device = dist.state.device
    if args.data_parallel and not dist.is_main and not args.quiet:
        log.setLevel(logging.WARNING)  # the main process tells the story once; the others only warn
    out.mkdir(parents=True, exist_ok=True)
    done = {n: done_record(out, n, not args.no_lora) for n in names}
    pending = [n for n in names if done[n] is None]
    for n in names:
        if n not in pending and dist.is_main:
            changed = changed_settings(done[n], args)
            if changed:
                log.warning("[SurgUn] %r is already done in %s, trained with other settings (%s); skipped. Delete %s to redo "
                            "it with these, or give another --out.", n, out, "; ".join(changed), outputs(out, n)["record"].name)
            else:
                log.info("[SurgUn] %r is already done in %s; skipped (delete %s to redo it)", n, out, outputs(out, n)["record"].name)
    dist.barrier()  # everyone has read the folder before anyone writes to it
    mine = pending if args.data_parallel else dist.shard(pending)
    if dist.world > 1:
        log.info("[SurgUn] process %d/%d: %s", dist.rank, dist.world,
                 f"all {len(mine)} concepts, data-parallel" if args.data_parallel else f"{len(mine)} of {len(pending)} pending concepts")

    failures = 0
    if mine:
        pipe = load_pipeline(args.model, args.family, args.config, args.dtype, str(device))
        family = detect_family(pipe)
        for name in mine:
            files = outputs(out, name)
            req = make_request(args, name, family.id)
            show = not args.no_progress and (dist.is_main or not args.data_parallel)
            progress = Progress(desc=f"{name[:24]} [{dist.rank}]" if dist.world > 1 else name[:32], enabled=show,
                                position=0 if args.data_parallel else dist.local_rank)
            try:
                if args.data_parallel and dist.world > 1:
                    local = lambda p, f, ps, so, seed, tick: sample_latents(p, f, ps, so.per_prompt, so.steps, so.cfg, so.size,  # noqa: E731
                                                                            seed, tick, req.sana_instruction, req.train.shared_noise)
                    erasure = erase(pipe, req, progress, args.cache_dir, sampler=dist.sampler(local), grad_sync=dist.grad_sync,
                                    seed_offset=dist.rank)
                    erasure.metadata["data_parallel"] = {
                        "processes": dist.world, "training_seeds": [req.train.seed + r for r in range(dist.world)],
                        # every process must end with the same deltas (averaged gradients, same Adam steps)
                        "delta_sha256_per_process": dist.gather_object(delta_digest(erasure.deltas)),
                        # and the same guard and render readings, from the shared probe seed
                        "probes_per_process": dist.gather_object(probe_digest(erasure.result)),
                    }
                else:
                    erasure = erase(pipe, req, progress, args.cache_dir)
                progress.close()
                if dist.is_main or not args.data_parallel:
                    rec = write_outputs(args, pipe, erasure, req, files, f"{dist.rank}/{dist.world}")
                    log.info("[SurgUn] %r done: %s%s", name, files["weights"],
                             f", LoRA {files['lora']} (rank median {rec['lora']['rank_median']}, max {rec['lora']['rank_max']})" if "lora" in rec else "")
            except SurgUnError as e:
                progress.close()
                if args.data_parallel:
                    raise
                failures += 1
                log.error("%s", e)
                rec = {"status": "failed", "concept": name, "error": str(e)}
                files["record"].write_text(json.dumps(rec, indent=1))
            if args.data_parallel:
                dist.barrier()
    dist.barrier()
    if dist.is_main:
        records = []
        for n in names:
            f = outputs(out, n)["record"]
            records.append(json.loads(f.read_text()) if f.is_file() else {"concept": n, "status": "missing"})
        (out / "summary.json").write_text(json.dumps({"model": args.model, "processes": dist.world,
                                                       "data_parallel": args.data_parallel, "concepts": records}, indent=1, default=str))
        for line in summary_lines(records):
            log.info("[SurgUn] %s", line)
        log.info("[SurgUn] summary: %s (%d done, %d failed)", out / "summary.json",
                 sum(r.get("status") == DONE for r in records), sum(r.get("status") != DONE for r in records))
        failures = sum(r.get("status") != DONE for r in records)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        if args.no_progress:
            return run(args)
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():  # log lines above the progress bar, not onto it
            return run(args)
    except SurgUnError as e:
        log.error("%s", e)
        return 2
