"""The Block Localizer's run on ComfyUI objects.

1. Sample the training data of the trained half of the target lines, as SurgUn Train would.
2. One short SurgUn update on every candidate block at once, at the training's learning rate and with
   SurgUn Train's default retain plan (each distractor's own line retained): it
   stands in for the training (one update instead of one per block, so the probe costs about what the
   training it steers costs).
3. For each block, apply only that block's part of the update, scaled by train_steps / probe_steps,
   render the trained prompts and the held-out prompts at seeds the update never saw; then, for the
   blocks that erase enough to be chosen, the retain prompts (the untouched model's retain images are
   rendered only if there is such a block); score them (:func:`surgun_core.localize.localize`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import torch

from ..surgun_core.errors import SurgUnError
from ..surgun_core.localize import ERASE_PARTS, RETAIN_PARTS, LocalizeResult, localize
from ..surgun_core.pairing import with_distractors
from ..surgun_core.seeds import offset_seed
from ..surgun_core.selection import select_trainable
from ..surgun_core.train import ConceptData
from ..surgun_core.weights import delta_key
from .families import detect_family
from .localize import BlockSet, LocalizeRequest, candidate_blocks
from .progress import NodeProgress
from .render import Renderer, decode_images, image_embedder
from .training import train_deltas

log = logging.getLogger("SurgUn")
EVAL_SEED, FLOOR_SEED = 1000, 2000
"""Offsets from the request's seed: evaluation renders and the noise floor's re-render (the training
samples use the seed itself)."""


def run_localizer(model_patcher, clip, vae, clip_vision, req: LocalizeRequest, node_id: str | None = None) -> tuple[LocalizeResult, BlockSet]:
    if vae is None:
        raise SurgUnError("[SurgUn] Block Localizer needs a VAE to decode its probe renders to pixels; connect the VAE of your checkpoint.")
    family = detect_family(model_patcher)
    blocks = candidate_blocks(model_patcher, family, req.preset, req.granularity, req.block_filter, req.max_blocks)
    req.select.check_candidates(len(blocks))
    trained, held_out = req.groups
    layers = {b: select_trainable(model_patcher.get_model_object("diffusion_model"), [b]) for b in blocks}

    renderer = Renderer.for_model(model_patcher, clip, family, req.render_size, req.images_per_prompt, req.render_steps, req.render_cfg)
    train_prompts = list(dict.fromkeys(p for g in trained for p in (g.target, *g.distractors, *g.retain)))
    targets, heldout = [g.target for g in trained], [g.target for g in held_out]
    retain = list(dict.fromkeys(r for g in trained for r in g.retain))
    renderer.bank.check_lengths({"target": [*targets, *heldout], "distractors": [d for g in trained for d in g.distractors],
                                 "retain_prompts": retain})
    note = renderer.size_note("render_size", req.render_size)
    if note:
        log.warning("[SurgUn] %s", note)
    train_batches, floor_batches = renderer.plan(train_prompts), renderer.plan(targets)
    # erase renders for every block; retain renders (most of the images) only for the eligible blocks
    parts = {ERASE_PARTS: renderer.plan([*targets, *heldout]), RETAIN_PARTS: renderer.plan(retain)}
    per_block = {k: renderer.cost(b) for k, b in parts.items()}
    progress = NodeProgress(renderer.cost(train_batches) + sum(per_block.values()) + renderer.cost(floor_batches)
                            + req.probe_steps + len(blocks) * sum(per_block.values()), node_id)
    renderer.tick = progress.tick

    def stacked(images: dict, prompts) -> torch.Tensor | None:
        return torch.cat([images[p] for p in prompts]) if prompts else None

    t0 = time.perf_counter()
    samples = renderer.latents(model_patcher, train_batches, req.seed)
    untouched = lambda part: renderer.images(model_patcher, vae, parts[part], offset_seed(req.seed, EVAL_SEED))
    erase_ref = untouched(ERASE_PARTS)
    reference = {  # each part from its own plan, as the probes render it (same seeds)
        "target": stacked(erase_ref, targets), "heldout": stacked(erase_ref, heldout),
        "retain": lambda: stacked(untouched(RETAIN_PARTS), retain),  # rendered only if a block is eligible
        "floor": stacked(renderer.images(model_patcher, vae, floor_batches, offset_seed(req.seed, FLOOR_SEED)), targets),
        "target_ref": torch.cat([decode_images(vae, samples[p]) for p in targets]),
        "distractors": torch.cat([decode_images(vae, samples[d]) for g in trained for d in g.distractors]),
    }
    reference_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    # the update trains as SurgUn Train does by default: each distractor's own line also retained
    kept = [dataclasses.replace(g, retain=with_distractors(g.retain, g.distractors)) for g in trained]
    data = [ConceptData(g.target, samples[g.target], {d: samples[d] for d in g.distractors}, {r: samples[r] for r in g.retain})
            for g in kept]
    all_layers = [m for b in blocks for m in layers[b]]
    deltas, _ = train_deltas(model_patcher, renderer.bank, data, all_layers, req.probe, family.arch.checkpoint_units,
                             lambda *a: progress.tick())
    update_s = time.perf_counter() - t0

    def probe(block: str, wanted: tuple) -> dict:
        import comfy.sd

        part = {delta_key(m): deltas[m] * req.strength for m in layers[block]}
        patched, _ = comfy.sd.load_lora_for_models(model_patcher, None, part, 1.0, 0)
        rendered = renderer.images(patched, vae, parts[wanted], offset_seed(req.seed, EVAL_SEED))
        prompts = {"target": targets, "heldout": heldout, "retain": retain}
        return {k: stacked(rendered, prompts[k]) for k in wanted}

    embed, embed_name = image_embedder(clip_vision)

    def on_block(i, n, row):
        progress.say(f"block {i}/{n} {row.block}: erase {row.erase:.3f}"
                     + (f" retain {row.retain:.3f}" if math.isfinite(row.retain) else ""), force=True)
        progress.chart("localize_block", {"i": i, "n": n, "block": row.block, "erase": row.erase, "retain": row.retain,
                                          "erase_heldout": row.erase_heldout})

    t0 = time.perf_counter()
    progress.chart("localize_start", {"total": len(blocks)})
    result = localize(blocks, probe, embed, reference, req.select, embed_name, on_block,
                      on_eligible=lambda names: progress.skip((len(blocks) - len(names) + (not names)) * per_block[RETAIN_PARTS]))
    progress.chart("localize_done", {"erase_threshold": result.threshold, "noise_floor": result.floor,
                                     "retain_cutoff": result.retain_cutoff, "chosen": result.chosen})
    result.timing_s = {"reference": round(reference_s, 2), "update": round(update_s, 2), "blocks": round(time.perf_counter() - t0, 2)}
    result.config.update({"preset": req.preset, "granularity": req.granularity, "probe_steps": req.probe_steps,
                          "learning_rate": req.learning_rate, "strength": req.strength, "images_per_prompt": req.images_per_prompt,
                          "render_steps": req.render_steps, "render_size": renderer.pixels, "family": family.id,
                          "trained_lines": targets, "held_out_lines": heldout, "notes": [note] if note else []})
    info = {"family": family.id, "embedding": embed_name, "noise_floor": result.floor, "erase_threshold": result.threshold,
            "retain_cutoff": result.retain_cutoff, "referee": result.referee,
            "request": {k: v for k, v in dataclasses.asdict(req).items() if k not in ("distractors", "retain", "distractor_prompts")}}
    log.info("[SurgUn] localised %d of %d blocks for %r (update %.1f s, renders %.1f s)", len(result.chosen), len(blocks),
             targets[0][:60], update_s, result.timing_s["blocks"])
    return result, BlockSet(result.chosen, result.table(), info)
