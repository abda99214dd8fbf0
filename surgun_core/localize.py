"""Pixel-grounded localisation: which attention blocks should SurgUn train?

A short SurgUn update stands in for the training (see the bridge); each candidate block is then
*probed*: only that block's part of the update is applied, images are rendered with fixed seeds
and decoded to pixels, and scored against the untouched model's images:

* **erase** of a block: how far it moves the target's images toward the distractors and away from
  the target (:func:`surgun_core.scores.competition`), measured on the prompts the update trained
  on but at seeds it never saw; **erase (held out)**: the same on target phrasings the update
  never trained on (the referee's check).
* **noise floor**: the erase the untouched model itself shows when re-rendered with other seeds.
  A block is eligible only above the floor and at ``min_fraction`` of the best block's erase, so
  blocks that do nothing cannot win on retain.
* **reach**: the erase a *complete* erasure would score (the distractors' own images, each against
  the others). Under ``BLIND`` times the floor the embedding can hardly see this concept (the pixel
  fallback on small objects): a refusal then says so, since a stronger probe would not help.
* **retain**: retain images unchanged (embedding cosine and SSIM, same seeds). Rendered only for
  the blocks that are eligible (by the erase or the held-out erase): the others cannot be chosen,
  and retain prompts are most of the renders.

Eligible blocks are ranked by retain; the top ``keep`` are chosen. The referee's check repeats
the choice with the held-out erase and reports the overlap and the held-out erase of the chosen.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from .errors import SurgUnError, require_number
from .scores import competition, competition_to, retain_score, unit_mean

# probe(block, parts) -> {part: images} for each requested part of "target", "heldout" (None when
# there are no held-out prompts) and "retain", rendered with only that block's part of the update
# applied (same seeds as the reference's images).
Probe = Callable[[str, tuple], dict]
ERASE_PARTS, RETAIN_PARTS = ("target", "heldout"), ("retain",)
Embed = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SelectConfig:
    keep: int = 4
    min_fraction: float = 0.5
    """Eligible blocks reach this fraction of the best block's erase (0 = any block above the floor)."""
    noise_floor: bool = True
    """Blocks must erase above the measured noise floor; off = ``erase_threshold`` instead."""
    erase_threshold: float = 0.0
    """The erase a block must reach when ``noise_floor`` is off (may be negative)."""
    near_tie: float = 0.01
    """Retain scores within this of the last kept block are reported as near-ties."""

    def __post_init__(self) -> None:
        if not isinstance(self.keep, int) or self.keep < 1:
            raise SurgUnError(f"[SurgUn] keep must be at least 1, got {self.keep!r}.")
        require_number("min_fraction", self.min_fraction, 0.0, 1.0, "0.5 keeps blocks with half the best block's erase or more.")
        require_number("erase_threshold", self.erase_threshold, -1.0, 10.0, "Used only when noise_floor is off.")

    def check_candidates(self, n_blocks: int) -> None:
        """``keep`` against the number of candidate blocks (known once the model is read)."""
        if n_blocks < 1:
            raise SurgUnError(
                "[SurgUn] there are no candidate blocks to probe. Pick another preset or granularity, or check that the "
                "model has attention blocks (block_filter may exclude all of them)."
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
    retain: float = float("nan")
    """NaN: not rendered (the block was not eligible)."""
    erase_heldout: float = float("nan")
    toward: float = 0.0
    away: float = 0.0
    retain_embed: float = float("nan")
    retain_ssim: float = float("nan")
    eligible: bool = False
    chosen: bool = False
    chosen_heldout: bool = False
    near_tie: bool = False
    render_s: float = 0.0


@dataclass
class LocalizeResult:
    rows: list[BlockRow]
    floor: float
    threshold: float
    retain_cutoff: float
    embedding: str
    referee: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    timing_s: dict = field(default_factory=dict)
    reach: float = float("nan")
    """The erase of a complete erasure (the distractors' images), for scale."""

    @property
    def chosen(self) -> list[str]:
        return [r.block for r in self.rows if r.chosen]

    def table(self) -> list[dict]:
        """One dict per block; scores not measured (retain of a block that was not eligible, the held-out
        erase without held-out prompts) are None, so the JSON is valid everywhere."""
        return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(r).items()} for r in self.rows]

    def to_json(self) -> str:
        return json.dumps({
            "chosen": self.chosen, "noise_floor": self.floor, "reach": self.reach if math.isfinite(self.reach) else None,
            "erase_threshold": self.threshold, "retain_cutoff": self.retain_cutoff,
            "embedding": self.embedding, "referee": self.referee, "config": self.config, "timing_s": self.timing_s,
            "blocks": self.table(),
        }, indent=1)


BLIND = 2.0
"""A refusal where a complete erasure scores under this multiple of the noise floor blames the embedding:
a probe that moves the images part of the way there could not pass the floor."""


def _eligible(rows: list[BlockRow], erase: Callable[[BlockRow], float], floor: float, config: SelectConfig) -> tuple[list[BlockRow], float]:
    """Rows above the floor and at min_fraction of the best (or at ``erase_threshold``), and the threshold used."""
    if not config.noise_floor:
        return [r for r in rows if erase(r) >= config.erase_threshold], config.erase_threshold
    threshold = max(floor, config.min_fraction * max(erase(r) for r in rows))
    return [r for r in rows if erase(r) > floor and erase(r) >= threshold], threshold


def _choose(rows: list[BlockRow], erase: Callable[[BlockRow], float], floor: float, config: SelectConfig) -> tuple[list[BlockRow], float]:
    """Eligible rows, best retain first; and the threshold used."""
    eligible, threshold = _eligible(rows, erase, floor, config)
    return sorted(eligible, key=lambda r: (-r.retain, -erase(r), r.block)), threshold


def select_blocks(rows: list[BlockRow], floor: float, config: SelectConfig, reach: float = float("nan")) -> tuple[float, float, dict]:
    """Mark ``eligible``, ``chosen``, ``chosen_heldout`` and ``near_tie`` on ``rows`` (``reach``: the
    erase of a complete erasure, which only shapes the refusal's advice).

    Returns ``(threshold, retain of the last kept block, referee report)``.
    """
    config.check_candidates(len(rows))
    ranked, threshold = _choose(rows, lambda r: r.erase, floor, config)
    if not ranked:
        best = max(r.erase for r in rows)
        if config.noise_floor and reach < BLIND * floor:  # NaN (unknown) compares False
            raise SurgUnError(
                f"[SurgUn] no block erases above the noise floor (floor {floor:.4g}, best erase {best:.4g}), and a complete "
                f"erasure (the distractors' own images) would score only {reach:.4g}, under {BLIND:g}x the floor: this image "
                "embedding can hardly tell the target from its distractors. Connect a CLIP vision model to the Block "
                "Localizer's clip_vision input (the diffusers CLI has only the pixel fallback), or train the preset's "
                "blocks without the localiser (in the diffusers CLI: drop --localize)."
            )
        note = reach_note(reach)
        raise SurgUnError(
            f"[SurgUn] no block erases above the noise floor (floor {floor:.4g}, best erase {best:.4g}"
            + (f"; {note}" if note else "")
            + "): the probe update is too weak to tell the blocks apart. Raise probe_steps or learning_rate, or lower "
            "erase_threshold."
        )
    for r in ranked:
        r.eligible = True
    kept = ranked[: config.keep]
    for r in kept:
        r.chosen = True
    cutoff = kept[-1].retain
    for r in ranked[config.keep:]:
        r.near_tie = abs(r.retain - cutoff) <= config.near_tie
    referee = {"available": False}
    if all(math.isfinite(r.erase_heldout) for r in rows):
        by_heldout, _ = _choose(rows, lambda r: r.erase_heldout, floor, config)
        for r in by_heldout[: config.keep]:
            r.chosen_heldout = True
        chosen_b = {r.block for r in by_heldout[: config.keep]}
        referee = {
            "available": True,
            "overlap": len(chosen_b & {r.block for r in kept}) / len(kept),
            "chosen_erase_heldout": sum(r.erase_heldout for r in kept) / len(kept),
            "best_erase_heldout": max(r.erase_heldout for r in rows),
            "chosen_by_heldout": sorted(chosen_b),
        }
    return threshold, cutoff, referee


def reach_of(t_ref: torch.Tensor, d_ref: torch.Tensor, base_score: torch.Tensor) -> float:
    """The erase a complete erasure would score: each distractor image's competition score against the
    mean of the *other* distractor images (leave-one-out: an image is not scored against itself),
    minus the untouched target's mean score. NaN with fewer than two distractor images."""
    n = d_ref.shape[0]
    if n < 2:
        return float("nan")
    dn = torch.nn.functional.normalize(d_ref.float(), dim=-1)
    loo = (dn.sum(0, keepdim=True) - dn) / (n - 1)
    return float(competition_to(dn, unit_mean(t_ref), loo)["score"].mean() - base_score.mean())


def reach_note(reach: float) -> str:
    """``"a complete erasure would score X"``, or ``""`` when the reach is unknown (NaN): the clause the
    refusal and the node's summary both show."""
    return f"a complete erasure would score {reach:.3g}" if math.isfinite(reach) else ""


def noise_floor(reference: dict, embed: Embed) -> float:
    """The erase the untouched model shows when re-rendered with other seeds (and at least twice
    the standard error of its mean score)."""
    t_ref, d_ref = embed(reference["target_ref"]), embed(reference["distractors"])
    base = competition(embed(reference["target"]), t_ref, d_ref)["score"]
    other = competition(embed(reference["floor"]), t_ref, d_ref)["score"]
    spread = 2 * float(base.std()) / math.sqrt(base.numel()) if base.numel() > 1 else 0.0
    return max(abs(float(other.mean() - base.mean())), spread)


def localize(
    blocks: Sequence[str],
    probe: Probe,
    embed: Embed,
    reference: dict,
    config: SelectConfig,
    embedding_name: str,
    on_block: Callable[[int, int, BlockRow], None] | None = None,
    on_eligible: Callable[[list[str]], None] | None = None,
) -> LocalizeResult:
    """Probe every block, score it, select (see the module docstring).

    ``reference`` holds the untouched model's images: ``target`` (the trained prompts, at the probe's
    seeds), ``heldout`` (held-out prompts at the same seeds, or None), ``retain`` (or a function that
    renders them: it is called once, and only if some block is eligible), ``floor`` (the trained
    prompts at other seeds), ``target_ref`` and ``distractors`` (the reference sets).
    ``on_block`` is called after a block's erase is measured and again after its retain (eligible
    blocks only); ``on_eligible`` once with the eligible blocks, before their retain renders.
    """
    config.check_candidates(len(blocks))
    t_ref, d_ref = embed(reference["target_ref"]), embed(reference["distractors"])
    base = competition(embed(reference["target"]), t_ref, d_ref)
    held = reference.get("heldout")
    base_held = competition(embed(held), t_ref, d_ref)["score"].mean() if held is not None else None
    floor = noise_floor(reference, embed)
    reach = reach_of(t_ref, d_ref, base["score"])
    rows = []
    for i, block in enumerate(blocks):  # erase of every block
        t0 = time.perf_counter()
        out = probe(block, ERASE_PARTS)
        now = competition(embed(out["target"]), t_ref, d_ref)
        row = BlockRow(block=block, erase=float(now["score"].mean() - base["score"].mean()),
                       toward=float(now["toward"].mean() - base["toward"].mean()), away=float(now["away"].mean() - base["away"].mean()))
        if held is not None and out.get("heldout") is not None:
            row.erase_heldout = float(competition(embed(out["heldout"]), t_ref, d_ref)["score"].mean() - base_held)
        if not math.isfinite(row.erase):
            raise SurgUnError(f"[SurgUn] probing {block!r} produced non-finite images; lower learning_rate.")
        row.render_s = time.perf_counter() - t0
        rows.append(row)
        if on_block is not None:
            on_block(i + 1, len(blocks), row)
    eligible = {r.block for r in _eligible(rows, lambda r: r.erase, floor, config)[0]}
    if all(math.isfinite(r.erase_heldout) for r in rows):
        eligible |= {r.block for r in _eligible(rows, lambda r: r.erase_heldout, floor, config)[0]}
    if on_eligible is not None:
        on_eligible([r.block for r in rows if r.block in eligible])
    retain_ref = ref_r = None
    for i, row in enumerate(rows):  # retain of the blocks that can be chosen
        if row.block not in eligible:
            continue
        if retain_ref is None:  # the untouched model's retain images, first needed now
            retain_ref = reference["retain"]() if callable(reference["retain"]) else reference["retain"]
            ref_r = embed(retain_ref)
        t0 = time.perf_counter()
        out = probe(row.block, RETAIN_PARTS)
        r = retain_score(embed(out["retain"]), ref_r, out["retain"], retain_ref)
        row.retain, row.retain_embed, row.retain_ssim = r["retain"], r["retain_embed"], r["retain_ssim"]
        if not math.isfinite(row.retain):
            raise SurgUnError(f"[SurgUn] probing {row.block!r} produced non-finite images; lower learning_rate.")
        row.render_s += time.perf_counter() - t0
        if on_block is not None:
            on_block(i + 1, len(blocks), row)
    threshold, cutoff, referee = select_blocks(rows, floor, config, reach)
    return LocalizeResult(rows, floor, threshold, cutoff, embedding_name, referee, asdict(config), reach=reach)


def report_image(result: LocalizeResult, width: int = 900, bar_h: int = 18):
    """A bar chart: one row per block with its erase (and held-out erase) and retain bars, chosen
    blocks marked, the noise floor and threshold drawn. Returns a float tensor ``[1, H, W, 3]``."""
    import numpy as np
    from PIL import Image, ImageDraw

    rows = result.rows
    label_w, pad, num_w = 330, 6, 52
    plot_w = (width - label_w - 3 * pad - 2 * num_w) // 2
    height = 76 + len(rows) * (bar_h + 4)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 6), f"SurgUn Block Localizer ({result.embedding})", fill="black")
    x_erase, x_retain = label_w, label_w + plot_w + num_w + pad
    d.text((x_erase, 24), "erase -> (thin: held-out prompts)", fill=(180, 40, 40))
    d.text((x_retain, 24), "retain ->", fill=(40, 90, 180))
    e_max = max([abs(r.erase) for r in rows] + [abs(r.erase_heldout) for r in rows if math.isfinite(r.erase_heldout)]
                + [abs(result.threshold), 1e-6])
    y = 44
    for r in rows:
        mark = "*" if r.chosen else ("~" if r.near_tie else " ")
        d.text((pad, y + 2), f"{mark} {r.block[-46:]}", fill="black" if r.chosen else (90, 90, 90))
        ew = int(plot_w * max(0.0, r.erase) / e_max)
        d.rectangle([x_erase, y, x_erase + ew, y + bar_h - 5], fill=(200, 60, 60) if r.chosen else (230, 170, 170))
        if math.isfinite(r.erase_heldout):
            hw = int(plot_w * max(0.0, r.erase_heldout) / e_max)
            d.rectangle([x_erase, y + bar_h - 4, x_erase + hw, y + bar_h], fill=(120, 30, 30))
        d.text((x_erase + plot_w + 4, y + 3), f"{r.erase:.3g}", fill="black")
        if math.isfinite(r.retain):  # blocks that were not eligible have no retain renders
            rw = int(plot_w * min(1.0, max(0.0, r.retain)))
            d.rectangle([x_retain, y, x_retain + rw, y + bar_h], fill=(60, 110, 200) if r.chosen else (170, 190, 230))
        d.text((x_retain + plot_w + 4, y + 3), f"{r.retain:.4f}" if math.isfinite(r.retain) else "-", fill="black")
        y += bar_h + 4
    for value, colour in ((result.floor, (120, 120, 120)), (result.threshold, (0, 0, 0))):
        tx = x_erase + int(plot_w * max(0.0, value) / e_max)
        d.line([tx, 40, tx, height - 20], fill=colour, width=1)
    cx = x_retain + int(plot_w * min(1.0, max(0.0, result.retain_cutoff)))
    d.line([cx, 40, cx, height - 20], fill=(0, 0, 120), width=1)
    ref = result.referee
    line = (f"held-out check: overlap {ref['overlap']:.2f}, chosen erase there {ref['chosen_erase_heldout']:.3g}"
            if ref.get("available") else "held-out check: needs two or more target lines")
    d.text((pad, height - 30), line, fill=(60, 60, 60))
    d.text((pad, height - 14), "* chosen  ~ near-tie  | lines: noise floor (grey), erase threshold, retain of last kept  "
                               "| retain -: not eligible, not rendered", fill=(60, 60, 60))
    return torch.from_numpy(np.asarray(img, dtype="float32") / 255.0).unsqueeze(0)
