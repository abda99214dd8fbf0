"""The competition objective of SurgUn ("Forgetting is Competition").

    L = -w_a * L_target + w_d * mean_d L_distractor_d + w_r * L_retain

* ``L_target``        denoising loss of samples of the target concept under the target prompt
                      (pushed UP: gradient ascent),
* ``L_distractor_d``  denoising loss of samples of distractor ``d`` under the *target* prompt
                      (pushed DOWN: the prompt's mass moves onto several non-target modes),
* ``L_retain``        denoising loss of retain prompts' own samples under their own prompts
                      (pushed DOWN: the rest of the model stays intact).

The ascent guard
----------------
Gradient ascent on a denoising loss is unbounded: nothing stops the weights from growing until
the network outputs garbage (or infinities) for every prompt. SurgUn therefore ascends on a
*capped* target loss::

    ascent_term = -min(L_target, cap),   cap = ascent_cap * L_target(untouched model)

Why this form:

* Below the cap its value and gradient are exactly those of ``-L_target``, so the reported loss
  is the paper's formula and the update is the paper's update.
* Once the target's loss reaches the cap the term is constant: its gradient is zero and the
  distractor and retain terms alone act. The objective is bounded below by ``-w_a * cap``, so
  minimisation cannot diverge through the ascent (a test runs 500 steps at a large learning rate).
* The cap is *relative* to the untouched model's own loss on the same target samples. Absolute
  thresholds (``relu(tau - L)`` with a fixed ``tau``) do not transfer between eps-, v- and
  flow-objectives or between latent spaces whose loss scales differ by orders of magnitude; a
  multiple of the starting value does. ``ascent_cap=2`` means "stop pushing once the model
  denoises the target twice as badly as it used to".
* ``min`` rather than ``relu(cap - L)``: the gradient is identical; ``min`` keeps the value equal
  to ``-L_target`` in the active region, which makes logs and hand-checked tests readable.
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


def ascent_term(l_target: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``-min(L_target, cap)``; ``cap=None`` gives the unguarded ``-L_target``."""
    if cap is None:
        return -l_target
    return -torch.clamp(l_target, max=cap)


def competition_loss(
    l_target: torch.Tensor | None,
    l_distractors: torch.Tensor | None,
    l_retain: torch.Tensor | None,
    weights: CompetitionWeights,
    cap: float | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Combine the three terms into the scalar SurgUn objective.

    Args:
        l_target: scalar denoising loss of target samples under the target prompt (or None when
            ``weights.ascent == 0``).
        l_distractors: 1-D tensor, one denoising loss per distractor, each measured on that
            distractor's samples under the *target* prompt (or None when ``weights.distract == 0``).
        l_retain: scalar denoising loss of retain samples under their own prompts (or None when
            ``weights.retain == 0``).
        weights: the three term weights.
        cap: the ascent guard's cap on ``l_target`` (see module docstring); None disables it.

    Returns:
        ``(loss, parts)`` where ``parts`` holds the detached float value of each term.
    """
    total = None
    parts: dict[str, float] = {}

    def add(term: torch.Tensor) -> None:
        nonlocal total
        total = term if total is None else total + term

    if weights.ascent > 0:
        if l_target is None:
            raise SurgUnError("[SurgUn] ascent weight > 0 but no target loss was given.")
        add(weights.ascent * ascent_term(l_target, cap))
        parts["target"] = float(l_target.detach())
        parts["ascent_active"] = float(cap is None or float(l_target.detach()) < cap)
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
