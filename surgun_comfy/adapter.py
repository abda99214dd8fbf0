"""The layer: a trainable additive delta on one weight, as a ComfyUI weight wrapper."""

from __future__ import annotations

import torch


class DeltaAdapter(torch.nn.Module):
    """A ComfyUI weight wrapper: ``W -> W + delta`` with a trainable fp32 ``delta``."""

    def __init__(self, delta: torch.Tensor):
        super().__init__()
        self.delta = delta
        self.active = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return weight
        return weight + self.delta.to(device=weight.device, dtype=weight.dtype)
