"""Each family's native training objective on diffusers models, and ESD-x's regression.

* eps / v (SD1.x, SD2.x, SDXL): integer timesteps ``t ~ U{0..T-1}``, ``x_t = sqrt(a_t) x0 +
  sqrt(1 - a_t) eps`` with the scheduler's ``alphas_cumprod``; the target is ``eps``, or
  ``v = sqrt(a_t) eps - sqrt(1 - a_t) x0`` (what ``DDPMScheduler.add_noise`` / ``get_velocity``
  compute, checked in the tests);
* flow (SANA): ``sigma`` drawn uniformly from the shifted training grid of
  ``FlowMatchEulerDiscreteScheduler(shift=flow_shift)``, ``x_t = (1 - sigma) x0 + sigma eps``, the
  target is the velocity ``eps - x0``, and the transformer sees ``timestep = 1000 sigma``
  (times its ``timestep_scale``), as SANA's own training and pipeline do.

The loss is the per-sample mean squared error between the network's output and that target,
in fp32 (the same MSE diffusers' training scripts minimise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from surgun_core.errors import SurgUnError


@dataclass
class Draw:
    """One batch of training noise levels."""

    timestep: torch.Tensor
    """What the denoiser is called with."""
    signal: torch.Tensor
    """Coefficient of x0 in x_t, per sample."""
    noise: torch.Tensor
    """Coefficient of the noise in x_t, per sample."""

    def rows(self, index: torch.Tensor) -> "Draw":
        """The draw of rows ``index`` (a row may appear several times)."""
        return Draw(self.timestep[index], self.signal[index], self.noise[index])


class NoiseSchedule:
    """The forward process and training target of one family."""

    def __init__(self, prediction: str, num_train_timesteps: int, alphas_cumprod: torch.Tensor | None = None,
                 flow_sigmas: torch.Tensor | None = None, flow_timesteps: torch.Tensor | None = None,
                 timestep_scale: float = 1.0):
        if prediction not in ("eps", "v", "flow"):
            raise SurgUnError(f"[SurgUn] no training objective for prediction type {prediction!r}.")
        self.prediction = prediction
        self.T = int(num_train_timesteps)
        self.alphas_cumprod = alphas_cumprod
        self.flow_sigmas = flow_sigmas
        self.flow_timesteps = flow_timesteps
        self.timestep_scale = float(timestep_scale)

    @classmethod
    def from_pipeline(cls, pipe, family) -> "NoiseSchedule":
        cfg = dict(pipe.scheduler.config)
        if family.prediction in ("eps", "v"):
            from diffusers import DDPMScheduler

            keep = {k: cfg[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                                        "rescale_betas_zero_snr") if k in cfg and cfg[k] is not None}
            train = DDPMScheduler(**keep)
            return cls(family.prediction, train.config.num_train_timesteps, alphas_cumprod=train.alphas_cumprod.float())
        from diffusers import FlowMatchEulerDiscreteScheduler

        shift = cfg.get("flow_shift") or cfg.get("shift") or 1.0
        T = cfg.get("num_train_timesteps", 1000)
        train = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=float(shift))
        denoiser = getattr(pipe, family.denoiser)
        return cls("flow", T, flow_sigmas=train.sigmas.float().clone(), flow_timesteps=train.timesteps.float().clone(),
                   timestep_scale=float(denoiser.config.get("timestep_scale", 1.0) or 1.0))

    def draw(self, n: int, generator: torch.Generator, percents: torch.Tensor | None = None) -> Draw:
        """``n`` training timesteps. ``percents``: a level per sample (percent of the schedule, 0 = the noisiest
        end, NaN keeps the draw) that replaces its draw; the draw is made either way (the guard's probe)."""
        idx = torch.randint(0, len(self.flow_sigmas) if self.prediction == "flow" else self.T, (n,), generator=generator)
        if percents is not None:
            idx = torch.where(torch.isnan(percents), idx, self._fixed(percents))
        return self._level(idx)

    def at(self, percents: torch.Tensor) -> Draw:
        """The noise levels at ``percents`` of the schedule (0 = the noisiest end), without a draw."""
        return self._level(self._fixed(percents.float()))

    def _fixed(self, percents: torch.Tensor) -> torch.Tensor:
        """Percent of the schedule (0 = the noisiest end) -> index into the training grid (flow) or timestep."""
        if self.prediction == "flow":
            return torch.argsort(self.flow_sigmas, descending=True)[self._index(percents, len(self.flow_sigmas))]
        return self.T - 1 - self._index(percents, self.T)

    def _level(self, idx: torch.Tensor) -> Draw:
        if self.prediction == "flow":
            sigma = self.flow_sigmas[idx]
            return Draw(self.flow_timesteps[idx] * self.timestep_scale, 1.0 - sigma, sigma)
        a = self.alphas_cumprod[idx]
        return Draw(idx, a.sqrt(), (1.0 - a).sqrt())

    def split(self, xt: torch.Tensor, out: torch.Tensor, d: Draw) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's output ``out`` at ``xt`` (level ``d``) -> its predictions of the clean sample and of the noise,
        which recombine into ``xt`` as :meth:`noisy` does."""
        s, n, x, o = self._b(d.signal, xt), self._b(d.noise, xt), xt.float(), out.float()
        if self.prediction == "eps":
            return (x - n * o) / s, o
        if self.prediction == "v":  # s^2 + n^2 = 1
            return s * x - n * o, n * x + s * o
        return x - n * o, x + s * o  # flow: s + n = 1, out = noise - x0

    @staticmethod
    def _index(percents: torch.Tensor, count: int) -> torch.Tensor:
        """Percent of the schedule -> index among ``count`` steps counted from the noisiest (NaN -> 0, unused)."""
        return (torch.nan_to_num(percents.float()).clamp(0, 1) * (count - 1)).round().long()

    @staticmethod
    def _b(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return c.to(device=like.device, dtype=torch.float32).view(-1, *([1] * (like.ndim - 1)))

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, d: Draw) -> torch.Tensor:
        return self._b(d.signal, x0) * x0.float() + self._b(d.noise, x0) * noise.float()

    def target(self, x0: torch.Tensor, noise: torch.Tensor, d: Draw) -> torch.Tensor:
        if self.prediction == "eps":
            return noise.float()
        if self.prediction == "v":
            return self._b(d.signal, x0) * noise.float() - self._b(d.noise, x0) * x0.float()
        return noise.float() - x0.float()


# denoise(x_t, timestep, prompts[, contexts]) -> the network's native output (eps, v or velocity)
Denoise = Callable[[torch.Tensor, torch.Tensor, Sequence[str]], torch.Tensor]


def _draws(schedule: NoiseSchedule, x0: torch.Tensor, generator: torch.Generator, noise_rows: Sequence[int] | None = None,
           percents: torch.Tensor | None = None):
    d = schedule.draw(x0.shape[0], generator, percents)
    noise = torch.randn(x0.shape, generator=generator)
    if noise_rows is not None:  # TrainConfig.shared_noise: a row takes another row's timestep and noise
        index = torch.as_tensor(list(noise_rows), dtype=torch.long)
        d, noise = d.rows(index), noise[index]
    noise = noise.to(device=x0.device)
    return d, noise, schedule.noisy(x0, noise, d)


def denoising_loss(schedule: NoiseSchedule, denoise: Denoise, x0: torch.Tensor, prompts: Sequence[str],
                   generator: torch.Generator, noise_rows: Sequence[int] | None = None, contexts=None,
                   percents: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample native denoising loss of clean latents ``x0`` under ``prompts`` (shape ``[B]``).

    Timesteps, then noise, are drawn from ``generator`` (so a replayed generator reproduces them).
    ``noise_rows``: per sample, the row whose timestep and noise it takes (``TrainConfig.shared_noise``).
    ``contexts``: soft prompts by name (``TrainConfig.adversary_steps``).
    ``percents``: per sample, a fixed noise level (the ascent guard's probe; NaN keeps the draw)."""
    d, noise, xt = _draws(schedule, x0, generator, noise_rows, percents)
    pred = (denoise(xt, d.timestep, prompts, contexts) if contexts else denoise(xt, d.timestep, prompts)).float()
    return (pred - schedule.target(x0, noise, d)).pow(2).flatten(1).mean(1)


def esd_loss(schedule: NoiseSchedule, denoise: Denoise, frozen: Callable, x0: torch.Tensor, prompts: Sequence[str],
             generator: torch.Generator, eta: float = 1.0) -> torch.Tensor:
    """ESD-x's negative-guidance regression (Gandikota et al. 2023), per sample.

    At the same noisy input, the trained model's output under the concept prompt is regressed
    onto the frozen model's ``out(empty) - eta * (out(concept) - out(empty))``. ``frozen()`` is a
    context manager under which ``denoise`` computes with the original weights, without gradients.
    """
    d, _, xt = _draws(schedule, x0, generator)
    with frozen():
        cond = denoise(xt, d.timestep, prompts).float()
        uncond = denoise(xt, d.timestep, [""] * len(prompts)).float()
        target = uncond - eta * (cond - uncond)
    pred = denoise(xt, d.timestep, prompts).float()
    return (pred - target).pow(2).flatten(1).mean(1)
