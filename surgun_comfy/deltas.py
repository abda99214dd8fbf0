"""The model: trainable deltas on selected layers of a clone of a ComfyUI MODEL."""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from ..surgun_core.errors import SurgUnError
from ..surgun_core.weights import module_key, weight_key
from .adapter import DeltaAdapter


def _swap_inference_tensors(root: torch.nn.Module) -> list:
    """Replace inference-mode parameters/buffers with normal clones (autograd cannot save them)."""
    swapped = []
    for module in root.modules():
        for store in (module._parameters, module._buffers):
            for name, t in list(store.items()):
                if t is not None and t.is_inference():
                    swapped.append((store, name, t))
                    clone = t.clone()
                    store[name] = torch.nn.Parameter(clone, requires_grad=False) if isinstance(t, torch.nn.Parameter) else clone
    return swapped


def _checkpointed(forward):
    """Run ``forward`` under gradient checkpointing, on clones of its tensor inputs.

    Blocks such as Flux's add into their inputs in place; the recomputation during backward
    must see the original inputs, so each call works on its own copies.
    """
    import torch.utils.checkpoint

    def fn(*args, **kwargs):
        args = tuple(a.clone() if torch.is_tensor(a) else a for a in args)
        kwargs = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
        return forward(*args, **kwargs)

    def run(*args, **kwargs):
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, **kwargs)

    return run


class TrainableDeltas(contextlib.AbstractContextManager):
    """Additive deltas on selected layers of a *clone* of ``model_patcher``, ready for autograd.

    Inside the ``with`` block the clone is loaded and ``self.deltas[name]`` are leaf tensors
    (fp32, zeros, ``requires_grad``) added to the weight of each named layer of the diffusion
    network. On exit every temporary change to the shared network is undone: the adapters leave
    the layers and original parameter objects are put back, so the input MODEL is bit-identical.
    Must run with ``torch.inference_mode(False)``.
    """

    def __init__(self, model_patcher, module_names: Sequence[str], checkpoint_units: str | None = None):
        import comfy.utils

        if model_patcher.is_dynamic():
            try:
                self.work = model_patcher.clone(disable_dynamic=True)
            except RuntimeError as e:
                raise SurgUnError(
                    f"[SurgUn] training needs a non-dynamic copy of this model and ComfyUI could not make one ({e}). "
                    "Load the model with a stock loader node, or start ComfyUI with --disable-dynamic-vram."
                ) from None
        else:
            self.work = model_patcher.clone()
        self.names = list(module_names)
        self.deltas: dict[str, torch.Tensor] = {}
        self._adapters: dict[str, DeltaAdapter] = {}
        for name in self.names:
            weight = comfy.utils.get_attr(self.work.model, weight_key(name))
            delta = torch.zeros(weight.shape, dtype=torch.float32, device=self.work.load_device, requires_grad=True)
            self.deltas[name] = delta
            self._adapters[name] = DeltaAdapter(delta)
            self.work.add_weight_wrapper(weight_key(name), self._adapters[name])
        self._swapped: list = []
        self._was_training = False
        self.checkpoint_units = checkpoint_units
        self._checkpointed: list[torch.nn.Module] = []

    def __enter__(self):
        import comfy.model_management

        if torch.is_inference_mode_enabled():
            raise RuntimeError("TrainableDeltas must be entered under torch.inference_mode(False)")
        comfy.model_management.load_models_gpu([self.work], force_full_load=True)
        # ComfyUI's switch for differentiable code paths (e.g. Flux's rope has a fused op without autograd)
        self._was_training = comfy.model_management.in_training
        comfy.model_management.in_training = True
        net = self.work.model.diffusion_model
        self._swapped = _swap_inference_tensors(net)
        for p in net.parameters():
            p.requires_grad_(False)
        if self.checkpoint_units:
            import re

            rx = re.compile(self.checkpoint_units)
            for name, module in net.named_modules():
                if rx.fullmatch(name):
                    module.forward = _checkpointed(module.forward)
                    self._checkpointed.append(module)
        return self

    def __exit__(self, *exc):
        import comfy.model_management
        import comfy.utils

        comfy.model_management.in_training = self._was_training
        for module in self._checkpointed:
            del module.forward  # drop the instance attribute: the class's forward is back
        self._checkpointed = []
        for store, name, original in reversed(self._swapped):
            store[name] = original
        self._swapped = []
        for name, adapter in self._adapters.items():
            module = comfy.utils.get_attr(self.work.model, module_key(name))
            fns = getattr(module, "weight_function", None)
            if fns:
                module.weight_function = [f for f in fns if f is not adapter]
        return False

    @contextlib.contextmanager
    def original(self):
        """Inside: the clone computes with the original weights (adapters off), without gradients."""
        for a in self._adapters.values():
            a.active = False
        try:
            with torch.no_grad():
                yield
        finally:
            for a in self._adapters.values():
                a.active = True

    def detached(self, dtype_like: bool = True) -> dict[str, torch.Tensor]:
        """The trained deltas, detached, on CPU, in each layer's weight dtype."""
        import comfy.utils

        out = {}
        for name, d in self.deltas.items():
            w = comfy.utils.get_attr(self.work.model, weight_key(name))
            out[name] = d.detach().to(device="cpu", dtype=w.dtype if dtype_like else d.dtype).contiguous()
        return out
