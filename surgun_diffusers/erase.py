"""One erasure on a diffusers pipeline: plan the prompts, sample, (localise,) train, package.

The training loop, the guard and the objective are ``surgun_core.train.train_competition``'s;
this module wires the pipeline into it:

1. **plan**: the target phrasings (templates with a ``{}`` slot), the distractors (given, or
   chosen from the kind's built-in pool by ``surgun_core.distractors.build_distractor_set`` with
   the pipeline's own text encoder), paired per target line, and the retain prompts;
2. **sample**: every prompt's training latents from the untouched pipeline;
3. **localise** (optional): ``surgun_core.localize.localize`` with a diffusers probe;
4. **train**: additive deltas on the chosen layers (:mod:`surgun_diffusers.adapter`), the
   family's native loss, one ``ConceptData`` group per target line.

The pipeline is left as it was: the delta layers are removed and the original layer objects
put back; gradient checkpointing is switched back off if it was off.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from surgun_core.distractors import DistractorParams, EmbeddingCache, build_distractor_set
from surgun_core.drawn import decided_by
from surgun_core.errors import SurgUnError, require_number
from surgun_core.pairing import with_distractors
from surgun_core.retain import nearest_first
from .methods import ESD_ROLE, METHODS, method_data
from surgun_core.selection import parse_pattern_text, select_trainable
from surgun_core.train import ConceptData, TrainConfig, TrainResult, render_checks, train_competition

from . import __version__
from .adapter.model import DeltaModel
from .drawn import render_cost
from .conditioning import Denoiser, PromptEncoder
from .families import Family, detect_family
from .objective import NoiseSchedule, denoising_loss, esd_loss
from .progress import Progress
from .prompts import paired_prompts, target_templates
from .sampling import sample_latents

log = logging.getLogger("SurgUn")


@dataclass(frozen=True)
class SamplingOptions:
    """The untouched model's own training samples."""

    size: int = 512
    steps: int = 20
    per_prompt: int = 2
    cfg: float = 5.0

    def validate(self) -> None:
        for name in ("size", "steps", "per_prompt"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise SurgUnError(f"[SurgUn] sample {name} must be an integer >= 1, got {v!r}.")
        require_number("sample cfg", self.cfg, 0.0, 100.0, "Give --sample-cfg a guidance scale such as 5.0 (0 = the family's usual value).")


@dataclass(frozen=True)
class LocalizeOptions:
    """Pixel-grounded block selection before training (see ``surgun_core.localize``)."""

    keep: int = 4
    granularity: str = "cross_attention"
    max_blocks: int = 16
    probe_steps: int = 10
    """Steps of the one short update on every candidate block; each block's part is applied at
    (training steps / probe_steps)."""
    probe_lr: float | None = None
    """None: the training learning rate."""
    images_per_prompt: int = 1
    render_steps: int | None = None
    """None: the sampling steps."""
    min_fraction: float = 0.5
    """Eligible blocks reach this fraction of the best block's erase (0 = any block above the noise floor)."""
    noise_floor: bool = True
    """Blocks must erase above the measured noise floor; False: ``erase_threshold`` instead."""
    erase_threshold: float = 0.0


@dataclass(frozen=True)
class EraseRequest:
    concept: str
    """The name of what to erase (``Van Gogh``); it fills the ``{}`` slot of each target line."""
    retain: tuple[str, ...]
    targets: tuple[str, ...] = ()
    """Target phrasings with a ``{}`` slot (or naming the concept); empty = the kind's template."""
    kind: str = "custom"
    distractors: tuple[str, ...] = ()
    """Distractor names; empty = chosen from the kind's pool with the pipeline's text encoder."""
    k: int = 8
    protected: tuple[str, ...] = ()
    paired: bool = True
    retain_distractors: bool = True
    """Each target line's distractor prompts are also retained (as SurgUn Train's input of that name)."""
    retain_nearest_first: bool = False
    """Retain prompts nearest the target (text encoder) are drawn more often, weight 1/rank (off by default, as in the node)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=200, learning_rate=1e-5, shared_noise=True))
    preset: str = "cross_attention"
    blocks: str = ""
    """Empty: the preset. Else names/suffixes separated by commas, or ``re:<regex>`` (diffusers names)."""
    localize: LocalizeOptions | None = None
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    gradient_checkpointing: bool = True
    sana_instruction: bool = True
    text_subspace: bool = False
    """Confine the chosen layers that read the prompt to the competition's text directions (``surgun_core.subspace``)."""
    method: str = "surgun"
    """``surgun`` or one of ``surgun_diffusers.methods.METHODS`` (ablations and baselines, e.g. ``esd_x``)."""

    def validate(self) -> None:
        if not self.concept or not self.concept.strip():
            raise SurgUnError("[SurgUn] the concept is empty. Give the name of what to erase, e.g. --concept 'Van Gogh'.")
        if self.method not in METHODS:
            raise SurgUnError(f"[SurgUn] unknown method {self.method!r}; choose one of {', '.join(METHODS)}.")
        require_retain(self.method, self.train.weights, self.retain)
        if self.train.adversary_steps and METHODS[self.method].loss == "esd":
            raise SurgUnError(f"[SurgUn] --adversary-steps trains SurgUn's competition under a soft prompt; the method "
                              f"{self.method!r} has ESD's objective, which has none. Use --method surgun, or drop --adversary-steps.")
        if self.train.ascent_until_erased:
            refuse_until_erased(self.method)
        low = self.concept.strip().lower()
        if any(r.strip().lower() == low for r in self.retain):
            raise SurgUnError(f"[SurgUn] the concept {self.concept!r} is also a retain prompt; remove it from the retain prompts.")
        self.sampling.validate()


def require_retain(method: str, weights, retain: Sequence[str]) -> None:
    """A method whose retain term is on needs retain prompts (SurgUn: ``weights``; the others: their own weights)."""
    w = METHODS[method].weights if method != "surgun" else weights
    if w.retain > 0 and not retain and not METHODS[method].prior_preservation:
        raise SurgUnError(
            "[SurgUn] no retain prompts were given while the retain weight is above 0. Add a few unrelated prompts "
            "(--retain 'a photo of a dog' --retain 'a city street at night', or --retain-file), or set the retain weight "
            "to 0 (--weights ASCENT DISTRACT 0)."
        )


def refuse_until_erased(method: str) -> None:
    """The render stop holds SurgUn's ascent: the other methods have no such ascent to hold."""
    if method != "surgun":
        raise SurgUnError(f"[SurgUn] --ascent-until-erased holds SurgUn's ascent off once its renders no longer draw the "
                          f"target; the method {method!r} is not SurgUn. Use --method surgun, or drop --ascent-until-erased.")


@dataclass
class Plan:
    family: Family
    groups: list[tuple[str, dict[str, str]]]
    """(target prompt, {distractor name: distractor prompt}) per target line."""
    distractor_names: list[str]
    retain: list[str]
    selection: dict = field(default_factory=dict)

    @property
    def prompts(self) -> list[str]:
        out = []
        for t, ds in self.groups:
            out += [t, *ds.values()]
        return list(dict.fromkeys([*out, *self.retain]))


@dataclass
class Erasure:
    family: Family
    deltas: dict[str, torch.Tensor]
    """Trained weight differences by diffusers module name (fp32, CPU)."""
    modules: list[str]
    metadata: dict
    result: TrainResult
    plan: Plan


def choose_distractors(pipe, family: Family, req: EraseRequest, encoder: PromptEncoder, cache_dir: str | None) -> tuple[list[str], dict]:
    """The given distractor names, or the kind pool's max-min set for the concept."""
    if req.distractors:
        return [d.strip() for d in req.distractors if d.strip()], {"source": "given"}
    if req.kind == "custom":
        raise SurgUnError(
            "[SurgUn] no distractors were given and kind is 'custom' (no built-in pool). Give distractor names "
            "(--distractors 'Claude Monet' 'Hokusai' ...) or a kind with a pool: artist, character, object, nsfw."
        )
    cache = EmbeddingCache(directory=cache_dir)
    embed = cache.embedder(encoder.identity(), encoder.selection_embedder())
    chosen = build_distractor_set(req.concept, req.kind, embed, DistractorParams(k=req.k, seed=req.train.seed),
                                  protected=req.protected, encoder_id=encoder.identity())
    log.info("[SurgUn] distractors for %r (%s pool, %d admissible): %s", req.concept, req.kind,
             chosen.pool.get("admissible"), ", ".join(chosen.names))
    return list(chosen.names), {"source": f"{req.kind} pool", **chosen.metadata()}


def plan(pipe, req: EraseRequest, encoder: PromptEncoder, cache_dir: str | None = None) -> Plan:
    family = encoder.family
    templates = target_templates(req.concept, req.targets, req.kind)
    names, selection = choose_distractors(pipe, family, req, encoder, cache_dir)
    groups = paired_prompts(templates, req.concept, names, req.kind, req.paired)
    return Plan(family, groups, names, [r.strip() for r in req.retain if r.strip()], selection)


def resolve_modules(net: torch.nn.Module, family: Family, req: EraseRequest) -> tuple[list[str], object]:
    pattern = parse_pattern_text(req.blocks) if req.blocks and req.blocks.strip() else family.preset(req.preset)
    return select_trainable(net, pattern), pattern


def concept_groups(method: str, plan_: Plan, samples: dict[str, torch.Tensor], device,
                   retain_draw: tuple[bool, Callable[[list[str]], torch.Tensor] | None] = (False, None),
                   concept: str = "") -> list[ConceptData]:
    """One ``ConceptData`` per target line: its own samples, its paired distractors' samples (trained
    under the target prompt) and the retain prompts'; other methods arranged by ``surgun_diffusers.methods``.
    ``retain_draw`` (SurgUn only): (distractor prompts also retained, ``embed`` to draw the retain
    prompts nearest the target first, or None for uniform draws), see :func:`retain_plan`. ``concept`` names the groups
    (the guard's and the render stop's log lines and records)."""
    to = lambda x: x.to(device)  # noqa: E731
    keep_distractors, embed = retain_draw
    out = []
    for target, ds in plan_.groups:
        distract = {p: to(samples[p]) for p in ds.values()}  # keyed by prompt (CA's prior term trains under it)
        kept = with_distractors(plan_.retain, ds.values()) if method == "surgun" and keep_distractors else plan_.retain
        retain = {r: to(samples[r]) for r in kept}
        if method == "surgun":
            weights = {}
            if embed is not None and retain:
                names = list(retain)
                e = embed([target, *names])
                weights = dict(zip(names, nearest_first(e[0], e[1:])))
            out.append(ConceptData(target, to(samples[target]), distract, retain, concept, retain_weights=weights))
            continue
        anchor = next(iter(distract)) if distract else ESD_ROLE
        md = method_data(METHODS[method], target, to(samples[target]), distract or {ESD_ROLE: to(samples[target])}, retain, anchor)
        out.append(md.data)
    return out


def retain_plan(req: EraseRequest, encoder: PromptEncoder, cache_dir: str | None = None):
    """``concept_groups``'s ``retain_draw`` for this request (the embedder cached like the distractor selection's)."""
    if not req.retain_nearest_first:
        return req.retain_distractors, None
    return req.retain_distractors, EmbeddingCache(directory=cache_dir).embedder(encoder.identity(), encoder.selection_embedder())


def method_config(req: EraseRequest) -> TrainConfig:
    if req.method == "surgun":
        return req.train
    m = METHODS[req.method]
    return dataclasses.replace(req.train, weights=m.weights, ascent_cap=m.ascent_cap)


def train_on(pipe, family: Family, encoder: PromptEncoder, modules: Sequence[str], data: list[ConceptData],
             config: TrainConfig, method: str = "surgun", gradient_checkpointing: bool = True,
             on_step: Callable | None = None, grad_sync: Callable | None = None,
             input_bases: Sequence[torch.Tensor | None] | None = None, renders: SamplingOptions | None = None,
             progress: Progress | None = None) -> tuple[dict[str, torch.Tensor], TrainResult]:
    """Train deltas on ``modules`` of the pipeline's denoiser; the network is restored afterwards.
    ``input_bases`` (one per module, or None) confine each delta to inputs in its basis' span. With
    ``config.ascent_until_erased`` the target is rendered as it trains (:mod:`surgun_diffusers.drawn`) at the
    ``renders`` sampling's steps and guidance, ticking ``progress`` (whose total :func:`erase` grew by
    :func:`surgun_diffusers.drawn.render_cost` up front, so the bar never moves back; it ticks the checks not made)."""
    net = getattr(pipe, family.denoiser)
    schedule = NoiseSchedule.from_pipeline(pipe, family)
    denoise = Denoiser(pipe, family, encoder)
    was_ckpt = bool(getattr(net, "gradient_checkpointing", False))
    if gradient_checkpointing and not was_ckpt:
        net.enable_gradient_checkpointing()
    try:
        with torch.inference_mode(False), DeltaModel(net, names=list(modules)) as dm:
            if METHODS[method].loss == "esd":
                loss_fn = lambda x0, ps, g: esd_loss(schedule, denoise, dm.disabled, x0, ps, g)  # noqa: E731
            else:
                loss_fn = lambda x0, ps, g, noise_rows=None, contexts=None, percents=None: denoising_loss(  # noqa: E731
                    schedule, denoise, x0, ps, g, noise_rows, contexts, percents)
            params = list(dm.deltas.values())
            handle = grad_sync(params) if grad_sync is not None else None
            try:
                contexts = ({d.target_prompt: encoder.cond(d.target_prompt)["encoder_hidden_states"] for d in data}
                            if config.adversary_steps else None)
                check = None
                if render_checks(config):
                    from .drawn import DiffusersDrawnProbe

                    if renders is None:
                        raise SurgUnError("[SurgUn] ascent_until_erased renders the target as it trains, but no sampling "
                                          "options were given for its renders. Pass renders=, or set ascent_until_erased off.")
                    seed = config.seed if config.probe_seed is None else config.probe_seed
                    probe = DiffusersDrawnProbe(schedule, denoise, data, seed, data[0].target.shape[1:], renders.steps,
                                                renders.cfg, config.guard_samples, tick=progress.tick if progress else None)
                    if progress is not None:
                        progress.say("ascent_until_erased: rendering the untouched model's references")
                    probe.reference(None)  # the deltas are still zero: the untouched model

                    def check() -> dict[str, float]:
                        if progress is not None:
                            progress.say("ascent_until_erased: rendering the target with the weights as they are")
                        return probe(None)
                result = train_competition(params, data, loss_fn, config, on_step, input_bases=input_bases, contexts=contexts,
                                           drawn=check)
            finally:
                if handle is not None:
                    handle.remove()
            return dm.state(), result
    finally:
        if gradient_checkpointing and not was_ckpt:
            net.disable_gradient_checkpointing()


def erase(pipe, req: EraseRequest, progress: Progress | None = None, cache_dir: str | None = None,
          sampler: Callable | None = None, grad_sync: Callable | None = None, seed_offset: int = 0) -> Erasure:
    """Erase ``req.concept`` from ``pipe``'s denoiser; returns the trained deltas (the pipeline is untouched).

    ``sampler(pipe, family, prompts, sampling, seed, on_step)`` replaces local sampling (the
    data-parallel runner shares prompts out between processes); ``grad_sync(params)`` hooks
    gradient averaging across processes and returns a handle with ``remove()``;
    ``seed_offset`` shifts the training draws (per process in data-parallel training).
    """
    req.validate()
    progress = progress or Progress(enabled=False)
    t0 = time.monotonic()
    family = detect_family(pipe)
    net = getattr(pipe, family.denoiser)
    encoder = PromptEncoder(pipe, family, sana_instruction=req.sana_instruction)
    plan_ = plan(pipe, req, encoder, cache_dir)
    t_plan = time.monotonic() - t0
    modules, pattern = resolve_modules(net, family, req)
    s = req.sampling
    prompts = plan_.prompts
    config = method_config(req)
    if seed_offset:  # the training draws differ per process; the guard's probe and the renders are shared
        config = dataclasses.replace(config, seed=config.seed + seed_offset, probe_seed=config.seed)
    # the render stop's work is on the bar from the start: its probe's lines (as surgun_core.drawn picks them), at most
    # one check every guard_every steps, the last step's included (a reading only)
    probe_lines = [[t, *ds.values()] for t, ds in plan_.groups][:config.guard_samples] if render_checks(config) else []
    checks, last_step = config.steps // config.guard_every, decided_by(s.steps)
    planned = len(prompts) * s.steps + req.train.steps + render_cost(probe_lines, last_step, checks)
    localizer = None
    if req.localize is not None:
        from . import localization as localizer

        planned += localizer.localize_cost(net, family, plan_, req)
    progress.grow(planned)
    progress.say(f"sampling {len(prompts)} prompts x {s.per_prompt}")
    sampler = sampler or (lambda p, f, ps, so, seed, tick: sample_latents(p, f, ps, so.per_prompt, so.steps, so.cfg, so.size, seed, tick,
                                                                          req.sana_instruction, req.train.shared_noise))
    samples = sampler(pipe, family, prompts, s, req.train.seed, progress.tick)
    t_sample = time.monotonic() - t0 - t_plan
    encoder.encode_all([*prompts, ""])

    localization = None
    if localizer is not None:
        chosen, localization = localizer.localize_blocks(pipe, family, encoder, plan_, samples, req, progress)
        modules = select_trainable(net, chosen)
        pattern = chosen
    subspace, bases = None, None
    if req.text_subspace:
        from .subspace import text_subspace

        bases, subspace = text_subspace(net, family.name, encoder, plan_, modules)
        progress.say(f"text_subspace: {len(subspace['confined'])} layers confined to {subspace['rank']} of {subspace['dim']} "
                     f"text directions, {len(subspace['free'])} free")

    def on_step(step: int, total: int, metrics: dict) -> None:
        progress.say(" ".join(f"{k}={metrics[k]:.4f}" for k in ("loss", "target", "distractor", "retain") if k in metrics))
        progress.tick()  # after the text, so the bar shows this step's numbers

    data = concept_groups(req.method, plan_, samples, encoder.device, retain_plan(req, encoder, cache_dir), req.concept)
    deltas, result = train_on(pipe, family, encoder, modules, data, config, req.method, req.gradient_checkpointing,
                              on_step, grad_sync, bases, renders=s, progress=progress)
    progress.tick(render_cost(probe_lines, last_step, checks - len(result.drawn), references=False))  # checks not made
    total = time.monotonic() - t0
    metadata = {
        "pack": "SurgUn", "pack_version": __version__, "source": "surgun_diffusers",
        "family": family.id, "family_name": family.name, "prediction": family.prediction,
        "method": req.method,
        "concept": req.concept, "target": plan_.groups[0][0], "targets": [t for t, _ in plan_.groups],
        "distractors": plan_.distractor_names, "distractor_prompts": {t: ds for t, ds in plan_.groups},
        "paired": req.paired, "distractor_selection": plan_.selection, "retain": plan_.retain,
        "retain_plan": {"distractors_retained": req.retain_distractors, "nearest_first": req.retain_nearest_first},
        "blocks": {"preset": req.preset, "pattern": pattern, "modules_diffusers": list(modules)},
        "hyperparameters": dataclasses.asdict(config),
        "sampling": {**dataclasses.asdict(s), "pipeline": type(pipe).__name__, "sana_instruction": req.sana_instruction},
        "gradient_checkpointing": req.gradient_checkpointing,
        "reference_target_loss": result.reference_target_loss, "ascent_cap_value": result.cap,
        "final": result.history[-1] if result.history else {},
        "timing_s": {"plan": round(t_plan, 3), "sampling": round(t_sample, 3), "total": round(total, 3)},
    }
    if localization is not None:
        metadata["localization"] = localization
    if subspace is not None:
        metadata["text_subspace"] = subspace
    if config.ascent_until_erased:
        metadata["ascent_until_erased"] = {"checks": [[step, fractions] for step, fractions in result.drawn],
                                           "held_off_at": result.erased_at}
    if result.adversary_drift:
        metadata["adversary"] = {"steps": config.adversary_steps, "lr": config.adversary_lr,
                                 "drift": {p: round(v, 4) for p, v in result.adversary_drift.items()}}
    log.info("[SurgUn] erased %r from %s: %d layers, %d steps in %.1fs", req.concept, family.name, len(modules),
             config.steps, total)
    return Erasure(family, deltas, list(modules), metadata, result, plan_)
