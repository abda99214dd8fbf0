"""SVD LoRA: rank by explained energy, exact at full energy, conv kernels in PEFT's layout."""

import pytest
import torch

from surgun_core.errors import SurgUnError
from surgun_diffusers.lora import factor, lora_from_deltas


def _matrix(singular, out=6, inp=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(out, out, generator=g))
    v, _ = torch.linalg.qr(torch.randn(inp, inp, generator=g))
    s = torch.zeros(out, inp)
    for i, x in enumerate(singular):
        s[i, i] = x
    return u @ s @ v.T


def test_rank_is_the_smallest_keeping_the_energy():
    d = _matrix([4.0, 2.0, 1.0, 0.5])  # energies 16, 4, 1, 0.25 of 21.25
    assert factor(d, 0.75).rank == 1  # 16/21.25 = 0.753
    assert factor(d, 0.76).rank == 2  # 20/21.25 = 0.941
    f = factor(d, 0.95)
    assert f.rank == 3 and f.energy == pytest.approx(21 / 21.25, rel=1e-5)
    assert f.rel_error == pytest.approx((0.25 / 21.25) ** 0.5, rel=1e-4)
    assert torch.allclose(f.B @ f.A, d, atol=0.6)
    assert factor(d, 0.95, max_rank=2).rank == 2
    full = factor(d, 1.0)
    assert full.rank == 4 and torch.allclose(full.B @ full.A, d, atol=1e-5)


def test_conv_deltas_factor_into_peft_kernels():
    d = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    f = factor(d, 1.0)
    assert f.A.shape == (f.rank, 4, 3, 3) and f.B.shape == (8, f.rank, 1, 1)
    recon = (f.B.flatten(1) @ f.A.flatten(1)).reshape(d.shape)
    assert torch.allclose(recon, d, atol=1e-5)


def test_state_dict_and_report():
    deltas = {"a.to_k": _matrix([3.0, 1.0]), "b.to_v": torch.zeros(6, 5)}
    sd, rep = lora_from_deltas(deltas, energy=0.9)
    assert sorted(sd) == ["a.to_k.lora_A.weight", "a.to_k.lora_B.weight", "b.to_v.lora_A.weight", "b.to_v.lora_B.weight"]
    assert rep.ranks == {"a.to_k": 1, "b.to_v": 1}  # 9/10 of the energy; an all-zero delta gets rank 1 of zeros
    assert rep.energy_kept == pytest.approx(0.9, rel=1e-5)
    assert rep.params == 22 and rep.full_params == 60 and rep.summary()["compression"] == round(60 / 22, 2)
    with pytest.raises(SurgUnError, match="energy must be in"):
        factor(deltas["a.to_k"], 0.0)
