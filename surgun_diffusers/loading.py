"""Loading a pipeline from a diffusers folder, a single checkpoint file, or a Hub id.

Single files need the pipeline's configs (text encoder, tokenizer, scheduler): diffusers fetches
them from the Hub unless ``config`` points at a local diffusers folder of the same family,
which is how it works offline. A SANA single file holds the transformer only; the rest of the
pipeline comes from ``config``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from surgun_core.errors import SurgUnError

log = logging.getLogger("SurgUn")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SurgUnError(f"[SurgUn] --device {device!r} was asked for but no CUDA device is available. Use --device cpu.")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, family_hint: str | None = None) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if family_hint == "sana" else torch.float16
    if dtype not in DTYPES:
        raise SurgUnError(f"[SurgUn] unknown --dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def sniff_single_file(path: str) -> str:
    """The family of a single checkpoint file, from its tensor names and shapes."""
    if not path.endswith(".safetensors"):
        raise SurgUnError(
            f"[SurgUn] cannot tell the family of {os.path.basename(path)!r} without reading it as a pickle; pass --family "
            "(sd1, sd2, sdxl or sana), or convert it to .safetensors."
        )
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        keys = list(f.keys())
        if any(k.startswith("conditioner.embedders.1.") for k in keys):
            return "sdxl"
        if any(k.startswith("cond_stage_model.model.") for k in keys):
            return "sd2"
        if any(k.startswith("cond_stage_model.transformer.") for k in keys):
            return "sd1"
        if any(".cross_attn.q_linear." in k or (k.startswith("transformer_blocks.") and ".attn2." in k) for k in keys):
            return "sana"
        attn = [k for k in keys if k.endswith("attn2.to_k.weight")]
        if attn:
            ctx = f.get_slice(attn[0]).get_shape()[1]
            return {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(ctx, "sd1")
    raise SurgUnError(
        f"[SurgUn] {os.path.basename(path)!r} does not look like an SD1.x, SD2.x, SDXL or SANA checkpoint; pass --family to say which it is."
    )


def load_pipeline(model: str, family: str = "auto", config: str | None = None, dtype: str = "auto", device: str = "auto",
                  local_files_only: bool = False):
    """A diffusers pipeline on ``device``, progress bars off."""
    dev = resolve_device(device)
    path = Path(model).expanduser()
    try:
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise SurgUnError(
                    f"[SurgUn] {str(path)!r} is a folder but not a diffusers pipeline (no model_index.json). Give a diffusers "
                    "folder (pipe.save_pretrained(...)), a single .safetensors checkpoint, or a Hub model id."
                )
            pipe = _from_folder(path, dtype, dev)
        elif path.is_file():
            if not path.name.endswith(SINGLE_FILE_SUFFIXES):
                raise SurgUnError(f"[SurgUn] {path.name!r} is not a checkpoint file (expected {', '.join(SINGLE_FILE_SUFFIXES)}).")
            fam = sniff_single_file(str(path)) if family == "auto" else family
            pipe = _from_single_file(path, fam, config, dtype, dev, local_files_only)
        elif "/" in model and not model.startswith((".", "/")) and not local_files_only:
            from diffusers import DiffusionPipeline

            pipe = DiffusionPipeline.from_pretrained(model, dtype=resolve_dtype(dtype, dev))
        else:
            raise SurgUnError(
                f"[SurgUn] --model {model!r} was not found: it is neither a folder, a file, nor a Hub id (owner/name). "
                "Check the path."
            )
    except SurgUnError:
        raise
    except (OSError, ValueError) as e:
        raise SurgUnError(
            f"[SurgUn] could not load {model!r} as a diffusers pipeline ({type(e).__name__}: {str(e).splitlines()[0][:300]}). "
            + ("For a single file offline, pass --config <a local diffusers folder of the same family>." if path.is_file() else "")
        ) from None
    pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _from_folder(path: Path, dtype: str, dev: torch.device):
    import json

    from diffusers import DiffusionPipeline

    hint = "sana" if "Sana" in json.loads((path / "model_index.json").read_text()).get("_class_name", "") else None
    return DiffusionPipeline.from_pretrained(str(path), dtype=resolve_dtype(dtype, dev, hint))


def _from_single_file(path: Path, family: str, config: str | None, dtype: str, dev: torch.device, local_files_only: bool):
    from diffusers import SanaPipeline, SanaTransformer2DModel, StableDiffusionPipeline, StableDiffusionXLPipeline

    td = resolve_dtype(dtype, dev, family)
    if family == "sana":
        if not config:
            raise SurgUnError(
                "[SurgUn] a SANA single file holds only the transformer; pass --config <a SANA diffusers folder or Hub id> "
                "for the text encoder, VAE and scheduler."
            )
        pipe = SanaPipeline.from_pretrained(config, dtype=td, local_files_only=local_files_only)
        pipe.transformer = SanaTransformer2DModel.from_single_file(str(path), config=config, subfolder="transformer",
                                                                   dtype=td, local_files_only=local_files_only)
        return pipe
    cls = {"sd1": StableDiffusionPipeline, "sd2": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}.get(family)
    if cls is None:
        raise SurgUnError(f"[SurgUn] unknown --family {family!r}; choose one of auto, sd1, sd2, sdxl, sana.")
    kwargs = {"dtype": td, "local_files_only": local_files_only or bool(config and Path(config).is_dir())}
    if config:
        kwargs["config"] = config
    kw_extra = {"safety_checker": None, "requires_safety_checker": False} if cls is StableDiffusionPipeline else {}
    return cls.from_single_file(str(path), **kwargs, **kw_extra)
