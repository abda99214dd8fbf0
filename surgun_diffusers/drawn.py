"""The render stop's probe (``TrainConfig.ascent_until_erased``) on a diffusers pipeline.

The sets, the references and the reading are :mod:`surgun_core.drawn`'s, as in SurgUn Train; a render here is
:func:`surgun_diffusers.sampling.predict_clean`'s prediction of the finished sample after the first
``last_step`` of the training sampling's steps, from the probe's own noise, through the pipeline's denoiser with the
deltas as they are. The pipeline's own sampler made the training samples; the probe's renders and its references
come from the same deterministic sampler, so a check compares like with like.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from surgun_core.drawn import SETS, DrawnProbe, decided_by
from surgun_core.train import ConceptData

from .sampling import predict_clean


def render_cost(lines: Sequence[Sequence[str]], last_step: int, checks: int, references: bool = True) -> int:
    """Denoiser steps of the references of the probe ``lines`` (each a target prompt and its distractors' prompts) over
    every set (unless ``references`` is off), and of ``checks`` checks, at ``last_step`` steps a render: what the
    progress bar plans before sampling."""
    prompts = sum(len(dict.fromkeys(line)) for line in lines) if references else 0
    return (SETS * prompts + checks * len(lines)) * last_step


class DiffusersDrawnProbe(DrawnProbe):
    """``probe(None)`` -> per concept, the fraction of its renders still drawn as the target (:meth:`reference` first,
    while the deltas are zero). ``shape``: one latent's shape; ``steps``/``cfg``: the training sampling's; ``tick()``
    follows each denoiser step of a render (the progress bar, whose total :func:`render_cost` gives up front)."""

    def __init__(self, schedule, denoise, data: list[ConceptData], seed: int, shape: Sequence[int], steps: int, cfg: float,
                 images: int = 8, last_step: int | None = None, tick: Callable[[], None] | None = None):
        super().__init__(data, seed, images)
        self.schedule, self.denoise = schedule, denoise
        self.shape, self.steps, self.cfg = tuple(shape), steps, cfg
        self.last_step = max(1, min(last_step or decided_by(steps), steps))
        self.tick = tick

    def draw_noise(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn((n, *self.shape), generator=torch.Generator("cpu").manual_seed(seed))

    def render(self, model, prompts: list[str], seed: int, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {p: predict_clean(self.schedule, self.denoise, [p] * noise[p].shape[0], noise[p], self.steps, self.cfg,
                                 self.last_step, self.tick) for p in prompts}
