"""The one way this pack writes a safetensors file: to a temporary name, then renamed into place,
so a failure (or a Cancel) never leaves a partial file behind."""

from __future__ import annotations

import os
from typing import Mapping

import torch


def save_safetensors_atomic(tensors: Mapping[str, torch.Tensor], path: str, metadata: Mapping[str, str] | None = None) -> str:
    """Write ``tensors`` (moved to CPU, made contiguous) with ``metadata`` to ``path``; returns the path."""
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.partial-{os.getpid()}"
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=dict(metadata or {}))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
