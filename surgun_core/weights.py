"""Erased weights: full-weight differences of the trained layers, plus provenance metadata.

File format (safetensors):

* tensors ``diffusion_model.<module>.diff`` holding ``W_erased - W_original`` for each trained
  layer's weight. ComfyUI's stock ``LoraLoaderModelOnly`` applies these keys as-is (the
  ``.diff`` patch type), scaled by its strength;
* header metadata ``surgun`` (JSON: targets, distractors, retain prompts, blocks,
  hyperparameters, model family, pack version) and ``format``.

Files are written to a temporary name and renamed into place, so a failure never leaves a
partial file behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping

import torch

from .errors import SurgUnError
from .safefile import save_safetensors_atomic

FORMAT = "surgun.erased_weights/1"
PREFIX = "diffusion_model."
SUFFIX = ".diff"


def module_key(module_name: str) -> str:
    """The model key of a layer of the diffusion network: ``diffusion_model.<module>``."""
    return f"{PREFIX}{module_name}"


def weight_key(module_name: str) -> str:
    """The model key of a layer's weight: ``diffusion_model.<module>.weight``."""
    return f"{module_key(module_name)}.weight"


def delta_key(module_name: str) -> str:
    """The file key of a layer's erased delta: ``diffusion_model.<module>.diff``."""
    return f"{PREFIX}{module_name}{SUFFIX}"


def module_of(key: str) -> str:
    if not (key.startswith(PREFIX) and key.endswith(SUFFIX)):
        raise SurgUnError(f"[SurgUn] {key!r} is not an erased-weights key (expected '{PREFIX}<module>{SUFFIX}').")
    return key[len(PREFIX) : -len(SUFFIX)]


@dataclass
class ErasedWeights:
    """What flows through an ERASED_WEIGHTS socket."""

    deltas: dict[str, torch.Tensor]
    metadata: dict = field(default_factory=dict)
    path: str | None = None

    @property
    def family(self) -> str | None:
        return self.metadata.get("family")

    @property
    def modules(self) -> list[str]:
        return [module_of(k) for k in self.deltas]

    def num_params(self) -> int:
        return sum(t.numel() for t in self.deltas.values())


def extract_deltas(original: Mapping[str, torch.Tensor], trained: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{delta_key(module): trained - original}`` for every module name in ``trained``.

    Both mappings are keyed by module name (``input_blocks.1.1.transformer_blocks.0.attn2.to_k``)
    and hold that module's weight.
    """
    out = {}
    for name, w in trained.items():
        if name not in original:
            raise SurgUnError(f"[SurgUn] no original weight for trained module {name!r}.")
        if original[name].shape != w.shape:
            raise SurgUnError(f"[SurgUn] shape of {name!r} changed during training: {tuple(original[name].shape)} -> {tuple(w.shape)}.")
        out[delta_key(name)] = (w.detach() - original[name].detach()).contiguous()
    return out


def save_erased_weights(path: str, weights: ErasedWeights) -> str:
    """Write ``weights`` to ``path`` atomically; returns the path."""
    if not weights.deltas:
        raise SurgUnError("[SurgUn] there are no erased weights to save.")
    meta = {"format": FORMAT, "surgun": json.dumps(weights.metadata, sort_keys=True)}
    weights.path = save_safetensors_atomic(weights.deltas, path, meta)
    return path


def load_erased_weights(path: str) -> ErasedWeights:
    """Read a file written by :func:`save_erased_weights`; clear errors for anything else."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise SurgUnError(f"[SurgUn] erased-weights file not found: {path!r}. Pick a file from models/loras.")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys}
    except Exception as e:  # safetensors raises several exception types for corrupt files
        raise SurgUnError(
            f"[SurgUn] could not read {os.path.basename(path)!r} as safetensors ({type(e).__name__}: {e}). "
            "The file is corrupt or not a .safetensors file; re-run SurgUnTrain to write it again."
        ) from None
    if meta.get("format") != FORMAT or "surgun" not in meta:
        raise SurgUnError(
            f"[SurgUn] {os.path.basename(path)!r} is not a SurgUn erased-weights file (format "
            f"{meta.get('format')!r}, expected {FORMAT!r}). Load ordinary LoRAs with LoraLoaderModelOnly, "
            "or pick a file written by SurgUnTrain."
        )
    try:
        metadata = json.loads(meta["surgun"])
    except json.JSONDecodeError as e:
        raise SurgUnError(f"[SurgUn] the metadata of {os.path.basename(path)!r} is damaged ({e}); re-run SurgUnTrain.") from None
    bad = [k for k in keys if not (k.startswith(PREFIX) and k.endswith(SUFFIX))]
    if bad or not keys:
        raise SurgUnError(
            f"[SurgUn] {os.path.basename(path)!r} has unexpected tensors ({bad[:3] or 'none at all'}); "
            "it was not written by SurgUnTrain or was modified."
        )
    return ErasedWeights(deltas=tensors, metadata=metadata, path=path)
