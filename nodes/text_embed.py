"""Text embeddings from a ComfyUI CLIP object, for distractor selection."""

from __future__ import annotations

import hashlib
from typing import Callable

import torch

from ..surgun_core.distractors import EmbeddingCache

CACHE = EmbeddingCache()


def encoder_identity(clip) -> str:
    """A fingerprint of the text encoder's weights (and of any patches applied to them)."""
    model = clip.cond_stage_model
    params = list(model.parameters())
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    h.update(str(sum(p.numel() for p in params)).encode())
    with torch.no_grad():
        for p in params[:2] + params[-2:]:
            h.update(f"{tuple(p.shape)}:{p.detach().float().sum().item():.8e}:{p.detach().float().abs().sum().item():.8e}".encode())
    h.update(str(getattr(clip.patcher, "patches_uuid", "")).encode())
    return f"{type(model).__name__}:{h.hexdigest()[:16]}"


def clip_encoder(clip, on_prompt: Callable[[], None] | None = None) -> Callable[[list[str]], torch.Tensor]:
    """``encode(prompts) -> [N, D]``: CLIP's pooled embedding (mean of the tokens when a model has none)."""

    def encode(prompts: list[str]) -> torch.Tensor:
        rows = []
        for p in prompts:
            cond, pooled = clip.encode_from_tokens(clip.tokenize(p), return_pooled=True)
            rows.append((pooled[0] if pooled is not None else cond[0].mean(0)).float().cpu())
            if on_prompt is not None:
                on_prompt()
        return torch.stack(rows)

    return encode


def cached_embedder(clip, on_prompt: Callable[[], None] | None = None) -> tuple[str, Callable[[list[str]], torch.Tensor]]:
    ident = encoder_identity(clip)
    return ident, CACHE.embedder(ident, clip_encoder(clip, on_prompt))
