"""The guard on the toy canvas model (a model that really knows its concepts): every stop of the
ascent lies within 10 % of the stated multiple, at the benchmark's learning rates."""

import pytest
import torch

from surgun_pack.benchmarks.toy_canvas import constants, world
from surgun_pack.benchmarks.toy_canvas import model as toy_model
from surgun_pack.surgun_comfy.families import detect_family
from surgun_pack.surgun_comfy.render import Renderer
from surgun_pack.surgun_comfy.training import train_deltas
from surgun_pack.surgun_core import CompetitionWeights, ConceptData, TrainConfig
from surgun_pack.surgun_core.selection import select_trainable


@pytest.fixture(scope="module")
def toy(comfy):
    with torch.inference_mode():
        model, clip, _ = toy_model.load_toy_canvas()
    family = detect_family(model)
    renderer = Renderer.for_model(model, clip, family, constants.WIDTH, 2, 12, constants.CFG)
    targets = [world.prompt_for(o, "neon") for o in world.OBJECTS[:4]]
    retain = [world.prompt_for(o, "dots") for o in world.OBJECTS[:4]]
    samples = renderer.latents(model, renderer.plan([*targets, *retain]), seed=3)
    data = [ConceptData(t, samples[t], {}, {r: samples[r] for r in retain}) for t in targets]
    modules = select_trainable(model.model.diffusion_model, family.preset("cross_attention"))
    return model, renderer, data, modules, family


@pytest.mark.parametrize("lr, multiple", [(3e-3, 2.0), (1e-2, 1.5), (3e-2, 3.0)])
def test_every_stop_lies_within_10_percent_of_the_multiple(toy, lr, multiple):
    model, renderer, data, modules, family = toy
    cfg = TrainConfig(steps=60, learning_rate=lr, weights=CompetitionWeights(1.0, 0.0, 1.0), ascent_cap=multiple, seed=1)
    _, result = train_deltas(model, renderer.bank, data, modules, cfg, family.arch.checkpoint_units)
    ratios = dict(result.guard)
    assert result.guard_stops, f"the ascent never reached x{multiple}: {result.guard}"
    assert all(multiple <= ratios[s] <= 1.1 * multiple for s in result.guard_stops), result.guard
