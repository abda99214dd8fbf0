"""Rendering with ComfyUI's own sampler: training samples, probe renders, before/after images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..surgun_core.seeds import offset_seed
from .prompts import PromptBank, plan_batches, stack


def latent_ratio(model_patcher) -> int:
    """Pixels per latent cell (8 for SD-style VAEs, 1 for pixel-space models)."""
    return getattr(model_patcher.get_model_object("latent_format"), "spacial_downscale_ratio", 8)


def latent_shape_for(model_patcher, size: int) -> tuple[int, int, int]:
    """(channels, height, width) of the latent for a square image of ``size`` pixels (rounded down to the grid)."""
    side = max(1, size // latent_ratio(model_patcher))
    return (model_patcher.get_model_object("latent_format").latent_channels, side, side)


def sample_prompts(
    model_patcher,
    bank: PromptBank,
    batches: list[list[str]],
    count: int,
    steps: int,
    cfg: float,
    seed: int,
    sampler: str,
    scheduler: str,
    on_step: Callable[[], None] | None = None,
    shared_noise: bool = False,
    last_step: int | None = None,
    noise: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """``count`` samples of each prompt of ``batches`` (see :func:`plan_batches`), as KSampler
    returns them. Batch ``i`` uses noise seed ``seed + i`` (wrapped below 2**64): the same call gives the same samples.
    ``shared_noise``: sample ``k`` of every prompt starts from the same noise (seed ``seed``), so two prompts'
    samples differ only where the prompts lead them apart (``TrainConfig.shared_noise``). ``last_step``: the sampler
    runs only its first ``last_step`` steps, and each row is its prediction there of the finished image (in the same
    latent space as a finished sample). ``noise``: each prompt's own starting noise (``[count, ...]``, see
    :func:`draw_noise`), instead of drawing it from ``seed``."""
    import comfy.sample

    negative = bank.conditioning("")

    seen: dict[str, torch.Tensor] = {}

    def callback(step, x0, x, total):
        seen["x0"] = x0
        if on_step is not None:
            on_step()

    out: dict[str, torch.Tensor] = {}
    if shared_noise and noise is None:  # every prompt starts from the same noises
        noise = dict.fromkeys((p for batch in batches for p in batch), draw_noise(bank, count, seed))
    for i, batch in enumerate(batches):
        latent = torch.zeros((count * len(batch), *bank.latent_shape))
        if noise is not None:
            noise_in = torch.cat([noise[p] for p in batch])
        else:
            noise_in = comfy.sample.prepare_noise(latent, offset_seed(seed, i))
        positive = stack([bank.conditioning(p) for p in batch], count)
        result = comfy.sample.sample(model_patcher, noise_in, steps, cfg, sampler, scheduler, positive, negative, latent,
                                     seed=offset_seed(seed, i), last_step=last_step, callback=callback, disable_pbar=True)
        if last_step is not None:
            x0 = model_patcher.get_model_object("process_latent_out")(seen["x0"])
            result = x0.to(device=result.device, dtype=result.dtype)
        for j, p in enumerate(batch):
            out[p] = result[j * count:(j + 1) * count]
    return out


def draw_noise(bank: PromptBank, n: int, seed: int) -> torch.Tensor:
    """``n`` starting noises from ``seed``, as KSampler draws a batch of ``n`` (``[n, *latent_shape]``)."""
    import comfy.sample

    return comfy.sample.prepare_noise(torch.zeros((n, *bank.latent_shape)), seed)


def decode_images(vae, latents: torch.Tensor) -> torch.Tensor:
    """Latents (as KSampler returns them) -> IMAGE ``[N, H, W, 3]`` in 0..1 on CPU."""
    images = vae.decode(latents)
    if images.ndim == 5:  # some VAEs return a time axis
        images = images.reshape(-1, *images.shape[-3:])
    return images.float().clamp(0, 1).cpu()


def image_embedder(clip_vision):
    """(embed(images) -> [N, D], name): CLIP-vision image embeddings, or the pixel fallback."""
    from ..surgun_core.scores import PIXEL_FALLBACK, pixel_embed

    if clip_vision is None:
        return pixel_embed, PIXEL_FALLBACK

    def embed(images: torch.Tensor) -> torch.Tensor:
        out = clip_vision.encode_image(images)
        e = getattr(out, "image_embeds", None)
        if e is None:
            e = out["image_embeds"]
        return e.float().cpu()

    return embed, "CLIP vision image embeddings"


@dataclass
class Renderer:
    """Renders prompts at fixed settings with the family's sampler: ``count`` images per prompt,
    ``steps`` sampler steps, ``cfg``. Every sampler step calls ``tick`` (progress and Cancel)."""

    bank: PromptBank
    count: int
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    pixels: int = 0
    """The side actually rendered: the requested size rounded down to the latent grid."""
    tick: Callable[[], None] | None = None

    @classmethod
    def for_model(cls, model_patcher, clip, family, size: int, count: int, steps: int, cfg: float) -> "Renderer":
        shape = latent_shape_for(model_patcher, size)
        bank = PromptBank(clip, model_patcher, shape, model_patcher.load_device)
        return cls(bank, count, steps, cfg, family.arch.sampler, family.arch.scheduler, shape[-1] * latent_ratio(model_patcher))

    def size_note(self, name: str, requested: int) -> str:
        """"" when ``requested`` is rendered as asked, else what is rendered instead (for the user)."""
        if self.pixels == requested:
            return ""
        return f"{name} {requested} is not a multiple of the model's latent grid: images are {self.pixels} px"

    def plan(self, prompts) -> list[list[str]]:
        """Sampler batches for ``prompts``; the same plan rendered with the same seed gives the same noise."""
        return plan_batches(self.bank, prompts, self.count)

    def cost(self, batches: list[list[str]]) -> int:
        """Progress ticks that rendering ``batches`` takes."""
        return len(batches) * self.steps

    def latents(self, model_patcher, batches: list[list[str]], seed: int, shared_noise: bool = False,
                last_step: int | None = None, noise: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        return sample_prompts(model_patcher, self.bank, batches, self.count, self.steps, self.cfg, seed,
                              self.sampler, self.scheduler, on_step=self.tick, shared_noise=shared_noise, last_step=last_step,
                              noise=noise)

    def images(self, model_patcher, vae, batches: list[list[str]], seed: int) -> dict[str, torch.Tensor]:
        return {p: decode_images(vae, x) for p, x in self.latents(model_patcher, batches, seed).items()}
