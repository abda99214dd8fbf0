"""SurgUn Train's ``text_subspace``: which layers read the prompt, and the text directions they may change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..surgun_core.pairing import Group
from ..surgun_core.subspace import competition_basis, prompt_readers


@dataclass(frozen=True)
class TextSubspace:
    confined: list[str]
    """The chosen layers that read the prompt: their change is confined to ``basis``."""
    free: list[str]
    """The chosen layers that do not: they train as without the option."""
    basis: torch.Tensor
    """``[D, r]`` orthonormal text directions the confined layers may act on."""

    @property
    def note(self) -> str:
        dim, rank = self.basis.shape
        return (f"text_subspace: the {len(self.confined)} layers that read the prompt (to_k, to_v) confined to {rank} of {dim} "
                f"text directions; {len(self.free)} other chosen layers train freely")

    def bases(self, modules: Sequence[str]) -> list[torch.Tensor | None]:
        """Per module, in order: the basis for a confined layer, None for a free one."""
        return [self.basis if n in self.confined else None for n in modules]

    def metadata(self) -> dict:
        return {"rank": int(self.basis.shape[1]), "dim": int(self.basis.shape[0]), "confined": list(self.confined),
                "free": list(self.free)}


def tokens(bank, prompt: str) -> torch.Tensor:
    """The prompt's token embeddings as cross-attention reads them, ``[T, D]``."""
    return bank.conditioning(prompt)[0][0][0].detach().float().cpu()


def text_subspace(model_patcher, bank, groups: Sequence[Group], modules: Sequence[str], family_name: str) -> TextSubspace:
    """Split ``modules`` into the layers that read the prompt (confined) and the rest (free), and measure the directions
    (:func:`surgun_core.subspace.competition_basis`): each target line against its distractor prompts, and
    every retain and distractor prompt kept."""
    import comfy.utils

    net = model_patcher.get_model_object("diffusion_model")
    dim = tokens(bank, groups[0].target).shape[-1]
    reads = prompt_readers(modules, lambda n: comfy.utils.get_attr(net, f"{n}.weight").shape[-1], dim, family_name)
    basis = competition_basis(lambda p: tokens(bank, p), [(g.target, g.distractors) for g in groups],
                              [p for g in groups for p in (*g.distractors, *g.retain)])
    return TextSubspace(reads, [n for n in modules if n not in reads], basis)
