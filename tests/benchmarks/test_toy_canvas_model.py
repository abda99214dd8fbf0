"""The bundled toy canvas world, classifier and model (benchmarks/toy_canvas): deterministic
renders, a classifier that is right on held-out renders, and a model that loads as real ComfyUI
objects and runs the pack's nodes unchanged through its loader node."""

import tempfile
from pathlib import Path

import pytest
import torch

from surgun_pack.benchmarks.toy_canvas import classifier, constants, world
from surgun_pack.benchmarks.toy_canvas import model as toy_model

REPO = Path(__file__).resolve().parents[2]


def test_world_is_deterministic_and_complete():
    assert len(world.OBJECTS) >= 8 and len(world.STYLES) >= 8
    assert len(set(world.all_prompts())) == len(world.OBJECTS) * len(world.STYLES)
    a = world.render_pairs(world.all_pairs(), seed=3)
    b = world.render_pairs(world.all_pairs(), seed=3)
    c = world.render_pairs(world.all_pairs(), seed=4)
    assert a.shape == (64, 3, world.RESOLUTION, world.RESOLUTION)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_classifier_on_held_out_renders():
    m = classifier.load_classifier()
    metrics = classifier.evaluate(m, per_pair=2, seed=classifier.EVAL_SEED_BASE + 777)
    assert metrics["object_accuracy"] >= 0.98 and metrics["style_accuracy"] >= 0.98


def test_loader_returns_comfy_objects_that_sample(comfy):
    from comfy.model_base import BaseModel
    from comfy.model_patcher import ModelPatcher
    from comfy.sd import CLIP, VAE

    from surgun_pack.benchmarks.toy_canvas import gate

    patcher, clip, vae = toy_model.load_toy_canvas()
    assert isinstance(patcher, ModelPatcher) and isinstance(patcher.model, BaseModel)
    assert isinstance(clip, CLIP) and isinstance(vae, VAE)
    names = [n for n, _ in patcher.model.diffusion_model.named_modules()]
    assert any(n.endswith("attn1") for n in names) and any(n.endswith("attn2") for n in names)
    imgs = gate.sample_prompts(patcher, clip, vae, ["a ring in neon style"] * 2, seed=0, steps=8)
    assert imgs.shape == (2, constants.HEIGHT, constants.WIDTH, 3)
    assert 0.0 <= imgs.min() and imgs.max() <= 1.0
    assert imgs.std() > 0.05  # a picture, not a flat field


@pytest.fixture(scope="module")
def toy_graph(comfy):
    import nodes

    if "SurgUnToyCanvasLoader" not in nodes.NODE_CLASS_MAPPINGS:
        import asyncio

        root = Path(tempfile.mkdtemp(prefix="surgun-toy-nodes-"))
        (root / "surgun_toy_canvas").symlink_to(REPO / "benchmarks" / "toy_canvas" / "comfy_nodes", target_is_directory=True)
        asyncio.run(nodes.load_custom_node(str(root / "surgun_toy_canvas")))
    assert "SurgUnToyCanvasLoader" in nodes.NODE_CLASS_MAPPINGS
    return {"ld": {"class_type": "SurgUnToyCanvasLoader", "inputs": {"weights_path": ""}}}


def test_toy_model_trains_through_surgun_train(comfy, toy_graph):
    g = dict(toy_graph)
    g["tr"] = {"class_type": "SurgUnTrain", "inputs": {
        "model": ["ld", 0], "clip": ["ld", 1], "target": "a star in neon style\na ring in neon style",
        "distractors": "a star in stripes style\na ring in dots style", "retain_prompts": "a heart in pastel style",
        "blocks": "cross_attention", "block_pattern": "", "steps": 3, "learning_rate": 3e-4, "ascent_weight": 1.0,
        "distractor_weight": 1.0, "retain_weight": 1.0, "ascent_cap": 2.0, "seed": 0, "sample_size": 32,
        "sample_steps": 4, "samples_per_prompt": 1, "sample_cfg": 4.0, "filename_prefix": ""}}
    res = comfy.run(g)
    assert res.success, res.error_text()
    meta = res.outputs["tr"][1][0].metadata
    assert meta["family"] == "unet:ToyCanvasConfig" and meta["prediction"] == "v"
    assert all(".attn2." in m for m in meta["blocks"]["modules"]) and meta["blocks"]["modules"]


def test_handover_sampling_splits_one_trajectory_between_two_models(comfy):
    """The first model takes the noisiest steps, the second the rest, from the same noise: a model handing over to
    itself is its own sampling at any step, and handing over at 0 or at the last step is one model alone."""
    from surgun_pack.benchmarks.toy_canvas import gate

    a, clip, _ = toy_model.load_toy_canvas()
    b = a.clone()
    key = next(k for k in a.model.state_dict() if k.endswith("attn2.to_v.weight"))
    b.add_patches({key: (torch.randn_like(a.model.state_dict()[key]) * 0.5,)}, 1.0)
    prompts = ["a ring in neon style", "a star in pastel style"]
    conds = {p: gate.encode_prompt(clip, p) for p in prompts}
    neg = gate.encode_prompt(clip, constants.NEGATIVE_PROMPT)
    full = lambda m: gate.sample_latents(m, conds, neg, prompts, seed=5, steps=8)  # noqa: E731
    hand = lambda f, s, k: gate.handover_latents(f, s, k, conds, neg, prompts, seed=5, steps=8)  # noqa: E731
    only_a, only_b = full(a), full(b)
    assert (only_a - only_b).abs().max() > 0.1  # the two models really differ
    for k in (1, 3, 6):
        assert torch.allclose(hand(a, a, k), only_a, atol=1e-4), k
    assert torch.allclose(hand(a, b, 0), only_b, atol=1e-4) and torch.allclose(hand(a, b, 8), only_a, atol=1e-4)
    mixed = hand(a, b, 3)
    assert (mixed - only_a).abs().max() > 1e-2 and (mixed - only_b).abs().max() > 1e-2
    with pytest.raises(ValueError, match="0..8"):
        hand(a, b, 9)


def test_classifier_reads_the_object_in_pixel_blends_of_two_styles():
    """Kept-on-target counts a lost shape, not a style the classifier never saw: an object drawn half in one style and
    half in another (the same pose, pixels averaged) is still read as its object."""
    m = classifier.load_classifier()
    objs = list(range(len(world.OBJECTS)))
    for a, b in (("neon", "pastel"), ("neon", "checker"), ("stripes", "gradient"), ("stripes", "checker")):
        reads = []
        for seed in (11, 12):
            x = world.render_batch(objs, [world.STYLES.index(a)] * len(objs), seed=seed)
            y = world.render_batch(objs, [world.STYLES.index(b)] * len(objs), seed=seed)
            reads.append(classifier.classify(m, 0.5 * x + 0.5 * y)["object"] == torch.tensor(objs))
        assert torch.cat(reads).float().mean() >= 0.9, (a, b)
