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
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from .errors import SurgUnError

POOL_DIR = Path(__file__).resolve().parent / "pools"
KINDS = ("artist", "character", "object", "nsfw", "custom")
CUSTOM_TEMPLATE = "{x}"


@dataclass(frozen=True)
class Pool:
    kind: str
    template: str
    source: str
    entries: tuple[str, ...]


def load_pool(kind: str) -> Pool:
    """The built-in candidate pool of ``kind`` (``custom`` has an empty pool)."""
    if kind not in KINDS:
        raise SurgUnError(f"[SurgUn] unknown kind {kind!r}; choose one of {', '.join(KINDS)}.")
    if kind == "custom":
        return Pool("custom", CUSTOM_TEMPLATE, "no built-in pool; candidates come from the user", ())
    header, entries = {}, []
    for line in (POOL_DIR / f"{kind}.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            header[key.strip()] = value.strip()
        elif line.strip():
            entries.append(line.strip())
    return Pool(kind, header.get("template", "{x}"), header.get("source", ""), tuple(entries))


def load_alias_groups() -> list[list[str]]:
    groups = []
    for line in (POOL_DIR / "aliases.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            groups.append([n.strip() for n in line.split("|") if n.strip()])
    return groups


def aliases_of(name: str, groups: Sequence[Sequence[str]] | None = None) -> set[str]:
    """Lower-cased names listed as the same concept as ``name`` (including itself)."""
    key = name.strip().lower()
    out = {key}
    for group in load_alias_groups() if groups is None else groups:
        lowered = {g.lower() for g in group}
        if key in lowered:
            out |= lowered
    return out


def apply_template(template: str, x: str) -> str:
    """``template`` with ``{x}`` filled in, fixing "a" -> "an" before a vowel."""
    text = template.replace("{x}", x)
    return re.sub(r"\ba ([aeiouAEIOU])", r"an \1", text) if "a {x}" in template else text


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

    def validate(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise SurgUnError(f"[SurgUn] k (number of distractors) must be at least 1, got {self.k!r}.")
        if not (0.0 <= self.band_quantile < self.exclude_quantile <= 1.0):
            raise SurgUnError(
                f"[SurgUn] need 0 <= band_quantile < exclude_quantile <= 1, got band_quantile={self.band_quantile!r}, "
                f"exclude_quantile={self.exclude_quantile!r}."
            )


@dataclass
class DistractorSet:
    """The value of a DISTRACTORS socket: the chosen distractors and how they were chosen."""

    target: str
    target_prompt: str
    kind: str
    names: list[str]
    prompts: list[str]
    sim_to_target: list[float]
    pairwise: list[list[float]]
    params: dict
    thresholds: dict
    pool: dict
    encoder: str = ""
    removed: dict = field(default_factory=dict)

    def metadata(self) -> dict:
        d = asdict(self)
        d.pop("pairwise")
        d["mean_pairwise_distance"] = mean_pairwise_distance_from(self.pairwise)
        return d

    def preview(self) -> str:
        lines = [
            f"target: {self.target_prompt!r} ({self.kind}); {self.pool.get('admissible')} of {self.pool.get('size')} candidates admissible",
            f"thresholds: exclude sim >= {self.thresholds.get('exclude', float('nan')):.4f}, band sim >= {self.thresholds.get('band', float('nan')):.4f}",
        ]
        for i, (p, s) in enumerate(zip(self.prompts, self.sim_to_target)):
            others = [self.pairwise[i][j] for j in range(len(self.prompts)) if j != i]
            nearest = max(others) if others else float("nan")
            lines.append(f"{i + 1}. {p}  (sim to target {s:.3f}, max sim to others {nearest:.3f})")
        lines.append(f"mean pairwise cosine distance: {mean_pairwise_distance_from(self.pairwise):.4f}")
        return "\n".join(lines)


def mean_pairwise_distance_from(sim: Sequence[Sequence[float]]) -> float:
    n = len(sim)
    if n < 2:
        return 0.0
    total = sum(1.0 - sim[i][j] for i in range(n) for j in range(n) if i != j)
    return total / (n * (n - 1))


def mean_pairwise_distance(emb: torch.Tensor) -> float:
    """Mean cosine distance over distinct pairs of rows."""
    e = torch.nn.functional.normalize(emb.float(), dim=-1)
    sim = e @ e.T
    return mean_pairwise_distance_from(sim.tolist())


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
    params.validate()
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


class EmbeddingCache:
    """Prompt embeddings per text-encoder identity, so a pool is encoded once per encoder.

    With a ``directory`` the embeddings also persist across restarts: one safetensors file per
    encoder identity, read on first use and rewritten (atomically) when new prompts are encoded.
    """

    FORMAT = "surgun.embeddings/1"

    def __init__(self, max_encoders: int = 4, directory: str | None = None):
        self.max_encoders = max_encoders
        self.directory = directory
        self._store: dict[str, dict[str, torch.Tensor]] = {}

    def _path(self, encoder_id: str) -> Path | None:
        if not self.directory:
            return None
        return Path(self.directory) / (re.sub(r"[^A-Za-z0-9_.-]", "_", encoder_id) + ".safetensors")

    def _load(self, encoder_id: str, store: dict) -> None:
        path = self._path(encoder_id)
        if path is None or not path.is_file():
            return
        import json

        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != self.FORMAT or meta.get("encoder") != encoder_id:
                    return
                emb = f.get_tensor("embeddings")
            store.update(zip(json.loads(meta["prompts"]), emb))
        except Exception:  # a damaged cache file is only a cache: it is rebuilt
            return

    def _save(self, encoder_id: str, store: dict) -> None:
        path = self._path(encoder_id)
        if path is None or not store:
            return
        import json
        import os

        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        prompts = list(store)
        tmp = f"{path}.partial-{os.getpid()}"
        try:
            save_file({"embeddings": torch.stack([store[p] for p in prompts]).contiguous()}, tmp,
                      metadata={"format": self.FORMAT, "encoder": encoder_id, "prompts": json.dumps(prompts)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def embedder(self, encoder_id: str, encode: Callable[[list[str]], torch.Tensor]) -> Callable[[list[str]], torch.Tensor]:
        if encoder_id not in self._store:
            self._store[encoder_id] = {}
            self._load(encoder_id, self._store[encoder_id])
        store = self._store.pop(encoder_id)
        self._store[encoder_id] = store  # most recently used last
        while len(self._store) > self.max_encoders:
            self._store.pop(next(iter(self._store)))

        def embed(prompts: list[str]) -> torch.Tensor:
            missing = [p for p in dict.fromkeys(prompts) if p not in store]
            if missing:
                out = encode(missing)
                for p, e in zip(missing, out):
                    store[p] = e.detach().float().cpu()
                self._save(encoder_id, store)
            return torch.stack([store[p] for p in prompts])

        return embed

    def size(self, encoder_id: str) -> int:
        return len(self._store.get(encoder_id, {}))
