"""The competition objective of SurgUn ("Forgetting is Competition").

    L = -w_a * L_target + w_d * mean_d L_distractor_d + w_r * L_retain

* ``L_target``        denoising loss of samples of the target concept under the target prompt
                      (pushed UP: gradient ascent),
* ``L_distractor_d``  denoising loss of samples of distractor ``d`` under the *target* prompt
                      (pushed DOWN: the prompt's mass moves onto several non-target modes),
* ``L_retain``        denoising loss of retain prompts' own samples under their own prompts
                      (pushed DOWN: the rest of the model stays intact).

The ascent is unbounded: nothing in ``-L_target`` stops the weights from growing until the
network outputs garbage for every prompt. :mod:`surgun_core.guard` stops it at a stated multiple
of the target's untouched loss, measured on a fixed probe; this module only says whether the
ascent term is on. Once it is off, the distractor and retain terms alone act (both are ordinary
descents, bounded below by 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import SurgUnError


@dataclass(frozen=True)
class CompetitionWeights:
    """Weights of the three terms. A weight of 0 switches its term off (and skips its forward pass)."""

    ascent: float = 1.0
    distract: float = 1.0
    retain: float = 1.0

    def __post_init__(self) -> None:
        for name, term in (("ascent", "ascent"), ("distract", "distractor"), ("retain", "retain")):
            v = getattr(self, name)
            if not (v == v) or v in (float("inf"), float("-inf")) or v < 0:
                raise SurgUnError(
                    f"[SurgUn] {term}_weight must be a finite number >= 0, got {v!r}. "
                    f"Use 0 to switch the {term} term off."
                )
        if self.ascent == 0 and self.distract == 0:
            raise SurgUnError(
                "[SurgUn] ascent_weight and distractor_weight are both 0, so nothing would be erased. "
                "Set at least one of them above 0 (the defaults are 1.0)."
            )


def competition_loss(
    l_target: torch.Tensor | None,
    l_distractors: torch.Tensor | None,
    l_retain: torch.Tensor | None,
    weights: CompetitionWeights,
    ascent: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Combine the three terms into the scalar SurgUn objective.

    Args:
        l_target: scalar denoising loss of target samples under the target prompt (or None when
            the ascent is off).
        l_distractors: 1-D tensor, one denoising loss per distractor, each measured on that
            distractor's samples under the *target* prompt (or None when ``weights.distract == 0``).
        l_retain: scalar denoising loss of retain samples under their own prompts (or None when
            ``weights.retain == 0``).
        weights: the three term weights.
        ascent: whether the ascent term is on (the guard turns it off for good once the target's
            probe loss reaches its cap).

    Returns:
        ``(loss, parts)`` where ``parts`` holds the detached float value of each term.
    """
    total = None
    parts: dict[str, float] = {}

    def add(term: torch.Tensor) -> None:
        nonlocal total
        total = term if total is None else total + term

    if weights.ascent > 0 and ascent:
        if l_target is None:
            raise SurgUnError("[SurgUn] ascent weight > 0 but no target loss was given.")
        add(-weights.ascent * l_target)
        parts["target"] = float(l_target.detach())
    if weights.distract > 0:
        if l_distractors is None or l_distractors.numel() == 0:
            raise SurgUnError("[SurgUn] distractor weight > 0 but no distractor losses were given.")
        add(weights.distract * l_distractors.mean())
        parts["distractor"] = float(l_distractors.detach().mean())
    if weights.retain > 0:
        if l_retain is None:
            raise SurgUnError("[SurgUn] retain weight > 0 but no retain loss was given.")
        add(weights.retain * l_retain)
        parts["retain"] = float(l_retain.detach())
    if total is None:
        raise SurgUnError("[SurgUn] every term of the objective is switched off.")
    parts["loss"] = float(total.detach())
    return total, parts
