"""What the sampler draws for the target while it trains (``TrainConfig.ascent_until_erased``).

The probe's images start from noise the training never saw (its own seeds; shared noise, so image ``k`` of every
prompt starts from the same noise): ``images`` per set, shared out over the target lines of each concept, at least
one each, as the guard's probe does, in ``SETS`` sets. Before the first step the untouched model renders every set
under each target line and under each of that line's distractors; each check renders the next set's target lines
with the weights as they are, cycling over the sets. A render is the sampler's prediction of the finished image
after the first ``last_step`` steps of the training sampler, where the style is decided. A render nearer one of its
distractors' images (centred cosine, as the readout) than its target's untouched image is no longer drawn as the
target.

Why its own noise, and why several sets (stop 37, the toy canvas demo, seed 1): renders from the training images'
own noise, and renders from one fixed set of 8 held-out noises, all read "not drawn" from step 60 on while the
finished model still drew neon in 22-23 % of its images: the training had unlearned those trajectories, or 8 images
missed a 22 % rate by chance ((1 - 0.22)^8 = 0.14). Read on 32 held-out images (4 sets) the probe gives that
model's rate exactly as the classifier does (0.22 and 0.19 at two seeds; seed 0's model 0.03 and 0.03).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..surgun_core.seeds import offset_seed
from ..surgun_core.train import ConceptData
from .prompts import plan_batches, stack

DECIDED = 0.4
"""The part of the sampler's steps a render runs: on the toy canvas model the first 8 of 20 steps decide the style
(stop 34, ``scripts/demo.sh --probe``), so the prediction there shows what the finished image will be."""

SEED_OFFSET = 31
"""The probe's set ``i`` renders from the training seed plus this plus ``i``: not the training images' noise (the
seed itself), nor the readout's (plus 17)."""

SETS = 4
"""Probe sets, one read per check in turn (with the guard's 8 images a set, 32 images in all)."""


def decided_by(steps: int) -> int:
    return max(1, round(DECIDED * steps))


def _centred(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).float()
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)


def nearer_target(render: torch.Tensor, target: torch.Tensor, distractors: torch.Tensor) -> torch.Tensor:
    """Per render ``[N, ...]``: whether it is nearer its target image ``[N, ...]`` than every one of its
    distractor images ``[N, K, ...]`` (centred cosine)."""
    r = _centred(render)
    t = (r * _centred(target)).sum(1)
    d = torch.stack([(r * _centred(distractors[:, k])).sum(1) for k in range(distractors.shape[1])], 1)
    return t > d.max(1).values


class DrawnProbe:
    """``probe(model_patcher)`` -> per concept, the fraction of its probe renders still drawn as the target;
    :meth:`reference` must run first, on the untouched model. ``extend(n)`` is told each render's sampler steps before
    it starts and ``tick()`` follows each of them (the node's progress bar: raising from it stops, so Cancel works)."""

    extend: Callable[[int], None] | None = None
    tick: Callable[[], None] | None = None

    def __init__(self, bank, data: list[ConceptData], steps: int, last_step: int, cfg: float, sampler: str, scheduler: str,
                 seed: int, images: int = 8):
        per: dict[str, list[ConceptData]] = {}
        for d in data:
            if len(per.setdefault(d.concept, [])) < images:
                per[d.concept].append(d)
        self.lines = [d for group in per.values() for d in group]
        self.count = max(1, images // max(len(v) for v in per.values()))
        self.concepts = list(per)
        self.concept_of = [d.concept for d in self.lines for _ in range(self.count)]
        self.bank, self.steps, self.last_step, self.cfg = bank, steps, max(1, min(last_step, steps)), cfg
        self.sampler, self.scheduler = sampler, scheduler
        self.seeds = [offset_seed(seed, SEED_OFFSET + i) for i in range(SETS)]
        self.target: list[torch.Tensor] = []
        self.distractors: list[torch.Tensor] = []
        self.checks = 0

    def render(self, model_patcher, prompts: list[str], seed: int) -> dict[str, torch.Tensor]:
        """Per prompt, the sampler's prediction of its ``count`` probe images from ``seed`` at ``last_step``
        (ComfyUI's latent space), rendered in batches of prompts that stack."""
        import comfy.sample

        noise = comfy.sample.prepare_noise(torch.zeros((self.count, *self.bank.latent_shape)), seed)
        negative = self.bank.conditioning("")
        out: dict[str, torch.Tensor] = {}
        batches = plan_batches(self.bank, prompts, self.count)
        if self.extend is not None:
            self.extend(len(batches) * self.last_step)
        for batch in batches:
            seen: dict[str, torch.Tensor] = {}

            def callback(step, x0, x, total):
                seen["x0"] = x0
                if self.tick is not None:
                    self.tick()

            n = len(batch) * self.count
            with torch.no_grad():
                comfy.sample.sample(model_patcher, noise.repeat(len(batch), 1, 1, 1), self.steps, self.cfg, self.sampler,
                                    self.scheduler, stack([self.bank.conditioning(p) for p in batch], self.count), negative,
                                    torch.zeros((n, *self.bank.latent_shape)), seed=seed, last_step=self.last_step,
                                    callback=callback, disable_pbar=True)
            x0 = model_patcher.model.process_latent_out(seen["x0"]).float().cpu()
            for j, p in enumerate(batch):
                out[p] = x0[j * self.count:(j + 1) * self.count]
        return out

    def reference(self, model_patcher) -> None:
        """The untouched model's images of every set, under every probe line and each line's distractors."""
        width = max(len(d.distractors) for d in self.lines)
        # lines with fewer distractors repeat their first one (a repeat changes no maximum)
        names = [(list(d.distractors) * width)[:width] for d in self.lines]
        prompts = list(dict.fromkeys([*(d.target_prompt for d in self.lines), *(n for ns in names for n in ns)]))
        for seed in self.seeds:
            got = self.render(model_patcher, prompts, seed)
            self.target.append(torch.cat([got[d.target_prompt] for d in self.lines]))
            self.distractors.append(torch.cat([torch.stack([got[n] for n in ns], 1) for ns in names]))

    def __call__(self, model_patcher) -> dict[str, float]:
        i, self.checks = self.checks % SETS, self.checks + 1
        got = self.render(model_patcher, [d.target_prompt for d in self.lines], self.seeds[i])
        still = nearer_target(torch.cat([got[d.target_prompt] for d in self.lines]), self.target[i], self.distractors[i])
        return {c: float(still[torch.tensor([k == c for k in self.concept_of])].float().mean()) for c in self.concepts}
