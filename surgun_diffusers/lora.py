"""A LoRA from trained deltas: per-layer truncated SVD, the rank chosen by explained energy.

For each layer's delta ``D`` (``out x in``, a conv kernel flattened to ``out x (in*kh*kw)``) with
singular values ``s_1 >= s_2 >= ...``, the rank is the smallest ``r`` whose share of the squared
Frobenius norm, ``sum_{i<=r} s_i^2 / sum_i s_i^2``, reaches ``energy`` (capped at ``max_rank``).
``D ~ B A`` with ``B = U_r sqrt(S_r)``, ``A = sqrt(S_r) V_r^T``, stored in PEFT's layout
(``<module>.lora_A.weight``, ``<module>.lora_B.weight``; conv: ``A`` is an ``r x in x kh x kw``
kernel, ``B`` a ``1x1`` one). No alphas are written, so diffusers applies each pair at scale 1
(``alpha = rank``), i.e. exactly ``W + B A``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from surgun_core.errors import SurgUnError


@dataclass
class LayerFactor:
    A: torch.Tensor
    B: torch.Tensor
    rank: int
    energy: float
    """Share of the delta's squared Frobenius norm the rank-``rank`` factor keeps."""
    rel_error: float
    """``||D - B A||_F / ||D||_F``."""


@dataclass
class LoraReport:
    energy_target: float
    max_rank: int
    ranks: dict[str, int] = field(default_factory=dict)
    energy_kept: float = 0.0
    rel_error: float = 0.0
    params: int = 0
    full_params: int = 0

    def summary(self) -> dict:
        r = list(self.ranks.values())
        return {"energy_target": self.energy_target, "max_rank": self.max_rank, "energy_kept": round(self.energy_kept, 6),
                "rel_frobenius_error": round(self.rel_error, 6), "rank_min": min(r), "rank_median": statistics.median(r),
                "rank_max": max(r), "params": self.params, "full_params": self.full_params,
                "compression": round(self.full_params / max(1, self.params), 2)}


def factor(delta: torch.Tensor, energy: float, max_rank: int = 0) -> LayerFactor:
    if not 0 < energy <= 1:
        raise SurgUnError(f"[SurgUn] lora energy must be in (0, 1], got {energy!r}. Try 0.9 (90% of each delta's energy).")
    shape = delta.shape
    M = delta.detach().float().reshape(shape[0], -1)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    e2 = S.pow(2)
    total = float(e2.sum())
    if total == 0.0:
        r = 1
    else:
        cum = torch.cumsum(e2, 0) / total
        r = int((cum < energy - 1e-6).sum().item()) + 1  # within fp32 round-off of the target counts as reached
    r = max(1, min(r, len(S), max_rank or len(S)))
    root = S[:r].sqrt()
    B = U[:, :r] * root
    A = root[:, None] * Vh[:r]
    kept = float(e2[:r].sum()) / total if total else 1.0
    err = float(torch.linalg.vector_norm(M - B @ A)) / (total ** 0.5) if total else 0.0
    if len(shape) == 4:
        A = A.reshape(r, shape[1], shape[2], shape[3])
        B = B.reshape(shape[0], r, 1, 1)
    return LayerFactor(A.contiguous(), B.contiguous(), r, kept, err)


def lora_from_deltas(deltas: dict[str, torch.Tensor], energy: float = 0.9, max_rank: int = 0,
                     dtype: torch.dtype = torch.float32) -> tuple[dict[str, torch.Tensor], LoraReport]:
    """PEFT-layout LoRA tensors (keys relative to the denoiser) and a report of the ranks."""
    report = LoraReport(energy, max_rank)
    sd: dict[str, torch.Tensor] = {}
    kept = total = err2 = 0.0
    for name, d in deltas.items():
        f = factor(d, energy, max_rank)
        sd[f"{name}.lora_A.weight"] = f.A.to(dtype)
        sd[f"{name}.lora_B.weight"] = f.B.to(dtype)
        n2 = float(d.float().pow(2).sum())
        total += n2
        kept += f.energy * n2
        err2 += (f.rel_error ** 2) * n2
        report.ranks[name] = f.rank
        report.params += f.A.numel() + f.B.numel()
        report.full_params += d.numel()
    report.energy_kept = kept / total if total else 1.0
    report.rel_error = (err2 / total) ** 0.5 if total else 0.0
    return sd, report


def save_lora(pipe, family, state_dict: dict[str, torch.Tensor], path: str, metadata: dict | None = None) -> str:
    """Write the LoRA where ``pipe.load_lora_weights(dir, weight_name=file)`` finds it."""
    import os

    directory, weight_name = os.path.split(os.path.abspath(path))
    kwargs = {"unet_lora_layers" if family.denoiser == "unet" else "transformer_lora_layers": state_dict}
    tmp = f"{weight_name}.partial-{os.getpid()}"
    type(pipe).save_lora_weights(directory, weight_name=tmp, safe_serialization=True, **kwargs)
    try:
        if metadata:
            _add_metadata(os.path.join(directory, tmp), metadata)
        os.replace(os.path.join(directory, tmp), path)
    finally:
        if os.path.exists(os.path.join(directory, tmp)):
            os.remove(os.path.join(directory, tmp))
    return path


def _add_metadata(path: str, extra: dict) -> None:
    """Add ``surgun`` provenance to a safetensors header, keeping diffusers' own entries."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["surgun"] = json.dumps(extra, sort_keys=True, default=str)
    save_file(tensors, path, metadata=meta)
