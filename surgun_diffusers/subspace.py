"""``--text-subspace``: the chosen layers that read the prompt, confined to the text directions of the competition
(``surgun_core.subspace``), as SurgUn Train's input of that name; the other chosen layers train freely."""

from __future__ import annotations

from typing import Sequence

import torch

from surgun_core.subspace import competition_basis, prompt_readers


def text_subspace(net: torch.nn.Module, family_name: str, encoder, plan_,
                  modules: Sequence[str]) -> tuple[list[torch.Tensor | None], dict]:
    """``(per module its basis [D, r] or None, metadata)``: the modules that read the prompt's token embeddings
    (``encoder_hidden_states``) directly are confined; each target line against its distractor prompts."""
    tokens = lambda p: encoder.cond(p)["encoder_hidden_states"][0].detach().float().cpu()  # noqa: E731
    dim = tokens(plan_.groups[0][0]).shape[-1]
    layers = dict(net.named_modules())
    reads = prompt_readers(modules, lambda n: getattr(layers.get(n), "in_features", None), dim, family_name,
                           "--text-subspace", "leave --text-subspace out")
    kept = [*(p for _, ds in plan_.groups for p in ds.values()), *plan_.retain]
    basis = competition_basis(tokens, [(t, list(ds.values())) for t, ds in plan_.groups], kept)
    free = [n for n in modules if n not in reads]
    return ([basis if n in reads else None for n in modules],
            {"rank": int(basis.shape[1]), "dim": int(basis.shape[0]), "confined": reads, "free": free})
