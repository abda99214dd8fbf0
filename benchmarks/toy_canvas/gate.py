"""Quality gate: sample all 64 prompts with the shipped sampler settings through
ComfyUI's sampler, classify the images, report object / style accuracy.

    python -m benchmarks.toy_canvas.gate [--weights PATH] [--images-per-prompt N]

Library: ``sample_prompts(...)`` (prompts -> IMAGE batch through
``comfy.sample.sample``) and ``run_gate(...)`` (-> metrics dict).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Dict, List, Mapping, Optional, Sequence

import torch

from . import constants, world
from ._comfy import ensure_comfy

log = logging.getLogger(__name__)


def encode_prompt(clip, text: str):
    """Conditioning exactly as ComfyUI's CLIPTextEncode node makes it."""
    ensure_comfy()
    try:
        import nodes  # ComfyUI's nodes.py (on the path inside ComfyUI and via ensure_comfy)
        return nodes.CLIPTextEncode().encode(clip, text)[0]
    except ImportError:  # pragma: no cover - same code path as the node
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def _batched_conditioning(conds: Sequence[list]) -> list:
    """Stack single-prompt conditionings (each [[cond (1,77,C), {...}]]) into one
    conditioning whose batch matches the latent batch (tensor extras such as
    ``pooled_output`` are stacked too, other extras come from the first)."""
    c = torch.cat([x[0][0] for x in conds], dim=0)
    extra = {k: torch.cat([x[0][1][k] for x in conds], dim=0) if torch.is_tensor(v) else v for k, v in conds[0][0][1].items()}
    return [[c, extra]]


@torch.no_grad()
def sample_latents(model_patcher, conds: Mapping[str, list], negative: list, prompts: Sequence[str], seed: int,
                   sampler_name: str = constants.SAMPLER_NAME, scheduler: str = constants.SCHEDULER,
                   steps: int = constants.STEPS, cfg: float = constants.CFG, batch_size: int = 128,
                   size: int = constants.WIDTH) -> torch.Tensor:
    """One sample per entry of ``prompts`` (repeat prompts for more), conditioned by ``conds[prompt]``,
    through ``comfy.sample.sample`` in chunks of ``batch_size``; noise comes from
    ``comfy.sample.prepare_noise`` with ``seed + chunk index``. Returns the latents."""
    return torch.cat([handover_latents(model_patcher, model_patcher, 0, conds, negative, prompts[start:start + batch_size],
                                       seed + ci, sampler_name, scheduler, steps, cfg, size)
                      for ci, start in enumerate(range(0, len(prompts), batch_size))], dim=0)


def handover_latents(first, second, handover: int, conds: Mapping[str, list], negative: list, prompts: Sequence[str],
                     seed: int, sampler_name: str = constants.SAMPLER_NAME, scheduler: str = constants.SCHEDULER,
                     steps: int = constants.STEPS, cfg: float = constants.CFG, size: int = constants.WIDTH) -> torch.Tensor:
    """One batch of :func:`sample_latents` (which is ``handover`` 0 of one model), but ``first`` takes the noisiest
    ``handover`` of the ``steps`` steps and ``second`` the rest, from the same noise and on the same schedule
    (ComfyUI's KSamplerAdvanced split: the first part keeps its leftover noise, the second adds none). ``handover`` 0
    is ``second`` alone, ``steps`` ``first`` alone.
    Where in the schedule a model decides a concept: the first steps of ``first`` that the second cannot undo."""
    ensure_comfy()
    import comfy.sample

    if not 0 <= handover <= steps:
        raise ValueError(f"handover must be a step of the schedule, 0..{steps}; got {handover}")
    latent = torch.zeros(len(prompts), 3, size, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    positive = _batched_conditioning([conds[p] for p in prompts])
    run = lambda model, noise, latent, **kw: comfy.sample.sample(  # noqa: E731
        model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent, seed=seed, disable_pbar=True, **kw)
    with torch.no_grad():
        if handover == 0:
            return run(second, noise, latent).float().cpu()
        x = run(first, noise, latent, last_step=handover, force_full_denoise=handover == steps)
        if handover == steps:
            return x.float().cpu()
        return run(second, torch.zeros_like(noise), x, start_step=handover).float().cpu()


@torch.no_grad()
def sample_prompts(model_patcher, clip, vae, prompts: Sequence[str], seed: int,
                   negative_prompt: str = constants.NEGATIVE_PROMPT, **sampler_kwargs) -> torch.Tensor:
    """Sample one image per prompt (repeat prompts for more) with the shipped
    settings (see :func:`sample_latents`). Returns a ComfyUI IMAGE (B, H, W, 3)."""
    conds = {p: encode_prompt(clip, p) for p in set(prompts)}
    latents = sample_latents(model_patcher, conds, encode_prompt(clip, negative_prompt), prompts, seed, **sampler_kwargs)
    return vae.decode(latents).float().cpu()


def run_gate(model_patcher, clip, vae, classifier_model=None, images_per_prompt: int = constants.GATE_IMAGES_PER_PROMPT,
             seed: int = constants.GATE_SEED, **sampler_kwargs) -> Dict[str, object]:
    """Sample every (object, style) prompt ``images_per_prompt`` times, classify,
    and return accuracies (overall, per object, per style)."""
    from . import classifier as cls_mod

    if classifier_model is None:
        classifier_model = cls_mod.load_classifier()
    pairs = world.all_pairs() * images_per_prompt
    prompts = [world.prompt_for(world.OBJECTS[o], world.STYLES[s]) for o, s in pairs]
    t0 = time.time()
    images = sample_prompts(model_patcher, clip, vae, prompts, seed, **sampler_kwargs)
    out = cls_mod.classify(classifier_model, images)
    obj_t = torch.tensor([p[0] for p in pairs])
    sty_t = torch.tensor([p[1] for p in pairs])
    ok_o = out["object"] == obj_t
    ok_s = out["style"] == sty_t
    metrics = {
        "object_accuracy": ok_o.float().mean().item(),
        "style_accuracy": ok_s.float().mean().item(),
        "both_accuracy": (ok_o & ok_s).float().mean().item(),
        "per_object": {n: ok_o[obj_t == i].float().mean().item() for i, n in enumerate(world.OBJECTS)},
        "per_style": {n: ok_s[sty_t == i].float().mean().item() for i, n in enumerate(world.STYLES)},
        "n_images": len(prompts),
        "images_per_prompt": images_per_prompt,
        "seed": seed,
        "sampler": {"sampler_name": sampler_kwargs.get("sampler_name", constants.SAMPLER_NAME),
                    "scheduler": sampler_kwargs.get("scheduler", constants.SCHEDULER),
                    "steps": sampler_kwargs.get("steps", constants.STEPS),
                    "cfg": sampler_kwargs.get("cfg", constants.CFG)},
        "wall_s": round(time.time() - t0, 1),
    }
    metrics["passed"] = (metrics["object_accuracy"] >= constants.GATE_MIN_ACCURACY
                         and metrics["style_accuracy"] >= constants.GATE_MIN_ACCURACY)
    return metrics


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None)
    p.add_argument("--images-per-prompt", type=int, default=constants.GATE_IMAGES_PER_PROMPT)
    p.add_argument("--seed", type=int, default=constants.GATE_SEED)
    p.add_argument("--sampler", default=constants.SAMPLER_NAME)
    p.add_argument("--scheduler", default=constants.SCHEDULER)
    p.add_argument("--steps", type=int, default=constants.STEPS)
    p.add_argument("--cfg", type=float, default=constants.CFG)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-grid", default=None, help="write a PNG contact sheet of the first image of each prompt")
    p.add_argument("--update-manifest", action="store_true",
                   help="store the result as 'gate' in the weights' manifest (<weights>.json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    from . import model as model_mod

    patcher, clip, vae = model_mod.load_toy_canvas(args.weights or model_mod.DEFAULT_WEIGHTS)
    metrics = run_gate(patcher, clip, vae, images_per_prompt=args.images_per_prompt, seed=args.seed,
                       sampler_name=args.sampler, scheduler=args.scheduler, steps=args.steps, cfg=args.cfg)
    print(json.dumps(metrics, indent=2))
    if args.update_manifest:
        import hashlib
        import os

        weights = args.weights or model_mod.DEFAULT_WEIGHTS
        man_path = os.path.splitext(weights)[0] + ".json"
        manifest = json.load(open(man_path)) if os.path.exists(man_path) else {}
        sha = hashlib.sha256(open(weights, "rb").read()).hexdigest()
        if manifest.get("sha256") not in (None, sha):
            raise SystemExit(f"{man_path} describes another file (sha256 mismatch)")
        manifest["gate"] = dict(metrics, command="python -m benchmarks.toy_canvas.gate " + " ".join(
            argv if argv is not None else sys.argv[1:]))
        with open(man_path, "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
    if args.save_grid:
        save_grid(patcher, clip, vae, args.save_grid, seed=args.seed, sampler_name=args.sampler,
                  scheduler=args.scheduler, steps=args.steps, cfg=args.cfg)
    return 0 if metrics["passed"] else 1


def save_grid(patcher, clip, vae, path: str, seed: int = constants.GATE_SEED, scale: int = 3, **kw) -> None:
    """8x8 contact sheet (objects down, styles across) of one sample per prompt."""
    import numpy as np
    from PIL import Image

    imgs = sample_prompts(patcher, clip, vae, world.all_prompts(), seed, **kw)
    r = imgs.shape[1]
    g = imgs.view(len(world.OBJECTS), len(world.STYLES), r, r, 3).permute(0, 2, 1, 3, 4).reshape(len(world.OBJECTS) * r, len(world.STYLES) * r, 3)
    a = (g.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST).save(path)


if __name__ == "__main__":
    sys.exit(main())
