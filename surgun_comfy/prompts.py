"""Prompts as ComfyUI conditioning: encoded once per prompt, batched per sample.

:class:`PromptBank` encodes each prompt once with the connected CLIP and turns it into the
per-sample model conditioning ComfyUI's sampler would build (cross-attention context, SDXL's
size vector, SD3's pooled vector, Flux's guidance...). :func:`plan_batches` groups prompts into
sampler batches whose conditionings stack.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..surgun_core.adversary import base_prompt
from ..surgun_core.errors import SurgUnError, short


MAX_WINDOWS = 4
"""CLIP windows (75 tokens each) a prompt may span: ComfyUI batches conditionings whose lengths
differ by at most this factor."""


class PromptBank:
    """Prompt -> ComfyUI conditioning, and prompt lists -> batched model conds."""

    def __init__(self, clip, model_patcher, latent_shape: Sequence[int], device: torch.device):
        self.clip = clip
        self.model = model_patcher.model
        self.latent_shape = tuple(latent_shape)
        self.device = device
        self._conditioning: dict[str, list] = {}
        self._model_conds: dict[str, dict] = {}

    def conditioning(self, prompt: str) -> list:
        if prompt not in self._conditioning:
            tokens = self.clip.tokenize(prompt)
            self._conditioning[prompt] = self.clip.encode_from_tokens_scheduled(tokens)
        return self._conditioning[prompt]

    def model_conds(self, prompt: str) -> dict:
        """The processed model conds for one sample of ``prompt`` (batch size 1)."""
        if prompt not in self._model_conds:
            import comfy.sampler_helpers
            import comfy.samplers

            conds = comfy.sampler_helpers.convert_cond(self.conditioning(prompt))
            noise = torch.zeros((1, *self.latent_shape), device=self.device)
            conds = comfy.samplers.encode_model_conds(self.model.extra_conds, conds, noise, self.device, "positive")
            first = conds[0]["model_conds"]
            self._model_conds[prompt] = {k: v.process_cond(batch_size=1, area=None) for k, v in first.items()}
        return self._model_conds[prompt]

    def context(self, prompt: str) -> torch.Tensor:
        """The cross-attention context the model reads for ``prompt`` (batch 1): where a soft prompt starts."""
        conds = self.model_conds(prompt)
        if "c_crossattn" not in conds:
            raise SurgUnError(f"[SurgUn] this model reads no cross-attention context for {short(prompt)}, so there is no "
                              "soft prompt to train against. Set adversary_steps to 0.")
        return conds["c_crossattn"].cond

    def _conds(self, prompt: str, contexts: Mapping[str, torch.Tensor]) -> dict:
        """A prompt's model conds; a soft prompt's name reads its context in place of its prompt's words."""
        base = base_prompt(prompt)
        if base is None or prompt not in contexts:
            return self.model_conds(prompt)
        import comfy.conds

        return {**self.model_conds(base), "c_crossattn": comfy.conds.CONDCrossAttn(contexts[prompt].to(self.device))}

    def check_lengths(self, by_input: Mapping[str, Sequence[str]]) -> None:
        """Refuse, before any work, a prompt too long to share a batch with a short one (CLIP
        models: over 4 windows of 75 tokens), naming the input it came from. The windows are counted
        on the tokens first: a prompt over the limit is refused without encoding it (encoding a
        5000-word prompt takes minutes on a CPU)."""
        short_prompt = self.model_conds("")
        for name, prompts in by_input.items():
            for p in prompts:
                windows = max((len(w) for w in self.clip.tokenize(p).values()), default=1)
                fits = windows <= MAX_WINDOWS
                if fits:
                    c = self.model_conds(p)
                    fits = all(c[k].can_concat(short_prompt[k]) for k in short_prompt if k in c)
                if not fits:
                    raise SurgUnError(
                        f"[SurgUn] a prompt in {name} is too long to train with this model ({windows} text-encoder windows; "
                        f"at most 4 CLIP windows, about 300 tokens, fit beside short prompts): {short(p)}. "
                        "Shorten it, or split it into several lines."
                    )

    def batch(self, prompts: Sequence[str], contexts: Mapping[str, torch.Tensor] | None = None) -> dict:
        """Keyword arguments for ``BaseModel.apply_model`` with one prompt per sample; ``contexts``: soft
        prompts by name (:mod:`surgun_core.adversary`)."""
        import comfy.samplers

        conds = [self._conds(p, contexts or {}) for p in prompts]
        first = conds[0]
        for p, c in zip(prompts, conds):
            if not all(c[k].can_concat(first[k]) for k in first):
                raise SurgUnError(
                    f"[SurgUn] the prompts {short(p)} and {short(prompts[0])} encode to lengths that cannot share a "
                    "batch. Shorten the longer one."
                )
        out = comfy.samplers.cond_cat(conds)
        return {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in out.items()}


def _batchable(conds: list) -> bool:
    """Whether single-prompt conditionings can be stacked into one batch."""
    first_c, first_x = conds[0][0]
    for c, x in (cond[0] for cond in conds):
        if c.shape[1:] != first_c.shape[1:] or x.keys() != first_x.keys():
            return False
        for k, v in x.items():
            w = first_x[k]
            if torch.is_tensor(v) != torch.is_tensor(w) or (torch.is_tensor(v) and v.shape[1:] != w.shape[1:]) or (not torch.is_tensor(v) and v != w):
                return False
    return all(len(cond) == 1 for cond in conds)


def stack(conds: list, count: int) -> list:
    """[[cond, extras]] per prompt -> one conditioning with ``count`` rows per prompt, in order."""
    c = torch.cat([cond[0][0].repeat(count, *([1] * (cond[0][0].ndim - 1))) for cond in conds])
    extras = {}
    for k, v in conds[0][0][1].items():
        extras[k] = torch.cat([cond[0][1][k].repeat(count, *([1] * (v.ndim - 1))) for cond in conds]) if torch.is_tensor(v) else v
    return [[c, extras]]


def plan_batches(bank: PromptBank, prompts: Sequence[str], count: int, max_batch: int = 16) -> list[list[str]]:
    """Group the distinct prompts into sampler batches of at most ``max_batch`` images, keeping
    together only prompts whose conditionings stack (same token length and extras)."""
    per_batch = max(1, max_batch // max(1, count))
    batches: list[list[str]] = []
    for p in dict.fromkeys(prompts):
        if batches and len(batches[-1]) < per_batch and _batchable([bank.conditioning(q) for q in (*batches[-1], p)]):
            batches[-1].append(p)
        else:
            batches.append([p])
    return batches
