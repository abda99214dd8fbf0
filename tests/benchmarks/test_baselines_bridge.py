"""Every comparison method trains through the same loop on the same layers; ESD's regression target is exact."""

import pytest
import torch

from surgun_pack.benchmarks.toy_canvas import baselines as methods
from surgun_pack.surgun_comfy.deltas import TrainableDeltas
from surgun_pack.surgun_comfy.prompts import PromptBank, plan_batches
from surgun_pack.surgun_comfy.render import latent_shape_for, sample_prompts
from surgun_pack.surgun_comfy.training import train_deltas
from surgun_pack.surgun_core.train import TrainConfig


@pytest.fixture(scope="module")
def setup(comfy, tiny):
    with torch.inference_mode():
        mp, clip = tiny.build_model("sd1"), tiny.build_clip()
        bank = PromptBank(clip, mp, latent_shape_for(mp, 32), torch.device("cpu"))
        prompts = ["a painting by zorblax", "a painting by monet", "a photo of a car", "a photo of a dog", "zorblax"]
        lat = sample_prompts(mp, bank, plan_batches(bank, prompts, 2), 2, 2, 3.0, 0, "euler", "normal")
    modules = [n for n, _ in mp.model.diffusion_model.named_modules() if n.endswith("attn2.to_k")]
    return mp, bank, lat, modules


def test_esd_target_is_the_frozen_guided_prediction(setup):
    mp, bank, lat, modules = setup
    with torch.inference_mode(False):
        with TrainableDeltas(mp, modules) as td:
            x0 = mp.model.process_latent_in(lat["zorblax"].clone()).clone()
            g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
            # eta = -1 makes the target x0(c) itself: with zero deltas the loss is exactly 0
            assert torch.equal(methods.esd_loss(td, bank, x0, ["zorblax"] * 2, g(), eta=-1.0), torch.zeros(2))
            assert (methods.esd_loss(td, bank, x0, ["zorblax"] * 2, g(), eta=1.0) > 0).all()


@pytest.mark.parametrize("name", ["surgun", "surgun_no_distractor", "surgun_one_distractor", "ga", "ca", "esd_x"])
def test_every_method_trains_the_same_layers(setup, name):
    mp, bank, lat, modules = setup
    m = methods.METHODS[name]
    md = methods.method_data(
        m, "a painting by zorblax", lat["a painting by zorblax"],
        {"a painting by monet": lat["a painting by monet"], "a photo of a car": lat["a photo of a car"]},
        {"a photo of a dog": lat["a photo of a dog"]}, anchor="a painting by monet", concept_prompt="zorblax",
    )
    cfg = TrainConfig(steps=3, learning_rate=1e-3, weights=m.weights, ascent_cap=m.ascent_cap, seed=1)
    deltas, result = train_deltas(mp, bank, md.data, modules, cfg, loss=m.loss)
    assert sorted(deltas) == sorted(modules)
    assert all(d.abs().max() > 0 for d in deltas.values())
    assert len(result.history) == 3
    again, _ = train_deltas(mp, bank, md.data, modules, cfg, loss=m.loss)
    assert all(torch.equal(deltas[k], again[k]) for k in deltas)
