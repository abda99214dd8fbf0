"""Pixel-grounded block localisation on a diffusers pipeline: the probe ``surgun_core.localize``
calls for each candidate block.

Candidates are the attention units of the chosen granularity (cross-attention by default, the
units the default preset trains), evenly thinned to ``max_blocks``. For each candidate, starting
from the untouched weights, a short update of that block alone (the same objective, data and
method as the real run, ``probe_steps`` steps), then the target and retain prompts are rendered
with the same seeds as the reference renders and decoded to pixels; the core scores and selects.
Images are embedded with the core's documented pixel fallback (no CLIP-vision model is assumed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import torch

from surgun_core.localize import SelectConfig, localize
from surgun_core.scores import PIXEL_FALLBACK, pixel_embed
from surgun_core.selection import select_trainable

from .adapter.model import merged
from .sampling import render

log = logging.getLogger("SurgUn")


def candidate_units(net, family, granularity: str, max_blocks: int) -> list[str]:
    units = family.attention_units([n for n, _ in net.named_modules()], granularity)
    if max_blocks and len(units) > max_blocks:
        step = len(units) / max_blocks
        units = [units[int(i * step)] for i in range(max_blocks)]
    return units


def localize_blocks(pipe, family, encoder, plan_, samples, req, progress) -> tuple[list[str], dict]:
    from .erase import concept_groups, method_config, train_on

    opts = req.localize
    net = getattr(pipe, family.denoiser)
    units = candidate_units(net, family, opts.granularity, opts.max_blocks)
    select = SelectConfig(keep=opts.keep, erase_quantile=opts.erase_quantile)
    select.validate(len(units))
    s = req.sampling
    steps = opts.render_steps or s.steps
    target, ds = plan_.groups[0]
    scored = [target, *plan_.retain]
    progress.grow((len(scored) + len(ds)) * steps + len(units) * (opts.probe_steps + len(scored) * steps))

    def images(prompts) -> dict:
        return render(pipe, family, prompts, opts.images_per_prompt, steps, s.cfg, s.size, req.train.seed + 1,
                      progress.tick, req.sana_instruction)

    t0 = time.perf_counter()
    ref = images([*scored, *ds.values()])
    reference = {"target": ref[target], "retain": torch.cat([ref[r] for r in plan_.retain]),
                 "distractors": torch.cat([ref[p] for p in ds.values()])}
    reference_s = time.perf_counter() - t0
    probe_cfg = dataclasses.replace(method_config(req), steps=opts.probe_steps,
                                    learning_rate=opts.probe_lr or req.train.learning_rate)
    data = concept_groups(req.method, plan_, samples, encoder.device)

    def probe(block: str) -> dict:
        modules = select_trainable(net, [block])
        t = time.perf_counter()
        deltas, _ = train_on(pipe, family, encoder, modules, data, probe_cfg, req.method, req.gradient_checkpointing,
                             lambda *a: progress.tick())
        update_s = time.perf_counter() - t
        t = time.perf_counter()
        with merged(net, deltas):
            out = images(scored)
        return {"target": out[target], "retain": torch.cat([out[r] for r in plan_.retain]),
                "update_s": update_s, "render_s": time.perf_counter() - t}

    def on_block(i, n, row):
        progress.say(f"block {i}/{n}: erase {row.erase:.3f} retain {row.retain:.3f}")

    result = localize(units, probe, pixel_embed, reference, select, PIXEL_FALLBACK, on_block)
    result.reference_s = reference_s
    result.config.update({"granularity": opts.granularity, "probe_steps": opts.probe_steps,
                          "probe_lr": probe_cfg.learning_rate, "images_per_prompt": opts.images_per_prompt,
                          "render_steps": steps, "family": family.id})
    log.info("[SurgUn] localised %d of %d blocks: %s", len(result.chosen), len(units), ", ".join(result.chosen))
    return result.chosen, json.loads(result.to_json())
