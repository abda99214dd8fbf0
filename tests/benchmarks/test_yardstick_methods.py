"""Yardstick v2 baselines on the tiny SD1 model: CA model-based regresses onto the frozen model under
the anchor prompt, UCE's closed form maps the target's keys/values to the anchor's, every v2 gradient
method trains through the same loop."""

import pytest
import torch
from surgun_pack.benchmarks.toy_canvas import methods_v2 as mv
from surgun_pack.surgun_comfy.deltas import TrainableDeltas
from surgun_pack.surgun_comfy.prompts import PromptBank
from surgun_pack.surgun_comfy.render import latent_shape_for
from surgun_pack.surgun_comfy.training import train_deltas
from surgun_pack.surgun_core.train import TrainConfig


@pytest.fixture(scope="module")
def setup(comfy, tiny):
    with torch.inference_mode():
        mp, clip = tiny.build_model("sd1"), tiny.build_clip()
        bank = PromptBank(clip, mp, latent_shape_for(mp, 32), torch.device("cpu"))
    modules = [n for n, _ in mp.model.diffusion_model.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))]
    return mp, bank, modules


def test_ca_model_target_is_the_frozen_anchor_prediction(setup):
    mp, bank, modules = setup
    x = torch.randn(2, *latent_shape_for(mp, 32))
    g = lambda: torch.Generator().manual_seed(0)
    with torch.inference_mode(False), TrainableDeltas(mp, modules) as td:
        x0 = mp.model.process_latent_in(x.clone()).clone()
        same = mv.ca_model_loss({"a zorblax": "a zorblax"})(td, bank)
        assert torch.equal(same(x0, ["a zorblax"] * 2, g()), torch.zeros(2))  # anchor = itself: exactly 0
        other = mv.ca_model_loss({"a zorblax": "a dog"})(td, bank)
        assert (other(x0, ["a zorblax"] * 2, g()) > 0).all()
        # a prompt without an anchor (prior preservation) is plain denoising
        mixed = other(x0, ["a zorblax", "a dog"], g())
        assert mixed.shape == (2,) and torch.isfinite(mixed).all()


def test_uce_maps_target_keys_to_the_anchor_and_keeps_retain(setup):
    mp, bank, modules = setup
    import comfy.utils

    edits = [("a painting by zorblax", "a painting by monet")]
    keep = ["a photo of a dog", "a photo of a car", "a city street"]
    deltas = mv.uce_deltas(mp, bank, modules, edits, keep, lam=0.1, reg=1e-4)
    assert sorted(deltas) == sorted(modules)
    net = mp.get_model_object("diffusion_model")
    ctx = lambda p: bank.conditioning(p)[0][0][0].double()
    for n in modules:
        w = comfy.utils.get_attr(net, f"{n}.weight").double()
        w2 = w + deltas[n].double()
        ct, ca = ctx(edits[0][0]), ctx(edits[0][1])
        before = (ct @ w.T - ca @ w.T).norm()
        after = (ct @ w2.T - ca @ w.T).norm()
        assert after < 0.5 * before, n
        cp = torch.cat([ctx(p) for p in keep])
        assert (cp @ w2.T - cp @ w.T).norm() < before


@pytest.mark.parametrize("name", ["esd_x", "esd_x_full", "ga", "ca", "ca_noise", "ga@4x"])
def test_v2_gradient_methods_train_on_the_split(setup, name):
    mp, bank, _ = setup
    modules = [n for n, _ in mp.model.diffusion_model.named_modules() if n.endswith("attn2.to_k")]
    kind, target, chosen = "style", "neon", ("pastel", "dots", "noise")
    shape = latent_shape_for(mp, 32)
    samples = {p: torch.randn(2, *shape) for p in mv.sample_prompts_needed(kind, target, chosen)}
    data = mv.concept_data(name, kind, target, chosen, samples)
    m = mv.V2_METHODS[name]
    from surgun_pack.benchmarks.toy_canvas.baselines import METHODS

    base = METHODS[m.base]
    loss = mv.ca_model_loss(mv.anchor_map(kind, target, chosen)) if m.ca_model else base.loss
    cfg = TrainConfig(steps=2 * m.steps_mult, learning_rate=1e-3, weights=base.weights, ascent_cap=base.ascent_cap, seed=1)
    deltas, result = train_deltas(mp, bank, data, modules, cfg, loss=loss)
    assert len(result.history) == 2 * m.steps_mult and all(d.abs().max() > 0 for d in deltas.values())
    if name == "esd_x":
        assert {d.target_prompt for d in data} == {"neon style"}
    if name == "esd_x_full":
        assert {d.target_prompt for d in data} == {f"a {o} in neon style" for o in ("circle", "triangle", "cross", "heart")}


def test_esd_u_trains_every_layer_but_the_cross_attention_on_the_concept_prompt(setup):
    """ESD-u (ESD's noxattn): the convolutions, self-attention and feed-forward layers move; the cross-attention,
    the time embedding and the output layer do not, and the prompt is the concept's own words."""
    from surgun_pack.benchmarks.toy_canvas.baselines import METHODS
    from surgun_pack.benchmarks.toy_canvas.yardstick import esd_u_modules

    mp, bank, _ = setup
    net = mp.model.diffusion_model
    modules = esd_u_modules(net)
    weight_layers = [n for n, mod in net.named_modules() if getattr(mod, "weight", None) is not None and mod.weight.ndim >= 2]
    left = [n for n in weight_layers if n not in modules]
    assert left and left == [n for n in weight_layers if "attn2" in n or n.startswith(("time_embed.", "out."))]
    assert modules == [n for n in weight_layers if n not in left]  # each once, in the network's order
    assert any(".attn1." in n for n in modules) and any(isinstance(net.get_submodule(n), torch.nn.Conv2d) for n in modules)
    kind, target, chosen = "object", "square", ("circle", "triangle", "cross")
    shape = latent_shape_for(mp, 32)
    samples = {p: torch.randn(2, *shape) for p in mv.sample_prompts_needed(kind, target, chosen)}
    data = mv.concept_data("esd_u", kind, target, chosen, samples)
    assert {d.target_prompt for d in data} == {"a square"}
    base = METHODS[mv.V2_METHODS["esd_u"].base]
    cfg = TrainConfig(steps=2, learning_rate=1e-3, weights=base.weights, ascent_cap=base.ascent_cap, seed=1)
    deltas, _ = train_deltas(mp, bank, data, modules, cfg, loss=base.loss)
    moved = {n for n, d in deltas.items() if d.abs().max() > 0}
    assert any(isinstance(net.get_submodule(n), torch.nn.Conv2d) for n in moved) and not any("attn2" in n for n in moved)


def test_surgun_on_esd_u_layers_gives_the_node_esd_u_layers(setup):
    """The variant surgun_sp_noxattn hands SurgUn Train ESD-u's layers through its block_pattern text, parsed as the node
    parses it."""
    from surgun_pack.benchmarks.toy_canvas.yardstick import esd_u_modules
    from surgun_pack.surgun_core.selection import parse_pattern_text, select_trainable

    net = setup[0].model.diffusion_model
    (pattern,) = [v for k, v in mv.V2_METHODS["surgun_sp_noxattn"].node if k == "block_pattern"]
    assert select_trainable(net, parse_pattern_text(pattern)) == esd_u_modules(net)
