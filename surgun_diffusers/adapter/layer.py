"""One layer with a trainable additive delta: ``W -> W + scale * delta``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from surgun_core.errors import SurgUnError


class DeltaLayer(torch.nn.Module):
    """Wraps a ``Linear`` or ``Conv2d`` (``base_layer``, kept untouched) and adds ``delta`` to its
    weight in the forward pass. ``delta`` is fp32 and starts at zero, so the wrapped network
    computes exactly what it did before until the delta is trained."""

    def __init__(self, base_layer: torch.nn.Module):
        super().__init__()
        if not isinstance(base_layer, (torch.nn.Linear, torch.nn.Conv2d)):
            raise SurgUnError(
                f"[SurgUn] can only train Linear and Conv2d layers, got {type(base_layer).__name__}. "
                "Select attention projections (to_q, to_k, to_v, to_out.0) or other linear layers."
            )
        self.base_layer = base_layer
        w = base_layer.weight
        self.delta = torch.nn.Parameter(torch.zeros(w.shape, dtype=torch.float32, device=w.device))
        self.enabled = True
        self.scale = 1.0

    def effective_weight(self) -> torch.Tensor:
        w = self.base_layer.weight
        if not self.enabled:
            return w
        return w + (self.delta * self.scale).to(dtype=w.dtype)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        base = self.base_layer
        if not self.enabled:
            return base(x, *args, **kwargs)
        w = self.effective_weight()
        if isinstance(base, torch.nn.Linear):
            return F.linear(x, w, base.bias)
        return base._conv_forward(x, w, base.bias)

    def __repr__(self) -> str:
        return f"DeltaLayer({self.base_layer!r})"
