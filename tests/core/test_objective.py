import math

import pytest
import torch

from surgun_pack.surgun_core import CompetitionWeights, ConceptData, TrainConfig, competition_loss, train_competition
from surgun_pack.surgun_core.errors import NonFiniteLossError, SurgUnError
from tiny_torch import eps_loss_fn


def t(v):
    return torch.tensor(v, dtype=torch.float64, requires_grad=True)


def test_competition_loss_matches_hand_computed_value():
    lt, ld, lr = t(0.5), t([0.2, 0.4]), t(0.1)
    loss, parts = competition_loss(lt, ld, lr, CompetitionWeights(1.0, 2.0, 3.0), cap=None)
    # -1*0.5 + 2*mean(0.2, 0.4) + 3*0.1
    assert loss.item() == pytest.approx(-0.5 + 0.6 + 0.3)
    loss.backward()
    assert lt.grad.item() == pytest.approx(-1.0)
    assert ld.grad.tolist() == pytest.approx([1.0, 1.0])  # 2 * 1/2 each
    assert lr.grad.item() == pytest.approx(3.0)
    assert parts == pytest.approx({"target": 0.5, "distractor": 0.3, "retain": 0.1, "loss": 0.4, "ascent_active": 1.0})


def test_ascent_guard_caps_value_and_zeroes_gradient_above_cap():
    lt = t(0.5)
    loss, parts = competition_loss(lt, t([0.2]), None, CompetitionWeights(2.0, 1.0, 0.0), cap=0.4)
    assert loss.item() == pytest.approx(-2 * 0.4 + 0.2)
    loss.backward()
    assert lt.grad.item() == 0.0
    assert parts["ascent_active"] == 0.0
    below = t(0.3)
    loss, _ = competition_loss(below, t([0.2]), None, CompetitionWeights(2.0, 1.0, 0.0), cap=0.4)
    loss.backward()
    assert below.grad.item() == pytest.approx(-2.0)


def test_switched_off_terms_are_not_needed():
    loss, parts = competition_loss(None, t([0.2, 0.6]), None, CompetitionWeights(0.0, 1.0, 0.0), cap=None)
    assert loss.item() == pytest.approx(0.4)
    assert set(parts) == {"distractor", "loss"}
    with pytest.raises(SurgUnError, match="retain"):
        competition_loss(t(0.1), t([0.2]), None, CompetitionWeights(1.0, 1.0, 1.0), cap=None)


@pytest.mark.parametrize("w", [(-1, 1, 1), (1, float("nan"), 1), (0, 0, 1)])
def test_bad_weights_are_refused(w):
    with pytest.raises(SurgUnError, match="weight"):
        CompetitionWeights(*w)


def _params(model):
    return [model.block.attn2.to_k.weight, model.block.attn2.to_v.weight]


def _train(model, data, **cfg):
    for p in model.parameters():
        p.requires_grad_(False)
    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    return train_competition(ps, ConceptData(**data), eps_loss_fn(model), TrainConfig(**cfg))


def test_guarded_ascent_stays_bounded_over_500_steps_at_large_lr(concept_setup):
    model, data = concept_setup
    res = _train(model, data, steps=500, learning_rate=0.5, ascent_cap=2.0, weights=CompetitionWeights(1.0, 0.0, 0.0), max_grad_norm=0.0)
    losses = [h["loss"] for h in res.history]
    assert all(math.isfinite(v) for v in losses)
    # the objective is bounded below by -w_a * cap
    assert min(losses) >= -res.cap - 1e-6
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unguarded_ascent_at_same_setting_goes_past_the_bound(concept_setup):
    """The guard matters: without it the same run drives the objective far below -cap."""
    model, data = concept_setup
    guarded_cap = _train(*concept_setup_copy(concept_setup), steps=1, learning_rate=0.5, weights=CompetitionWeights(1.0, 0.0, 0.0)).cap
    res = _train(model, data, steps=500, learning_rate=0.5, ascent_cap=0.0, weights=CompetitionWeights(1.0, 0.0, 0.0), max_grad_norm=0.0)
    assert res.cap is None
    assert min(h["loss"] for h in res.history) < -10 * guarded_cap


def concept_setup_copy(setup):
    import copy
    model, data = setup
    return copy.deepcopy(model), {k: copy.deepcopy(v) for k, v in data.items()}


def test_training_is_deterministic_and_seed_dependent(concept_setup):
    import copy
    model, data = concept_setup
    runs = []
    for seed in (3, 3, 4):
        m = copy.deepcopy(model)
        _train(m, data, steps=20, learning_rate=1e-2, seed=seed)
        runs.append(torch.cat([p.detach().flatten() for p in _params(m)]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_training_erases_target_and_pulls_prompt_to_distractors(concept_setup):
    """Against pure ascent (GA) from the same start and seed, the distractor term keeps the
    target prompt close to the distractors' samples while the target is still erased."""
    import copy
    model, data = concept_setup
    before, ga = copy.deepcopy(model), copy.deepcopy(model)
    _train(model, data, steps=150, learning_rate=1e-2, seed=0)
    _train(ga, data, steps=150, learning_rate=1e-2, seed=0, weights=CompetitionWeights(1.0, 0.0, 1.0))

    def loss(m, x, prompt):
        g = torch.Generator().manual_seed(99)
        with torch.no_grad():
            return eps_loss_fn(m)(x.repeat(16, 1), [prompt] * (16 * x.shape[0]), g).mean().item()

    tp = data["target_prompt"]
    assert loss(model, data["target"], tp) > 1.1 * loss(before, data["target"], tp)

    def distractor_loss(m):
        return sum(loss(m, x, tp) for x in data["distractors"].values())

    assert 2 * distractor_loss(model) < distractor_loss(ga)


def test_non_finite_loss_is_caught(concept_setup):
    model, data = concept_setup
    base = eps_loss_fn(model)
    calls = {"n": 0}

    def poisoned(x0, prompts, g):
        calls["n"] += 1
        out = base(x0, prompts, g)
        return out * float("nan") if calls["n"] > 6 else out  # 4 probe calls, then 2 good steps

    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        train_competition(ps, ConceptData(**data), poisoned, TrainConfig(steps=10))


def test_on_step_exception_stops_training(concept_setup):
    model, data = concept_setup
    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    seen = []

    class Stop(Exception):
        pass

    def on_step(step, total, metrics):
        seen.append((step, total, sorted(metrics)))
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train_competition(ps, ConceptData(**data), eps_loss_fn(model), TrainConfig(steps=50), on_step)
    assert [s[0] for s in seen] == [1, 2, 3]
    assert seen[0][1] == 50
    assert {"loss", "target", "distractor", "retain", "grad_norm"} <= set(seen[0][2])


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(steps=0), "steps must be at least 1"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(learning_rate=float("inf")), "learning_rate"),
        (dict(ascent_cap=0.5), "ascent_cap"),
        (dict(max_grad_norm=-1.0), "max_grad_norm"),
    ],
)
def test_bad_config_is_refused(cfg, match):
    with pytest.raises(SurgUnError, match=match):
        TrainConfig(**cfg)


def test_missing_roles_are_refused(concept_setup):
    _, data = concept_setup
    w = CompetitionWeights()
    with pytest.raises(SurgUnError, match="distractors is empty"):
        ConceptData(**{**data, "distractors": {}}).validate(w)
    with pytest.raises(SurgUnError, match="retain_prompts is empty"):
        ConceptData(**{**data, "retain": {}}).validate(w)
    with pytest.raises(SurgUnError, match="target prompt is empty"):
        ConceptData(**{**data, "target_prompt": "  "}).validate(w)
    ConceptData(**{**data, "retain": {}}).validate(CompetitionWeights(retain=0.0))


def test_several_target_groups_are_all_trained(concept_setup):
    """A concept over several prompts: each step draws one group; every group's prompt is used."""
    model, data = concept_setup
    other = {**data, "target_prompt": "a photo of a dog", "target": data["target"] - 4.0}
    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    seen = []
    base = eps_loss_fn(model)

    def spy(x0, prompts, g):
        seen.extend(prompts)
        return base(x0, prompts, g)

    res = train_competition(ps, [ConceptData(**data), ConceptData(**other)], spy, TrainConfig(steps=20, seed=2))
    assert len(res.history) == 20 and math.isfinite(res.reference_target_loss)
    assert data["target_prompt"] in seen and "a photo of a dog" in seen
