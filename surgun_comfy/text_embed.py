"""Text embeddings from a ComfyUI CLIP object, for distractor selection (cached per encoder)."""

from __future__ import annotations

import hashlib
from typing import Callable

import torch

from ..surgun_core.distractors import EmbeddingCache

CACHE = EmbeddingCache()


def _cache() -> EmbeddingCache:
    """The process-wide cache, persisted under ComfyUI's user directory (surgun/embeddings)."""
    if CACHE.directory is None:
        import os

        import folder_paths

        CACHE.directory = os.path.join(folder_paths.get_user_directory(), "surgun", "embeddings")
    return CACHE


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


def _clip_end_tokens(clip) -> dict:
    """End-of-text token id per CLIP tokenizer key ("l", "g"); empty for other text encoders."""
    ends = {}
    for key in ("l", "g"):
        sub = getattr(clip.tokenizer, f"clip_{key}", None)
        if sub is not None and getattr(sub, "end_token", None) is not None:
            ends[key] = sub.end_token
    return ends


def clip_encoder(clip, on_prompt: Callable[[], None] | None = None, batch: int = 32) -> Callable[[list[str]], torch.Tensor]:
    """``encode(prompts) -> [N, D]``, one embedding per prompt.

    CLIP text encoders (SD1, SD2, SDXL): the mean of the output states of the prompt's own
    tokens (from the first word to the end-of-text token; padding excluded), encoded ``batch``
    prompts at a time by handing them to ComfyUI as the sections of one long prompt (ComfyUI
    encodes sections as one batch). That the batched layout splits back exactly into
    per-prompt outputs is checked once against a single-prompt encoding; if it does not,
    prompts are encoded one by one. Other text encoders (T5-based): the pooled output where
    the model has one, else the mean of the output tokens, one prompt at a time.
    """
    ends = _clip_end_tokens(clip)
    state = {"batched": None}

    def span_mean(cond: torch.Tensor, section: list) -> torch.Tensor:
        key = next(iter(ends))
        ids = [t[0] for t in section]
        eos = ids.index(ends[key], 1) if ends[key] in ids[1:] else len(ids) - 1
        return cond[1:eos + 1].float().mean(0).cpu()

    def single(p: str) -> torch.Tensor:
        tokens = clip.tokenize(p)
        if ends and set(tokens) <= set(ends) and len(tokens[next(iter(ends))]) == 1:
            cond = clip.encode_from_tokens(tokens)
            return span_mean(cond[0], tokens[next(iter(ends))][0])
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
        return (pooled[0] if pooled is not None else cond[0].mean(0)).float().cpu()

    def batched(chunk: list[str]) -> torch.Tensor | None:
        toks = [clip.tokenize(p) for p in chunk]
        if not ends or not all(set(t) <= set(ends) and all(len(t[k]) == 1 for k in t) for t in toks):
            return None
        keys = list(toks[0])
        cond = clip.encode_from_tokens({k: [t[k][0] for t in toks] for k in keys})[0]
        if cond.shape[0] % len(chunk):
            return None
        per = cond.reshape(len(chunk), cond.shape[0] // len(chunk), cond.shape[-1])
        return torch.stack([span_mean(per[i], toks[i][next(iter(ends))][0]) for i in range(len(chunk))])

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
    return ident, _cache().embedder(ident, clip_encoder(clip, on_prompt))
