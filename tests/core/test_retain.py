"""The retain plan: distractors also retained, retain prompts nearest the target drawn most often."""

import pytest
import torch

from surgun_pack.surgun_core import ConceptData, TrainConfig, train_competition
from surgun_pack.surgun_core.errors import SurgUnError
from surgun_pack.surgun_core.pairing import plan_groups
from surgun_pack.surgun_core.retain import nearest_first
from tiny_torch import TinyDenoiser, eps_loss_fn


def test_nearest_first_gives_weight_one_over_rank_by_cosine_to_the_target():
    target = torch.tensor([1.0, 0.0])
    retain = torch.tensor([[0.0, 1.0], [1.0, 0.1], [-1.0, 0.0], [1.0, 1.0]])  # cosines 0, 0.995, -1, 0.707
    w = nearest_first(target, retain)
    assert w == pytest.approx([(1 / 3) / (25 / 12), 1 / (25 / 12), (1 / 4) / (25 / 12), (1 / 2) / (25 / 12)])
    assert sum(w) == pytest.approx(1.0) and nearest_first(target, torch.zeros(0, 2)) == []
    with pytest.raises(SurgUnError, match="do not match"):
        nearest_first(target, torch.zeros(3, 5))


def test_distractors_are_retained_only_on_request_and_each_once():
    off = plan_groups(["a star in {neon} style"], ["pastel", "dots"], ["{gradient}", "a dog"])
    assert off[0].retain == ("a star in gradient style", "a dog")
    on = plan_groups(["a star in {neon} style"], ["pastel", "dots"], ["{gradient}", "{pastel}", "a dog"], retain_distractors=True)
    assert on[0].distractors == ("a star in pastel style", "a star in dots style")
    assert on[0].retain == ("a star in gradient style", "a star in pastel style", "a dog", "a star in dots style")
    unpaired = plan_groups(["a neon star"], ["a pastel star"], ["a dog"], retain_distractors=True)
    assert unpaired[0].retain == ("a dog", "a pastel star") and not unpaired[0].paired


def test_training_draws_each_retain_prompt_at_its_weight():
    names = ["near", "middle", "far"]
    retain = {n: torch.full((2, 8), float(i)) for i, n in enumerate(names)}
    model = TinyDenoiser(["t", *names])
    seen = []
    base = eps_loss_fn(model)

    def spy(x0, prompts, g):
        seen.extend(p for p in prompts if p in retain)
        return base(x0, prompts, g)

    params = [p.requires_grad_(True) for p in model.parameters()]
    weights = dict(zip(names, nearest_first(torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))))
    data = ConceptData("t", torch.randn(2, 8), {"d": torch.ones(2, 8)}, retain, retain_weights=weights)
    train_competition(params, data, spy, TrainConfig(steps=600, learning_rate=1e-4, ascent_cap=0, seed=3))
    share = {n: seen.count(n) / len(seen) for n in names}
    assert len(seen) == 600
    for n in names:  # 6/11, 3/11, 2/11; 600 draws: sd about 0.02
        assert share[n] == pytest.approx(weights[n], abs=0.06), share
    uniform = []
    base_u = eps_loss_fn(model)

    def spy_u(x0, prompts, g):
        uniform.extend(p for p in prompts if p in retain)
        return base_u(x0, prompts, g)

    train_competition(params, ConceptData("t", torch.randn(2, 8), {"d": torch.ones(2, 8)}, retain), spy_u,
                      TrainConfig(steps=600, learning_rate=1e-4, ascent_cap=0, seed=3))
    assert all(abs(uniform.count(n) / 600 - 1 / 3) < 0.07 for n in names)


def test_with_distractors_adds_each_distractor_prompt_once_after_the_retain_prompts():
    from surgun_pack.surgun_core.pairing import with_distractors

    assert with_distractors(["a dog", "a star in pastel style"], ("a star in pastel style", "a star in dots style")) == (
        "a dog", "a star in pastel style", "a star in dots style")
