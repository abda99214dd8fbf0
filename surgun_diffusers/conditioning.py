"""Prompts -> the denoiser's conditioning, per family, encoded once per prompt.

* SD1.x / SD2.x: the pipeline's ``encode_prompt`` (CLIP hidden states);
* SDXL: both CLIP encoders' states and the pooled vector, plus the ``time_ids`` of the
  training resolution (original size = target size, no crop), as the pipeline builds them;
  the empty prompt is all zeros when the pipeline's ``force_zeros_for_empty_prompt`` is set
  (what its classifier-free guidance uses as the unconditional input);
* SANA: Gemma states and attention mask from the pipeline's ``encode_prompt``, with the
  pipeline's default complex human instruction on real prompts (as ``SanaPipeline.__call__``
  does) and without it on the empty prompt (as its negative prompt).

:class:`Denoiser` calls the network with a batch of prompts, one per sample.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Sequence

import torch

from surgun_core.adversary import base_prompt
from surgun_core.errors import SurgUnError


def sana_default_instruction() -> list[str]:
    """The complex human instruction ``SanaPipeline.__call__`` uses by default."""
    from diffusers import SanaPipeline

    return list(inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default)


class PromptEncoder:
    """Prompt -> conditioning tensors (batch 1, on the denoiser's device and dtype), cached."""

    def __init__(self, pipe, family, device: torch.device | str | None = None, sana_instruction: bool = True,
                 max_sequence_length: int = 300):
        self.pipe = pipe
        self.family = family
        net = getattr(pipe, family.denoiser)
        self.device = torch.device(device) if device is not None else net.device
        self.dtype = net.dtype
        self.sana_instruction = sana_default_instruction() if (family.id == "sana" and sana_instruction) else None
        self.max_sequence_length = max_sequence_length
        self._cache: dict[str, dict] = {}

    def _encode(self, prompt: str) -> dict:
        pipe, fam = self.pipe, self.family
        with torch.no_grad():
            if fam.id in ("sd1", "sd2"):
                emb, _ = pipe.encode_prompt(prompt, self.device, 1, False)
                return {"encoder_hidden_states": emb}
            if fam.id == "sdxl":
                if prompt == "" and pipe.config.get("force_zeros_for_empty_prompt", False):
                    emb, _, pooled, _ = pipe.encode_prompt(prompt="x", device=self.device, num_images_per_prompt=1,
                                                           do_classifier_free_guidance=False)
                    return {"encoder_hidden_states": torch.zeros_like(emb), "text_embeds": torch.zeros_like(pooled)}
                emb, _, pooled, _ = pipe.encode_prompt(prompt=prompt, device=self.device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=False)
                return {"encoder_hidden_states": emb, "text_embeds": pooled}
            if fam.id == "sana":
                emb, mask, _, _ = pipe.encode_prompt(
                    prompt, do_classifier_free_guidance=False, device=self.device,
                    max_sequence_length=self.max_sequence_length,
                    complex_human_instruction=self.sana_instruction if prompt else None,
                )
                return {"encoder_hidden_states": emb, "encoder_attention_mask": mask}
        raise SurgUnError(f"[SurgUn] no prompt encoding for family {fam.id!r}.")

    def cond(self, prompt: str) -> dict:
        if prompt not in self._cache:
            out = self._encode(prompt)
            self._cache[prompt] = {k: v.detach().to(self.device, dtype=v.dtype if k == "encoder_attention_mask" else self.dtype)
                                   for k, v in out.items()}
        return self._cache[prompt]

    def encode_all(self, prompts: Sequence[str]) -> None:
        for p in dict.fromkeys(prompts):
            self.cond(p)

    def batch(self, prompts: Sequence[str]) -> dict:
        conds = [self.cond(p) for p in prompts]
        out = {}
        for k in conds[0]:
            shapes = {tuple(c[k].shape[1:]) for c in conds}
            if len(shapes) > 1:
                raise SurgUnError(
                    f"[SurgUn] the prompts {list(dict.fromkeys(prompts))[:3]} encode to different lengths ({sorted(shapes)}); "
                    "shorten long prompts so they fit the text encoder's window (77 tokens for CLIP)."
                )
            out[k] = torch.cat([c[k] for c in conds])
        return out

    # -- distractor selection --------------------------------------------------------------

    def selection_embedder(self):
        """``embed(prompts) -> [N, D]``: one vector per prompt for distractor selection.

        CLIP families: the mean of the encoder's output states over the prompt's own tokens (from
        the first word to the end-of-text token, padding excluded), as the ComfyUI side does;
        SANA: the mean of the Gemma states over the prompt's tokens (mask, without the instruction).
        """
        pipe, fam = self.pipe, self.family

        def embed(prompts: list[str]) -> torch.Tensor:
            out = []
            with torch.no_grad():
                for p in prompts:
                    if fam.id == "sana":
                        emb, mask, _, _ = pipe.encode_prompt(p, do_classifier_free_guidance=False, device=self.device,
                                                             max_sequence_length=self.max_sequence_length, complex_human_instruction=None)
                        m = mask[0].bool()
                        m[0] = False  # <bos>
                        out.append(emb[0][m].float().mean(0).cpu())
                        continue
                    if fam.id == "sdxl":
                        emb, _, _, _ = pipe.encode_prompt(prompt=p, device=self.device, num_images_per_prompt=1,
                                                          do_classifier_free_guidance=False)
                    else:
                        emb, _ = pipe.encode_prompt(p, self.device, 1, False)
                    ids = pipe.tokenizer(p, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                         truncation=True, return_tensors="pt").input_ids[0].tolist()
                    eos = pipe.tokenizer.eos_token_id
                    end = ids.index(eos, 1) if eos in ids[1:] else len(ids) - 1
                    out.append(emb[0, 1:end + 1].float().mean(0).cpu())
            return torch.stack(out)

        return embed

    def identity(self) -> str:
        """A fingerprint of the text encoder(s), for the embedding cache."""
        h = hashlib.sha256()
        for name in ("text_encoder", "text_encoder_2"):
            enc = getattr(self.pipe, name, None)
            if enc is None:
                continue
            params = list(enc.parameters())
            h.update(f"{type(enc).__name__}:{sum(p.numel() for p in params)}".encode())
            with torch.no_grad():
                for p in params[:2] + params[-2:]:
                    h.update(f"{tuple(p.shape)}:{p.detach().float().sum().item():.8e}".encode())
        return f"diffusers-{self.family.id}:{h.hexdigest()[:16]}"


class Denoiser:
    """``denoiser(x_t, timestep, prompts)``: the network's native output for a batch, one prompt
    per sample (the pipeline's own call, without guidance)."""

    def __init__(self, pipe, family, encoder: PromptEncoder):
        self.pipe = pipe
        self.family = family
        self.encoder = encoder
        self.net = getattr(pipe, family.denoiser)
        self.scale = int(getattr(pipe, "vae_scale_factor", 8))

    def __call__(self, xt: torch.Tensor, timestep: torch.Tensor, prompts: Sequence[str], contexts=None) -> torch.Tensor:
        """``contexts``: soft prompts by name (``surgun_core.adversary``): such a row reads its context in place of its
        prompt's ``encoder_hidden_states``; its other conds stay its prompt's."""
        soft = [i for i, p in enumerate(prompts) if contexts and p in contexts]
        c = self.encoder.batch([base_prompt(p) if i in soft else p for i, p in enumerate(prompts)])
        if soft:
            rows = [contexts[prompts[i]].to(device=self.encoder.device, dtype=self.encoder.dtype) for i in soft]
            c = {**c, "encoder_hidden_states": c["encoder_hidden_states"].index_put(
                (torch.tensor(soft, device=self.encoder.device),), torch.cat(rows))}
        dev, dt = self.encoder.device, self.encoder.dtype
        x = xt.to(device=dev, dtype=dt)
        t = timestep.to(dev)
        if self.family.id == "sana":
            out = self.net(x, encoder_hidden_states=c["encoder_hidden_states"], encoder_attention_mask=c["encoder_attention_mask"],
                           timestep=t.to(dt), return_dict=False)[0]
            if self.net.config.out_channels // 2 == self.net.config.in_channels:  # learned sigma
                out = out.chunk(2, dim=1)[0]
            return out
        kwargs = {"encoder_hidden_states": c["encoder_hidden_states"]}
        if self.family.id == "sdxl":
            h, w = x.shape[-2] * self.scale, x.shape[-1] * self.scale
            ids = torch.tensor([[h, w, 0, 0, h, w]], device=dev, dtype=dt).repeat(x.shape[0], 1)
            kwargs["added_cond_kwargs"] = {"text_embeds": c["text_embeds"], "time_ids": ids}
        return self.net(x, t, **kwargs).sample
