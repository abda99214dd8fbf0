"""Distractor sets by an explicit, deterministic algorithm (no hand curation).

Given a target concept, a pool of candidate concepts of the same kind and a text encoder:

1. every candidate and the target are embedded *as prompts* (the kind's template applied), so
   similarity is measured where the diffusion model reads them;
2. the target, its listed aliases, candidates that contain the target's name (or are contained
   in it) and every protected entry are removed;
3. **exclusion threshold** (near-synonyms): candidates whose cosine similarity to the target is
   at or above the ``exclude_quantile`` of the pool's similarities are removed;
4. **kind band** (outer threshold): candidates below the ``band_quantile`` of the pool's
   similarities are too far to compete and are removed;
5. **greedy max-min (farthest-point) selection** among the admissible rest: start from the
   admissible candidate nearest to the target, then repeatedly add the candidate whose smallest
   cosine distance to the chosen set is largest.

Thresholds are quantiles of the similarity distribution of the pool at hand, not absolute
numbers, so they transfer between text encoders whose cosine scales differ. Steps 3-4 apply
only when at least ``min_pool_for_quantiles`` candidates are given; with a short hand-written
list only the explicit removals of step 2 apply. Everything is deterministic given pool,
encoder, K and seed; the seed only breaks exact ties (within ``tie_tol``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from ..errors import SurgUnError, short
from .pools import aliases_of, apply_template, load_alias_groups, load_pool
from .result import DistractorSet, DistractorSets


@dataclass(frozen=True)
class DistractorParams:
    k: int = 8
    exclude_quantile: float = 0.98
    """Candidates at least this similar to the target (as a quantile of the pool) are removed as near-synonyms. 1 = off."""
    band_quantile: float = 0.5
    """Candidates less similar than this quantile of the pool are outside the kind band. 0 = off."""
    seed: int = 0
    min_pool_for_quantiles: int = 20
    tie_tol: float = 1e-6

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise SurgUnError(f"[SurgUn] k (number of distractors) must be at least 1, got {self.k!r}.")
        if not (0.0 <= self.band_quantile < self.exclude_quantile <= 1.0):
            raise SurgUnError(
                f"[SurgUn] need 0 <= band_quantile < exclude_quantile <= 1, got band_quantile={self.band_quantile!r}, "
                f"exclude_quantile={self.exclude_quantile!r}."
            )


def _tie_priority(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).float()


def admissible_mask(sim_t: torch.Tensor, removed: torch.Tensor, params: DistractorParams) -> tuple[torch.Tensor, dict]:
    """Step 3-4: quantile thresholds on similarity to the target."""
    ok = ~removed
    thresholds = {"exclude": float("nan"), "band": float("nan"), "applied": False}
    remaining = sim_t[ok]
    if remaining.numel() >= params.min_pool_for_quantiles:
        exclude = torch.quantile(remaining, params.exclude_quantile).item() if params.exclude_quantile < 1 else float("inf")
        band = torch.quantile(remaining, params.band_quantile).item() if params.band_quantile > 0 else float("-inf")
        ok = ok & (sim_t < exclude) & (sim_t >= band)
        thresholds = {"exclude": exclude, "band": band, "applied": True}
    return ok, thresholds


def farthest_point(emb: torch.Tensor, sim_t: torch.Tensor, candidates: torch.Tensor, k: int, seed: int, tie_tol: float) -> list[int]:
    """Greedy max-min selection of ``k`` indices among ``candidates`` (a bool mask)."""
    e = torch.nn.functional.normalize(emb.float(), dim=-1)
    pri = _tie_priority(len(e), seed)
    idx = torch.nonzero(candidates).flatten()

    def pick(scores: torch.Tensor) -> int:
        best = scores.max()
        tied = idx[scores >= best - tie_tol]
        return int(tied[torch.argmax(pri[tied])])

    chosen = [pick(sim_t[idx])]
    min_dist = 1.0 - e[idx] @ e[chosen[0]]
    while len(chosen) < k:
        scores = min_dist.clone()
        scores[torch.isin(idx, torch.tensor(chosen))] = float("-inf")
        nxt = pick(scores)
        chosen.append(nxt)
        min_dist = torch.minimum(min_dist, 1.0 - e[idx] @ e[nxt])
    return chosen


def build_distractor_set(
    target: str,
    kind: str,
    embed: Callable[[list[str]], torch.Tensor],
    params: DistractorParams,
    candidates: Sequence[str] = (),
    use_pool: bool = True,
    protected: Sequence[str] = (),
    encoder_id: str = "",
) -> DistractorSet:
    """Choose ``params.k`` distractors for ``target`` (see the module docstring)."""
    target = (target or "").strip()
    if not target:
        raise SurgUnError("[SurgUn] target is empty. Type the concept to erase, e.g. 'Van Gogh' (artist) or 'Pikachu' (character).")
    pool = load_pool(kind)
    template = pool.template
    names: list[str] = []
    seen: set[str] = set()
    for n in [*(pool.entries if use_pool else ()), *candidates]:
        n = n.strip()
        if n and n.lower() not in seen:
            seen.add(n.lower())
            names.append(n)
    if not names:
        raise SurgUnError(
            "[SurgUn] there are no candidates: the built-in pool is off (or kind is 'custom') and no candidates were "
            "typed. Turn use_pool on, pick a kind with a pool, or list candidates one per line."
        )

    groups = load_alias_groups()
    aliases = aliases_of(target, groups)
    blocked = {p.strip().lower() for p in protected if p.strip()}
    tkey = target.lower()
    reasons: dict[str, str] = {}
    for n in names:
        low = n.lower()
        if low in aliases:
            reasons[n] = "target or alias"
        elif len(tkey) >= 3 and (tkey in low or (len(low) >= 3 and low in tkey)):
            reasons[n] = "contains the target name"
        elif low in blocked or aliases_of(n, groups) & blocked:
            reasons[n] = "protected"

    target_prompt = apply_template(template, target)
    prompts = [apply_template(template, n) for n in names]
    emb = embed(prompts)
    t_emb = embed([target_prompt])[0]
    if emb.shape[0] != len(names):
        raise SurgUnError(f"[SurgUn] the text encoder returned {emb.shape[0]} embeddings for {len(names)} prompts.")
    en = torch.nn.functional.normalize(emb.float(), dim=-1)
    sim_t = en @ torch.nn.functional.normalize(t_emb.float(), dim=-1)
    removed = torch.tensor([n in reasons for n in names])
    ok, thresholds = admissible_mask(sim_t, removed, params)
    n_ok = int(ok.sum())
    if n_ok < params.k:
        raise SurgUnError(
            f"[SurgUn] only {n_ok} admissible candidates for k={params.k} (pool of {len(names)}; "
            f"{int(removed.sum())} removed as target/aliases/protected, the rest outside the quantile band "
            f"[{params.band_quantile}, {params.exclude_quantile})). Lower k, lower band_quantile, raise "
            "exclude_quantile, or add candidates."
        )
    chosen = farthest_point(emb, sim_t, ok, params.k, params.seed, params.tie_tol)
    sub = en[chosen]
    return DistractorSet(
        target=target,
        target_prompt=target_prompt,
        kind=kind,
        names=[names[i] for i in chosen],
        prompts=[prompts[i] for i in chosen],
        sim_to_target=[float(sim_t[i]) for i in chosen],
        pairwise=(sub @ sub.T).tolist(),
        params=asdict(params),
        thresholds=thresholds,
        pool={"kind": kind, "size": len(names), "builtin": use_pool and bool(pool.entries), "user_candidates": len(candidates),
              "admissible": n_ok, "template": template, "source": pool.source,
              "digest": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]},
        encoder=encoder_id,
        removed={k: v for k, v in reasons.items()},
    )


def build_distractor_sets(
    targets: Sequence[str],
    kind: str,
    embed: Callable[[list[str]], torch.Tensor],
    params: DistractorParams,
    candidates: Sequence[str] = (),
    use_pool: bool = True,
    protected: Sequence[str] = (),
    encoder_id: str = "",
) -> DistractorSet | DistractorSets:
    """One set per target (several concepts erased in one run), each by :func:`build_distractor_set`
    with every other target (and its aliases) protected, so no concept is trained toward while it is
    erased. One target gives a plain :class:`DistractorSet`."""
    targets = [t.strip() for t in targets if t and t.strip()]
    groups = load_alias_groups()
    for i, t in enumerate(targets):
        for j in range(i):
            if t.lower() == targets[j].lower() or t.lower() in aliases_of(targets[j], groups):
                raise SurgUnError(
                    f"[SurgUn] target lists the concept {short(targets[j])} twice (lines {j + 1} and {i + 1}: "
                    f"{short(t)}). Remove line {i + 1}: each concept is erased once, with all its phrasings."
                )
    if len(targets) <= 1:
        return build_distractor_set(targets[0] if targets else "", kind, embed, params, candidates, use_pool, protected, encoder_id)
    return DistractorSets(tuple(
        build_distractor_set(t, kind, embed, params, candidates, use_pool, [*protected, *(o for o in targets if o != t)], encoder_id)
        for t in targets))
