"""Recovery Check on ComfyUI objects: attack the erased model's prompt and see whether the concept comes back.

Every row is rendered with the same noise (the request's seed): the original model on the target,
the erased model on the target, then the erased model under each attack (soft prompt, concept
vector, each paraphrase). Reference images the rows are scored against are rendered by the original
model at other seeds: the target (``TARGET_REF_SEED``) and the distractors (``DISTRACTOR_SEED``);
the soft-prompt attack trains on its own fresh samples of the target (``ATTACK_SEED``). The math is
in :mod:`surgun_core.recovery`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..surgun_core.errors import SurgUnError, require_number, short
from ..surgun_core.grid_labels import GridRow, labelled_grid
from ..surgun_core.pairing import plan_groups, split_slot
from ..surgun_core.recovery import (
    add_direction, add_to_last_rows, concept_direction, optimise_offset, recovery_score, reference, verdict,
)
from ..surgun_core.seeds import offset_seed
from .deltas import TrainableDeltas
from .families import detect_family
from .losses import denoising_loss
from .progress import NodeProgress
from .prompts import stack
from .render import Renderer, decode_images, image_embedder

log = logging.getLogger("SurgUn")

DISTRACTOR_SEED, TARGET_REF_SEED, ATTACK_SEED, ATTACK_NOISE_SEED = 1000, 2000, 3000, 4000
"""Offsets from the request's seed for the renders that are not rows of the grid, and the attack's noise."""

SOFT, VECTOR = "soft prompt", "concept vector"
GRID_NOTES = ("same seeds in every row; recovery: 0 = as far from the target as the erased row, 1 = as close as the original row",
              "c = cosine to the original's target images - cosine to its distractor images (other seeds)")
SCORE_NOTE = ("recovery = (c(attack) - c(erased)) / (c(original) - c(erased)), clamped to [0, 1]; "
              "c = cosine to the original model's target images minus cosine to its distractor images")


@dataclass(frozen=True)
class RecoveryRequest:
    target: str
    distractors: tuple[str, ...] = ()
    """Distractor names put into the target's slot (concept in braces), or prompts (see :mod:`surgun_core.pairing`)."""
    concept: str = ""
    distractor_prompts: tuple[str, ...] = ()
    paraphrases: tuple[str, ...] = ()
    soft_tokens: int = 77
    attack_steps: int = 200
    attack_lr: float = 0.05
    vector_strength: float = 5.0
    recovered_above: float = 0.5
    images_per_prompt: int = 4
    steps: int = 20
    size: int = 512
    cfg: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.target or "").strip():
            raise SurgUnError("[SurgUn] target is empty (got ''). Type the prompt of the erased concept, "
                              "e.g. 'a painting by {Van Gogh}'.")
        require_number("soft_tokens", self.soft_tokens, 1, 308, "Try 77 (token rows of the conditioning the attack may change).")
        require_number("attack_steps", self.attack_steps, 0, 10000, "Try 200; 0 turns the soft-prompt attack off.")
        require_number("attack_lr", self.attack_lr, 1e-6, 1.0, "Try 0.05.")
        require_number("vector_strength", self.vector_strength, 0, 20, "Try 5.0; 0 turns the concept-vector attack off.")
        require_number("recovered_above", self.recovered_above, 0, 1, "Try 0.5.")
        require_number("images_per_prompt", self.images_per_prompt, 1, 64, "Try 4.")
        require_number("steps", self.steps, 1, 1000, "Try 20.")
        require_number("size", self.size, 16, 8192, "Try 512 (1024 for SDXL, SD3 and Flux).")
        require_number("cfg", self.cfg, 0, 100, "Try 5.0 (1.0 for Flux).")

    @property
    def attacks(self) -> int:
        return int(self.attack_steps > 0) + int(self.vector_strength > 0) + len(self.paraphrases)


def check_derived(original, erased) -> str:
    """Refuse an erased model that does not share the original's diffusion network; a note when they are one MODEL."""
    if erased is original:
        return "erased and original are the same MODEL: nothing was erased, every attack trivially 'recovers'"
    if not original.is_clone(erased):
        a, b = original.model.diffusion_model, erased.model.diffusion_model
        raise SurgUnError(
            "[SurgUn] erased is not derived from original: connect SurgUn Train's MODEL output made from the "
            f"same checkpoint (received two separate networks: original {type(a).__name__} with "
            f"{sum(p.numel() for p in a.parameters()):,} parameters at 0x{id(a):x}, erased {type(b).__name__} with "
            f"{sum(p.numel() for p in b.parameters()):,} parameters at 0x{id(b):x}).")
    return ""


def render_conditioning(model_patcher, renderer: Renderer, conditioning: list, seed: int) -> torch.Tensor:
    """``renderer.count`` latents of one conditioning, with the noise of ``seed`` (the same for every row)."""
    import comfy.sample

    bank = renderer.bank

    def callback(step, x0, x, total):
        if renderer.tick is not None:
            renderer.tick()

    latent = torch.zeros((renderer.count, *bank.latent_shape))
    noise = comfy.sample.prepare_noise(latent, seed)
    positive = stack([conditioning], renderer.count)
    return comfy.sample.sample(model_patcher, noise, renderer.steps, renderer.cfg, renderer.sampler, renderer.scheduler,
                               positive, bank.conditioning(""), latent, seed=seed, callback=callback, disable_pbar=True)


def with_cond(conditioning: list, cond: torch.Tensor) -> list:
    """A conditioning like ``conditioning`` with its text tensor replaced (pooled vectors and extras kept)."""
    return [[cond.to(conditioning[0][0].dtype).cpu(), dict(conditioning[0][1])]]


def without_concept(target_line: str, concept: str, distractor_prompts: tuple[str, ...]) -> tuple[str, ...]:
    """The prompts the concept vector subtracts: the distractor prompts (the target with the concept
    swapped), else the target with its concept removed, else the empty prompt."""
    if distractor_prompts:
        return distractor_prompts
    slot = split_slot(target_line, concept)
    if slot is not None:
        return (" ".join((slot[0] + slot[2]).split()),)
    return ("",)


def _normal(t):
    """A tensor autograd can use (inference tensors cannot be saved for backward)."""
    return t.clone() if torch.is_tensor(t) and t.is_inference() else t


class _AttackedPrompts:
    """What :func:`denoising_loss` reads of a PromptBank (``device``, ``batch``), with the soft-prompt
    offset added to the last rows of the target's cross-attention context."""

    def __init__(self, kwargs: dict, device):
        self.kwargs, self.device, self.offset = kwargs, device, None

    def batch(self, prompts, contexts=None) -> dict:  # contexts: PromptBank.batch's soft prompts; the attack has its own
        out = dict(self.kwargs)
        out["c_crossattn"] = add_to_last_rows(out["c_crossattn"], self.offset)
        return out


def soft_prompt_attack(erased, renderer: Renderer, family, target: str, samples: torch.Tensor, req: RecoveryRequest,
                       progress: NodeProgress):
    """Optimise the offset on the last ``soft_tokens`` rows of the target's conditioning so the erased
    model's native denoising loss (surgun_comfy/losses.py) on ``samples`` is minimal. Returns
    ``(offset [k, C] on CPU, (loss before, loss after))``, both losses on the same fixed timesteps and noise."""
    bank = renderer.bank
    cond = bank.conditioning(target)[0][0]
    context = bank.batch([target])["c_crossattn"]
    if context.shape[1:] != cond.shape[1:] or not torch.allclose(context.float().cpu(), cond.float().cpu(), atol=1e-5):
        raise SurgUnError(
            f"[SurgUn] the soft-prompt attack works on the text conditioning the network reads, and {family.name} "
            f"transforms it first (text {tuple(cond.shape)} -> context {tuple(context.shape)}). Set attack_steps to 0 "
            "and use the concept vector and paraphrases.")
    k = min(req.soft_tokens, cond.shape[-2])
    n = samples.shape[0]
    with torch.inference_mode(False):
        with TrainableDeltas(erased, [], family.arch.checkpoint_units) as td:
            process_in = td.work.model.process_latent_in
            x0 = _normal(process_in(_normal(samples.to(bank.device))))
            prompts = [target] * n
            attacked = _AttackedPrompts({key: _normal(v) for key, v in bank.batch(prompts).items()}, bank.device)
            g = torch.Generator().manual_seed(offset_seed(req.seed, ATTACK_NOISE_SEED))

            def loss_fn(offset):
                attacked.offset = offset
                return denoising_loss(td.work, attacked, x0, prompts, g).mean()

            def on_step(step, total, loss):
                progress.tick()
                progress.say(f"soft prompt {step}/{total} loss={loss:.4f}", force=step == total)

            def fixed_noise_loss(offset) -> float:  # the same timesteps and noise before and after: comparable
                attacked.offset = offset
                with torch.no_grad():
                    fixed = torch.Generator().manual_seed(offset_seed(req.seed, ATTACK_NOISE_SEED + 1))
                    return float(denoising_loss(td.work, attacked, x0, prompts, fixed).mean())

            shape = (k, cond.shape[-1])
            before = fixed_noise_loss(torch.zeros(shape, device=bank.device))
            res = optimise_offset(loss_fn, shape, req.attack_steps, req.attack_lr, on_step, bank.device)
            after = fixed_noise_loss(res.offset)
    return res.offset.cpu(), (before, after)


def run_recovery(original, erased, clip, vae, clip_vision, req: RecoveryRequest,
                 node_id: str | None = None) -> tuple[torch.Tensor, str, float]:
    """The labelled grid, the report text and the largest recovery."""
    same_note = check_derived(original, erased)
    family = detect_family(original)
    renderer = Renderer.for_model(original, clip, family, req.size, req.images_per_prompt, req.steps, req.cfg)
    group = plan_groups([req.target], req.distractors, (), req.distractor_prompts, req.concept)[0]
    target, distractors = group.target, group.distractors
    paraphrases = tuple(p for p in req.paraphrases if p.strip().lower() != target.strip().lower())
    without = without_concept(req.target, req.concept, distractors) if req.vector_strength > 0 else ()
    renderer.bank.check_lengths({"target": (target,), "distractors": distractors, "paraphrases": paraphrases})
    notes = [n for n in (same_note, renderer.size_note("size", req.size)) if n]

    d_plan = renderer.plan(distractors) if distractors else []
    rows = 2 + int(req.attack_steps > 0) + int(req.vector_strength > 0) + len(paraphrases)
    renders = rows + 1 + int(req.attack_steps > 0)  # + the target reference (+ the attack's training samples)
    progress = NodeProgress(renders * req.steps + renderer.cost(d_plan) + req.attack_steps, node_id)
    renderer.tick = progress.tick
    embed, embed_name = image_embedder(clip_vision)

    def row(model, conditioning) -> torch.Tensor:
        return decode_images(vae, render_conditioning(model, renderer, conditioning, req.seed))

    bank = renderer.bank
    base = bank.conditioning(target)
    progress.say("rendering the references", force=True)
    t_ref = embed(decode_images(vae, render_conditioning(original, renderer, base, offset_seed(req.seed, TARGET_REF_SEED))))
    d_ref = (torch.cat([embed(x) for x in renderer.images(original, vae, d_plan, offset_seed(req.seed, DISTRACTOR_SEED)).values()])
             if d_plan else None)
    images = {"original": row(original, base), "erased": row(erased, base)}
    ref = reference(embed(images["original"]), embed(images["erased"]), t_ref, d_ref)

    attacks: list[tuple[str, str, torch.Tensor, str]] = []  # (name, grid label, images, report detail)
    if req.attack_steps > 0:
        progress.say("soft prompt: sampling the target with original", force=True)
        samples = render_conditioning(original, renderer, base, offset_seed(req.seed, ATTACK_SEED))
        offset, (before, after) = soft_prompt_attack(erased, renderer, family, target, samples, req, progress)
        cond = add_to_last_rows(base[0][0].float(), offset)
        detail = (f"{offset.shape[0]} token rows, {req.attack_steps} steps at lr {req.attack_lr:g}, "
                  f"erased model's loss on fixed noise {before:.4f} -> {after:.4f}, offset norm {float(offset.norm()):.3f}")
        attacks.append((SOFT, f"{SOFT} ({offset.shape[0]} tokens)", row(erased, with_cond(base, cond)), detail))
    if req.vector_strength > 0:
        direction = concept_direction(base[0][0], torch.cat([bank.conditioning(p)[0][0] for p in without]))
        cond = add_direction(base[0][0], direction, req.vector_strength)
        detail = (f"strength {req.vector_strength:g}, direction = target minus {len(without)} prompt(s) without the concept "
                  f"({', '.join(short(p, 30) for p in without[:3])}{', ...' if len(without) > 3 else ''})")
        attacks.append((VECTOR, f"{VECTOR} x{req.vector_strength:g}", row(erased, with_cond(base, cond)), detail))
    for p in paraphrases:
        attacks.append((f"paraphrase {short(p, 40)}", p, row(erased, bank.conditioning(p)), "prompt as typed"))

    scores = {name: recovery_score(embed(x), ref, t_ref, d_ref) for name, _, x, _ in attacks}
    best = max(scores.values(), default=0.0)
    line = verdict(scores, req.recovered_above, ref.nothing_erased, ref.gap, ref.noise)
    report = [f"SurgUn Recovery Check of {short(target)}: {req.images_per_prompt} images per row, seed {req.seed}, "
              f"{req.steps} steps, cfg {req.cfg:g}, {renderer.pixels} px; embedding: {embed_name}",
              f"reference: original c={ref.original:.4f}, erased c={ref.erased:.4f} (gap {ref.gap:.4f}, standard error {ref.noise:.4f}); "
              f"{SCORE_NOTE}"]
    report += [f"{name}: recovery {scores[name]:.3f} ({detail})" for name, _, _, detail in attacks]
    report += [f"note: {n}" for n in notes]
    report.append(f"verdict: {line}")
    text = "\n".join(report)
    log.info("[SurgUn] recovery check of %s: %s", short(target), line)

    grid_rows = [GridRow(target, "original model", images["original"], f"c {ref.original:.3f}\nrecovery 1 (by definition)"),
                 GridRow(target, "erased model", images["erased"], f"c {ref.erased:.3f}\nrecovery 0 (by definition)")]
    grid_rows += [GridRow(label, "erased + attack", x, f"recovery {scores[name]:.3f}") for name, label, x, _ in attacks]
    grid = labelled_grid(grid_rows, title=f"SurgUn Recovery Check: {line}", notes=[*GRID_NOTES, f"embedding: {embed_name}", *notes])
    return grid, text, best
