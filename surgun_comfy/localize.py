"""Block Localizer on ComfyUI objects: the request, the candidate blocks, the BLOCKS value.

The run itself (the short update, the per-block renders) is in :mod:`.probe`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from ..surgun_core.errors import SurgUnError, require_number, short
from ..surgun_core.localize import SelectConfig
from ..surgun_core.objective import CompetitionWeights
from ..surgun_core.pairing import Group, plan_groups
from ..surgun_core.selection import match_names, parse_pattern_text
from ..surgun_core.train import TrainConfig


@dataclass(frozen=True)
class LocalizeRequest:
    targets: tuple[str, ...]
    """Target lines, concept in braces (see :mod:`surgun_core.pairing`). With two or more, the update
    trains on every other line and the rest are held out for the referee's check."""
    distractors: tuple[str, ...]
    retain: tuple[str, ...]
    concept: str | tuple[str, ...] = ""
    """The builder's target name(s), found in target lines without braces."""
    distractor_prompts: tuple[str, ...] = ()
    preset: str = "cross_attention"
    """Candidates are the blocks holding the layers of this preset (the layers SurgUn Train would train)."""
    granularity: str = "attention"
    block_filter: str = ""
    max_blocks: int = 0
    probe_steps: int = 20
    learning_rate: float = 1e-5
    """The learning rate of the training the probe stands in for."""
    train_steps: int = 200
    """The steps of that training: each block's part of the short update is applied at train_steps / probe_steps."""
    weights: CompetitionWeights = field(default_factory=CompetitionWeights)
    select: SelectConfig = field(default_factory=SelectConfig)
    images_per_prompt: int = 2
    render_steps: int = 10
    render_size: int = 256
    render_cfg: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.targets:
            raise SurgUnError("[SurgUn] target is empty. Type the prompt of the concept to erase, the concept in braces.")
        if not self.distractors:
            raise SurgUnError("[SurgUn] distractors is empty (0 received); give at least one, one per line, or connect DISTRACTORS.")
        if not self.retain:
            raise SurgUnError("[SurgUn] retain_prompts is empty; give a few unrelated prompts, one per line: retention is what is scored.")
        for name in ("images_per_prompt", "render_steps", "render_size", "train_steps"):
            require_number(name, getattr(self, name), lo=1)
        require_number("render_cfg", self.render_cfg, 0, 100, "Try 5.0 (1.0 for Flux).")
        self.probe  # the probe's training settings are checked now, before any work

    @cached_property
    def groups(self) -> tuple[list[Group], list[Group]]:
        """(groups the update trains on, held-out groups): every other target line is held out."""
        groups = plan_groups(self.targets, self.distractors, self.retain, self.distractor_prompts, self.concept)
        return (groups[::2], groups[1::2]) if len(groups) > 1 else (groups, [])

    @property
    def probe(self) -> TrainConfig:
        """The short SurgUn update that stands in for the training."""
        return TrainConfig(steps=self.probe_steps, learning_rate=self.learning_rate, weights=self.weights, seed=self.seed)

    @property
    def strength(self) -> float:
        return self.train_steps / self.probe_steps


@dataclass
class BlockSet:
    """The value of a BLOCKS socket."""

    names: list[str]
    table: list[dict]
    info: dict

    def metadata(self) -> dict:
        """What goes into a weights file: no timings, so the same inputs give the same file."""
        table = [{k: v for k, v in row.items() if k != "render_s"} for row in self.table]
        return {"chosen": self.names, "table": table, **self.info}


def candidate_blocks(model_patcher, family, preset: str, granularity: str, block_filter: str, max_blocks: int) -> list[str]:
    """The probed units: blocks (per ``granularity``) that hold at least one layer of ``preset``."""
    names = [n for n, _ in model_patcher.get_model_object("diffusion_model").named_modules()]
    if granularity not in family.arch.units:
        raise SurgUnError(f"[SurgUn] granularity {granularity!r} is not available for {family.name}; use one of {', '.join(family.arch.units)}.")
    layers = [n for n in names if re.fullmatch(family.preset(preset), n)]
    units = [u for u in family.attention_units(names, granularity) if any(n.startswith(u + ".") for n in layers)]
    if block_filter and block_filter.strip():
        units = match_names(units, parse_pattern_text(block_filter), "block_filter")
    if not units:
        raise SurgUnError(
            f"[SurgUn] there are no candidate blocks: preset {preset!r} at granularity {granularity!r}"
            + (f" with block_filter {short(block_filter)}" if block_filter.strip() else "")
            + " selects nothing in this model. Clear block_filter or pick another preset or granularity."
        )
    if max_blocks and len(units) > max_blocks:
        step = len(units) / max_blocks
        units = [units[int(i * step)] for i in range(max_blocks)]
    return units
