"""One erasure run on ComfyUI objects: validate, sample, train, package. Used by SurgUn Train."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Mapping

from ..surgun_core import __version__
from ..surgun_core.errors import SurgUnError, require_number, short
from ..surgun_core.selection import parse_pattern_text, select_trainable
from ..surgun_core.train import ConceptData, TrainConfig, TrainResult, require_terms
from ..surgun_core.weights import ErasedWeights, delta_key
from .families import detect_family
from .progress import NodeProgress
from .render import Renderer
from .training import train_deltas

log = logging.getLogger("SurgUn")


@dataclass(frozen=True)
class EraseRequest:
    targets: tuple[str, ...]
    """The target prompt, or several phrasings of the concept (each trained as a group)."""
    distractors: tuple[str, ...]
    retain: tuple[str, ...]
    train: TrainConfig
    block_preset: str = "cross_attention"
    block_pattern: str = ""
    """Empty: use ``block_preset``. Otherwise a list of names/suffixes, or ``re:<regex>``."""
    blocks: tuple[str, ...] = ()
    """Explicit block/module names (from a BLOCKS socket); overrides preset and pattern."""
    sample_size: int = 512
    sample_steps: int = 20
    samples_per_prompt: int = 2
    sample_cfg: float = 5.0
    gradient_checkpointing: bool = True
    """Recompute block activations in the backward pass (less memory, ~30 % more compute).
    Always on for Flux, whose blocks add into their inputs in place."""
    extra_metadata: Mapping = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every input error that can be found before any work is done."""
        if not self.targets:
            raise SurgUnError(
                "[SurgUn] target is empty. Type the prompt whose concept should be erased, e.g. "
                "'a painting in the style of Van Gogh'."
            )
        targets = {t.lower() for t in self.targets}
        clash = [d for d in (*self.distractors, *self.retain) if d.strip().lower() in targets]
        if clash:
            where = "distractors" if clash[0] in self.distractors else "retain_prompts"
            raise SurgUnError(
                f"[SurgUn] the target {short(clash[0])} is also listed among the {where}. It must be a different concept; "
                f"remove that line from {where}."
            )
        require_terms(self.train.weights, len(self.distractors), len(self.retain))
        for name in ("sample_size", "sample_steps", "samples_per_prompt"):
            require_number(name, getattr(self, name), lo=1)
        require_number("sample_cfg", self.sample_cfg, 0, 100, "Try 5.0 (1.0 for guidance-distilled models such as Flux).")


def resolve_modules(model_patcher, family, req: EraseRequest) -> tuple[list[str], object]:
    """The weight layers to train, and the pattern that chose them."""
    if req.blocks:
        pattern = list(req.blocks)
    elif req.block_pattern and req.block_pattern.strip():
        pattern = parse_pattern_text(req.block_pattern)
    else:
        pattern = family.preset(req.block_preset)
    return select_trainable(model_patcher.model.diffusion_model, pattern), pattern


def erase_concept(model_patcher, clip, req: EraseRequest, node_id: str | None = None) -> tuple[ErasedWeights, TrainResult]:
    """Sample training data with the untouched model, train the competition objective on a
    clone, and return the erased weights (deltas + metadata). Nothing is written to disk."""
    if clip is None:
        raise SurgUnError("[SurgUn] no CLIP connected. Connect the CLIP output of the checkpoint loader.")
    family = detect_family(model_patcher)
    modules, pattern = resolve_modules(model_patcher, family, req)
    t0 = time.monotonic()

    renderer = Renderer.for_model(model_patcher, clip, family, req.sample_size, req.samples_per_prompt, req.sample_steps, req.sample_cfg)
    renderer.bank.check_lengths({"target": req.targets, "distractors": req.distractors, "retain_prompts": req.retain})
    notes = [n for n in (renderer.size_note("sample_size", req.sample_size),) if n]
    prompts = [*req.targets, *req.distractors, *req.retain]
    batches = renderer.plan(prompts)
    progress = NodeProgress(renderer.cost(batches) + req.train.steps, node_id)
    renderer.tick = progress.tick
    for note in notes:
        log.warning("[SurgUn] %s", note)
        progress.say(note, force=True)
    progress.say(f"sampling {len(prompts)} prompts x {req.samples_per_prompt} in {len(batches)} batches", force=True)
    samples = renderer.latents(model_patcher, batches, req.train.seed)
    t_sample = time.monotonic() - t0

    def on_step(step: int, total: int, metrics: dict) -> None:
        progress.tick()
        shown = " ".join(f"{k}={metrics[k]:.4f}" for k in ("loss", "target", "distractor", "retain") if k in metrics)
        progress.say(f"step {step}/{total} {shown}", force=step == total)

    data = [ConceptData(t, samples[t], {d: samples[d] for d in req.distractors}, {r: samples[r] for r in req.retain})
            for t in req.targets]
    arch = family.arch
    units = arch.checkpoint_units if (req.gradient_checkpointing or arch.key == "flux") else None
    deltas, result = train_deltas(model_patcher, renderer.bank, data, modules, req.train, units, on_step)

    metadata = {
        "pack": "SurgUn", "pack_version": __version__,
        "family": family.id, "family_name": family.name, "prediction": family.prediction,
        "target": req.targets[0], "targets": list(req.targets), "distractors": list(req.distractors), "retain": list(req.retain),
        "blocks": {"preset": req.block_preset, "pattern": pattern, "modules": modules},
        "hyperparameters": dataclasses.asdict(req.train),
        "sampling": {"size": renderer.pixels, "steps": req.sample_steps, "per_prompt": req.samples_per_prompt,
                     "cfg": req.sample_cfg, "sampler": arch.sampler, "scheduler": arch.scheduler},
        "gradient_checkpointing": units is not None,
        "reference_target_loss": result.reference_target_loss, "ascent_cap_value": result.cap,
        "final": result.history[-1] if result.history else {},
        "notes": notes,
        **dict(req.extra_metadata),
    }  # no timings: the same seed and inputs give a byte-identical file
    log.info("[SurgUn] erased %s from %s: %d layers, %d steps in %.1f s (sampling %.1f s)", short(req.targets[0]), family.name,
             len(modules), req.train.steps, time.monotonic() - t0, t_sample)
    return ErasedWeights({delta_key(n): d for n, d in deltas.items()}, metadata), result


def summary(req: EraseRequest, weights: ErasedWeights, result: TrainResult) -> str:
    """The text SurgUn Train shows on the node after a run."""
    more = f" (+{len(req.targets) - 1} phrasings)" if len(req.targets) > 1 else ""
    saved = f"saved {os.path.basename(weights.path)}" if weights.path else "not saved (empty filename_prefix)"
    notes = "".join(f"\nnote: {n}" for n in weights.metadata.get("notes", ()))
    return (f"erased {short(req.targets[0])}{more}: {len(weights.deltas)} layers, {weights.num_params():,} weights, "
            f"{req.train.steps} steps, final loss {result.history[-1]['loss']:.4f}\n{saved}{notes}")
