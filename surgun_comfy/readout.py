"""How strongly a run erased, told at the end of SurgUn Train, before anyone samples.

* the guard: the target's probe loss as a multiple of its untouched value, against the cap, and how
  many steps the ascent ran before the guard stopped it (after a stop the distractor and retain
  terms go on and can move the probe loss further: a run whose ascent stopped early erased mostly
  through its distractors);
* the distractor term: its mean over the last tenth of the steps against the first tenth (falling
  means the target prompt now denoises the distractors' images);
* images: the first target prompt (of each concept, when a run erases several) and a retain prompt
  rendered before and after with the same seeds, compared as latents (cosine of the centred latents: 1 = unchanged). The target's
  should drop; the retain prompt's should stay near 1.
"""

from __future__ import annotations

import torch

from ..surgun_core.scores import centred_cosine
from ..surgun_core.seeds import offset_seed
from ..surgun_core.train import TrainResult
from ..surgun_core.weights import delta_key

SEED_OFFSET = 17
"""The readout renders with the training seed plus this, so it does not reuse the training samples."""


def _similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(centred_cosine(a, b).mean())


def _term(history: list[dict], key: str, first: bool) -> float | None:
    values = [h[key] for h in history if key in h]
    if not values:
        return None
    n = max(1, len(values) // 10)
    part = values[:n] if first else values[-n:]
    return sum(part) / len(part)


def readout(model_patcher, renderer, batches: list[list[str]], targets: list[str], retain: str | None, deltas: dict,
            result: TrainResult, seed: int) -> dict:
    """The numbers described in the module docstring; ``batches`` plan ``targets`` and ``retain``
    (``renderer.cost(batches)`` ticks, twice). ``target_similarity`` is the first target's; with
    several targets, ``per_target`` has each one's."""
    import comfy.sd

    erased, _ = comfy.sd.load_lora_for_models(model_patcher, None, {delta_key(n): d for n, d in deltas.items()}, 1.0, 0)
    before = renderer.latents(model_patcher, batches, offset_seed(seed, SEED_OFFSET))
    after = renderer.latents(erased, batches, offset_seed(seed, SEED_OFFSET))
    sims = {t: _similarity(after[t], before[t]) for t in targets}
    return {
        "target_similarity": sims[targets[0]],
        **({"per_target": sims} if len(targets) > 1 else {}),
        "retain_similarity": _similarity(after[retain], before[retain]) if retain else None,
        "guard_ratio": result.guard[-1][1] if result.guard else None,
        **({"ascent_steps": sum(int(h.get("ascent_active", 0)) for h in result.history), "steps": len(result.history),
            "guard_first_stop": result.guard_stops[0] if result.guard_stops else None} if result.guard and not result.concepts else {}),
        **({"per_concept_guard": {c: v["final_ratio"] for c, v in result.concepts.items()},
            "per_concept_first_stop": {c: v["stops"][0] if v["stops"] else None for c, v in result.concepts.items()}}
           if result.concepts else {}),
        **({"ascent_tied": sum(int(h.get("ascent_tied", 0)) for h in result.history)}
           if any("ascent_tied" in h for h in result.history) else {}),
        **({"drawn": [[step, f] for step, f in result.drawn], "erased_at": {c: result.erased_at.get(c, []) for c in result.drawn[-1][1]}}
           if result.drawn else {}),
        "distractor_first": _term(result.history, "distractor", True),
        "distractor_last": _term(result.history, "distractor", False),
        **({"ascent_levels_90": {c: p.mass_until(0.9) for c, p in result.levels.items()}} if result.levels else {}),
    }


def readout_text(r: dict, multiple: float) -> str:
    if r.get("per_target"):
        each = ", ".join(f"{v:.2f}" for v in r["per_target"].values())
        parts = [f"target images vs before: similarity {each} for the {len(r['per_target'])} concepts (1 = unchanged)"]
    else:
        parts = [f"target images vs before: similarity {r['target_similarity']:.2f} (1 = unchanged)"]
    if r["retain_similarity"] is not None:
        parts.append(f"retain {r['retain_similarity']:.2f}")
    if r.get("per_concept_guard"):
        each = ", ".join(f"x{v:.2f}" for v in r["per_concept_guard"].values())
        parts.append(f"target losses {each} of their start (guard at x{multiple:g})")
        stops = ", ".join("never" if v is None else f"step {v}" for v in r["per_concept_first_stop"].values())
        parts.append(f"the guard first stopped each concept's ascent at: {stops}")
    elif r["guard_ratio"] is not None:
        parts.append(f"target loss x{r['guard_ratio']:.2f} of its start (guard at x{multiple:g})")
    tied = f"{r['ascent_tied']} tied with the distractors" if r.get("ascent_tied") is not None else ""
    if r.get("guard_first_stop") is not None:
        parts.append(f"the ascent ran {r['ascent_steps']} of {r['steps']} steps (the guard first stopped it at step "
                     f"{r['guard_first_stop']}{'; ' + tied if tied else ''})")
    elif r.get("steps") and tied:
        parts.append(f"the ascent ran {r['ascent_steps']} of {r['steps']} steps ({tied}); the guard never stopped it")
    elif r.get("steps") and r.get("ascent_steps", r["steps"]) < r["steps"]:
        parts.append(f"the ascent ran {r['ascent_steps']} of {r['steps']} steps; the guard never stopped it")
    elif r.get("steps"):
        parts.append(f"the guard never stopped the ascent ({r['steps']} steps)")
    elif tied:
        parts.append(f"{r['ascent_tied']} steps tied with the distractors (no ascent on them)")
    if r.get("erased_at") is not None:
        checks, last = len(r["drawn"]), r["drawn"][-1][1]
        several = len(r["erased_at"]) > 1
        for c, held in r["erased_at"].items():
            who = f"{c}: " if several else ""
            if held:
                # each hold lasts until the next check where a render draws the target again (the last step's reading
                # switches nothing: no step follows it)
                again = [next((s for s, f in r["drawn"] if h < s < r["steps"] and f.get(c, 1.0) > 0), None) for h in held]
                spans = " and ".join(f"from step {h} to {a}" if a else f"from step {h} to the end" for h, a in zip(held, again))
                back = [a for a in again if a]
                parts.append(f"{who}no render drew the target at step{'s' if len(held) > 1 else ''} {', '.join(map(str, held))}, "
                             f"so the ascent was held off {spans}"
                             + (f"; at step{'s' if len(back) > 1 else ''} {', '.join(map(str, back))} a render drew it again "
                                f"and the guard took the ascent back (it runs only below the guard's cap)" if back else "")
                             + f" ({checks} render checks)")
            else:
                parts.append(f"{who}the renders drew the target at every check ({checks}; "
                             f"{last[c]:.0%} of them at the last), so they never held the ascent off")
    if r["distractor_first"] is not None:
        parts.append(f"distractor term {r['distractor_first']:.4g} -> {r['distractor_last']:.4g}")
    if r.get("ascent_levels_90"):
        each = ", ".join(f"{round(100 * v)}%" for v in r["ascent_levels_90"].values())
        parts.append(f"90% of the ascent in the noisiest {each} of the schedule (concept_levels)")
    return "; ".join(parts)
