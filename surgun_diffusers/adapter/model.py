"""Injecting delta layers into a network and taking them out again, bit for bit."""

from __future__ import annotations

import contextlib
from typing import Mapping

import torch

from surgun_core.errors import SurgUnError
from surgun_core.selection import select_trainable

from .config import DeltaConfig
from .layer import DeltaLayer


def _parent(root: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (root.get_submodule(path) if path else root), leaf


class DeltaModel(contextlib.AbstractContextManager):
    """Trainable deltas on the layers of ``root`` that ``config`` selects.

    Inside the ``with`` block each selected layer is replaced by a :class:`DeltaLayer` and the
    base parameters are frozen; ``deltas[name]`` are the trainable leaves (module names are the
    original ones, e.g. ``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k``). On exit
    the original layer objects are put back and ``requires_grad`` restored, so the network is
    exactly what it was (the deltas stay readable through :meth:`state`).
    """

    def __init__(self, root: torch.nn.Module, config: DeltaConfig | None = None, names: list[str] | None = None):
        if names is None:
            if config is None:
                raise SurgUnError("[SurgUn] DeltaModel needs a DeltaConfig or explicit layer names.")
            config.validate()
            names = select_trainable(root, config.target_modules)
        self.root = root
        self.names = list(names)
        self.layers: dict[str, DeltaLayer] = {}
        self._requires_grad: dict[str, bool] = {}
        self._active = False

    @property
    def deltas(self) -> dict[str, torch.nn.Parameter]:
        return {n: layer.delta for n, layer in self.layers.items()}

    def __enter__(self) -> "DeltaModel":
        if self._active:
            raise RuntimeError("DeltaModel is already active")
        self._requires_grad = {n: p.requires_grad for n, p in self.root.named_parameters()}
        for p in self.root.parameters():
            p.requires_grad_(False)
        try:
            for name in self.names:
                parent, leaf = _parent(self.root, name)
                base = getattr(parent, leaf)
                layer = DeltaLayer(base)
                setattr(parent, leaf, layer)
                self.layers[name] = layer
        except Exception:
            self._restore()
            raise
        self._active = True
        return self

    def _restore(self) -> None:
        for name, layer in self.layers.items():
            parent, leaf = _parent(self.root, name)
            if getattr(parent, leaf) is layer:
                setattr(parent, leaf, layer.base_layer)
        for n, p in self.root.named_parameters():
            p.requires_grad_(self._requires_grad.get(n, p.requires_grad))

    def __exit__(self, *exc) -> bool:
        self._restore()
        self._active = False
        return False

    @contextlib.contextmanager
    def disabled(self):
        """Inside: the network computes with its original weights, without gradients."""
        for layer in self.layers.values():
            layer.enabled = False
        try:
            with torch.no_grad():
                yield
        finally:
            for layer in self.layers.values():
                layer.enabled = True

    def state(self) -> dict[str, torch.Tensor]:
        """The deltas, detached, fp32, on CPU, by module name."""
        return {n: layer.delta.detach().float().cpu().clone() for n, layer in self.layers.items()}

    def load(self, deltas: Mapping[str, torch.Tensor]) -> None:
        """Set the deltas (e.g. to resume or to evaluate a file); names and shapes must match."""
        missing = [n for n in deltas if n not in self.layers]
        if missing:
            raise SurgUnError(f"[SurgUn] no delta layer named {missing[0]!r}; this DeltaModel trains {len(self.layers)} layers.")
        with torch.no_grad():
            for n, d in deltas.items():
                self.layers[n].delta.copy_(d.to(self.layers[n].delta))


@contextlib.contextmanager
def merged(root: torch.nn.Module, deltas: Mapping[str, torch.Tensor], strength: float = 1.0):
    """Inside: ``weight += strength * delta`` on each named layer of ``root``; the original weights
    are put back exactly on exit (they are kept aside, not recomputed)."""
    saved = {}
    try:
        with torch.no_grad():
            for name, d in deltas.items():
                w = root.get_submodule(name).weight
                saved[name] = w.detach().clone()
                w.copy_((w.float() + strength * d.to(device=w.device, dtype=torch.float32)).to(w.dtype))
        yield root
    finally:
        with torch.no_grad():
            for name, w0 in saved.items():
                root.get_submodule(name).weight.copy_(w0)
