"""Text embeddings from a ComfyUI CLIP object, for distractor selection (cached per encoder)."""

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


def _mean_tokens(cond: torch.Tensor) -> torch.Tensor:
    return cond.float().mean(dim=-2).cpu()


def clip_encoder(clip, on_prompt: Callable[[], None] | None = None, batch: int = 32) -> Callable[[list[str]], torch.Tensor]:
    """``encode(prompts) -> [N, D]``: the mean of CLIP's output tokens for each prompt.

    Prompts are encoded ``batch`` at a time by handing them to ComfyUI as the sections of one
    long prompt (ComfyUI encodes sections as one batch). Whether that layout splits back into
    per-prompt outputs is checked once per encoder against a single-prompt encoding; where it
    does not (text encoders that concatenate differently, long prompts), prompts are encoded
    one by one. Either way every prompt gets the same embedding.
    """
    state = {"batched": None}

    def single(p: str) -> torch.Tensor:
        return _mean_tokens(clip.encode_from_tokens(clip.tokenize(p))[0])

    def batched(chunk: list[str]) -> torch.Tensor | None:
        toks = [clip.tokenize(p) for p in chunk]
        keys = list(toks[0])
        if not all(isinstance(t[k], list) and len(t[k]) == 1 for t in toks for k in keys):
            return None
        merged = {k: [t[k][0] for t in toks] for k in keys}
        cond = clip.encode_from_tokens(merged)
        if cond.shape[-2] % len(chunk):
            return None
        return _mean_tokens(cond[0].reshape(len(chunk), cond.shape[-2] // len(chunk), cond.shape[-1]))

    def encode(prompts: list[str]) -> torch.Tensor:
        rows = []
        for start in range(0, len(prompts), batch):
            chunk = prompts[start:start + batch]
            out = None
            if len(chunk) > 1 and state["batched"] is not False:
                out = batched(chunk)
                if out is not None and state["batched"] is None:
                    state["batched"] = torch.allclose(out[-1], single(chunk[-1]), rtol=1e-3, atol=1e-4)
                    if not state["batched"]:
                        out = None
            if out is None:
                out = torch.stack([single(p) for p in chunk])
            rows.append(out)
            if on_prompt is not None:
                for _ in chunk:
                    on_prompt()
        return torch.cat(rows)

    return encode


def cached_embedder(clip, on_prompt: Callable[[], None] | None = None) -> tuple[str, Callable[[list[str]], torch.Tensor]]:
    ident = encoder_identity(clip)
    return ident, CACHE.embedder(ident, clip_encoder(clip, on_prompt))
