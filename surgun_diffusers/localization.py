"""Pixel-grounded block localisation on a diffusers pipeline, the same run as the pack's Block
Localizer (``surgun_comfy.probe``) on diffusers objects:

1. one short update of the real objective (same method, data and learning rate as the training)
   on every candidate block at once, on every other target line (the rest are held out for the
   referee's check); it stands in for the training, so the probe costs about one short training;
2. for each block, only that block's part of the update, scaled by ``train steps / probe_steps``,
   is merged into the denoiser; the trained and held-out target lines are rendered at seeds the
   update never saw, and the retain prompts; ``surgun_core.localize.localize`` scores and selects.

Candidates are the attention units of the chosen granularity (cross-attention by default, the
units the default preset trains), evenly thinned to ``max_blocks``. Images are embedded with the
core's documented pixel fallback (no CLIP-vision model is assumed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time

import torch

from surgun_core.localize import ERASE_PARTS, RETAIN_PARTS, SelectConfig, localize
from surgun_core.scores import PIXEL_FALLBACK, pixel_embed
from surgun_core.selection import select_trainable

from .adapter.model import merged
from .sampling import decode, render

log = logging.getLogger("SurgUn")
EVAL_SEED, FLOOR_SEED = 1000, 2000
"""Offsets from the run's seed: the evaluation renders and the noise floor's re-render (the training
samples use the seed itself), as in the pack's Block Localizer."""


def candidate_units(net, family, granularity: str, max_blocks: int) -> list[str]:
    units = family.attention_units([n for n, _ in net.named_modules()], granularity)
    if max_blocks and len(units) > max_blocks:
        step = len(units) / max_blocks
        units = [units[int(i * step)] for i in range(max_blocks)]
    return units


def split_groups(groups: list) -> tuple[list, list]:
    """(groups the update trains on, held-out groups): every other target line is held out."""
    return (groups[::2], groups[1::2]) if len(groups) > 1 else (list(groups), [])


def _parts(plan_) -> tuple[list, list[str], list[str], dict]:
    """(trained groups, their target lines, the held-out lines, the prompts each part renders)."""
    trained, held_out = split_groups(plan_.groups)
    targets, heldout = [t for t, _ in trained], [t for t, _ in held_out]
    return trained, targets, heldout, {ERASE_PARTS: [*targets, *heldout], RETAIN_PARTS: list(plan_.retain)}


def localize_cost(net, family, plan_, req) -> int:
    """The localiser's work on the progress bar (render steps per prompt, and the short update's steps), planned before
    anything runs so the bar's total never moves: the erase references and the noise floor's re-render, the update,
    every unit's erase renders, and the retain renders as if every unit were eligible (the reference's and one set per
    unit). :func:`localize_blocks` ticks the retain renders it does not make once it knows which units are eligible."""
    opts = req.localize
    units = candidate_units(net, family, opts.granularity, opts.max_blocks)
    _, targets, _, parts = _parts(plan_)
    steps, n_erase, n_retain = opts.render_steps or req.sampling.steps, len(parts[ERASE_PARTS]), len(parts[RETAIN_PARTS])
    return (n_erase + len(targets)) * steps + opts.probe_steps + len(units) * n_erase * steps + (len(units) + 1) * n_retain * steps


def localize_blocks(pipe, family, encoder, plan_, samples, req, progress) -> tuple[list[str], dict]:
    """Choose the blocks to train; ``progress`` ticks the work :func:`localize_cost` planned (its total is not grown here)."""
    from .erase import concept_groups, method_config, retain_plan, train_on

    opts = req.localize
    net = getattr(pipe, family.denoiser)
    units = candidate_units(net, family, opts.granularity, opts.max_blocks)
    select = SelectConfig(keep=opts.keep, min_fraction=opts.min_fraction, noise_floor=opts.noise_floor,
                          erase_threshold=opts.erase_threshold)
    select.check_candidates(len(units))
    layers = {u: select_trainable(net, [u]) for u in units}
    s = req.sampling
    steps = opts.render_steps or s.steps
    # erase renders for every unit; retain renders (most of the images) only for the eligible ones
    trained, targets, heldout, parts = _parts(plan_)
    probe_cfg = dataclasses.replace(method_config(req), steps=opts.probe_steps,  # a short update: no render stop
                                    learning_rate=opts.probe_lr or req.train.learning_rate, ascent_until_erased=False)
    strength = req.train.steps / opts.probe_steps

    def images(prompts, offset: int) -> dict:
        return render(pipe, family, prompts, opts.images_per_prompt, steps, s.cfg, s.size, req.train.seed + offset,
                      progress.tick, req.sana_instruction)

    def stacked(out: dict, prompts) -> torch.Tensor | None:
        return torch.cat([out[p] for p in prompts]) if prompts else None

    t0 = time.perf_counter()
    erase_ref = images(parts[ERASE_PARTS], EVAL_SEED)
    reference = {  # each part rendered on its own, as the probes render it (same seeds)
        "target": stacked(erase_ref, targets), "heldout": stacked(erase_ref, heldout),
        "retain": lambda: stacked(images(parts[RETAIN_PARTS], EVAL_SEED), plan_.retain),  # only if a unit is eligible
        "floor": stacked(images(targets, FLOOR_SEED), targets),
        "target_ref": torch.cat([decode(pipe, samples[t]) for t in targets]),
        "distractors": torch.cat([decode(pipe, samples[p]) for _, ds in trained for p in ds.values()]),
    }
    reference_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = concept_groups(req.method, dataclasses.replace(plan_, groups=trained), samples, encoder.device, retain_plan(req, encoder))
    all_layers = [m for u in units for m in layers[u]]
    deltas, _ = train_on(pipe, family, encoder, all_layers, data, probe_cfg, req.method, req.gradient_checkpointing,
                         lambda *a: progress.tick())
    update_s = time.perf_counter() - t0

    def probe(block: str, wanted: tuple) -> dict:
        with merged(net, {m: deltas[m] for m in layers[block]}, strength):
            out = images(parts[wanted], EVAL_SEED)
        prompts = {"target": targets, "heldout": heldout, "retain": plan_.retain}
        return {k: stacked(out, prompts[k]) for k in wanted}

    def on_block(i, n, row):
        progress.say(f"block {i}/{n}: erase {row.erase:.3f}" + (f" retain {row.retain:.3f}" if math.isfinite(row.retain) else ""))

    t0 = time.perf_counter()
    result = localize(units, probe, pixel_embed, reference, select, PIXEL_FALLBACK, on_block,
                      on_eligible=lambda names: progress.tick(  # the retain renders not made
                          (len(units) + 1 - len(names) - bool(names)) * len(parts[RETAIN_PARTS]) * steps))
    result.timing_s = {"reference": round(reference_s, 2), "update": round(update_s, 2), "blocks": round(time.perf_counter() - t0, 2)}
    result.config.update({"granularity": opts.granularity, "probe_steps": opts.probe_steps, "learning_rate": probe_cfg.learning_rate,
                          "strength": strength, "images_per_prompt": opts.images_per_prompt, "render_steps": steps,
                          "family": family.id, "trained_lines": targets, "held_out_lines": heldout})
    log.info("[SurgUn] localised %d of %d blocks (update %.1f s, renders %.1f s): %s", len(result.chosen), len(units),
             update_s, result.timing_s["blocks"], ", ".join(result.chosen))
    return result.chosen, json.loads(result.to_json())
