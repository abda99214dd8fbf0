"""The ascent guard: gradient ascent is unbounded, so it is stopped at a stated multiple of the
target's untouched denoising loss, measured on a fixed probe.

The probe is a fixed set of the target's own samples (one per target line, up to ``max_samples``), each
at fixed noise (drawn once from a seeded generator and replayed at every measurement) and at fixed noise
levels spread evenly over the schedule: its ``samples x draws`` points sit at the centres of as many equal
parts of the schedule, each sample at ``draws`` of them, far apart. So two measurements differ only
because the weights changed, and every measurement covers the whole schedule. A single training step's
loss is a poor measure: on a real model the denoising loss varies several-fold across noise levels, and
the ascent raises it at some levels far more than at others (on the toy canvas model x4-x6 in the noisiest
tenth, x1.0-x1.3 elsewhere). The probe before stop 31 (4 samples, each at 2 levels drawn at random) read one
erased model anywhere from x1.07 to x7.5 of its reference depending on its seed (sd 2.25 over 20 seeds,
against x2.20 measured per level on fresh samples); this one (8 samples, 16 spread levels) x1.6 to x3.3
(sd 0.42, mean x2.27; ``scripts/bench.sh toy_canvas.level_ratio --probe-seeds 20``).

* ``reference``: the probe's loss with the untouched weights; ``cap = multiple * reference``.
* The probe is measured every ``every`` steps (on the toy canvas model about 17 % of a step's cost, amortised). The weights at the
  last measurement below the cap are kept.
* When a measurement finds the probe at or above the cap, the ascent stops (the distractor and
  retain terms go on) and the caller clears the optimiser's state, so the momentum built up by the
  ascent does not carry it on. If the probe went more than 10 % past the cap (a large step), the
  weights are moved back along the last stretch, between the kept weights and the current ones,
  by bisection on the probe, until it lies within [cap, 1.1 cap] (or just below the cap when no
  point of the stretch does). So the ascent stops within 10 % of the stated multiple whatever the
  learning rate.
* While stopped, the probe is measured every ``every / 5`` steps (those steps carry no target
  sample, which pays for a small part of it: on the toy canvas model one measurement of the 16 rows costs
  about 1.7 training steps, so a stopped step costs about 1.85x); if the other terms bring it back below 90 % of the cap, the ascent
  resumes. The cap holds as a ceiling for the whole run without
  the erasure fading once the ascent is off.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .errors import NonFiniteLossError
from .levels import bin_centres
from .seeds import offset_seed

LossFn = Callable[..., torch.Tensor]
"""``loss_fn(x0, prompts, generator, percents=levels)``: per-sample loss, each sample noised at its level
(percent of the schedule, 0 = the noisiest end) with noise drawn from the generator."""


class AscentGuard:
    def __init__(self, loss_fn: LossFn, targets: Sequence[tuple[str, torch.Tensor]], multiple: float,
                 params: Sequence[torch.Tensor] = (), every: int = 10, draws: int = 2, max_samples: int = 8, seed: int = 0):
        """``targets``: (target prompt, its samples) per group; up to ``max_samples`` samples in
        all are probed, each at ``draws`` fixed noise levels (spread over the schedule, see :meth:`levels`)."""
        per_group = max(1, max_samples // max(1, len(targets)))
        picked = [(p, x[:per_group]) for p, x in targets][:max_samples]
        self.x0 = torch.cat([x for _, x in picked])
        self.prompts = [p for p, x in picked for _ in range(x.shape[0])]
        self.loss_fn, self.multiple, self.every, self.draws, self.seed = loss_fn, multiple, max(1, every), draws, offset_seed(seed, 7919)
        self.history: list[tuple[int, float]] = []
        """(step, probe loss / reference) at every measurement."""
        self.stops: list[int] = []
        """The steps at which the probe reached the cap and the ascent stopped."""
        self.active = True
        """Whether the ascent is on."""
        self.params = list(params)
        self._levels = bin_centres(self.x0.shape[0] * self.draws).view(self.draws, self.x0.shape[0])
        self.reference = self.measure()
        if not math.isfinite(self.reference) or self.reference <= 0:
            raise NonFiniteLossError(0, {"target_probe": self.reference})
        self.history.append((0, 1.0))
        self._kept = self._copy()

    @property
    def cap(self) -> float:
        return self.multiple * self.reference

    @property
    def ratio(self) -> float:
        """The last measured probe loss as a multiple of the reference."""
        return self.history[-1][1]

    def levels(self, draw: int) -> torch.Tensor:
        """Each probe sample's noise level in draw ``draw``: the ``samples x draws`` points sit at the centres of as
        many equal parts of the schedule (percent, 0 = the noisiest end); sample ``i`` takes part ``i + draw * samples``."""
        return self._levels[draw]

    def measure(self) -> float:
        """The probe's mean loss now: the same samples, noise and levels every time."""
        g = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            return float(torch.stack([self.loss_fn(self.x0, self.prompts, g, percents=self.levels(d)).mean()
                                      for d in range(self.draws)]).mean())

    def due(self, step: int) -> bool:
        # while stopped the steps carry no target sample, which pays for part of measuring five times as often
        return step % (self.every if self.active else max(1, self.every // 5)) == 0

    def after_step(self, step: int) -> bool:
        """Measure when due; returns True at a step where the ascent stops."""
        if not self.due(step):
            return False
        ratio = self.measure() / self.reference
        if not self.active:
            self.history.append((step, ratio))
            if ratio < 0.9 * self.multiple:
                self.active, self._kept = True, self._copy()
            return False
        if ratio < self.multiple:
            self.history.append((step, ratio))
            self._kept = self._copy()
            return False
        if ratio > 1.1 * self.multiple and self.params:
            ratio = self._settle()
        self.history.append((step, ratio))
        self.stops.append(step)
        self.active, self._kept = False, None
        return True

    def watch(self, step: int) -> None:
        """Measure when due and record it, without stopping or moving anything (something else holds the ascent
        off, ``TrainConfig.ascent_until_erased``); :meth:`resume` hands control back."""
        self.active, self._kept = False, None
        if step % self.every == 0:
            self.history.append((step, self.measure() / self.reference))

    def resume(self) -> None:
        """After :meth:`watch`: the ascent is back on from the weights as they are, if the last measurement is
        below the cap (else it stays off until the probe falls below 90 % of it, as after a stop)."""
        if self.ratio < self.multiple:
            self.active, self._kept = True, self._copy()

    def _copy(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def _settle(self, iterations: int = 12) -> float:
        """Move the weights back along the stretch from the kept weights to the current ones until the
        probe lies within [cap, 1.1 cap]; returns the probe ratio there."""
        end = self._copy()
        lo, hi, best = 0.0, 1.0, (0.0, self.history[-1][1])

        def place(alpha: float) -> float:
            with torch.no_grad():
                for p, a, b in zip(self.params, self._kept, end):
                    p.copy_(a + alpha * (b - a))
            return self.measure() / self.reference

        for _ in range(iterations):
            mid = (lo + hi) / 2
            ratio = place(mid)
            if self.multiple <= ratio <= 1.1 * self.multiple:
                return ratio
            if ratio < self.multiple:
                lo, best = mid, (mid, ratio)
            else:
                hi = mid
        return place(best[0])
