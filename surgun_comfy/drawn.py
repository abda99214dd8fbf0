"""The render stop's probe (``TrainConfig.ascent_until_erased``) rendered with ComfyUI's sampler.

The sets, the references and the reading are :mod:`surgun_core.drawn`'s; here a render is the training sampler's
prediction of the finished image after its first ``last_step`` steps, from the probe's own noise drawn as KSampler
draws a batch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from ..surgun_core.drawn import DECIDED, SEED_OFFSET, SETS, decided_by, nearer_target
from ..surgun_core.drawn import DrawnProbe as CoreProbe
from ..surgun_core.train import ConceptData
from .render import Renderer, draw_noise

__all__ = ["DECIDED", "SEED_OFFSET", "SETS", "DrawnProbe", "decided_by", "nearer_target"]


class DrawnProbe(CoreProbe):
    """``probe(model_patcher)`` -> per concept, the fraction of its probe renders still drawn as the target;
    :meth:`reference` must run first, on the untouched model. It renders with the training's ``renderer`` (its
    sampler, steps, cfg and ``tick``: the node's progress bar, so Cancel works in the renders), ``last_step`` of its
    steps (default :func:`decided_by`); ``extend(n)`` is told each render's sampler steps before it starts."""

    def __init__(self, renderer: Renderer, data: list[ConceptData], seed: int, images: int = 8, last_step: int | None = None,
                 extend: Callable[[int], None] | None = None):
        super().__init__(data, seed, images)
        self.renderer = dataclasses.replace(renderer, count=self.count)
        self.last_step = max(1, min(last_step or decided_by(renderer.steps), renderer.steps))
        self.extend = extend

    def draw_noise(self, n: int, seed: int) -> torch.Tensor:
        return draw_noise(self.renderer.bank, n, seed)

    def render(self, model_patcher, prompts: list[str], seed: int, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per prompt, the sampler's prediction at ``last_step`` of its ``count`` probe images from its ``noise``."""
        batches = self.renderer.plan(prompts)
        if self.extend is not None:
            self.extend(len(batches) * self.last_step)
        with torch.no_grad():
            got = self.renderer.latents(model_patcher, batches, seed, last_step=self.last_step, noise=noise)
        return {p: x.float().cpu() for p, x in got.items()}
