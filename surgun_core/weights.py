"""Erased weights: full-weight differences of the trained layers, plus provenance metadata.

File format (safetensors):

* tensors ``diffusion_model.<module>.diff`` holding ``W_erased - W_original`` for each trained
  layer's weight. ComfyUI's stock ``LoraLoaderModelOnly`` applies these keys as-is (the
  ``.diff`` patch type), scaled by its strength;
* header metadata: one key, ``surgun``, holding JSON with sorted keys: the ``format`` and the
  provenance (targets, distractors, retain prompts, blocks, hyperparameters, model family, pack
  version). One key, because safetensors writes several metadata keys in a random order: with one,
  the same run gives a byte-identical file. (Version 1 files kept ``format`` as a key of its own;
  they still load.)

Files are written to a temporary name and renamed into place, so a failure never leaves a
partial file behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping

import torch

from .errors import SurgUnError, short
from .safefile import save_safetensors_atomic

FORMAT = "surgun.erased_weights/2"
FORMAT_V1 = "surgun.erased_weights/1"
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
    meta = {"surgun": json.dumps({**weights.metadata, "format": FORMAT}, sort_keys=True)}
    weights.path = save_safetensors_atomic(weights.deltas, path, meta)
    return path


def load_erased_weights(path: str) -> ErasedWeights:
    """Read a file written by :func:`save_erased_weights`; clear errors for anything else."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise SurgUnError(f"[SurgUn] erased-weights file not found: {short(path)}. Pick a file from models/loras.")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys}
    except Exception as e:  # safetensors raises several exception types for corrupt files
        raise SurgUnError(
            f"[SurgUn] could not read {short(os.path.basename(path))} as safetensors ({type(e).__name__}: {e}). "
            "The file is corrupt or not a .safetensors file; re-run SurgUnTrain to write it again."
        ) from None
    try:
        metadata = json.loads(meta["surgun"]) if "surgun" in meta else {}
    except json.JSONDecodeError as e:
        raise SurgUnError(f"[SurgUn] the metadata of {short(os.path.basename(path))} is damaged ({e}); re-run SurgUnTrain.") from None
    fmt = metadata.pop("format", None) if isinstance(metadata, dict) else None
    fmt = meta.get("format", fmt)
    if fmt not in (FORMAT, FORMAT_V1) or "surgun" not in meta:
        raise SurgUnError(
            f"[SurgUn] {short(os.path.basename(path))} is not a SurgUn erased-weights file (format "
            f"{short(fmt, 40)}, expected {FORMAT!r}). Load ordinary LoRAs with LoraLoaderModelOnly, "
            "or pick a file written by SurgUnTrain."
        )
    bad = [k for k in keys if not (k.startswith(PREFIX) and k.endswith(SUFFIX))]
    if bad or not keys:
        raise SurgUnError(
            f"[SurgUn] {short(os.path.basename(path))} has unexpected tensors ({bad[:3] or 'none at all'}); "
            "it was not written by SurgUnTrain or was modified."
        )
    broken = [k for k, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if broken:
        raise SurgUnError(
            f"[SurgUn] {short(os.path.basename(path))} holds non-finite values (NaN or infinity) in {len(broken)} layer(s), "
            f"e.g. {short(module_of(broken[0]))}; applying it would break the model. Re-run SurgUn Train to write it again."
        )
    return ErasedWeights(deltas=tensors, metadata=metadata, path=path)
