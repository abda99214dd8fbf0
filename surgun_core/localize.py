"""Pixel-grounded localisation: which attention blocks should SurgUn train?

For each candidate block, starting each time from the untouched weights, a short SurgUn update
is applied to that block alone (``probe``), images are rendered for the target and the retain
prompts with fixed seeds and decoded to pixels, and two scores are computed against the
original model's images (see :mod:`surgun_core.scores`). Suppression works in almost any block;
retention only in some. Blocks that reach the erase threshold are ranked by retain and the
top-k are kept.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from .errors import SurgUnError, require_number
from .scores import erase_score, retain_score

# probe(block) -> {"target": images, "retain": images}, rendered after a short update of that
# block alone; the probe restores the weights itself.
Probe = Callable[[str], dict]
Embed = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SelectConfig:
    keep: int = 4
    erase_quantile: float = 0.5
    """Blocks must reach this quantile of the erase scores (ignored when erase_threshold is set)."""
    erase_threshold: float | None = None
    """An absolute erase threshold that replaces the quantile."""
    near_tie: float = 0.01
    """Retain scores within this of the last kept block are reported as near-ties."""

    def __post_init__(self) -> None:
        if not isinstance(self.keep, int) or self.keep < 1:
            raise SurgUnError(f"[SurgUn] keep must be at least 1, got {self.keep!r}.")
        require_number("erase_quantile", self.erase_quantile, 0.0, 1.0)
        if self.erase_threshold is not None:
            require_number("erase_threshold", self.erase_threshold, lo=0.0, fix="Use -1 on the node to use erase_quantile instead.")

    def check_candidates(self, n_blocks: int) -> None:
        """``keep`` against the number of candidate blocks (known once the model is read)."""
        if n_blocks < 1:
            raise SurgUnError(
                "[SurgUn] there are no candidate blocks to probe. Pick another granularity, or check that the model has "
                "attention blocks (block_filter may exclude all of them)."
            )
        if self.keep > n_blocks:
            raise SurgUnError(
                f"[SurgUn] keep={self.keep} but there are {n_blocks} candidate blocks. Set keep between 1 and {n_blocks}, "
                "or probe more blocks (raise max_blocks)."
            )


@dataclass
class BlockRow:
    block: str
    erase: float
    retain: float
    away: float = 0.0
    toward: float = 0.0
    retain_embed: float = 0.0
    retain_ssim: float = 0.0
    chosen: bool = False
    near_tie: bool = False
    update_s: float = 0.0
    render_s: float = 0.0


@dataclass
class LocalizeResult:
    rows: list[BlockRow]
    erase_threshold: float
    retain_cutoff: float
    embedding: str
    config: dict = field(default_factory=dict)
    reference_s: float = 0.0

    @property
    def chosen(self) -> list[str]:
        return [r.block for r in self.rows if r.chosen]

    def table(self) -> list[dict]:
        return [asdict(r) for r in self.rows]

    def to_json(self) -> str:
        return json.dumps({
            "chosen": self.chosen, "erase_threshold": self.erase_threshold, "retain_cutoff": self.retain_cutoff,
            "embedding": self.embedding, "config": self.config, "reference_s": self.reference_s, "blocks": self.table(),
        }, indent=1)


def select_blocks(rows: list[BlockRow], config: SelectConfig) -> tuple[float, float]:
    """Mark ``chosen`` and ``near_tie`` on ``rows``; returns (erase threshold, retain of the last kept block)."""
    config.check_candidates(len(rows))
    erase = torch.tensor([r.erase for r in rows])
    if config.erase_threshold is not None:
        threshold = float(config.erase_threshold)
    else:
        threshold = float(torch.quantile(erase, config.erase_quantile))
    eligible = [r for r in rows if r.erase >= threshold]
    if not eligible:
        best = max(r.erase for r in rows)
        raise SurgUnError(
            f"[SurgUn] no block reaches the erase threshold {threshold:.4g} (best erase score {best:.4g}). "
            "Lower erase_threshold, or use the quantile (leave erase_threshold at -1), or raise probe_steps."
        )
    # fewer than `keep` may qualify (with an absolute threshold): only qualifying blocks are kept
    ranked = sorted(eligible, key=lambda r: (-r.retain, -r.erase, r.block))
    kept = ranked[: config.keep]
    for r in kept:
        r.chosen = True
    cutoff = kept[-1].retain
    for r in ranked[config.keep:]:
        r.near_tie = abs(r.retain - cutoff) <= config.near_tie
    return threshold, cutoff


def localize(
    blocks: Sequence[str],
    probe: Probe,
    embed: Embed,
    reference: dict,
    config: SelectConfig,
    embedding_name: str,
    on_block: Callable[[int, int, BlockRow], None] | None = None,
) -> LocalizeResult:
    """Probe every block, score it, select the top-k (see module docstring).

    ``reference`` holds the original model's images: ``target``, ``retain`` and ``distractors``.
    """
    config.check_candidates(len(blocks))
    ref_t = embed(reference["target"])
    ref_r = embed(reference["retain"])
    ref_d = embed(reference["distractors"]) if reference.get("distractors") is not None else None
    rows = []
    for i, block in enumerate(blocks):
        t0 = time.perf_counter()
        out = probe(block)
        total = time.perf_counter() - t0
        e = erase_score(embed(out["target"]), ref_t, ref_d)
        r = retain_score(embed(out["retain"]), ref_r, out["retain"], reference["retain"])
        if not all(math.isfinite(v) for v in (*e.values(), *r.values())):
            raise SurgUnError(f"[SurgUn] probing {block!r} produced non-finite images; lower probe_lr.")
        row = BlockRow(block=block, **e, **r, update_s=out.get("update_s", 0.0), render_s=out.get("render_s", total))
        rows.append(row)
        if on_block is not None:
            on_block(i + 1, len(blocks), row)
    threshold, cutoff = select_blocks(rows, config)
    return LocalizeResult(rows, threshold, cutoff, embedding_name, asdict(config))


def report_image(result: LocalizeResult, width: int = 900, bar_h: int = 18):
    """A bar chart: one row per block with its erase and retain bars, chosen blocks marked,
    the erase threshold drawn. Returns a float tensor ``[1, H, W, 3]`` (ComfyUI IMAGE)."""
    from PIL import Image, ImageDraw

    rows = result.rows
    label_w, pad, num_w = 330, 6, 52
    plot_w = (width - label_w - 3 * pad - 2 * num_w) // 2
    height = 60 + len(rows) * (bar_h + 4)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 6), f"SurgUn Block Localizer ({result.embedding})", fill="black")
    x_erase, x_retain = label_w, label_w + plot_w + num_w + pad
    d.text((x_erase, 24), "erase ->", fill=(180, 40, 40))
    d.text((x_retain, 24), "retain ->", fill=(40, 90, 180))
    e_max = max([abs(r.erase) for r in rows] + [abs(result.erase_threshold), 1e-6])
    y = 44
    for r in rows:
        mark = "*" if r.chosen else ("~" if r.near_tie else " ")
        d.text((pad, y + 2), f"{mark} {r.block[-46:]}", fill="black" if r.chosen else (90, 90, 90))
        ew = int(plot_w * max(0.0, r.erase) / e_max)
        d.rectangle([x_erase, y, x_erase + ew, y + bar_h], fill=(200, 60, 60) if r.chosen else (230, 170, 170))
        d.text((x_erase + plot_w + 4, y + 3), f"{r.erase:.3g}", fill="black")
        rw = int(plot_w * min(1.0, max(0.0, r.retain)))
        d.rectangle([x_retain, y, x_retain + rw, y + bar_h], fill=(60, 110, 200) if r.chosen else (170, 190, 230))
        d.text((x_retain + plot_w + 4, y + 3), f"{r.retain:.4f}", fill="black")
        y += bar_h + 4
    tx = x_erase + int(plot_w * max(0.0, result.erase_threshold) / e_max)
    d.line([tx, 40, tx, height - 4], fill="black", width=1)
    cx = x_retain + int(plot_w * min(1.0, max(0.0, result.retain_cutoff)))
    d.line([cx, 40, cx, height - 4], fill=(0, 0, 120), width=1)
    d.text((pad, height - 14), "* chosen   ~ near-tie   | lines: erase threshold, retain of last kept block", fill=(60, 60, 60))
    import numpy as np

    return torch.from_numpy(np.asarray(img, dtype="float32") / 255.0).unsqueeze(0)
