"""Every comparison method trains through the same bridge; ESD's regression target is exact."""

import pytest
import torch


@pytest.fixture(scope="module")
def setup(comfy, tiny):
    bridge = comfy.node_module("SurgUnTrain", "bridge")
    methods = comfy.pack_module("surgun_core.methods")
    train = comfy.pack_module("surgun_core.train")
    with torch.inference_mode():
        mp, clip = tiny.build_model("sd1"), tiny.build_clip()
        bank = bridge.PromptBank(clip, mp, bridge.latent_shape_for(mp, 32), torch.device("cpu"))
        prompts = ["a painting by zorblax", "a painting by monet", "a photo of a car", "a photo of a dog", "zorblax"]
        lat = bridge.sample_prompts(mp, bank, bridge.plan_batches(bank, prompts, 2), 2, 2, 3.0, 0, "euler", "normal")
    modules = [n for n, _ in mp.model.diffusion_model.named_modules() if n.endswith("attn2.to_k")]
    return bridge, methods, train, mp, bank, lat, modules


def test_esd_target_is_the_frozen_guided_prediction(setup):
    bridge, methods, train, mp, bank, lat, modules = setup
    with torch.inference_mode(False):
        with bridge.TrainableDeltas(mp, modules) as td:
            x0 = mp.model.process_latent_in(lat["zorblax"].clone()).clone()
            g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
            # eta = -1 makes the target x0(c) itself: with zero deltas the loss is exactly 0
            assert torch.equal(bridge.esd_loss(td, bank, x0, ["zorblax"] * 2, g(), eta=-1.0), torch.zeros(2))
            assert (bridge.esd_loss(td, bank, x0, ["zorblax"] * 2, g(), eta=1.0) > 0).all()


@pytest.mark.parametrize("name", ["surgun", "surgun_no_distractor", "surgun_one_distractor", "ga", "ca", "esd_x"])
def test_every_method_trains_the_same_layers(setup, name):
    bridge, methods, train, mp, bank, lat, modules = setup
    m = methods.METHODS[name]
    md = methods.method_data(
        m, "a painting by zorblax", lat["a painting by zorblax"],
        {"a painting by monet": lat["a painting by monet"], "a photo of a car": lat["a photo of a car"]},
        {"a photo of a dog": lat["a photo of a dog"]}, anchor="a painting by monet", concept_prompt="zorblax",
    )
    cfg = train.TrainConfig(steps=3, learning_rate=1e-3, weights=m.weights, ascent_cap=m.ascent_cap, seed=1)
    deltas, result = bridge.train_deltas(mp, bank, md.data, modules, cfg, loss=m.loss, esd_eta=m.esd_eta)
    assert sorted(deltas) == sorted(modules)
    assert all(d.abs().max() > 0 for d in deltas.values())
    assert len(result.history) == 3
    again, _ = bridge.train_deltas(mp, bank, md.data, modules, cfg, loss=m.loss, esd_eta=m.esd_eta)
    assert all(torch.equal(deltas[k], again[k]) for k in deltas)
