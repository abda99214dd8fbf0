"""Delta layers: no effect at zero, gradients only into the deltas, the network restored bit for bit."""

import pytest
import torch

from surgun_core.errors import SurgUnError
from surgun_diffusers.adapter.config import DeltaConfig
from surgun_diffusers.adapter.model import DeltaModel, merged
from surgun_diffusers.conditioning import Denoiser, PromptEncoder
from surgun_diffusers.families import detect_family


def _setup(load, family="sdxl"):
    pipe = load(family)
    fam = detect_family(pipe)
    denoise = Denoiser(pipe, fam, PromptEncoder(pipe, fam))
    shape = (2, 4, 16, 16) if family == "sana" else (2, 4, 8, 8)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500]) if family != "sana" else torch.tensor([100.0, 700.0])
    return pipe, fam, getattr(pipe, fam.denoiser), lambda: denoise(x, t, ["a cat", "a dog"]).detach().float()


@pytest.mark.parametrize("family", ["sdxl", "sana"])
def test_zero_deltas_change_nothing_and_exit_restores_the_network_exactly(load, family):
    pipe, fam, net, run = _setup(load, family)
    before_state = {k: v.clone() for k, v in net.state_dict().items()}
    before_modules = dict(net.named_modules())
    ref = run()
    with DeltaModel(net, DeltaConfig(fam.preset("cross_attention"))) as dm:
        assert dm.names and all(".attn2." in n for n in dm.names)
        assert torch.equal(run(), ref)  # zero deltas: the same computation
        with torch.no_grad():
            for d in dm.deltas.values():
                d.add_(0.01)
        changed = run()
        assert not torch.allclose(changed, ref)
        with dm.disabled():
            assert torch.equal(run(), ref)
        assert [p for p in net.parameters() if p.requires_grad] == list(dm.deltas.values())
        state = dm.state()
    assert torch.equal(run(), ref)
    after = net.state_dict()
    assert after.keys() == before_state.keys() and all(torch.equal(after[k], before_state[k]) for k in after)
    assert all(m is before_modules[n] for n, m in net.named_modules())
    with merged(net, state):  # merging the deltas into the weights gives what the delta layers gave
        assert torch.allclose(run(), changed, atol=1e-5)
    assert all(torch.equal(net.state_dict()[k], before_state[k]) for k in after)


def test_gradients_reach_only_the_deltas(load):
    pipe, fam, net, run = _setup(load, "sdxl")
    with DeltaModel(net, DeltaConfig(["attn2.to_k"])) as dm:
        with torch.enable_grad():
            pipe_out = Denoiser(pipe, fam, PromptEncoder(pipe, fam))(torch.randn(1, 4, 8, 8), torch.tensor([100]), ["a cat"])
            pipe_out.pow(2).mean().backward()
        assert all(d.grad is not None and d.grad.abs().sum() > 0 for d in dm.deltas.values())
        assert all(p.grad is None for n, p in net.named_parameters() if not n.endswith(".delta"))


def test_unknown_layers_are_refused_with_names_that_exist(load):
    net = load("sdxl").unet
    with pytest.raises(SurgUnError, match=r"matches no layer.*Some names that exist"):
        DeltaModel(net, DeltaConfig(["attn9"]))
    with pytest.raises(SurgUnError, match="target_modules is empty"):
        DeltaModel(net, DeltaConfig([]))
