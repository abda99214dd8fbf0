"""Concept noise levels: where in the noise schedule the target prompt says something its distractors don't.

The ascent pushes the model's prediction away from the target's samples. At a noise level where the
concept decides little (the object's outline, the layout), that push removes what the target shares
with its context, and the object goes with the style. So the ascent can be drawn only where the
concept carries information, measured rather than chosen:

* each target sample is noised at fixed noise, at ``bins`` levels spread over the schedule;
* its denoising loss under the target prompt is compared with its loss under the distractor prompts
  (the same line with the concept swapped, when paired), at the same noisy input;
* the gap ``mean_d L(x | distractor d) - L(x | target)`` per level is what the concept word explains
  there. The ascent's levels are drawn with probability proportional to that gap (levels where it is
  <= 0 are never drawn); a profile with no positive gap falls back to uniform levels.

Levels are ``percent`` of the schedule as ComfyUI counts it: 0 = the noisiest end, 1 = the cleanest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .seeds import offset_seed

BINS = 10
LO, HI = 0.001, 0.999
"""The range uniform training levels are drawn from (the ends of the schedule are left out)."""


@dataclass(frozen=True)
class LevelProfile:
    gaps: tuple[float, ...]
    """Per bin (noisiest first): mean loss under the distractor prompts minus loss under the target prompt."""
    probs: tuple[float, ...]
    """Per bin: the probability that an ascent sample is drawn there."""

    def mass_until(self, share: float = 0.9) -> float:
        """The noisiest fraction of the schedule that holds ``share`` of the ascent's draws."""
        total = 0.0
        for i, p in enumerate(self.probs):
            total += p
            if total >= share - 1e-9:
                return (i + 1) / len(self.probs)
        return 1.0


def bin_edges(bins: int) -> torch.Tensor:
    return torch.linspace(LO, HI, bins + 1)


def bin_centres(bins: int) -> torch.Tensor:
    """The middle level of each of ``bins`` equal parts of the schedule (noisiest first)."""
    edges = bin_edges(bins)
    return (edges[:-1] + edges[1:]) / 2


def draw_levels(probs: Sequence[float], count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` levels: a bin drawn with ``probs``, then a uniform point inside it."""
    p = torch.tensor(list(probs), dtype=torch.float64)
    b = torch.multinomial(p, count, replacement=True, generator=generator)
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    edges = bin_edges(len(p)).double()
    return (edges[b] + u * (edges[b + 1] - edges[b])).float()


def measure_profile(loss_fn: Callable, pairs: Sequence[tuple[str, torch.Tensor, Sequence[str]]], bins: int = BINS,
                    max_samples: int = 4, max_distractors: int = 4, seed: int = 0, chunk: int = 8,
                    on_call: Callable[[int, int], None] | None = None) -> LevelProfile:
    """The profile of one concept. ``pairs``: per target line, (target prompt, its samples, its
    distractor prompts); up to ``max_samples`` samples in all (one per line first) and the first
    ``max_distractors`` distractor prompts of each line are measured. ``loss_fn(x0, prompts, g,
    percents=...)`` is the training loss; it is called without gradients, in chunks of ``chunk`` rows.
    ``on_call(done, total)`` follows each call (progress); raising from it stops the measurement (Cancel)."""
    rows: list[tuple[torch.Tensor, str, list[str]]] = []
    for k in range(max_samples):
        for prompt, x, distractors in pairs:
            if len(rows) < max_samples and k < x.shape[0] and distractors:
                rows.append((x[k], prompt, list(distractors)[:max_distractors]))
    gaps = _gaps(loss_fn, rows, bins, seed, chunk, on_call) if rows else [0.0] * bins
    positive = [max(0.0, v) for v in gaps]
    total = sum(positive)
    probs = [v / total for v in positive] if total > 0 else [1.0 / bins] * bins
    return LevelProfile(tuple(gaps), tuple(probs))


def _gaps(loss_fn: Callable, rows: list[tuple[torch.Tensor, str, list[str]]], bins: int, seed: int, chunk: int,
          on_call: Callable[[int, int], None] | None) -> list[float]:
    """Per bin: the rows' mean loss under their distractor prompts minus under their own, at the same noise."""
    centres = bin_centres(bins)
    x = torch.stack([r[0] for r in rows]).repeat(bins, *([1] * rows[0][0].dim()))  # bin-major: every row at every level
    levels = centres.repeat_interleave(len(rows))
    width = max(len(r[2]) for r in rows)
    calls = [0, -(-x.shape[0] // chunk) * (1 + width)]  # done, total

    def loss(prompts: list[str]) -> torch.Tensor:
        out = []
        for a in range(0, x.shape[0], chunk):
            g = torch.Generator().manual_seed(offset_seed(seed, a))  # the same noise under every prompt
            out.append(loss_fn(x[a:a + chunk], prompts[a:a + chunk], g, percents=levels[a:a + chunk]))
            calls[0] += 1
            if on_call is not None:
                on_call(*calls)
        return torch.cat(out).float()

    with torch.no_grad():
        own = loss([r[1] for r in rows] * bins)
        other = torch.stack([loss([r[2][j % len(r[2])] for r in rows] * bins) for j in range(width)]).mean(0)
    return (other - own).view(bins, len(rows)).mean(1).tolist()
