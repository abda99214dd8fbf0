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
