"""The SurgUn training loop: seeded, deterministic, cancellable through ``on_step``."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from .adversary import SoftPromptAdversary, soft_name
from .errors import NonFiniteLossError, SurgUnError
from .guard import AscentGuard
from .levels import LevelProfile, draw_levels, measure_profile
from .seeds import offset_seed
from .objective import CompetitionWeights, competition_loss
from .subspace import confine_

log = logging.getLogger("SurgUn")

# loss_fn(x0, prompts, generator) -> per-sample denoising loss, shape [B].
# x0 are clean samples, prompts[i] names the conditioning for sample i; noise and timesteps
# are drawn from ``generator`` so that a fixed seed gives a fixed run. With
# ``TrainConfig.model_targets`` the loop also passes ``teachers=``: per sample, None (regress onto
# the sample) or a prompt (regress onto the untouched model's prediction under that prompt, at the
# same noisy input). The ascent guard's probe (and ``TrainConfig.concept_levels``) passes ``percents=``:
# per sample, the noise level as a fraction of the schedule (0 = noisiest), or NaN for a uniform draw;
# the draw is made either way, so the generator's stream does not depend on it. With
# ``TrainConfig.shared_noise`` it also passes ``noise_rows=``: per sample, the row whose noise and
# noise level it takes (its own index when it draws its own).
LossFn = Callable[[torch.Tensor, Sequence[str], torch.Generator], torch.Tensor]
# on_step(step, total, metrics); raising from it stops training (that is how Cancel works).
OnStep = Callable[[int, int, dict], None]
# on_setup(phase, done, total): each forward pass of the work before the first step; raising from it stops too.
OnSetup = Callable[[str, int, int], None]
# drawn(): per concept, the fraction of its target renders still drawn as the target (TrainConfig.ascent_until_erased).
Drawn = Callable[[], Mapping[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    learning_rate: float = 1e-5
    weights: CompetitionWeights = field(default_factory=CompetitionWeights)
    ascent_cap: float = 2.0
    """Guard: the ascent stops once the target's probe loss reaches this multiple of its untouched
    value (see :mod:`surgun_core.guard`). 0 = no guard."""
    target_per_step: int = 1
    distractors_per_step: int = 2
    """Distractors drawn per step (an unbiased estimate of the mean over all); 0 = all of them."""
    retain_per_step: int = 1
    """Retain prompts drawn per step; 0 = all of them."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip; 0 = off."""
    guard_every: int = 10
    """Steps between two measurements of the guard's probe."""
    guard_samples: int = 8
    """Target samples in the guard's probe, shared out over the target lines (at least one per line, up to this
    many lines); each at ``guard_draws`` fixed noise levels, spread over the schedule."""
    guard_draws: int = 2
    seed: int = 0
    probe_seed: int | None = None
    """Seed of the guard's probe (and of the render stop's renders in the diffusers CLI); None = ``seed``. Processes
    that train one concept together draw their training samples from their own seeds and share this one, so every
    process measures the same probe on the same weights and stops its ascent at the same step."""
    model_targets: bool = False
    """The descent terms (distractors, retain prompts) regress onto the untouched model's prediction
    under each sample's own prompt at the same noisy input, instead of onto the sample: the same
    optimum with less variance (Concept Ablation's model-based targets). The ascent keeps the sample.
    Needs distractor and retain names that are prompts, and a loss_fn that takes ``teachers``."""
    concept_levels: bool = False
    """The ascent's noise levels are drawn where the target prompt explains its samples better than the
    distractor prompts do (:mod:`surgun_core.levels`), measured once before the first step; the descent
    terms keep uniform levels (with ``shared_noise`` the distractor rows take the target row's), and the
    guard's probe keeps its levels spread over the schedule, so ``ascent_cap`` bounds the same loss
    with the option on or off. Needs distractor names that are prompts, and a loss_fn that takes
    ``percents``."""
    shared_noise: bool = False
    """Common random numbers for the competition: each step's distractor samples are the ones made from
    the same starting noise as its target sample (index k of every prompt's samples, so the samples must be
    made that way), noised with the target sample's own noise at its level. The two sides then differ only
    in the concept, so the ascent and the descent cancel on what the target shares with its distractors
    (the object under a style, the layout) instead of each pulling on it with its own noise. Retain rows
    keep their own draws. Needs a loss_fn that takes ``noise_rows``."""
    ascent_until_tie: bool = False
    """A per-step bound on the ascent, from the competition itself (needs ``shared_noise``): a step's ascent
    is on only while its target sample's loss under the target prompt is below its distractors' loss under
    the same prompt at the same noise and level, i.e. while the prompt still explains the target better than
    its competitors. Where the two already tie (noise levels that carry no trace of the concept, or once the
    target has lost) the step's gradient is the descent terms' alone (Adam's momentum from earlier steps still
    carries), so the ascent cannot go on unlearning what the target shares with its distractors. With several
    target rows a step (``target_per_step``) their mean is compared. The guard (``ascent_cap``) still bounds the
    whole run."""
    ascent_until_erased: bool = False
    """The ascent runs while the sampler still draws the target (needs ``shared_noise`` and a ``drawn`` callback, which
    renders; the node's is :mod:`surgun_comfy.drawn`, the diffusers CLI's :mod:`surgun_diffusers.drawn`, both reading as
    :mod:`surgun_core.drawn`): every ``guard_every`` steps the target's prompts are rendered
    with the weights as they are, from noise the training never saw, and each render is compared with the untouched
    model's images of the target and of the target line's distractors from the same noise. While no render is nearer
    the target's image than a distractor's, the ascent is held off (the optimiser's state cleared at the switch; the
    distractor and retain terms go on); it resumes at a later check where some render draws the target again. A check
    at the last step is a reading of the finished weights only (nothing trains after it). The guard (``ascent_cap``)
    still bounds the run; while the renders hold the ascent off it only watches. :func:`render_checks` says whether any
    check can steer a run (callers skip the renders, and say so, where none can)."""
    adversary_steps: int = 0
    """Train against a soft-prompt attack as well (:mod:`surgun_core.adversary`): each step moves a soft prompt per
    target prompt this many Adam steps toward bringing the target back, then runs the competition under it too.
    0 = off. Needs a loss_fn that takes ``contexts`` and the target prompts' contexts."""
    adversary_lr: float = 1e-2
    """The soft prompt's Adam learning rate."""

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise SurgUnError(f"[SurgUn] steps must be at least 1, got {self.steps!r}. Set steps to 1 or more (200 is a good start).")
        lr = self.learning_rate
        if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise SurgUnError(f"[SurgUn] learning_rate must be a finite number > 0, got {lr!r}. Try 1e-5.")
        if not math.isfinite(self.ascent_cap) or self.ascent_cap < 0:
            raise SurgUnError(f"[SurgUn] ascent_cap must be >= 0 (0 = no guard), got {self.ascent_cap!r}. Try 2.0.")
        if self.ascent_cap != 0 and self.ascent_cap <= 1:
            raise SurgUnError(
                f"[SurgUn] ascent_cap must be above 1 (a multiple of the target's starting loss), got {self.ascent_cap!r}; "
                "at or below 1 the ascent would stop before it starts. Try 2.0, or 0 for no guard."
            )
        for name in ("target_per_step", "distractors_per_step", "retain_per_step", "guard_every", "guard_samples", "guard_draws",
                     "adversary_steps"):
            v = getattr(self, name)
            lo = 0 if name in ("distractors_per_step", "retain_per_step", "adversary_steps") else 1
            if not isinstance(v, int) or v < lo:
                raise SurgUnError(f"[SurgUn] {name} must be an integer >= {lo}, got {v!r}.")
        if self.probe_seed is not None and (not isinstance(self.probe_seed, int) or self.probe_seed < 0):
            raise SurgUnError(f"[SurgUn] probe_seed must be an integer >= 0 or None (= seed), got {self.probe_seed!r}.")
        if not math.isfinite(self.max_grad_norm) or self.max_grad_norm < 0:
            raise SurgUnError(f"[SurgUn] max_grad_norm must be >= 0 (0 = off), got {self.max_grad_norm!r}.")
        if not math.isfinite(self.adversary_lr) or self.adversary_lr <= 0:
            raise SurgUnError(f"[SurgUn] adversary_lr must be a finite number > 0, got {self.adversary_lr!r}. Try 1e-2.")
        if self.ascent_until_tie and not self.shared_noise:
            raise SurgUnError(
                "[SurgUn] ascent_until_tie compares a target image with its distractors' images at the same noise, "
                "so it needs shared_noise on (got shared_noise off). Turn shared_noise on, or ascent_until_tie off."
            )
        if self.ascent_until_erased and not self.shared_noise:
            raise SurgUnError(
                "[SurgUn] ascent_until_erased compares the target's renders with its distractors' images from the same "
                "noise, so it needs shared_noise on (got shared_noise off). Turn shared_noise on, or ascent_until_erased off."
            )


def render_checks(config: TrainConfig) -> list[int]:
    """The steps at which ``ascent_until_erased``'s renders can hold the ascent off or bring it back: every
    ``guard_every`` steps before the last (empty when the option is off, or the ascent is, or the run is too short)."""
    if not config.ascent_until_erased or config.weights.ascent <= 0:
        return []
    return list(range(config.guard_every, config.steps, config.guard_every))


@dataclass
class ConceptData:
    """Clean samples (latents) for each role, already in the model's training space."""

    target_prompt: str
    target: torch.Tensor
    distractors: dict[str, torch.Tensor]
    """Distractor name -> its samples; trained under ``target_prompt``."""
    retain: dict[str, torch.Tensor]
    """Retain prompt -> its samples; trained under that same prompt."""
    concept: str = ""
    """Which concept this group erases. Groups of one concept share a guard; several concepts in one
    run each get their own (one concept reaching its cap does not stop the others' ascent)."""
    retain_weights: dict[str, float] = field(default_factory=dict)
    """Retain prompt -> probability of being drawn (:func:`surgun_core.retain.nearest_first`);
    empty = every retain prompt equally often."""

    def validate(self, weights: CompetitionWeights) -> None:
        if not self.target_prompt or not self.target_prompt.strip():
            raise SurgUnError("[SurgUn] the target prompt is empty. Type the concept to erase, e.g. 'a painting in the style of Van Gogh'.")
        if self.target.shape[0] < 1:
            raise SurgUnError("[SurgUn] no target samples were given.")
        require_terms(weights, len(self.distractors), len(self.retain))


def require_terms(weights: CompetitionWeights, n_distractors: int, n_retain: int) -> None:
    """A term that is switched on needs something to train on (the rule, stated once)."""
    if weights.distract > 0 and n_distractors == 0:
        raise SurgUnError(
            "[SurgUn] distractors is empty (0 distractors received) while distractor_weight > 0. Add at least one "
            "distractor concept, one per line (e.g. 'a painting in the style of Claude Monet'), connect a DISTRACTORS "
            "input, or set distractor_weight to 0."
        )
    if weights.retain > 0 and n_retain == 0:
        raise SurgUnError(
            "[SurgUn] retain_prompts is empty while retain_weight > 0. Add a few unrelated prompts, one per line "
            "(e.g. 'a photo of a dog'), or set retain_weight to 0."
        )


@dataclass
class TrainResult:
    history: list[dict]
    reference_target_loss: float
    """The guard probe's loss with the untouched weights (NaN when the ascent is off)."""
    cap: float | None
    """The probe loss at which the ascent stops (None: no guard)."""
    guard: list[tuple[int, float]] = field(default_factory=list)
    """(step, probe loss / reference) at every measurement of the guard."""
    guard_stops: list[int] = field(default_factory=list)
    """Steps at which the probe reached the cap and the ascent stopped (it resumes below 90 % of it)."""
    concepts: dict[str, dict] = field(default_factory=dict)
    """Per concept (several in one run): its guard's reference, cap, measurements and stops. The
    fields above are the first concept's."""
    levels: dict[str, LevelProfile] = field(default_factory=dict)
    """Per concept: where its ascent drew its noise levels (``TrainConfig.concept_levels``; empty when off)."""
    adversary_drift: dict[str, float] = field(default_factory=dict)
    """Per target prompt: how far its soft prompt moved from the prompt's own context (relative L2;
    ``TrainConfig.adversary_steps``; empty when off)."""
    drawn: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    """(step, per concept the fraction of its renders still drawn as the target) at every render check
    (``TrainConfig.ascent_until_erased``; empty when off)."""
    erased_at: dict[str, list[int]] = field(default_factory=dict)
    """Per concept: the steps at which no render drew it any more and its ascent was held off."""


def _named(concept: str) -> str:
    """A concept as the log names it (a run of one unnamed concept: "the target")."""
    return repr(concept) if concept else "the target"


def _draw(n: int, k: int, g: torch.Generator) -> list[int]:
    """k distinct indices out of n (all of them when k == 0 or k >= n), in a seeded order."""
    if k == 0 or k >= n:
        return list(range(n))
    return torch.randperm(n, generator=g)[:k].tolist()


def _draw_weighted(names: list[str], weights: dict[str, float], k: int, g: torch.Generator) -> list[int]:
    """k distinct indices drawn with probabilities ``weights`` (all of them when k == 0 or k >= n)."""
    if k == 0 or k >= len(names):
        return list(range(len(names)))
    w = torch.tensor([float(weights.get(n, 0.0)) for n in names])
    if not bool((w > 0).any()):
        raise SurgUnError("[SurgUn] every retain prompt has draw weight 0; give at least one a positive weight.")
    return torch.multinomial(w, k, replacement=False, generator=g).tolist()


def _pick(samples: torch.Tensor, count: int, g: torch.Generator) -> torch.Tensor:
    idx = torch.randint(0, samples.shape[0], (count,), generator=g)
    return samples[idx]


@dataclass
class Batch:
    """One step's samples: ``prompts[i]`` conditions ``x0[i]``, ``sources[i]`` is the prompt it was made
    from, ``spans`` the rows of each role."""

    x0: torch.Tensor
    prompts: list[str]
    sources: list[str]
    spans: dict[str, list[tuple[int, int]]]
    noise_rows: list[int] | None = None
    """Per row, the row whose noise and level it takes (``TrainConfig.shared_noise``); None: each its own."""

    def teachers(self) -> list[str | None]:
        """The descent rows' own prompts (their model targets); None for the ascent's rows."""
        out: list[str | None] = list(self.sources)
        for a, b in self.spans["target"]:
            out[a:b] = [None] * (b - a)
        return out

    def levels(self, probs, g: torch.Generator) -> torch.Tensor:
        """Per row: the ascent's rows at levels drawn from ``probs``, NaN (uniform) for the rest."""
        out = torch.full((len(self.prompts),), float("nan"))
        for a, b in self.spans["target"]:
            out[a:b] = draw_levels(probs, b - a, g)
        return out

    def under(self, name: str) -> "Batch":
        """This batch plus a copy of its competition rows (target, distractors) conditioned on ``name``,
        each copy at its original row's noise and level: the same inputs, another context."""
        rows = [i for role in ("target", "distractor") for a, b in self.spans[role] for i in range(a, b)]
        spans = {role: list(v) for role, v in self.spans.items()}
        base = len(self.prompts)
        for role in ("target", "distractor"):
            for a, b in self.spans[role]:
                start = base + rows.index(a)
                spans[role].append((start, start + b - a))
        own = self.noise_rows if self.noise_rows is not None else list(range(base))
        return Batch(torch.cat([self.x0, self.x0[rows]]), self.prompts + [name] * len(rows),
                     self.sources + [self.sources[i] for i in rows], spans, own + [own[i] for i in rows])


def _draw_batch(data: ConceptData, config: TrainConfig, distractor_names: list[str], retain_names: list[str],
                ascent: bool, g: torch.Generator) -> Batch:
    """One step's samples: target, drawn distractors (one sample each), drawn retain prompts."""
    w = config.weights
    chunks: list[torch.Tensor] = []
    prompts: list[str] = []
    sources: list[str] = []
    spans: dict[str, list[tuple[int, int]]] = {"target": [], "distractor": [], "retain": []}

    def add(role: str, x: torch.Tensor, prompt: str, source: str) -> None:
        start = len(prompts)
        chunks.append(x)
        prompts.extend([prompt] * x.shape[0])
        sources.extend([source] * x.shape[0])
        spans[role].append((start, len(prompts)))

    if config.shared_noise:  # sample k of every prompt was made from the same starting noise
        k = torch.randint(0, data.target.shape[0], (config.target_per_step,), generator=g)
        target, partner = (lambda x: x[k]), (lambda x: x[k[:1] % x.shape[0]])
    else:
        target, partner = (lambda x: _pick(x, config.target_per_step, g)), (lambda x: _pick(x, 1, g))
    if ascent:
        add("target", target(data.target), data.target_prompt, data.target_prompt)
    if w.distract > 0:
        for i in _draw(len(distractor_names), config.distractors_per_step, g):
            add("distractor", partner(data.distractors[distractor_names[i]]), data.target_prompt, distractor_names[i])
    if w.retain > 0:
        drawn = (_draw_weighted(retain_names, data.retain_weights, config.retain_per_step, g) if data.retain_weights
                 else _draw(len(retain_names), config.retain_per_step, g))
        for i in drawn:
            add("retain", _pick(data.retain[retain_names[i]], 1, g), retain_names[i], retain_names[i])
    noise_rows = None
    if config.shared_noise and spans["distractor"]:
        # distractor rows take the target sample's noise and level (the first distractor's once the ascent is off)
        noise_rows = list(range(len(prompts)))
        anchor = (spans["target"] or spans["distractor"])[0][0]
        for a, b in spans["distractor"]:
            noise_rows[a:b] = [anchor] * (b - a)
    return Batch(torch.cat(chunks), prompts, sources, spans, noise_rows)


def _role_loss(losses: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor | None:
    """One loss per drawn item of a role (mean over its samples), or None if the role is off."""
    if not spans:
        return None
    return torch.stack([losses[a:b].mean() for a, b in spans])


def train_competition(
    params: Sequence[torch.Tensor],
    data: ConceptData | Sequence[ConceptData],
    loss_fn: LossFn,
    config: TrainConfig,
    on_step: OnStep | None = None,
    on_setup: OnSetup | None = None,
    input_bases: Sequence[torch.Tensor | None] | None = None,
    contexts: Mapping[str, torch.Tensor] | None = None,
    drawn: Drawn | None = None,
) -> TrainResult:
    """Minimise the SurgUn objective over ``params`` (leaf tensors with ``requires_grad``).

    Each step draws ``target_per_step`` target samples, ``distractors_per_step`` distractors
    (one sample each) and ``retain_per_step`` retain prompts (one sample each), evaluates all of
    them in one batched ``loss_fn`` call, and takes one Adam step. Everything random comes from
    a generator seeded with ``config.seed``.

    ``data`` may be several groups (a concept that spans several target prompts, e.g. a style
    over every object); each step then draws one group uniformly.

    ``on_setup(phase, done, total)`` follows each forward pass of the work done before the first step
    (the concept_levels profile); like ``on_step``, raising from it stops (Cancel).

    ``input_bases`` (one per param, or None): a param ``[out, D]`` given a basis ``[D, r]`` changes only in
    its action on inputs in that span, every step (:mod:`surgun_core.subspace`: its gradient and its value are confined).

    ``contexts`` (target prompt -> the context the model reads for it): where ``config.adversary_steps`` > 0, the
    adversary's soft prompts start there (:mod:`surgun_core.adversary`).

    ``drawn()`` (needed by ``config.ascent_until_erased``): per concept, the fraction of its target renders made
    with the weights as they are that are still drawn as the target (1 before training; 0 = none is).
    """
    groups = [data] if isinstance(data, ConceptData) else list(data)
    if not groups:
        raise SurgUnError("[SurgUn] no training data was given.")
    for group in groups:
        group.validate(config.weights)
    params = list(params)
    if not params:
        raise SurgUnError("[SurgUn] no trainable parameters were selected.")
    w = config.weights
    bases = list(input_bases) if input_bases is not None else [None] * len(params)
    if len(bases) != len(params):
        raise SurgUnError(f"[SurgUn] {len(bases)} input bases were given for {len(params)} parameters; give one (or None) per parameter.")
    bases = [None if b is None else b.to(device=p.device, dtype=p.dtype) for p, b in zip(params, bases)]  # once, not every step
    confined = any(b is not None for b in bases)
    starts = [p.detach().clone() if b is not None else None for p, b in zip(params, bases)]  # the change is what is confined

    names = list(dict.fromkeys(d.concept for d in groups))
    profiles: dict[str, LevelProfile] = {}
    if w.ascent > 0 and config.concept_levels:
        for i, name in enumerate(names):
            mine = [(d.target_prompt, d.target, list(d.distractors)) for d in groups if d.concept == name]
            phase = f"measuring concept levels{f' ({name})' if name else ''}"
            tell = None if on_setup is None else (lambda done, total, phase=phase: on_setup(phase, done, total))
            profiles[name] = measure_profile(loss_fn, mine, seed=offset_seed(config.seed, 104729 + i), on_call=tell)
            log.info("[SurgUn] concept levels%s: 90%% of the ascent in the noisiest %d%% of the schedule (gaps %s)",
                     f" ({name})" if name else "", round(100 * profiles[name].mass_until(0.9)),
                     " ".join(f"{v:.3g}" for v in profiles[name].gaps))
    guards: dict[str, AscentGuard] = {}
    probe_seed = config.seed if config.probe_seed is None else config.probe_seed
    if w.ascent > 0 and config.ascent_cap > 0:
        for i, name in enumerate(names):
            mine = [(d.target_prompt, d.target) for d in groups if d.concept == name]
            guards[name] = AscentGuard(loss_fn, mine, config.ascent_cap, params, config.guard_every, config.guard_draws,
                                       config.guard_samples, offset_seed(probe_seed, i))
            log.info("[SurgUn] guard%s: target probe loss %.5f, ascent stops at %.5f (x%g)", f" ({name})" if name else "",
                     guards[name].reference, guards[name].cap, config.ascent_cap)
    guard = guards.get(names[0])
    if render_checks(config) and drawn is None:
        raise SurgUnError("[SurgUn] ascent_until_erased reads the target's renders, but no renderer was given. "
                          "Pass drawn=, or set ascent_until_erased off.")
    if config.ascent_until_erased and not render_checks(config):
        log.warning("[SurgUn] ascent_until_erased (--ascent-until-erased) is on for %s, but %s, so no render check can hold "
                    "the ascent off: the run trains as with the option off. %s", ", ".join(map(_named, names)),
                    "the ascent is off (ascent_weight 0)" if w.ascent <= 0 else
                    f"the renders are checked every {config.guard_every} steps and the run has {config.steps}",
                    "Turn ascent_until_erased off." if w.ascent <= 0 else
                    f"Give more than {config.guard_every} steps, or turn ascent_until_erased off.")
    held: set[str] = set()  # concepts whose ascent the renders hold off
    erased_at: dict[str, list[int]] = {}
    drawn_history: list[tuple[int, dict[str, float]]] = []
    adversary = None
    if config.adversary_steps > 0:
        missing = [d.target_prompt for d in groups if not contexts or d.target_prompt not in contexts]
        if missing:
            raise SurgUnError(f"[SurgUn] adversary_steps is {config.adversary_steps} but no context was given for the target "
                              f"prompt '{missing[0][:60]}'. Pass the target prompts' contexts, or set adversary_steps to 0.")
        adversary = SoftPromptAdversary({d.target_prompt: contexts[d.target_prompt] for d in groups}, config.adversary_steps,
                                        config.adversary_lr)

    opt = torch.optim.Adam(params, lr=config.learning_rate)
    g = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []

    for step in range(config.steps):
        if w.distract == 0 and w.retain == 0 and not (w.ascent > 0 and any(
                c not in held and (c not in guards or guards[c].active) for c in names)):
            break  # the guards (or the renders) stopped the only term: nothing is left to train
        data = groups[0] if len(groups) == 1 else groups[int(torch.randint(len(groups), (1,), generator=g))]
        ascent = w.ascent > 0 and data.concept not in held and (data.concept not in guards or guards[data.concept].active)
        batch = _draw_batch(data, config, list(data.distractors), list(data.retain), ascent, g)
        adversary_loss = None
        if adversary is not None:  # the soft prompt moves first, then the weights train against where it is
            rows = batch.spans["target"]
            shown = batch.x0[rows[0][0]:rows[0][1]] if rows else _pick(data.target, config.target_per_step, g)
            adversary_loss = adversary.attack(loss_fn, shown, data.target_prompt, g)
            batch = batch.under(soft_name(data.target_prompt))
        extra = {"teachers": batch.teachers()} if config.model_targets else {}
        if data.concept in profiles:
            extra["percents"] = batch.levels(profiles[data.concept].probs, g)
        if batch.noise_rows is not None:
            extra["noise_rows"] = batch.noise_rows
        if adversary is not None:
            extra["contexts"] = adversary.contexts()
        losses = loss_fn(batch.x0, batch.prompts, g, **extra)
        l_t, l_d, l_r = (_role_loss(losses, batch.spans[role]) for role in ("target", "distractor", "retain"))
        tied = config.ascent_until_tie and ascent and l_t is not None and l_d is not None and bool(l_t.mean() >= l_d.mean())
        loss, parts = competition_loss(None if l_t is None else l_t.mean(), l_d, None if l_r is None else l_r.mean(), w,
                                       ascent and not tied)
        if not all(math.isfinite(v) for v in parts.values()):
            raise NonFiniteLossError(step + 1, parts)

        opt.zero_grad(set_to_none=True)
        loss.backward()
        if confined:
            confine_([p.grad for p in params if p.grad is not None], [b for p, b in zip(params, bases) if p.grad is not None])
        if config.max_grad_norm > 0:
            gn = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        else:
            gn = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        if not torch.isfinite(gn):
            raise NonFiniteLossError(step + 1, {**parts, "grad_norm": float(gn)})
        opt.step()
        if confined:
            confine_(params, bases, starts)  # Adam's per-element scaling would leave the span; the change must not

        metrics = {"step": step + 1, **parts, "grad_norm": float(gn), "ascent_active": float(ascent and not tied)}
        if config.ascent_until_tie:
            metrics["ascent_tied"] = float(tied)
        if adversary_loss is not None:
            metrics["adversary_loss"] = adversary_loss
        for name, gd in guards.items():
            if name in held:
                gd.watch(step + 1)
            elif gd.after_step(step + 1):
                opt.state.clear()  # the ascent's momentum must not carry it past the cap
                log.info("[SurgUn] guard%s: the target's probe loss reached x%.3f at step %d; the ascent stops",
                         f" ({name})" if name else "", gd.ratio, step + 1)
            if len(guards) > 1:
                metrics[f"guard_ratio:{name}"] = gd.ratio
        if guard is not None:
            metrics["guard_ratio"] = max(gd.ratio for gd in guards.values())
        if drawn is not None and config.ascent_until_erased and w.ascent > 0 and (step + 1) % config.guard_every == 0:
            reading = [c for c in names if c in held or c not in guards or guards[c].active]
            if reading:  # a concept the guard holds off has nothing for the renders to stop
                fractions = {c: float(f) for c, f in drawn().items()}
                drawn_history.append((step + 1, fractions))
                last = step + 1 == config.steps  # nothing trains after it: a reading of the finished weights, no switch
                for c in reading:
                    log.info("[SurgUn] %s: %.0f%% of the renders still draw the target at step %d%s", _named(c),
                             100 * fractions.get(c, 1.0), step + 1, " (the last)" if last else "")
                for c in [] if last else reading:
                    gone = fractions.get(c, 1.0) <= 0.0
                    if gone and c not in held:
                        held.add(c)
                        erased_at.setdefault(c, []).append(step + 1)
                        opt.state.clear()  # the ascent's momentum must not carry it on
                        log.info("[SurgUn] %s: no render draws the target at step %d; the ascent is held off",
                                 _named(c), step + 1)
                    elif not gone and c in held:
                        held.discard(c)
                        if c in guards:
                            guards[c].resume()
                        log.info("[SurgUn] %s: the renders draw the target again at step %d; the ascent resumes",
                                 _named(c), step + 1)
                metrics["drawn"] = max(fractions.get(c, 1.0) for c in reading)
        history.append(metrics)
        if on_step is not None:
            on_step(step + 1, config.steps, metrics)

    per_concept = {name: {"reference_probe_loss": gd.reference, "cap": gd.cap, "guard": list(gd.history), "stops": list(gd.stops),
                          "final_ratio": gd.ratio} for name, gd in guards.items()} if len(names) > 1 else {}
    return TrainResult(history=history, reference_target_loss=guard.reference if guard else float("nan"),
                       cap=guard.cap if guard else None, guard=list(guard.history) if guard else [],
                       guard_stops=list(guard.stops) if guard else [], concepts=per_concept, levels=profiles,
                       adversary_drift=dict(adversary.drift) if adversary else {}, drawn=drawn_history, erased_at=erased_at)
