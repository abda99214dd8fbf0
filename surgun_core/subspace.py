"""Where in the prompt's embedding space an erasure may act: the text directions of the competition.

A layer that reads the prompt (cross-attention ``to_k``/``to_v``) maps each token embedding ``c`` to
``W c``. A trained delta ``dW`` changes the output for every prompt whose tokens have a component in
the rows of ``dW``, so training on the target's prompts also moves prompts it never saw (the object
under an erased style). :func:`editable_basis` picks the directions the erasure needs and the rest of
the prompts do not use:

    directions u where   mean_i (u . d_i)^2  >  mean_j (u . k_j)^2

with ``d_i = c_target - c_distractor`` the token-aligned differences of each target prompt and its
paired distractor prompts (what the competition separates) and ``k_j`` the tokens of the prompts the
run keeps (retain and distractor prompts). It is the generalised eigenproblem ``M_d u = l M_k u`` cut
at ``l = 1``: a fixed rule, no threshold to tune. :func:`confine_` then keeps each delta inside that
span (``dW <- dW Q Q^T``), so ``dW k = 0`` for any ``k`` orthogonal to it, whatever the optimiser did: a
prompt changes only through its tokens' components along those directions.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .errors import SurgUnError

READS_PROMPT = ("attn2.to_k", "attn2.to_v")
"""Cross-attention's key and value projections (UNet models: SD1.x, SD2.x, SDXL): their input is the prompt's
token embeddings, the same in ComfyUI's and diffusers' layer names."""
NO_PAIRS = "[SurgUn] text_subspace needs target prompts paired with distractor prompts, and none were given."


def prompt_readers(modules: Sequence[str], in_features: Callable[[str], int | None], dim: int, family_name: str,
                   option: str = "text_subspace", fix: str = "turn text_subspace off") -> list[str]:
    """The modules that read the prompt's token embeddings directly: named as :data:`READS_PROMPT` and taking
    ``dim`` inputs (``in_features(name)``). Refuses a choice with none, naming ``option`` and ``fix``."""
    reads = [n for n in modules if n.endswith(READS_PROMPT) and in_features(n) == dim]
    if not reads:
        raise SurgUnError(
            f"[SurgUn] {option} confines the layers that read the prompt directly (cross-attention {' / '.join(READS_PROMPT)}, "
            f"as in SD1.x, SD2.x and SDXL), and none of the {len(modules)} chosen layers of this {family_name} model does. "
            f"Choose the cross_attention preset on a UNet model, or {fix}."
        )
    return reads


def editable_basis(differences: torch.Tensor, kept: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Orthonormal columns ``[D, r]`` spanning the directions where the differences carry more mean
    energy than the kept tokens (see the module docstring). ``differences`` ``[N, D]``, ``kept``
    ``[M, D]``; ``ridge`` (relative to the kept tokens' mean energy) keeps the solve well posed where
    no kept token reaches (such directions count as editable: nothing kept uses them)."""
    if differences.ndim != 2 or kept.ndim != 2 or differences.shape[1] != kept.shape[1]:
        raise SurgUnError(f"[SurgUn] token differences {tuple(differences.shape)} and kept tokens {tuple(kept.shape)} do not match.")
    if differences.shape[0] == 0:
        raise SurgUnError(NO_PAIRS)
    d = differences.double()
    dim = d.shape[1]
    m_d = d.T @ d / d.shape[0]
    if kept.shape[0]:
        k = kept.double()
        m_k = k.T @ k / k.shape[0]
    else:
        m_k = torch.zeros(dim, dim, dtype=torch.double)
    scale = float(torch.trace(m_k)) / dim or float(torch.trace(m_d)) / dim or 1.0
    chol = torch.linalg.cholesky(m_k + ridge * scale * torch.eye(dim, dtype=torch.double))
    half = torch.linalg.solve_triangular(chol, m_d, upper=False)
    whitened = torch.linalg.solve_triangular(chol, half.T, upper=False)  # L^-1 M_d L^-T (symmetric)
    values, vectors = torch.linalg.eigh((whitened + whitened.T) / 2)
    chosen = vectors[:, values > 1.0]
    if chosen.shape[1] == 0:
        return torch.zeros(dim, 0, dtype=differences.dtype)
    directions = torch.linalg.solve_triangular(chol.T, chosen, upper=True)  # back from the whitened space
    q, _ = torch.linalg.qr(directions)
    return q.to(differences.dtype)


def confine_(tensors: Sequence[torch.Tensor], bases: Sequence[torch.Tensor | None],
             starts: Sequence[torch.Tensor | None] | None = None) -> None:
    """In place: each tensor ``[out, D]`` keeps, of its change from ``starts`` (zero when None), only the
    action on its basis' span (``W <- W0 + (W - W0) Q Q^T``); a None basis leaves its tensor as it is."""
    starts = list(starts) if starts is not None else [None] * len(tensors)
    with torch.no_grad():
        for t, q, s in zip(tensors, bases, starts):
            if q is None:
                continue
            q = q.to(device=t.device, dtype=t.dtype)  # a no-op where the caller already moved it (the training loop)
            change = t if s is None else t - s
            confined = (change @ q) @ q.T
            t.copy_(confined if s is None else s + confined)


def competition_basis(tokens: Callable[[str], torch.Tensor], pairs: Sequence[tuple[str, Sequence[str]]],
                      kept: Sequence[str]) -> torch.Tensor:
    """:func:`editable_basis` of a run: ``tokens(prompt)`` gives a prompt's token embeddings ``[T, D]`` as the
    layers read them; each ``(target, distractor prompts)`` pair gives the token-aligned differences; ``kept``
    lists the prompts the run keeps (retain and distractor prompts). Refuses a run with no such direction."""
    differences = []
    for target, distractors in pairs:
        t = tokens(target)
        for d in distractors:
            c = tokens(d)
            n = min(len(t), len(c))
            differences.append(t[:n] - c[:n])
    if not differences:
        raise SurgUnError(NO_PAIRS)
    rows = [tokens(p) for p in dict.fromkeys(kept)]
    basis = editable_basis(torch.cat(differences), torch.cat(rows) if rows else differences[0][:0])
    if basis.shape[1] == 0:
        raise SurgUnError(
            "[SurgUn] text_subspace found no text direction where the target prompts differ from their distractors more than the "
            "retain and distractor prompts vary, so nothing could be erased. Pair the target lines with their distractors "
            "(mark the concept in braces), or turn text_subspace off."
        )
    return basis
