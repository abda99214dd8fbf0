"""Deterministic initialisation of torch modules built with ComfyUI's layers.

ComfyUI's ``comfy.ops`` layers skip weight initialisation (checkpoints overwrite it). Small
models built from ComfyUI's classes for tests and demos need real, seeded initial weights.
"""

from __future__ import annotations

import torch


def reinit_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Initialise every parameter of ``module`` in place, deterministically from ``seed``.

    Raw parameters start as small noise (1-d ``scale`` vectors of RMS norms as ones), buffers
    named ``pos_embed`` (allocated empty by SD3) as small noise; then each layer that has a
    torch initialiser gets torch's own ``reset_parameters``.
    """
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for name, p in module.named_parameters():
            if name.endswith("scale") and p.ndim == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn_like(p) * 0.02)
        for name, b in module.named_buffers():
            if name.endswith("pos_embed"):
                b.copy_(torch.randn_like(b) * 0.02)
        for m in module.modules():
            for cls in type(m).__mro__:
                if cls.__module__.startswith("torch.nn") and "reset_parameters" in cls.__dict__:
                    cls.reset_parameters(m)
                    break
    return module
