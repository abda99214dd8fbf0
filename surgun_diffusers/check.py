"""How far the LoRA is from the exact erasure, measured on images.

The same prompts and seeds are rendered three times: by the untouched pipeline, with the exact
deltas merged into the weights, and with the LoRA file loaded through diffusers'
``load_lora_weights``. Reported: the mean and max absolute pixel difference (0..1 scale) and the
PSNR of LoRA vs exact, and the same mean for exact vs untouched (how much the erasure itself
moved the images), whose ratio says how much of the erasure's effect the approximation misses.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import torch

from .adapter.model import merged
from .sampling import render


def _stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    d = (a - b).abs()
    mse = float(d.pow(2).mean())
    return {"mean_abs": float(d.mean()), "max_abs": float(d.max()), "psnr_db": (99.0 if mse == 0 else 10 * math.log10(1.0 / mse))}


def lora_image_error(pipe, family, deltas: dict, lora_path: str, prompts: Sequence[str], count: int, steps: int, cfg: float,
                     size: int, seed: int, sana_instruction: bool = True) -> dict:
    net = getattr(pipe, family.denoiser)

    def images() -> torch.Tensor:
        out = render(pipe, family, prompts, count, steps, cfg, size, seed, None, sana_instruction)
        return torch.cat([out[p] for p in prompts])

    original = images()
    with merged(net, deltas):
        exact = images()
    directory, name = os.path.split(os.path.abspath(lora_path))
    from diffusers.utils import logging as diffusers_logging

    was = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # the file holds the denoiser's layers only: its "no text encoder keys" is noise
    try:
        pipe.load_lora_weights(directory, weight_name=name, adapter_name="surgun_check")
    finally:
        diffusers_logging.set_verbosity(was)
    try:
        lora = images()
    finally:
        pipe.unload_lora_weights()  # takes the PEFT layers out again (the pipeline is as it was)
    err, effect = _stats(lora, exact), _stats(exact, original)
    return {"prompts": list(prompts), "images": int(original.shape[0]), "steps": steps, "size": size,
            "lora_vs_exact": err, "exact_vs_original": effect,
            "missed_share": (err["mean_abs"] / effect["mean_abs"]) if effect["mean_abs"] > 0 else 0.0}
