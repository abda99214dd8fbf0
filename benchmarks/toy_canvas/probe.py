"""Where an erased toy canvas model decides a style, and where it loses the object (the demo's ``--probe``).

* ``produced``: the styles the erased model now draws for the target's prompts, and per drawn style how many
  images keep their prompt's object (is the object lost in one kind of image, or everywhere?);
* ``handover``: one trajectory split between two models (:func:`gate.handover_latents`): the untouched model takes
  the noisiest k of the sampler's steps and the erased model the rest, and the reverse. The smallest k at which the
  untouched model's first steps bring the style back says where in the schedule the style is decided.

Images come from ``PROBE_SEED``, a seed that neither SurgUn Train (its own seed + batch, below 1000) nor the demo's
scoring (``run.Settings.eval_seed``) uses.
"""

from __future__ import annotations

from collections import Counter

import torch

from . import world
from .gate import handover_latents

PROBE_SEED = 515_151
HANDOVER_STEPS = (1, 2, 4, 8, 12)


def _prompts(style: str, per_object: int) -> list[str]:
    return [world.prompt_for(o, style) for o in world.OBJECTS] * per_object


def _read(bench, latents: torch.Tensor, prompts: list[str], style: str) -> dict:
    c = bench.classify(latents)
    kept = c["object"] == world.class_indices(prompts, "object")
    return {"kept": round(float(kept.float().mean()), 3), "UA": round(float((c["style"] != world.STYLES.index(style)).float().mean()), 3),
            "styles": c["style"].tolist(), "kept_rows": kept.tolist()}


def produced(bench, model, style: str, per_object: int = 8) -> dict:
    """The styles ``model`` draws for ``style``'s prompts, with the share of each that keeps its object."""
    prompts = _prompts(style, per_object)
    r = _read(bench, bench.sample(model, prompts, PROBE_SEED), prompts, style)
    drawn = Counter(world.STYLES[s] for s in r["styles"])
    kept = Counter(world.STYLES[s] for s, k in zip(r["styles"], r["kept_rows"]) if k)
    return {"images": len(prompts), "seed": PROBE_SEED, "kept": r["kept"], "UA": r["UA"],
            "drawn": {s: {"images": n, "kept": round(kept[s] / n, 3)} for s, n in drawn.most_common()}}


def handover(bench, untouched, erased, style: str, per_object: int = 4) -> dict:
    """Object kept and UA on ``style``'s prompts with the untouched model first for k steps (then the erased one), and the
    erased model first (then the untouched one), for k = 0, each of ``HANDOVER_STEPS`` and the whole schedule."""
    prompts = _prompts(style, per_object)
    conds = {p: bench.bank.conditioning(p) for p in dict.fromkeys(prompts)}
    negative = bench.bank.conditioning(bench.constants.NEGATIVE_PROMPT)
    steps = bench.constants.STEPS

    def read(first, second, k: int) -> dict:
        with torch.inference_mode():
            lat = handover_latents(first, second, k, conds, negative, prompts, PROBE_SEED, steps=steps, cfg=bench.constants.CFG)
        r = _read(bench, lat, prompts, style)
        return {"kept": r["kept"], "UA": r["UA"]}

    erased_alone, untouched_alone = read(untouched, erased, 0), read(untouched, erased, steps)  # each end once
    return {"images": len(prompts), "seed": PROBE_SEED, "steps": steps,
            "untouched_first": {"0": erased_alone, **{str(k): read(untouched, erased, k) for k in HANDOVER_STEPS},
                                str(steps): untouched_alone},
            "erased_first": {"0": untouched_alone, **{str(k): read(erased, untouched, k) for k in HANDOVER_STEPS},
                             str(steps): erased_alone}}
