"""One erasure run on ComfyUI objects: validate, sample, train, package. Used by SurgUnTrain."""

from __future__ import annotations

import dataclasses
import os
import logging
import time
from dataclasses import dataclass, field
from typing import Mapping

from ..surgun_core import __version__
from ..surgun_core.errors import SurgUnError
from ..surgun_core.selection import parse_pattern_text, select_trainable
from ..surgun_core.train import ConceptData, TrainConfig, TrainResult
from ..surgun_core.weights import ErasedWeights, delta_key
from .bridge import PromptBank, latent_shape_for, plan_batches, sample_prompts, train_deltas
from .families import detect_family
from .progress import NodeProgress

log = logging.getLogger("SurgUn")


@dataclass(frozen=True)
class EraseRequest:
    target: str
    """The target prompt, or several phrasings of the concept, one per line (each trained as a group)."""
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

    @property
    def targets(self) -> tuple[str, ...]:
        return split_lines(self.target)


def split_lines(text: str) -> tuple[str, ...]:
    """Non-empty, stripped lines of a multiline text field, duplicates removed in order."""
    seen, out = set(), []
    for line in (text or "").splitlines():
        line = line.strip()
        if line and line.lower() not in seen:
            seen.add(line.lower())
            out.append(line)
    return tuple(out)


def validate_request(req: EraseRequest) -> None:
    """Every input error that can be found before any work is done."""
    if not req.targets:
        raise SurgUnError(
            "[SurgUn] target is empty. Type the prompt whose concept should be erased, e.g. "
            "'a painting in the style of Van Gogh'."
        )
    targets = {t.lower() for t in req.targets}
    clash = [d for d in (*req.distractors, *req.retain) if d.strip().lower() in targets]
    if clash:
        where = "distractors" if clash[0] in req.distractors else "retain_prompts"
        raise SurgUnError(
            f"[SurgUn] the target {clash[0]!r} is also listed among the {where}. It must be a different concept; "
            f"remove that line from {where}."
        )
    if req.train.weights.distract > 0 and not req.distractors:
        raise SurgUnError(
            "[SurgUn] distractors is empty (0 distractors received). Add at least one distractor concept, one per "
            "line (e.g. 'a painting in the style of Claude Monet'), connect a DISTRACTORS input, or set "
            "distractor_weight to 0."
        )
    if req.train.weights.retain > 0 and not req.retain:
        raise SurgUnError(
            "[SurgUn] retain_prompts is empty while retain_weight > 0. Add a few unrelated prompts, one per line "
            "(e.g. 'a photo of a dog'), or set retain_weight to 0."
        )
    for name in ("sample_size", "sample_steps", "samples_per_prompt"):
        if getattr(req, name) < 1:
            raise SurgUnError(f"[SurgUn] {name} must be at least 1, got {getattr(req, name)!r}.")
    req.train.validate()


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
    validate_request(req)
    if clip is None:
        raise SurgUnError("[SurgUn] no CLIP connected. Connect the CLIP output of the checkpoint loader.")
    family = detect_family(model_patcher)
    modules, pattern = resolve_modules(model_patcher, family, req)
    t0 = time.monotonic()

    device = model_patcher.load_device
    bank = PromptBank(clip, model_patcher, latent_shape_for(model_patcher, req.sample_size), device)
    prompts = [*req.targets, *req.distractors, *req.retain]
    batches = plan_batches(bank, prompts, req.samples_per_prompt)
    progress = NodeProgress(len(batches) * req.sample_steps + req.train.steps, node_id)
    arch = family.arch
    progress.say(f"sampling {len(prompts)} prompts x {req.samples_per_prompt} in {len(batches)} batches", force=True)
    samples = sample_prompts(model_patcher, bank, batches, req.samples_per_prompt, req.sample_steps, req.sample_cfg,
                             req.train.seed, arch.sampler, arch.scheduler, on_step=progress.tick)
    t_sample = time.monotonic() - t0

    def on_step(step: int, total: int, metrics: dict) -> None:
        progress.tick()
        progress.chart("train_step", metrics)
        shown = " ".join(f"{k}={metrics[k]:.4f}" for k in ("loss", "target", "distractor", "retain") if k in metrics)
        progress.say(f"step {step}/{total} {shown}", force=step == total)

    data = [ConceptData(t, samples[t], {d: samples[d] for d in req.distractors}, {r: samples[r] for r in req.retain})
            for t in req.targets]
    units = arch.checkpoint_units if (req.gradient_checkpointing or arch.key == "flux") else None
    progress.chart("train_start", {"total": req.train.steps})
    deltas, result = train_deltas(model_patcher, bank, data, modules, req.train, units, on_step)

    metadata = {
        "pack": "SurgUn", "pack_version": __version__,
        "family": family.id, "family_name": family.name, "prediction": family.prediction,
        "target": req.targets[0], "targets": list(req.targets), "distractors": list(req.distractors), "retain": list(req.retain),
        "blocks": {"preset": req.block_preset, "pattern": pattern, "modules": modules},
        "hyperparameters": dataclasses.asdict(req.train),
        "sampling": {"size": req.sample_size, "steps": req.sample_steps, "per_prompt": req.samples_per_prompt,
                     "cfg": req.sample_cfg, "sampler": arch.sampler, "scheduler": arch.scheduler},
        "gradient_checkpointing": units is not None,
        "reference_target_loss": result.reference_target_loss, "ascent_cap_value": result.cap,
        "final": result.history[-1] if result.history else {},
        "timing_s": {"sampling": round(t_sample, 3), "total": round(time.monotonic() - t0, 3)},
        **dict(req.extra_metadata),
    }
    log.info("[SurgUn] erased %r from %s: %d layers, %d steps in %.1fs", req.targets[0], family.name, len(modules), req.train.steps, time.monotonic() - t0)
    return ErasedWeights({delta_key(n): d for n, d in deltas.items()}, metadata), result


def check_compatible(model_patcher, weights: ErasedWeights) -> None:
    """Refuse weights made for another family or with other shapes, saying what was expected."""
    import comfy.utils

    family = detect_family(model_patcher)
    made_for = weights.metadata.get("family")
    label = os.path.basename(weights.path) if weights.path else "these erased weights"
    if made_for != family.id:
        raise SurgUnError(
            f"[SurgUn] {label} were made for {weights.metadata.get('family_name', made_for)!r} "
            f"(family id {made_for!r}) but the connected model is {family.name} ({family.id!r}). "
            "Connect a model of the family the file was trained on, or train a new file on this model."
        )
    state = model_patcher.model
    for name in weights.modules:
        key = f"diffusion_model.{name}.weight"
        try:
            w = comfy.utils.get_attr(state, key)
        except AttributeError:
            raise SurgUnError(
                f"[SurgUn] {label} change layer {name!r}, which this {family.name} model does not have. "
                "The file was trained on a differently built model; train a new file on this one."
            ) from None
        got = tuple(weights.deltas[f"diffusion_model.{name}.diff"].shape)
        if tuple(w.shape) != got:
            raise SurgUnError(
                f"[SurgUn] shape mismatch at {name!r}: {label} hold {got} but this model expects {tuple(w.shape)}. "
                "The file was trained on a model of another size; train a new file on this one."
            )


def apply_erased(model_patcher, weights: ErasedWeights, strength: float):
    """A patched clone of ``model_patcher``; exactly what stock LoraLoaderModelOnly does with the file."""
    import comfy.sd

    check_compatible(model_patcher, weights)
    if strength == 0:
        return model_patcher
    patched, _ = comfy.sd.load_lora_for_models(model_patcher, None, weights.deltas, strength, 0)
    return patched
