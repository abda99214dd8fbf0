"""Block Localizer on ComfyUI objects: candidate blocks, probe updates, renders, embeddings."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field

import torch

from ..surgun_core.errors import SurgUnError, require_number, short
from ..surgun_core.localize import LocalizeResult, SelectConfig, localize
from ..surgun_core.objective import CompetitionWeights
from ..surgun_core.seeds import offset_seed
from ..surgun_core.selection import match_names, parse_pattern_text, select_trainable
from ..surgun_core.train import ConceptData, TrainConfig
from ..surgun_core.weights import delta_key
from .families import detect_family
from .progress import NodeProgress
from .render import Renderer, decode_images, image_embedder
from .training import train_deltas

log = logging.getLogger("SurgUn")


@dataclass(frozen=True)
class LocalizeRequest:
    target: str
    distractors: tuple[str, ...]
    retain: tuple[str, ...]
    granularity: str = "attention"
    block_filter: str = ""
    max_blocks: int = 16
    probe_steps: int = 10
    probe_lr: float = 1e-4
    weights: CompetitionWeights = field(default_factory=CompetitionWeights)
    select: SelectConfig = field(default_factory=SelectConfig)
    images_per_prompt: int = 2
    render_steps: int = 10
    render_size: int = 256
    render_cfg: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.target.strip():
            raise SurgUnError("[SurgUn] target is empty. Type the prompt of the concept to erase.")
        if not self.distractors:
            raise SurgUnError("[SurgUn] distractors is empty (0 received); give at least one, one per line, or connect DISTRACTORS.")
        if not self.retain:
            raise SurgUnError("[SurgUn] retain_prompts is empty; give a few unrelated prompts, one per line: retention is what is scored.")
        for name in ("images_per_prompt", "render_steps", "render_size"):
            require_number(name, getattr(self, name), lo=1)
        require_number("render_cfg", self.render_cfg, 0, 100, "Try 5.0 (1.0 for Flux).")
        if not (isinstance(self.probe_lr, (int, float)) and math.isfinite(self.probe_lr) and self.probe_lr > 0):
            raise SurgUnError(f"[SurgUn] probe_lr must be a finite number > 0, got {short(self.probe_lr, 30)}. Try 1e-4.")
        self.probe  # the probe's training settings are checked now, before any work

    @property
    def probe(self) -> TrainConfig:
        """The short SurgUn update each probed block gets."""
        return TrainConfig(steps=self.probe_steps, learning_rate=self.probe_lr, weights=self.weights, seed=self.seed)


@dataclass
class BlockSet:
    """The value of a BLOCKS socket."""

    names: list[str]
    table: list[dict]
    info: dict

    def metadata(self) -> dict:
        """What goes into a weights file: no timings, so the same inputs give the same file."""
        table = [{k: v for k, v in row.items() if k not in ("update_s", "render_s")} for row in self.table]
        return {"chosen": self.names, "table": table, **self.info}


def candidate_blocks(model_patcher, family, granularity: str, block_filter: str, max_blocks: int) -> list[str]:
    names = [n for n, _ in model_patcher.model.diffusion_model.named_modules()]
    if granularity not in family.arch.units:
        raise SurgUnError(f"[SurgUn] granularity {granularity!r} is not available for {family.name}; use one of {', '.join(family.arch.units)}.")
    units = family.attention_units(names, granularity)
    if block_filter and block_filter.strip():
        units = match_names(units, parse_pattern_text(block_filter), "block_filter")
    if not units:
        raise SurgUnError(
            f"[SurgUn] there are no candidate blocks: granularity {granularity!r}"
            + (f" with block_filter {short(block_filter)}" if block_filter.strip() else "")
            + " selects nothing in this model. Clear block_filter or pick another granularity."
        )
    if max_blocks and len(units) > max_blocks:
        step = len(units) / max_blocks
        units = [units[int(i * step)] for i in range(max_blocks)]
    return units


def run_localizer(model_patcher, clip, vae, clip_vision, req: LocalizeRequest, node_id: str | None = None) -> tuple[LocalizeResult, BlockSet]:
    if vae is None:
        raise SurgUnError("[SurgUn] Block Localizer needs a VAE to decode its probe renders to pixels; connect the VAE of your checkpoint.")
    family = detect_family(model_patcher)
    blocks = candidate_blocks(model_patcher, family, req.granularity, req.block_filter, req.max_blocks)
    req.select.check_candidates(len(blocks))
    train_cfg = req.probe

    renderer = Renderer.for_model(model_patcher, clip, family, req.render_size, req.images_per_prompt, req.render_steps, req.render_cfg)
    renderer.bank.check_lengths({"target": (req.target,), "distractors": req.distractors, "retain_prompts": req.retain})
    note = renderer.size_note("render_size", req.render_size)
    if note:
        log.warning("[SurgUn] %s", note)
    # the same batches (hence the same noise) for the reference and every probe render
    scored = renderer.plan([req.target, *req.retain])
    others = renderer.plan(req.distractors)
    progress = NodeProgress(renderer.cost(scored) + renderer.cost(others)
                            + len(blocks) * (req.probe_steps + renderer.cost(scored)), node_id)
    renderer.tick = progress.tick

    def images(rendered: dict, prompts) -> torch.Tensor:
        return torch.cat([rendered[p] for p in prompts])

    t0 = time.perf_counter()
    latents = {**renderer.latents(model_patcher, scored, req.seed), **renderer.latents(model_patcher, others, offset_seed(req.seed, 1000))}
    decoded = {p: decode_images(vae, x) for p, x in latents.items()}
    reference = {
        "target": images(decoded, [req.target]),
        "retain": images(decoded, req.retain),
        "distractors": images(decoded, req.distractors),
    }
    reference_s = time.perf_counter() - t0

    def probe(block: str) -> dict:
        import comfy.sd

        modules = select_trainable(model_patcher.model.diffusion_model, [block])
        t = time.perf_counter()
        data = ConceptData(req.target, latents[req.target], {d: latents[d] for d in req.distractors},
                           {r: latents[r] for r in req.retain})
        deltas, _ = train_deltas(model_patcher, renderer.bank, data, modules, train_cfg, family.arch.checkpoint_units,
                                 lambda *a: progress.tick())
        update_s = time.perf_counter() - t
        t = time.perf_counter()
        patched, _ = comfy.sd.load_lora_for_models(model_patcher, None, {delta_key(n): d for n, d in deltas.items()}, 1.0, 0)
        rendered = renderer.images(patched, vae, scored, req.seed)
        out = {"target": images(rendered, [req.target]), "retain": images(rendered, req.retain)}
        out["update_s"], out["render_s"] = update_s, time.perf_counter() - t
        return out

    embed, embed_name = image_embedder(clip_vision)

    def on_block(i, n, row):
        progress.say(f"block {i}/{n} {row.block}: erase {row.erase:.3f} retain {row.retain:.3f}", force=True)

    result = localize(blocks, probe, embed, reference, req.select, embed_name, on_block)
    result.reference_s = reference_s
    result.config.update({"granularity": req.granularity, "probe_steps": req.probe_steps, "probe_lr": req.probe_lr,
                          "images_per_prompt": req.images_per_prompt, "render_steps": req.render_steps,
                          "render_size": renderer.pixels, "family": family.id, "notes": [note] if note else []})
    info = {"family": family.id, "embedding": embed_name, "erase_threshold": result.erase_threshold,
            "retain_cutoff": result.retain_cutoff, "request": {k: v for k, v in dataclasses.asdict(req).items()
                                                               if k not in ("distractors", "retain")}}
    log.info("[SurgUn] localised %d of %d blocks for %r", len(result.chosen), len(blocks), req.target)
    return result, BlockSet(result.chosen, result.table(), info)
