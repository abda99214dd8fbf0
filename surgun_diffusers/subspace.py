"""``--text-subspace``: the chosen layers that read the prompt, confined to the text directions of the competition
(``surgun_core.subspace``), as SurgUn Train's input of that name; the other chosen layers train freely."""

from __future__ import annotations

from typing import Sequence

import torch

from surgun_core.errors import SurgUnError
from surgun_core.subspace import READS_PROMPT, competition_basis


def text_subspace(net: torch.nn.Module, family_name: str, encoder, plan_, modules: Sequence[str]) -> tuple[list[str], torch.Tensor, dict]:
    """``(layers trained, basis [D, r], metadata)``: of ``modules`` the ones that read the prompt's token
    embeddings (``encoder_hidden_states``) directly; each target line against its distractor prompts."""
    tokens = lambda p: encoder.cond(p)["encoder_hidden_states"][0].detach().float().cpu()  # noqa: E731
    dim = tokens(plan_.groups[0][0]).shape[-1]
    layers = dict(net.named_modules())
    reads = [n for n in modules if n.endswith(READS_PROMPT) and getattr(layers.get(n), "in_features", None) == dim]
    if not reads:
        raise SurgUnError(
            f"[SurgUn] --text-subspace confines the layers that read the prompt directly (cross-attention {' / '.join(READS_PROMPT)}, "
            f"as in SD1.x, SD2.x and SDXL), and none of the {len(modules)} chosen layers of this {family_name} model does. "
            "Use the cross_attention preset on a UNet model, or leave --text-subspace out."
        )
    kept = [*(p for _, ds in plan_.groups for p in ds.values()), *plan_.retain]
    basis = competition_basis(tokens, [(t, list(ds.values())) for t, ds in plan_.groups], kept)
    free = [n for n in modules if n not in reads]
    return ([basis if n in reads else None for n in modules],
            {"rank": int(basis.shape[1]), "dim": int(basis.shape[0]), "confined": reads, "free": free})
