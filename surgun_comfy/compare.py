"""Erase/Retain Compare on ComfyUI objects: before/after renders with the same seeds, and scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..surgun_core.errors import SurgUnError, require_number
from ..surgun_core.grid_labels import GridRow, labelled_grid
from ..surgun_core.pairing import plan_groups
from ..surgun_core.scores import erase_score, retain_score
from ..surgun_core.seeds import offset_seed
from .families import detect_family
from .progress import NodeProgress
from .render import Renderer, image_embedder


@dataclass(frozen=True)
class CompareRequest:
    target: str
    retain: tuple[str, ...]
    distractors: tuple[str, ...]
    """Distractor names put into the target's slot (concept in braces), or prompts (see :mod:`surgun_core.pairing`)."""
    concept: str = ""
    distractor_prompts: tuple[str, ...] = ()
    images_per_prompt: int = 4
    steps: int = 20
    size: int = 512
    cfg: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.target.strip():
            raise SurgUnError("[SurgUn] target is empty. Type the prompt of the erased concept.")
        for name in ("images_per_prompt", "steps", "size"):
            require_number(name, getattr(self, name), lo=1)
        require_number("cfg", self.cfg, 0, 100, "Try 5.0 (1.0 for Flux).")


def compare_grid(target: str, before: dict, after: dict, scores: dict, retain: tuple[str, ...]) -> torch.Tensor:
    """The labelled grid: target before/after, then each retain prompt before/after, each row with
    its prompt on the left and its scores on the right (surgun_core/grid_labels.py)."""
    rows = [GridRow(target, "before", before[target], "erased prompt"),
            GridRow(target, "after", after[target],
                    f"erase {scores['erase']:.3f}\naway {scores['away']:.3f}\ntoward {scores['toward']:.3f}")]
    for r in retain:
        s = scores["retain_prompts"][r]
        rows += [GridRow(r, "before", before[r], "retain prompt"),
                 GridRow(r, "after", after[r], f"retain {s['retain']:.3f}\nembed {s['retain_embed']:.3f}\nssim {s['retain_ssim']:.3f}")]
    title = f"SurgUn Erase/Retain Compare: erase {scores['erase']:.3f}" + (
        f", retain {scores['retain']:.3f}" if retain else "") + " (same seeds before and after)"
    notes = ["erase: mean of away (1 - cosine to the original image) and toward (moved toward the distractors' images); 0 = unchanged",
             "retain: mean of embedding cosine and SSIM to the original image; 1 = unchanged",
             f"embedding: {scores['embedding']}"]
    return labelled_grid(rows, title=title, notes=notes)


def compare(original, erased, clip, vae, clip_vision, req: CompareRequest, node_id: str | None = None) -> tuple[torch.Tensor, dict]:
    """The labelled grid (target before/after, then each retain prompt before/after) and the scores."""
    family = detect_family(original)
    if detect_family(erased).id != family.id:
        raise SurgUnError(f"[SurgUn] original ({family.name}) and erased ({detect_family(erased).name}) are different model families.")
    renderer = Renderer.for_model(original, clip, family, req.size, req.images_per_prompt, req.steps, req.cfg)
    group = plan_groups([req.target], req.distractors, req.retain, req.distractor_prompts, req.concept)[0]
    target, retain = group.target, group.retain
    renderer.bank.check_lengths({"target": (target,), "retain_prompts": retain, "distractors": group.distractors})
    note = renderer.size_note("size", req.size)
    # identical batches (hence identical noise) before and after
    shown = renderer.plan([target, *retain])
    others = renderer.plan(group.distractors) if group.distractors else []
    progress = NodeProgress(2 * renderer.cost(shown) + renderer.cost(others), node_id)
    renderer.tick = progress.tick

    embed, embed_name = image_embedder(clip_vision)
    before, after = renderer.images(original, vae, shown, req.seed), renderer.images(erased, vae, shown, req.seed)
    d_emb = torch.cat([embed(x) for x in renderer.images(original, vae, others, offset_seed(req.seed, 1000)).values()]) if others else None
    scores = {"embedding": embed_name, "target": target, "size": renderer.pixels, "notes": [note] if note else [],
              **erase_score(embed(after[target]), embed(before[target]), d_emb), "retain_prompts": {}}
    for r in retain:
        b, a = before[r], after[r]
        scores["retain_prompts"][r] = retain_score(embed(a), embed(b), a, b)
    if retain:
        scores["retain"] = sum(p["retain"] for p in scores["retain_prompts"].values()) / len(retain)
    progress.chart("compare", {k: scores[k] for k in ("erase", "away", "toward", "retain", "embedding") if k in scores}
                   | {"target": target, "retain_prompts": {p: s["retain"] for p, s in scores["retain_prompts"].items()}})
    return compare_grid(target, before, after, scores, retain), scores
