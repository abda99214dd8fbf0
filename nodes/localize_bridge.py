"""BlockLocalizer on ComfyUI objects: candidate blocks, probe updates, renders, embeddings."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import torch

from ..surgun_core.errors import SurgUnError
from ..surgun_core.localize import LocalizeResult, SelectConfig, localize
from ..surgun_core.objective import CompetitionWeights
from ..surgun_core.selection import match_names, parse_pattern_text, select_trainable
from ..surgun_core.train import ConceptData, TrainConfig
from ..surgun_core.weights import delta_key
from .bridge import PromptBank, decode_images, image_embedder, latent_shape_for, plan_batches, sample_prompts, train_deltas
from .families import detect_family
from .progress import NodeProgress

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


@dataclass
class BlockSet:
    """The value of a BLOCKS socket."""

    names: list[str]
    table: list[dict]
    info: dict

    def metadata(self) -> dict:
        return {"chosen": self.names, "table": self.table, **self.info}


def candidate_blocks(model_patcher, family, granularity: str, block_filter: str, max_blocks: int) -> list[str]:
    names = [n for n, _ in model_patcher.model.diffusion_model.named_modules()]
    if granularity not in family.arch.units:
        raise SurgUnError(f"[SurgUn] granularity {granularity!r} is not available for {family.name}; use one of {', '.join(family.arch.units)}.")
    units = family.attention_units(names, granularity)
    if block_filter and block_filter.strip():
        units = match_names(units, parse_pattern_text(block_filter))
    if not units:
        raise SurgUnError(
            f"[SurgUn] there are no candidate blocks: granularity {granularity!r}"
            + (f" with block_filter {block_filter!r}" if block_filter.strip() else "")
            + " selects nothing in this model. Clear block_filter or pick another granularity."
        )
    if max_blocks and len(units) > max_blocks:
        step = len(units) / max_blocks
        units = [units[int(i * step)] for i in range(max_blocks)]
    return units


def run_localizer(model_patcher, clip, vae, clip_vision, req: LocalizeRequest, node_id: str | None = None) -> tuple[LocalizeResult, BlockSet]:
    if vae is None:
        raise SurgUnError("[SurgUn] Block Localizer needs a VAE to decode its probe renders to pixels; connect the VAE of your checkpoint.")
    if not req.target.strip():
        raise SurgUnError("[SurgUn] target is empty. Type the prompt of the concept to erase.")
    if not req.distractors:
        raise SurgUnError("[SurgUn] distractors is empty (0 received); give at least one, one per line, or connect DISTRACTORS.")
    if not req.retain:
        raise SurgUnError("[SurgUn] retain_prompts is empty; give a few unrelated prompts, one per line: retention is what is scored.")
    family = detect_family(model_patcher)
    blocks = candidate_blocks(model_patcher, family, req.granularity, req.block_filter, req.max_blocks)
    req.select.validate(len(blocks))
    train_cfg = TrainConfig(steps=req.probe_steps, learning_rate=req.probe_lr, weights=req.weights, seed=req.seed)
    train_cfg.validate()

    device = model_patcher.load_device
    bank = PromptBank(clip, model_patcher, latent_shape_for(model_patcher, req.render_size), device)
    arch = family.arch
    # the same batches (hence the same noise) for the reference and every probe render
    scored = plan_batches(bank, [req.target, *req.retain], req.images_per_prompt)
    others = plan_batches(bank, req.distractors, req.images_per_prompt)
    progress = NodeProgress((len(scored) + len(others)) * req.render_steps
                            + len(blocks) * (req.probe_steps + len(scored) * req.render_steps), node_id)

    def render(model, batches, seed) -> dict:
        return sample_prompts(model, bank, batches, req.images_per_prompt, req.render_steps, req.render_cfg,
                              seed, arch.sampler, arch.scheduler, on_step=progress.tick)

    def images(latents: dict, prompts) -> torch.Tensor:
        return torch.cat([decode_images(vae, latents[p]) for p in prompts])

    t0 = time.perf_counter()
    latents = {**render(model_patcher, scored, req.seed), **render(model_patcher, others, req.seed + 1000)}
    reference = {
        "target": images(latents, [req.target]),
        "retain": images(latents, req.retain),
        "distractors": images(latents, req.distractors),
    }
    reference_s = time.perf_counter() - t0

    def probe(block: str) -> dict:
        import comfy.sd

        modules = select_trainable(model_patcher.model.diffusion_model, [block])
        t = time.perf_counter()
        data = ConceptData(req.target, latents[req.target], {d: latents[d] for d in req.distractors},
                           {r: latents[r] for r in req.retain})
        deltas, _ = train_deltas(model_patcher, bank, data, modules, train_cfg, arch.checkpoint_units, lambda *a: progress.tick())
        update_s = time.perf_counter() - t
        t = time.perf_counter()
        patched, _ = comfy.sd.load_lora_for_models(model_patcher, None, {delta_key(n): d for n, d in deltas.items()}, 1.0, 0)
        probe_latents = render(patched, scored, req.seed)
        out = {"target": images(probe_latents, [req.target]), "retain": images(probe_latents, req.retain)}
        out["update_s"], out["render_s"] = update_s, time.perf_counter() - t
        return out

    embed, embed_name = image_embedder(clip_vision)

    def on_block(i, n, row):
        progress.say(f"block {i}/{n} {row.block}: erase {row.erase:.3f} retain {row.retain:.3f}", force=True)
        progress.chart("localize_block", {"i": i, "n": n, "block": row.block, "erase": row.erase, "retain": row.retain})

    progress.chart("localize_start", {"total": len(blocks)})
    result = localize(blocks, probe, embed, reference, req.select, embed_name, on_block)
    progress.chart("localize_done", {"erase_threshold": result.erase_threshold, "retain_cutoff": result.retain_cutoff,
                                     "chosen": result.chosen})
    result.reference_s = reference_s
    result.config.update({"granularity": req.granularity, "probe_steps": req.probe_steps, "probe_lr": req.probe_lr,
                          "images_per_prompt": req.images_per_prompt, "render_steps": req.render_steps,
                          "render_size": req.render_size, "family": family.id})
    info = {"family": family.id, "embedding": embed_name, "erase_threshold": result.erase_threshold,
            "retain_cutoff": result.retain_cutoff, "request": {k: v for k, v in dataclasses.asdict(req).items()
                                                               if k not in ("distractors", "retain")}}
    log.info("[SurgUn] localised %d of %d blocks for %r", len(result.chosen), len(blocks), req.target)
    return result, BlockSet(result.chosen, result.table(), info)
