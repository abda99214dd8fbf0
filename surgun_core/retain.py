"""How often each retain prompt is drawn: the ones the erasure endangers first, most often.

An edit to the target's text pathway reaches first the prompts the text encoder puts near the target.
On the toy canvas (erasing the object ``square``, whose distractors include its neighbour ``circle``)
circles turned into rings while far shapes were untouched; in one diagnostic run (seed 0, lr 1e-3,
distractors also retained) drawing the retain prompts nearest the target more often kept both related
shapes (16 of 16 each). Not yet measured through the node, so SurgUn Train has it off by default.

:func:`nearest_first` ranks a group's retain prompts by the cosine similarity of their text
embeddings to the target prompt's and gives rank ``r`` (1 = nearest) the weight ``1/r``, normalised:
a fixed rule with no parameter to tune. The training loop draws ``retain_per_step`` prompts a step
without replacement with these probabilities (``ConceptData.retain_weights``).
"""

from __future__ import annotations

import torch

from .errors import SurgUnError


def nearest_first(target: torch.Tensor, retain: torch.Tensor) -> list[float]:
    """Draw probabilities for the rows of ``retain`` ``[N, D]`` given the target's embedding ``[D]``:
    ``1/rank`` by cosine similarity to the target (nearest first; equal similarities keep their order),
    summing to 1."""
    if retain.ndim != 2 or target.ndim != 1 or retain.shape[1] != target.shape[0]:
        raise SurgUnError(f"[SurgUn] retain embeddings {tuple(retain.shape)} and the target's {tuple(target.shape)} do not match.")
    if retain.shape[0] == 0:
        return []
    sim = torch.nn.functional.cosine_similarity(retain.float(), target.float()[None], dim=-1, eps=1e-8)
    order = sorted(range(len(sim)), key=lambda i: (-float(sim[i]), i))
    weights = [0.0] * len(order)
    for rank, i in enumerate(order, start=1):
        weights[i] = 1.0 / rank
    total = sum(weights)
    return [w / total for w in weights]
