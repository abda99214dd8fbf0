"""Each family's native denoising objective, computed through ComfyUI's ``model_sampling``.

The training loop takes its loss as a function; :data:`LossFactory` builds one for the model
being trained. SurgUn trains with :func:`denoising`; the benchmark's baselines bring their own
factories (``benchmarks/toy_canvas/baselines.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ..surgun_core.errors import SurgUnError
from ..surgun_core.levels import HI, LO
from ..surgun_core.train import LossFn
from .prompts import PromptBank

if TYPE_CHECKING:
    from .deltas import TrainableDeltas

# A loss factory: given the trainable model and the prompts, the per-sample loss the loop minimises.
LossFactory = Callable[["TrainableDeltas", PromptBank], LossFn]


def objective_weight(model_sampling, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample weight that turns ``|x0_hat - x0|^2`` into the native MSE.

    eps: ``x0_hat - x0 = sigma (eps - eps_hat)``            -> ``1 / sigma^2``
    v:   ``x0_hat - x0 = (v - v_hat) s sd / sqrt(s^2+sd^2)`` -> ``(s^2 + sd^2) / (s^2 sd^2)``
    flow (CONST): ``x0_hat - x0 = sigma (v - v_hat)``       -> ``1 / sigma^2``
    """
    import comfy.model_sampling as ms

    if isinstance(model_sampling, ms.V_PREDICTION):
        sd = float(model_sampling.sigma_data)
        return (sigma**2 + sd**2) / (sigma**2 * sd**2)
    if isinstance(model_sampling, (ms.EPS, ms.CONST)):
        return 1.0 / sigma**2
    raise SurgUnError(f"[SurgUn] no training objective for prediction type {type(model_sampling).__name__}.")


def draw_sigmas(model_sampling, count: int, generator: torch.Generator, percents: torch.Tensor | None = None) -> torch.Tensor:
    """Uniform training timesteps (as percent of the schedule), mapped to sigmas. ``percents``: a
    level per sample that replaces its draw (NaN keeps the draw); the draw is made either way, so
    the rest of the generator's stream does not depend on it."""
    u = torch.rand(count, generator=generator) * (HI - LO) + LO
    if percents is not None:
        u = torch.where(torch.isnan(percents), u, percents.float().clamp(LO, HI))
    return torch.tensor([float(model_sampling.percent_to_sigma(float(p))) for p in u], dtype=torch.float32)


def noisy_input(model_sampling, x0: torch.Tensor, generator: torch.Generator, device,
                percents: torch.Tensor | None = None,
                noise_rows: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sigma, x_t, x0)`` on ``device``: a training timestep and noise per sample, drawn from ``generator``.
    ``noise_rows``: per sample, the row whose timestep and noise it takes (``TrainConfig.shared_noise``)."""
    sigma = draw_sigmas(model_sampling, x0.shape[0], generator, percents).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device=device, dtype=x0.dtype)
    if noise_rows is not None:
        rows = torch.as_tensor(list(noise_rows), dtype=torch.long, device=device)
        sigma, noise = sigma[rows], noise[rows]
    x0 = x0.to(device)
    return sigma, model_sampling.noise_scaling(sigma, noise, x0), x0


def weighted_error(model_sampling, pred: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample ``|pred - target|^2`` in x0 space, weighted into the family's native MSE."""
    err = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return err * objective_weight(model_sampling, sigma)


def denoising_loss(model_patcher, bank: PromptBank, x0: torch.Tensor, prompts: Sequence[str], generator: torch.Generator,
                   teachers: Sequence[str | None] | None = None, original=None, percents: torch.Tensor | None = None,
                   noise_rows: Sequence[int] | None = None, contexts=None) -> torch.Tensor:
    """Per-sample native denoising loss of clean latents ``x0`` (model space) under ``prompts``.

    ``teachers`` (with ``original``, a context in which the model computes with its untouched weights):
    a row with a prompt regresses onto the untouched model's prediction under that prompt at the same
    noisy input instead of onto its sample (the model targets of ``TrainConfig.model_targets``).
    ``percents``: each sample's noise level, NaN for a uniform draw (``TrainConfig.concept_levels``).
    ``noise_rows``: per sample, the row whose noise and level it takes (``TrainConfig.shared_noise``).
    ``contexts``: soft prompts by name (``TrainConfig.adversary_steps``)."""
    ms = model_patcher.get_model_object("model_sampling")
    sigma, xt, x0 = noisy_input(ms, x0, generator, bank.device, percents, noise_rows)
    rows = [i for i, t in enumerate(teachers or ()) if t]
    if rows:
        with original():
            taught = model_patcher.model.apply_model(xt[rows], sigma[rows], **bank.batch([teachers[i] for i in rows]))
        x0 = x0.clone()
        x0[rows] = taught.to(x0.dtype)
    return weighted_error(ms, model_patcher.model.apply_model(xt, sigma, **bank.batch(prompts, contexts)), x0, sigma)


def denoising(deltas: TrainableDeltas, bank: PromptBank) -> LossFn:
    """The loss factory SurgUn trains with: the native denoising loss of the model being trained."""
    return lambda x0, prompts, g, teachers=None, percents=None, noise_rows=None, contexts=None: denoising_loss(
        deltas.work, bank, x0, prompts, g, teachers, deltas.original, percents, noise_rows, contexts)
