"""Erasure methods on diffusers pipelines as configurations of one training loop, for fair
comparisons (the command line's ``--method`` and ``benchmarks/fullsize.py``).

Every method trains the same layers, for the same number of steps, from the same
self-generated samples and seeds; they differ only in the terms of the objective:

* ``surgun``: ascent on the target + descent on all distractors under the target prompt +
  retain (SurgUn, with the guarded ascent);
* ``surgun_no_distractor``: the same without the distractor term;
* ``surgun_one_distractor``: the same with a single distractor (the anchor);
* ``ga``: gradient ascent on the target only, unguarded, as published (no retain term);
* ``ca``: Concept Ablation (Kumari et al. 2023, "noise" variant): the target prompt is
  trained to denoise the anchor concept's samples, plus their prior-preservation term (the
  anchor's samples under the anchor's own prompt);
* ``esd_x``: ESD-x (Gandikota et al. 2023): under the concept-only prompt, the trained model
  is regressed onto the frozen model's negatively guided prediction
  ``x0(empty) - eta * (x0(concept) - x0(empty))`` (written in x0 space, which is equivalent
  because x0, eps and v predictions are affine in each other at a fixed noisy input).
  Deviation from the paper: noisy inputs come from the original model's samples of the
  target rather than from partial trajectories of the model being trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from surgun_core.objective import CompetitionWeights
from surgun_core.train import ConceptData


@dataclass(frozen=True)
class Method:
    name: str
    weights: CompetitionWeights
    ascent_cap: float = 2.0
    distractors: str = "all"
    """Which distractors are used: "all", "one" (the anchor) or "none"."""
    prior_preservation: bool = False
    """CA: add the anchor's samples under the anchor's own prompt to the retain term."""
    loss: str = "denoise"
    """"denoise" (the native denoising objective) or "esd" (negative-guidance regression)."""
    esd_eta: float = 1.0
    description: str = ""


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("surgun", CompetitionWeights(1.0, 1.0, 1.0), description="SurgUn: ascent + all distractors + retain"),
    Method("surgun_no_distractor", CompetitionWeights(1.0, 0.0, 1.0), distractors="none", description="SurgUn without the distractor term"),
    Method("surgun_one_distractor", CompetitionWeights(1.0, 1.0, 1.0), distractors="one", description="SurgUn with a single distractor"),
    Method("ga", CompetitionWeights(1.0, 0.0, 0.0), ascent_cap=0.0, distractors="none", description="gradient ascent on the target (unguarded)"),
    Method("ca", CompetitionWeights(0.0, 1.0, 1.0), distractors="one", prior_preservation=True,
           description="Concept Ablation: target prompt -> anchor samples, with prior preservation"),
    Method("esd_x", CompetitionWeights(0.0, 1.0, 0.0), distractors="none", loss="esd",
           description="ESD-x: negative guidance under the concept-only prompt"),
]}

ESD_ROLE = "__esd_target__"


@dataclass
class MethodData:
    """What a method trains on, plus the prompt ESD uses."""

    data: ConceptData
    esd_prompt: str | None = None
    notes: dict = field(default_factory=dict)


def method_data(
    method: Method,
    target_prompt: str,
    target: torch.Tensor,
    distractors: dict[str, torch.Tensor],
    retain: dict[str, torch.Tensor],
    anchor: str,
    concept_prompt: str | None = None,
) -> MethodData:
    """Arrange the shared samples into the roles ``method`` trains on.

    ``anchor`` names the distractor used by single-anchor methods (``surgun_one_distractor``,
    ``ca``); ``concept_prompt`` is ESD's concept-only prompt.
    """
    if anchor not in distractors:
        raise KeyError(f"anchor {anchor!r} is not among the distractors")
    if method.loss == "esd":
        prompt = concept_prompt or target_prompt
        return MethodData(ConceptData(prompt, target, {ESD_ROLE: target}, {}), esd_prompt=prompt)
    chosen = {"all": dict(distractors), "one": {anchor: distractors[anchor]}, "none": {}}[method.distractors]
    kept = dict(retain) if method.weights.retain > 0 else {}
    if method.prior_preservation:
        kept = {anchor: distractors[anchor]}
    return MethodData(ConceptData(target_prompt, target, chosen, kept))
