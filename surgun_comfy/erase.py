"""One erasure run on ComfyUI objects: validate, sample, train, package. Used by SurgUn Train."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

import torch

from ..surgun_core import __version__
from ..surgun_core.errors import SurgUnError, require_number, short
from ..surgun_core.pairing import Group, concepts_of, plan_groups
from ..surgun_core.retain import nearest_first
from ..surgun_core.selection import parse_pattern_text, select_trainable
from ..surgun_core.train import ConceptData, TrainConfig, TrainResult, render_checks, require_terms
from ..surgun_core.weights import ErasedWeights, delta_key
from .drawn import DrawnProbe
from .families import detect_family
from .progress import NodeProgress
from .readout import readout, readout_text
from .render import Renderer
from .subspace import text_subspace
from .training import train_deltas

log = logging.getLogger("SurgUn")


@dataclass(frozen=True)
class EraseRequest:
    targets: tuple[str, ...]
    """Phrasings of the concept, one group each; the concept marked in braces, ``a star in {neon} style``
    (see :mod:`surgun_core.pairing`)."""
    distractors: tuple[str, ...]
    """Distractor concept names, put into each target line's slot (full prompts for unpaired lines)."""
    retain: tuple[str, ...]
    """Full prompts, and ``{concept}`` lines put into each target line's slot."""
    train: TrainConfig
    concept: str = ""
    """The concept's name when target lines do not mark it in braces (a Distractor Builder's target)."""
    concepts: tuple[str, ...] = ()
    """Several concepts' names (a Distractor Builder with several targets); overrides ``concept``."""
    concept_distractors: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(concept, its own distractor names) per concept; the others use ``distractors``."""
    distractor_prompts: tuple[str, ...] = ()
    """Prompts for unpaired target lines (a Distractor Builder's template prompts); empty = the distractor lines."""
    paired: bool = True
    retain_distractors: bool = False
    """Also retain each target line's distractor prompts (see :mod:`surgun_core.pairing`)."""
    retain_nearest_first: bool = False
    """Draw retain prompts nearest the target more often (:func:`surgun_core.retain.nearest_first`)."""
    block_preset: str = "cross_attention"
    block_pattern: str = ""
    """Empty: use ``block_preset``. Otherwise a list of names/suffixes, or ``re:<regex>``."""
    blocks: tuple[str, ...] = ()
    """Explicit block/module names (from a BLOCKS socket); overrides preset and pattern."""
    sample_size: int = 512
    sample_steps: int = 20
    samples_per_prompt: int = 2
    sample_cfg: float = 5.0
    text_subspace: bool = False
    """Confine the chosen layers that read the prompt to the text directions of the competition (:mod:`.subspace`)."""
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
        groups = self.groups
        targets = {g.target.lower() for g in groups}
        for where, prompts in (("distractors", [d for g in groups for d in g.distractors]),
                               ("retain_prompts", [r for g in groups for r in g.retain])):
            clash = [p for p in prompts if p.strip().lower() in targets]
            if clash:
                raise SurgUnError(
                    f"[SurgUn] the target {short(clash[0])} is also listed among the {where}. It must be a different concept; "
                    f"remove that line from {where}."
                )
        erased = {g.concept.lower() for g in groups}
        stray = [c for c, _ in self.concept_distractors if c.lower() not in erased]
        if stray:
            raise SurgUnError(
                f"[SurgUn] distractors are listed for {short(stray[0])}, but no target line erases it (the target lines erase "
                f"{', '.join(short(c) for c in concepts_of(groups)) or 'no marked concept'}). Mark it in braces in a target line, "
                "or remove its distractors."
            )
        require_terms(self.train.weights, len({d for g in groups for d in g.distractors}), len(self.retain))
        bare = [g for g in groups if not g.distractors]
        if self.train.weights.distract > 0 and bare:
            raise SurgUnError(
                f"[SurgUn] the concept {short(bare[0].concept or bare[0].target)} has no distractors while distractor_weight > 0. "
                f"List its distractors under a line '{{{bare[0].concept or 'concept'}}}' in distractors, or add shared lines above "
                "the first such line."
            )
        for name in ("sample_size", "sample_steps", "samples_per_prompt"):
            require_number(name, getattr(self, name), lo=1)
        require_number("sample_cfg", self.sample_cfg, 0, 100, "Try 5.0 (1.0 for guidance-distilled models such as Flux).")

    @cached_property
    def groups(self) -> list[Group]:
        return plan_groups(self.targets, self.distractors, self.retain, self.distractor_prompts, self.concepts or self.concept,
                           self.paired, dict(self.concept_distractors), self.retain_distractors)

    @property
    def concept_names(self) -> list[str]:
        """The concepts this run erases, in order ("" for target lines that name none)."""
        return concepts_of(self.groups)

    @property
    def prompts(self) -> list[str]:
        """Every prompt the run samples, once each: targets, distractors, retain prompts."""
        groups = self.groups
        return list(dict.fromkeys([*(g.target for g in groups), *(d for g in groups for d in g.distractors),
                                   *(r for g in groups for r in g.retain)]))


def resolve_modules(model_patcher, family, req: EraseRequest) -> tuple[list[str], object]:
    """The weight layers to train, and the pattern that chose them."""
    net = model_patcher.get_model_object("diffusion_model")
    if req.blocks:
        pattern = list(req.blocks)
    elif req.block_pattern and req.block_pattern.strip():
        pattern = parse_pattern_text(req.block_pattern)
    else:
        pattern = family.preset(req.block_preset)
    return select_trainable(net, pattern), pattern


def localized_lr_scale(model_patcher, family, req: EraseRequest, modules: list[str]) -> float:
    """Training only the localised blocks: the learning rate grows as sqrt(preset weights / trained
    weights) (at most 10x), so the whole update keeps about the size it has on the preset."""
    if not req.blocks:
        return 1.0
    import comfy.utils

    net = model_patcher.get_model_object("diffusion_model")
    count = lambda names: sum(comfy.utils.get_attr(net, f"{n}.weight").numel() for n in names)  # noqa: E731
    preset = count(select_trainable(net, family.preset(req.block_preset)))
    return float(min(10.0, max(1.0, (preset / max(1, count(modules))) ** 0.5)))


def erase_concept(model_patcher, clip, req: EraseRequest, node_id: str | None = None) -> tuple[ErasedWeights, TrainResult]:
    """Sample training data with the untouched model, train the competition objective on a
    clone, and return the erased weights (deltas + metadata). Nothing is written to disk."""
    if clip is None:
        raise SurgUnError("[SurgUn] no CLIP connected. Connect the CLIP output of the checkpoint loader.")
    family = detect_family(model_patcher)
    modules, pattern = resolve_modules(model_patcher, family, req)
    lr_scale = localized_lr_scale(model_patcher, family, req, modules)
    train = dataclasses.replace(req.train, learning_rate=req.train.learning_rate * lr_scale)
    t0 = time.monotonic()

    renderer = Renderer.for_model(model_patcher, clip, family, req.sample_size, req.samples_per_prompt, req.sample_steps, req.sample_cfg)
    groups = req.groups
    renderer.bank.check_lengths({"target": [g.target for g in groups], "distractors": [d for g in groups for d in g.distractors],
                                 "retain_prompts": [r for g in groups for r in g.retain]})
    subspace = text_subspace(model_patcher, renderer.bank, groups, modules, family.name) if req.text_subspace else None
    unpaired = sum(not g.paired for g in groups)
    notes = [n for n in (renderer.size_note("sample_size", req.sample_size), subspace.note if subspace else "",
                         f"{unpaired} of {len(groups)} target lines trained unpaired (mark the concept in braces to pair them)"
                         if unpaired and req.paired else "",
                         f"localised training: {len(modules)} layers, learning rate x{lr_scale:.2f} = {train.learning_rate:.3g}"
                         if lr_scale != 1.0 else "") if n]
    prompts = req.prompts
    batches = renderer.plan(prompts)
    firsts = list({g.concept.lower(): g for g in groups}.values())  # each concept's first target line
    shown = [*(g.target for g in firsts), *groups[0].retain[-1:]]  # the readout: each concept's target and a shared retain prompt
    shown_batches = renderer.plan(shown)
    progress = NodeProgress(renderer.cost(batches) + req.train.steps + 2 * renderer.cost(shown_batches), node_id)
    renderer.tick = progress.tick
    for note in notes:
        log.warning("[SurgUn] %s", note)
        progress.say(note, force=True)
    progress.say(f"sampling {len(prompts)} prompts x {req.samples_per_prompt} in {len(batches)} batches", force=True)
    samples = renderer.latents(model_patcher, batches, req.train.seed, req.train.shared_noise)
    t_sample = time.monotonic() - t0

    def on_step(step: int, total: int, metrics: dict) -> None:
        progress.tick()
        progress.chart("train_step", metrics)
        shown = " ".join(f"{k}={metrics[k]:.4f}" for k in ("loss", "target", "distractor", "retain") if k in metrics)
        progress.say(f"step {step}/{total} {shown}", force=step == total)

    def on_setup(phase: str, done: int, total: int) -> None:
        if done == 1:
            progress.extend(total)
        progress.tick()
        progress.say(f"{phase} {done}/{total}", force=done == 1)

    draw = retain_weights(clip, groups) if req.retain_nearest_first else [{} for _ in groups]
    data = [ConceptData(g.target, samples[g.target], {d: samples[d] for d in g.distractors}, {r: samples[r] for r in g.retain},
                        g.concept.lower(), w) for g, w in zip(groups, draw)]
    arch = family.arch
    units = arch.checkpoint_units if (req.gradient_checkpointing or arch.key == "flux") else None
    progress.chart("train_start", {"total": req.train.steps, "cap": req.train.ascent_cap})
    # its renders tick the bar (Cancel works in them too) and move its end out as they start
    drawn = (DrawnProbe(renderer, data, req.train.seed, req.train.guard_samples, extend=progress.extend)
             if render_checks(train) else None)
    deltas, result = train_deltas(model_patcher, renderer.bank, data, modules, train, units, on_step, on_setup=on_setup,
                                  input_bases=subspace.bases(modules) if subspace else None, drawn=drawn)
    strength = readout(model_patcher, renderer, shown_batches, shown[:len(firsts)], shown[len(firsts)] if len(shown) > len(firsts) else None,
                       deltas, result, req.train.seed)
    progress.say(readout_text(strength, req.train.ascent_cap), force=True)

    metadata = {
        "pack": "SurgUn", "pack_version": __version__,
        "family": family.id, "family_name": family.name, "prediction": family.prediction,
        "target": groups[0].target, "targets": [g.target for g in groups], "distractors": list(req.distractors),
        "concepts": [c for c in req.concept_names if c],
        "retain": list(req.retain),
        "groups": [{"target": g.target, "concept": g.concept, "distractors": list(g.distractors), "retain": list(g.retain),
                    "paired": g.paired, **({"retain_draw": {r: round(w[r], 4) for r in g.retain}} if w else {})}
                   for g, w in zip(groups, draw)],
        "retain_plan": {"distractors_retained": req.retain_distractors, "nearest_first": req.retain_nearest_first},
        "blocks": {"preset": req.block_preset, "pattern": pattern, "modules": modules},
        **({"text_subspace": subspace.metadata()} if subspace else {}),
        **({"adversary": {"steps": train.adversary_steps, "lr": train.adversary_lr,
                          "drift": {p: round(v, 4) for p, v in result.adversary_drift.items()}}} if result.adversary_drift else {}),
        "hyperparameters": dataclasses.asdict(train),
        "sampling": {"size": renderer.pixels, "steps": req.sample_steps, "per_prompt": req.samples_per_prompt,
                     "cfg": req.sample_cfg, "sampler": arch.sampler, "scheduler": arch.scheduler},
        "gradient_checkpointing": units is not None,
        "guard": {"multiple": req.train.ascent_cap, "reference_probe_loss": result.reference_target_loss, "cap": result.cap,
                  "stops": result.guard_stops, "final_ratio": result.guard[-1][1] if result.guard else None},
        **({"guard_per_concept": {c: result.concepts[c.lower()] for c in req.concept_names}} if result.concepts else {}),
        **({"concept_levels": {c: {"gaps": [round(v, 6) for v in p.gaps], "probs": [round(v, 4) for v in p.probs]}
                               for c, p in result.levels.items()}} if result.levels else {}),
        "final": result.history[-1] if result.history else {},
        "readout": strength,
        "notes": notes,
        **dict(req.extra_metadata),
    }  # no timings: the same seed and inputs give a byte-identical file
    log.info("[SurgUn] erased %s from %s: %d layers, %d steps in %.1f s (sampling %.1f s)", erased_what(metadata), family.name,
             len(modules), req.train.steps, time.monotonic() - t0, t_sample)
    return ErasedWeights({delta_key(n): d for n, d in deltas.items()}, metadata), result


def retain_weights(clip, groups: list[Group]) -> list[dict[str, float]]:
    """Per group, each retain prompt's draw probability: nearest the target first, by the text encoder
    the Distractor Builder uses (cached per encoder)."""
    from .text_embed import cached_embedder

    _, embed = cached_embedder(clip)
    prompts = list(dict.fromkeys(p for g in groups for p in (g.target, *g.retain)))
    emb = dict(zip(prompts, embed(prompts)))
    return [dict(zip(g.retain, nearest_first(emb[g.target], torch.stack([emb[r] for r in g.retain])))) if g.retain else {}
            for g in groups]


def erased_what(metadata: Mapping) -> str:
    """What a run erased, for a message: the target prompt, or the concepts when there are several."""
    concepts = metadata.get("concepts") or []
    if len(concepts) > 1:
        return f"{len(concepts)} concepts ({', '.join(short(c, 30) for c in concepts)})"
    return short(metadata["target"])


def summary(req: EraseRequest, weights: ErasedWeights, result: TrainResult) -> str:
    """The text SurgUn Train shows on the node after a run."""
    several = len(weights.metadata.get("concepts") or []) > 1
    more = f" (+{len(req.targets) - 1} phrasings)" if len(req.targets) > 1 and not several else ""
    saved = f"saved {os.path.basename(weights.path)}" if weights.path else "not saved (empty filename_prefix)"
    notes = "".join(f"\nnote: {n}" for n in weights.metadata.get("notes", ()))
    strength = readout_text(weights.metadata["readout"], req.train.ascent_cap)
    return (f"erased {erased_what(weights.metadata)}{more}: {len(weights.deltas)} layers, {weights.num_params():,} weights, "
            f"{req.train.steps} steps, final loss {result.history[-1]['loss']:.4f}\n{strength}\n{saved}{notes}")
