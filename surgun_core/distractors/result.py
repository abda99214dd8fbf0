"""The value of a DISTRACTORS socket: the chosen distractors and how they were chosen."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch


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


@dataclass(frozen=True)
class DistractorSets:
    """The value of a DISTRACTORS socket for several targets (erased in one run): one set each."""

    sets: tuple[DistractorSet, ...]

    @property
    def target(self) -> str:
        return ", ".join(s.target for s in self.sets)

    @property
    def target_prompt(self) -> str:
        """One target prompt per line (what SurgUn Train trains when its target field is empty)."""
        return "\n".join(s.target_prompt for s in self.sets)

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(n for s in self.sets for n in s.names))

    @property
    def prompts(self) -> list[str]:
        return list(dict.fromkeys(p for s in self.sets for p in s.prompts))

    def metadata(self) -> dict:
        return {"sets": [s.metadata() for s in self.sets]}

    def preview(self) -> str:
        n = len(self.sets)
        return "\n\n".join(f"[{i + 1}/{n}] " + s.preview() for i, s in enumerate(self.sets))


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
