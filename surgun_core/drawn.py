"""What the sampler draws for the target while it trains (``TrainConfig.ascent_until_erased``), renderer aside.

The probe's images start from noise the training never saw (its own seeds): ``images`` per set, shared out over the
target lines of each concept, at least one each, as the guard's probe does, in ``SETS`` sets. Every image of a set
starts from its own noise; a line's distractors start from that line's. Before the first step the untouched model
renders every set under each target line and under each of that line's distractors; each check renders the next
set's target lines with the weights as they are, cycling over the sets. A render is the sampler's prediction of the
finished image after the first ``last_step`` steps of the training sampler, where the style is decided. A render
nearer one of its distractors' images (centred cosine, as the readout) than its target's untouched image is no
longer drawn as the target.

Why its own noise, and why several sets (stop 37, the toy canvas demo, seed 1): renders from the training images'
own noise, and renders from one fixed set of 8 held-out noises, all read "not drawn" from step 60 on while the
finished model still drew neon in 22-23 % of its images: the training had unlearned those trajectories, or 8 images
missed a 22 % rate by chance ((1 - 0.22)^8 = 0.14). Read on 32 held-out images (4 sets) the probe gives that
model's rate exactly as the classifier does (0.22 and 0.19 at two seeds; seed 0's model 0.03 and 0.03).

Why its own noise for every image of a set (stop 38): up to stop 37 a set's image ``k`` of every line started from
the same noise, so with the toy demo's 8 lines and 8 images a set was one noise under 8 prompts, and the 4 sets 4
noises. Seed 7's checks read none from step 50 on while its finished model drew neon in 16-22 % of 32 images.

:class:`DrawnProbe` holds the sets, the references and the reading; a subclass renders (``surgun_comfy.drawn`` with
ComfyUI's sampler, ``surgun_diffusers.drawn`` with a deterministic sampler over the pipeline's denoiser).
"""

from __future__ import annotations

import torch

from .scores import centred_cosine
from .seeds import offset_seed
from .train import ConceptData

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


def nearer_target(render: torch.Tensor, target: torch.Tensor, distractors: torch.Tensor) -> torch.Tensor:
    """Per render ``[N, ...]``: whether it is nearer its target image ``[N, ...]`` than every one of its
    distractor images ``[N, K, ...]`` (centred cosine)."""
    d = torch.stack([centred_cosine(render, distractors[:, k]) for k in range(distractors.shape[1])], 1)
    return centred_cosine(render, target) > d.max(1).values


class DrawnProbe:
    """``probe(model)`` -> per concept, the fraction of its probe renders still drawn as the target; :meth:`reference`
    must run first, on the untouched model. Subclasses give :meth:`render` (per prompt, the prediction of its ``count``
    images from their noise) and :meth:`draw_noise`."""

    def __init__(self, data: list[ConceptData], seed: int, images: int = 8):
        per: dict[str, list[ConceptData]] = {}
        for d in data:
            if len(per.setdefault(d.concept, [])) < images:
                per[d.concept].append(d)
        self.lines = [d for group in per.values() for d in group]
        self.count = max(1, images // max(len(v) for v in per.values()))
        concept_of = [d.concept for d in self.lines for _ in range(self.count)]
        self.masks = {c: torch.tensor([k == c for k in concept_of]) for c in per}
        self.seeds = [offset_seed(seed, SEED_OFFSET + i) for i in range(SETS)]
        self.target: list[torch.Tensor] = []
        self.distractors: list[torch.Tensor] = []
        self.noise: list[list[torch.Tensor]] = []
        """Per set, per line: the starting noise of its ``count`` images."""
        self.checks = 0

    def render(self, model, prompts: list[str], seed: int, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per prompt, the sampler's prediction at its last step of the ``count`` probe images from ``noise[prompt]``."""
        raise NotImplementedError

    def draw_noise(self, n: int, seed: int) -> torch.Tensor:
        """``n`` starting noises from ``seed``."""
        raise NotImplementedError

    def reference(self, model) -> None:
        """The untouched model's images of every set, under every probe line and each line's distractors."""
        width = max(len(d.distractors) for d in self.lines)
        # lines with fewer distractors repeat their first one (a repeat changes no maximum)
        names = [(list(d.distractors) * width)[:width] for d in self.lines]
        for seed in self.seeds:
            drawn = self.draw_noise(len(self.lines) * self.count, seed)
            self.noise.append([drawn[j * self.count:(j + 1) * self.count] for j in range(len(self.lines))])
            target, distractors = [], []
            for d, ns, noise in zip(self.lines, names, self.noise[-1]):  # a line's distractors start from its noise
                prompts = list(dict.fromkeys([d.target_prompt, *ns]))
                got = self.render(model, prompts, seed, dict.fromkeys(prompts, noise))
                target.append(got[d.target_prompt])
                distractors.append(torch.stack([got[n] for n in ns], 1))
            self.target.append(torch.cat(target))
            self.distractors.append(torch.cat(distractors))

    def __call__(self, model) -> dict[str, float]:
        i, self.checks = self.checks % SETS, self.checks + 1
        prompts = [d.target_prompt for d in self.lines]
        got = self.render(model, prompts, self.seeds[i], dict(zip(prompts, self.noise[i])))
        still = nearer_target(torch.cat([got[p] for p in prompts]), self.target[i], self.distractors[i])
        return {c: float(still[m].float().mean()) for c, m in self.masks.items()}
