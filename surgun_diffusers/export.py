"""The two outputs of an erasure, and applying them again in diffusers.

* **The pack's weights file** (``surgun_core.weights`` format): ``diffusion_model.<module>.diff``
  tensors, the full weight difference of each trained layer. For SD1.x/SD2.x/SDXL the module
  names are ComfyUI's (:mod:`surgun_diffusers.names`), so ComfyUI's SurgUn Apply node and stock
  ``LoraLoaderModelOnly`` load the same file; SANA (not a ComfyUI 0.33 family) keeps diffusers'
  names (``module_names: diffusers`` in the metadata).
* **A LoRA** for ``pipe.load_lora_weights`` (:mod:`surgun_diffusers.lora`).
"""

from __future__ import annotations

import os

import torch

from surgun_core.errors import SurgUnError
from surgun_core.weights import ErasedWeights, delta_key, load_erased_weights, module_of, save_erased_weights

from .families import Family, detect_family
from .names import UNetNames


def comfy_names(family: Family, net, names) -> dict[str, str]:
    """``{diffusers name: name in the weights file}``."""
    if family.in_comfyui:
        return UNetNames(net.config).table(names)
    return {n: n for n in names}


def save_weights_file(path: str, pipe, family: Family, deltas: dict[str, torch.Tensor], metadata: dict,
                      dtype: torch.dtype | None = None) -> str:
    net = getattr(pipe, family.denoiser)
    table = comfy_names(family, net, deltas)
    dtype = dtype or net.dtype
    tensors = {delta_key(table[n]): d.to(dtype).contiguous() for n, d in deltas.items()}
    meta = dict(metadata)
    meta["module_names"] = "comfyui" if family.in_comfyui else "diffusers"
    meta["blocks"] = {**meta.get("blocks", {}), "modules": [table[n] for n in deltas]}
    return save_erased_weights(path, ErasedWeights(tensors, meta))


def load_weights_file(path: str, pipe) -> tuple[dict[str, torch.Tensor], dict]:
    """Deltas of a SurgUn weights file by diffusers module name, checked against ``pipe``."""
    family = detect_family(pipe)
    w = load_erased_weights(path)
    made_for = w.metadata.get("family")
    if made_for != family.id:
        raise SurgUnError(
            f"[SurgUn] {os.path.basename(path)!r} was made for {w.metadata.get('family_name', made_for)!r} (family id "
            f"{made_for!r}) but this pipeline is {family.name} ({family.id!r}). Load it into a pipeline of that family."
        )
    net = getattr(pipe, family.denoiser)
    all_names = [n for n, m in net.named_modules() if isinstance(getattr(m, "weight", None), torch.Tensor)]
    if w.metadata.get("module_names", "comfyui") == "comfyui":
        inverse = UNetNames(net.config).inverse(all_names)
    else:
        inverse = {n: n for n in all_names}
    out = {}
    for key, d in w.deltas.items():
        name = module_of(key)
        if name not in inverse:
            raise SurgUnError(f"[SurgUn] {os.path.basename(path)!r} changes layer {name!r}, which this {family.name} model does not have.")
        target = inverse[name]
        shape = tuple(net.get_submodule(target).weight.shape)
        if tuple(d.shape) != shape:
            raise SurgUnError(
                f"[SurgUn] shape mismatch at {name!r}: the file holds {tuple(d.shape)} but this model expects {shape}. "
                "The file was trained on a model of another size; train a new file on this one."
            )
        out[target] = d.float()
    return out, w.metadata


def apply_weights_file(pipe, path: str, strength: float = 1.0):
    """Add the file's deltas (times ``strength``) to ``pipe``'s denoiser in place; returns the deltas
    (subtract them, or use :func:`surgun_diffusers.adapter.model.merged` to apply temporarily)."""
    family = detect_family(pipe)
    deltas, _ = load_weights_file(path, pipe)
    net = getattr(pipe, family.denoiser)
    with torch.no_grad():
        for name, d in deltas.items():
            w = net.get_submodule(name).weight
            w.copy_((w.float() + strength * d.to(w.device)).to(w.dtype))
    return deltas
