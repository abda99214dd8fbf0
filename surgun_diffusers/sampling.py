"""The untouched model's own samples (training data and renders), made by the pipeline itself.

Each prompt's noise comes from a seed derived from the run's seed and the prompt's text (with
``shared_noise``, from the run's seed alone: image k of every prompt starts from the same noise), so
a prompt's samples are the same whichever other prompts are sampled with it, in whatever order,
on whichever process: sampling can be shared out between processes and resumed.
"""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import torch


def prompt_seed(seed: int, prompt: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(prompt.encode("utf-8"))) % (2**63 - 1)


def sample_latents(pipe, family, prompts: Sequence[str], count: int, steps: int, cfg: float, size: int, seed: int,
                   on_step: Callable[[], None] | None = None, sana_instruction: bool = True,
                   shared_noise: bool = False) -> dict[str, torch.Tensor]:
    """``count`` latents per prompt (model space, fp32, CPU), sampled by the pipeline with
    classifier-free guidance ``cfg`` in ``steps`` steps at ``size`` pixels. ``shared_noise``: image k of
    every prompt starts from the same noise (``TrainConfig.shared_noise``)."""

    def callback(p, i, t, kwargs):
        if on_step is not None:
            on_step()
        return kwargs

    out: dict[str, torch.Tensor] = {}
    for prompt in dict.fromkeys(prompts):
        g = torch.Generator("cpu").manual_seed(prompt_seed(seed, "" if shared_noise else prompt))
        kwargs = dict(prompt=prompt, num_images_per_prompt=count, num_inference_steps=steps, guidance_scale=cfg,
                      height=size, width=size, generator=g, output_type="latent", callback_on_step_end=callback)
        if family.id == "sana":
            kwargs["use_resolution_binning"] = False
            if not sana_instruction:
                kwargs["complex_human_instruction"] = None
        with torch.no_grad():
            latents = pipe(**kwargs).images
        out[prompt] = latents.detach().float().cpu()
    return out


def decode(pipe, latents: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """Model-space latents -> images ``[N, H, W, 3]`` in 0..1 (fp32, CPU)."""
    vae = pipe.vae
    sf = vae.config.get("scaling_factor", 1.0) or 1.0
    shift = vae.config.get("shift_factor", None)
    dtype = vae.dtype
    upcast = dtype == torch.float16 and vae.config.get("force_upcast", False)  # SDXL's VAE overflows in fp16
    if upcast:
        vae.to(torch.float32)
    images = []
    try:
        with torch.no_grad():
            for i in range(0, latents.shape[0], batch):
                z = latents[i:i + batch].to(device=vae.device, dtype=vae.dtype) / sf
                if shift is not None:
                    z = z + shift
                x = vae.decode(z, return_dict=False)[0]
                images.append((x.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu())
    finally:
        if upcast:
            vae.to(dtype)
    return torch.cat(images)


def render(pipe, family, prompts: Sequence[str], count: int, steps: int, cfg: float, size: int, seed: int,
           on_step: Callable[[], None] | None = None, sana_instruction: bool = True) -> dict[str, torch.Tensor]:
    """Decoded images per prompt (same seeds as :func:`sample_latents`)."""
    lat = sample_latents(pipe, family, prompts, count, steps, cfg, size, seed, on_step, sana_instruction)
    return {p: decode(pipe, z) for p, z in lat.items()}


def predict_clean(schedule, denoise, prompts: Sequence[str], noise: torch.Tensor, steps: int, cfg: float, last_step: int,
                  on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """A deterministic sampler's prediction of the finished sample after its first ``last_step`` of ``steps`` steps
    (model space, fp32, CPU), one row per prompt from ``noise`` (``[N, ...]``): DDIM (eta 0) on eps and v families,
    Euler on flow, at ``steps`` levels evenly spread over the training schedule from its noisiest end, with
    classifier-free guidance ``cfg`` against the empty prompt (none at ``cfg`` 1). At ``last_step == steps`` it is
    the finished sample. ``schedule`` is a :class:`~surgun_diffusers.objective.NoiseSchedule`, ``denoise`` a
    :class:`~surgun_diffusers.conditioning.Denoiser` (renders with the network as it is)."""
    levels = schedule.at(torch.arange(steps) / steps)
    rows = list(prompts)
    x = noise.float()
    last = max(1, min(last_step, steps))
    with torch.no_grad():
        for i in range(last):
            d = levels.rows(torch.full((len(rows),), i))
            if cfg == 1.0:
                out = denoise(x, d.timestep, rows).float()
            else:
                both = denoise(torch.cat([x, x]), torch.cat([d.timestep, d.timestep]), [*rows, *[""] * len(rows)]).float()
                cond, uncond = both.chunk(2)
                out = uncond + cfg * (cond - uncond)
            out = out.to(x.device)
            clean, eps = schedule.split(x, out, d)
            if on_step is not None:
                on_step()
            if i < last - 1:
                x = schedule.noisy(clean, eps, levels.rows(torch.full((len(rows),), i + 1)))
    return clean.cpu()
