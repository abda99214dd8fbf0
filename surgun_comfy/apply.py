"""Applying erased weights to a MODEL, and where SurgUn Train saves them."""

from __future__ import annotations

import os

from ..surgun_core.errors import SurgUnError, require_number, short
from ..surgun_core.weights import ErasedWeights, delta_key, load_erased_weights, weight_key
from .families import detect_family


def check_compatible(model_patcher, weights: ErasedWeights) -> None:
    """Refuse weights made for another family or with other shapes, saying what was expected."""
    import comfy.utils

    family = detect_family(model_patcher)
    made_for = weights.metadata.get("family")
    label = os.path.basename(weights.path) if weights.path else "these erased weights"
    if made_for != family.id:
        raise SurgUnError(
            f"[SurgUn] {label} were made for {weights.metadata.get('family_name', made_for)!r} "
            f"(family id {made_for!r}) but the connected model is {family.name} ({family.id!r}). "
            "Connect a model of the family the file was trained on, or train a new file on this model."
        )
    state = model_patcher.model
    for name in weights.modules:
        try:
            w = comfy.utils.get_attr(state, weight_key(name))
        except AttributeError:
            raise SurgUnError(
                f"[SurgUn] {label} change layer {name!r}, which this {family.name} model does not have. "
                "The file was trained on a differently built model; train a new file on this one."
            ) from None
        got = tuple(weights.deltas[delta_key(name)].shape)
        if tuple(w.shape) != got:
            raise SurgUnError(
                f"[SurgUn] shape mismatch at {name!r}: {label} hold {got} but this model expects {tuple(w.shape)}. "
                "The file was trained on a model of another size; train a new file on this one."
            )


def load_weights_file(name: str | None) -> ErasedWeights:
    """A SurgUn file picked from ``models/loras`` (None or "" = none picked)."""
    import folder_paths

    if not name:
        raise SurgUnError(
            "[SurgUn] no erased weights given: pick a SurgUn file in weights_file, or connect the "
            "ERASED_WEIGHTS output of SurgUn Train."
        )
    path = folder_paths.get_full_path("loras", name)
    if path is None:
        raise SurgUnError(f"[SurgUn] weights_file {short(name)} is not in models/loras any more; refresh the node and pick another file.")
    return load_erased_weights(path)


def apply_erased(model_patcher, weights: ErasedWeights, strength: float):
    """A patched clone of ``model_patcher``; exactly what stock LoraLoaderModelOnly does with the file."""
    import comfy.sd

    require_number("strength", strength, -10, 10, "1 applies the erasure as trained, 0 turns it off.")
    check_compatible(model_patcher, weights)
    if strength == 0:
        return model_patcher
    patched, _ = comfy.sd.load_lora_for_models(model_patcher, None, weights.deltas, strength, 0)
    return patched


def check_output_prefix(prefix: str) -> str:
    """The cleaned ``filename_prefix`` ("" = save no file), refused before any work when it would
    write outside ``models/loras`` or cannot name a file."""
    import folder_paths

    prefix = (prefix or "").strip()
    if not prefix:
        return ""
    loras_dir = os.path.abspath(folder_paths.get_folder_paths("loras")[0])
    target = os.path.abspath(os.path.join(loras_dir, os.path.normpath(prefix.replace("\\", "/"))))
    inside = os.path.commonpath([loras_dir, target]) == loras_dir and target != loras_dir
    if os.path.isabs(prefix) or not inside or any(c in prefix for c in '<>:"|?*\0') or any(ord(c) < 32 for c in prefix):
        raise SurgUnError(
            f"[SurgUn] filename_prefix {short(prefix)} would write outside models/loras or is not a valid file name. "
            "Use a relative name such as 'surgun/erased' (sub-folders are allowed; '..', absolute paths, drive letters "
            "and the characters <>:\"|?* are not), or leave it empty to save no file."
        )
    return prefix


def output_path(prefix: str) -> str:
    """Next free ``models/loras/<prefix>_NNNNN.safetensors`` (ComfyUI's own counter scheme)."""
    import folder_paths

    loras_dir = folder_paths.get_folder_paths("loras")[0]
    folder, name, counter, _, _ = folder_paths.get_save_image_path(prefix, loras_dir)
    os.makedirs(folder, exist_ok=True)
    while True:
        path = os.path.join(folder, f"{name}_{counter:05}.safetensors")
        if not os.path.exists(path):
            return path
        counter += 1
