import dataclasses
import math

import pytest
import torch

from surgun_pack.surgun_core import CompetitionWeights, ConceptData, TrainConfig, competition_loss, train_competition
from surgun_pack.surgun_core.train import render_checks
from surgun_pack.surgun_core.errors import NonFiniteLossError, SurgUnError
from tiny_torch import eps_loss_fn


def t(v):
    return torch.tensor(v, dtype=torch.float64, requires_grad=True)


def test_competition_loss_matches_hand_computed_value():
    lt, ld, lr = t(0.5), t([0.2, 0.4]), t(0.1)
    loss, parts = competition_loss(lt, ld, lr, CompetitionWeights(1.0, 2.0, 3.0))
    # -1*0.5 + 2*mean(0.2, 0.4) + 3*0.1
    assert loss.item() == pytest.approx(-0.5 + 0.6 + 0.3)
    loss.backward()
    assert lt.grad.item() == pytest.approx(-1.0)
    assert ld.grad.tolist() == pytest.approx([1.0, 1.0])  # 2 * 1/2 each
    assert lr.grad.item() == pytest.approx(3.0)
    assert parts == pytest.approx({"target": 0.5, "distractor": 0.3, "retain": 0.1, "loss": 0.4})


def test_ascent_off_leaves_the_descent_terms():
    loss, parts = competition_loss(None, t([0.2]), t(0.1), CompetitionWeights(2.0, 1.0, 1.0), ascent=False)
    assert loss.item() == pytest.approx(0.3)
    assert "target" not in parts


def test_switched_off_terms_are_not_needed():
    loss, parts = competition_loss(None, t([0.2, 0.6]), None, CompetitionWeights(0.0, 1.0, 0.0))
    assert loss.item() == pytest.approx(0.4)
    assert set(parts) == {"distractor", "loss"}
    with pytest.raises(SurgUnError, match="retain"):
        competition_loss(t(0.1), t([0.2]), None, CompetitionWeights(1.0, 1.0, 1.0))


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


def probe_ratio(model, data, res):
    """The guard's probe (same samples, noise and timesteps) on ``model`` now, as a multiple of its reference."""
    from surgun_pack.surgun_core.guard import AscentGuard

    g = AscentGuard(eps_loss_fn(model), [(data["target_prompt"], data["target"])], 2.0)
    return g.reference / res.reference_target_loss


@pytest.mark.parametrize("lr, multiple", [(0.5, 2.0), (0.05, 2.0), (0.05, 1.5), (0.02, 4.0)])
def test_guard_stops_the_ascent_within_10_percent_of_the_stated_multiple(concept_setup, lr, multiple):
    model, data = concept_setup_copy(concept_setup)
    res = _train(model, data, steps=400, learning_rate=lr, ascent_cap=multiple, weights=CompetitionWeights(1.0, 0.0, 1.0),
                 max_grad_norm=0.0)
    assert res.guard_stops
    ratios = dict(res.guard)
    assert all(multiple <= ratios[s] <= 1.1 * multiple for s in res.guard_stops)
    first = res.guard_stops[0]
    assert res.history[first]["ascent_active"] == 0.0 and "target" not in res.history[first]  # the step after a stop
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("lr, multiple", [(0.5, 2.0), (0.05, 1.5), (0.02, 4.0)])
def test_guard_with_nothing_else_to_train_ends_the_run_at_the_cap(concept_setup, lr, multiple):
    model, data = concept_setup_copy(concept_setup)
    res = _train(model, data, steps=500, learning_rate=lr, ascent_cap=multiple, weights=CompetitionWeights(1.0, 0.0, 0.0),
                 max_grad_norm=0.0)
    assert len(res.guard_stops) == 1 and len(res.history) == res.guard_stops[0] < 500
    assert multiple <= probe_ratio(model, data, res) <= 1.1 * multiple


def test_unguarded_ascent_at_same_setting_goes_past_the_bound(concept_setup):
    """The guard matters: without it the same run drives the target's loss far past the cap."""
    model, data = concept_setup
    guarded = _train(*concept_setup_copy(concept_setup), steps=1, learning_rate=0.5, weights=CompetitionWeights(1.0, 0.0, 0.0))
    res = _train(model, data, steps=500, learning_rate=0.5, ascent_cap=0.0, weights=CompetitionWeights(1.0, 0.0, 0.0), max_grad_norm=0.0)
    assert res.cap is None and res.guard == []
    assert min(h["loss"] for h in res.history) < -10 * guarded.cap
    assert probe_ratio(model, data, guarded) > 10


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
    """Against the same run without the distractor term (ascent + retain), from the same start and
    seed, the distractor term keeps the target prompt close to the distractors' samples while the
    target is still erased."""
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

    # the ascent moves every sample's loss under the target prompt; the distractor term holds the
    # distractors': their rise over the untouched model is under a third of the rise without it
    assert distractor_loss(model) - distractor_loss(before) < (distractor_loss(ga) - distractor_loss(before)) / 3


def test_non_finite_loss_is_caught(concept_setup):
    model, data = concept_setup
    base = eps_loss_fn(model)
    calls = {"n": 0}

    def poisoned(x0, prompts, g, **kw):
        calls["n"] += 1
        out = base(x0, prompts, g, **kw)
        return out * float("nan") if calls["n"] > 4 else out  # 2 guard probe calls, then 2 good steps

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


def test_runs_with_their_own_training_seeds_share_the_guards_probe_through_probe_seed(concept_setup):
    """probe_seed (processes training one concept together): the guard's probe comes from it, not from the training
    seed, so two runs drawing different training samples measure the same reference; without it each measures its own."""
    import copy

    model, data = concept_setup
    ref = {}
    for name, seed, probe_seed in (("a", 0, 0), ("b", 1, 0), ("own", 1, None)):
        ref[name] = _train(copy.deepcopy(model), data, steps=1, learning_rate=1e-3, seed=seed,
                           probe_seed=probe_seed).reference_target_loss
    assert ref["a"] == ref["b"] and ref["own"] != ref["a"]
    with pytest.raises(SurgUnError, match="probe_seed must be an integer >= 0 or None"):
        TrainConfig(probe_seed=-1)


def test_several_target_groups_are_all_trained(concept_setup):
    """A concept over several prompts: each step draws one group; every group's prompt is used."""
    model, data = concept_setup
    other = {**data, "target_prompt": "a photo of a dog", "target": data["target"] - 4.0}
    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    seen = []
    base = eps_loss_fn(model)

    def spy(x0, prompts, g, **kw):
        seen.extend(prompts)
        return base(x0, prompts, g, **kw)

    res = train_competition(ps, [ConceptData(**data), ConceptData(**other)], spy, TrainConfig(steps=20, seed=2))
    assert len(res.history) == 20 and math.isfinite(res.reference_target_loss)
    assert data["target_prompt"] in seen and "a photo of a dog" in seen


def two_concepts():
    """Two concepts erased in one run, each with its own target prompt, samples and distractors."""
    from tiny_torch import TinyDenoiser

    g = torch.Generator().manual_seed(5)
    retain = {"a photo of a dog": torch.linspace(-1, 1, 8).repeat(4, 1)}
    a = ConceptData("a painting by Alpha", torch.randn(4, 8, generator=g) + 2.0, {"d1": torch.full((4, 8), 1.0)}, retain, "alpha")
    b = ConceptData("a painting by Beta", torch.randn(4, 8, generator=g) - 2.0, {"d2": torch.full((4, 8), -1.0)}, retain, "beta")
    model = TinyDenoiser([a.target_prompt, b.target_prompt, *retain])
    for p in model.parameters():
        p.requires_grad_(False)
    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    return model, ps, [a, b]


def test_each_concept_has_its_own_guard_and_one_reaching_its_cap_leaves_the_others_ascent_on():
    from surgun_pack.surgun_core.guard import AscentGuard

    model, ps, data = two_concepts()
    with torch.no_grad():  # Beta's prompt embedding is zero: the trained weights cannot move its loss, so its cap is never reached
        model.table[model.prompts[data[1].target_prompt]] = 0.0
    res = train_competition(ps, data, eps_loss_fn(model), TrainConfig(steps=200, learning_rate=0.05, ascent_cap=1.5,
                                                                      weights=CompetitionWeights(1.0, 0.0, 1.0), max_grad_norm=0.0))
    assert set(res.concepts) == {"alpha", "beta"}
    alpha, beta = res.concepts["alpha"], res.concepts["beta"]
    assert alpha["stops"] and not beta["stops"]
    ratios = dict(alpha["guard"])
    assert all(1.5 <= ratios[s] <= 1.1 * 1.5 for s in alpha["stops"])
    assert beta["final_ratio"] == pytest.approx(1.0)
    for c in (alpha, beta):
        assert c["cap"] == pytest.approx(1.5 * c["reference_probe_loss"])
    # each guard probes only its own concept's samples: its reference is that concept's loss alone
    own = AscentGuard(eps_loss_fn(model), [(data[1].target_prompt, data[1].target)], 1.5, seed=1)
    assert beta["reference_probe_loss"] == pytest.approx(own.reference)
    # after Alpha's guard stopped its ascent, Beta's steps still ascend and Alpha's do not
    after = res.history[alpha["stops"][0]:]
    assert any(h["ascent_active"] == 1.0 and "target" in h for h in after)
    assert any(h["ascent_active"] == 0.0 and "target" not in h for h in after)
    assert {"guard_ratio:alpha", "guard_ratio:beta"} <= set(res.history[-1])
    assert res.guard == alpha["guard"]  # the first concept's guard is also the result's single-concept view


def test_one_concept_over_several_groups_shares_one_guard(concept_setup):
    model, data = concept_setup
    other = {**data, "target_prompt": "a photo of a dog", "target": data["target"] - 4.0}
    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    res = train_competition(ps, [ConceptData(**data), ConceptData(**other)], eps_loss_fn(model), TrainConfig(steps=5))
    assert res.concepts == {} and "guard_ratio" in res.history[-1]
    assert not any(k.startswith("guard_ratio:") for k in res.history[-1])


def test_model_targets_give_each_descent_row_its_own_prompt_and_the_ascent_none(concept_setup):
    """With model_targets the loop asks the loss for a teacher per row: the distractor rows learn their own
    distractor's prediction, the retain rows their own prompt's, the ascent's rows keep their sample. Off:
    the loss is called as before, without teachers (a loss function that takes none keeps working)."""
    model, data = concept_setup
    base, calls = eps_loss_fn(model), []

    def spy(x0, prompts, g, **kw):
        calls.append((list(prompts), kw.get("teachers")))
        return base(x0, prompts, g)

    for on in (True, False):
        calls.clear()
        ps = _params(model)
        for p in ps:
            p.requires_grad_(True)
        train_competition(ps, ConceptData(**data), spy, TrainConfig(steps=5, learning_rate=1e-3, ascent_cap=0, model_targets=on))
        steps = [c for c in calls if len(c[0]) > 1]
        assert len(steps) == 5
        for prompts, teachers in steps:
            if not on:
                assert teachers is None
                continue
            tp = data["target_prompt"]
            assert prompts[0] == tp and teachers[0] is None  # the ascent's sample
            assert prompts[1:3] == [tp, tp] and set(teachers[1:3]) <= set(data["distractors"]) and teachers[1] != teachers[2]
            assert teachers[3:] == prompts[3:] == ["a photo of a dog"]


def _spy_run(model, data, **cfg):
    """Train with a spy on the loss: per call, the rows' samples, prompts and noise_rows."""
    base, calls = eps_loss_fn(model), []

    def spy(x0, prompts, g, **kw):
        calls.append((x0.clone(), list(prompts), kw.get("noise_rows")))
        return base(x0, prompts, g, **kw)

    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    res = train_competition(ps, ConceptData(**data), spy, TrainConfig(**cfg))
    return res, [c for c in calls if len(c[1]) > 1]  # the training steps (the guard's probe is the target alone)


def test_shared_noise_pairs_each_target_sample_with_the_distractor_samples_made_from_its_noise(concept_setup):
    """Sample k of every prompt starts from the same noise, so with shared_noise a step that trains target
    sample k trains each drawn distractor's sample k, at the target row's noise and level; retain rows keep their
    own. Once the ascent is off, the distractor rows share the first one's. Off: independent draws, as before."""
    model, data = concept_setup
    data = {**data, "target": torch.arange(4.0)[:, None].repeat(1, 8),
            "distractors": {d: torch.arange(4.0)[:, None].repeat(1, 8) + 10 * (i + 1) for i, d in enumerate(data["distractors"])}}
    _, steps = _spy_run(model, data, steps=12, learning_rate=1e-3, ascent_cap=0, shared_noise=True)
    assert len(steps) == 12 and len({float(x0[0, 0]) for x0, _, _ in steps}) > 1
    for x0, prompts, rows in steps:
        k = float(x0[0, 0])
        assert [float(v) % 10 for v in x0[1:3, 0]] == [k, k]  # distractor sample k (10*i + k)
        assert rows == [0, 0, 0, 3]
    _, steps = _spy_run(model, data, steps=4, learning_rate=1e-3, ascent_cap=0, shared_noise=True,
                        weights=CompetitionWeights(0.0, 1.0, 1.0))
    assert all(rows == [0, 0, 2] for _, _, rows in steps)
    _, steps = _spy_run(model, data, steps=12, learning_rate=1e-3, ascent_cap=0)
    assert all(rows is None for _, _, rows in steps)
    assert any(float(x0[1, 0]) % 10 != float(x0[0, 0]) for x0, _, _ in steps)


def test_with_shared_noise_a_distractor_no_different_from_the_target_cancels_the_ascent(concept_setup):
    """The competition's two sides differ only in what their samples differ in: a distractor whose samples are
    the target's own cancels the ascent (same sample, same noise, same level), so every step's objective and its
    gradient are 0 up to float rounding. With independent draws the same run has each side pull with its own noise."""
    model, data = concept_setup
    data = {**data, "distractors": {"same": data["target"].clone()}}
    runs = {on: _train(model, data, steps=10, learning_rate=1e-6, ascent_cap=0, weights=CompetitionWeights(1.0, 1.0, 0.0),
                       distractors_per_step=1, shared_noise=on).history for on in (True, False)}
    assert all(abs(h["loss"]) < 1e-6 * h["target"] and h["grad_norm"] < 1e-5 for h in runs[True]), runs[True]
    assert all(abs(h["loss"]) > 1e-3 * h["target"] for h in runs[False]) and min(h["grad_norm"] for h in runs[False]) > 1e-2


def _probe_losses(model, data):
    """Target and distractor samples under the target prompt at one fixed set of noises and levels (shared:
    every distractor sample k takes target sample k's), through the same stand-in loss the training uses."""
    x = torch.cat([data["target"], *data["distractors"].values()])
    n = data["target"].shape[0]
    with torch.no_grad():
        loss = eps_loss_fn(model)(x, [data["target_prompt"]] * len(x), torch.Generator().manual_seed(99),
                                  noise_rows=[i % n for i in range(len(x))])
    return float(loss[:n].mean()), float(loss[n:].mean())


def test_ascent_until_tie_runs_the_ascent_only_while_the_target_still_wins(concept_setup):
    """Each step's ascent is on exactly when that step's target row has the lower loss under the target prompt
    than its distractor rows (same noise, same level), and off otherwise; the descent terms train every step."""
    model, data = concept_setup
    base, seen = eps_loss_fn(model), []

    def spy(x0, prompts, g, **kw):
        out = base(x0, prompts, g, **kw)
        if len(prompts) > 1:
            seen.append(out.detach().clone())
        return out

    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    res = train_competition(ps, ConceptData(**data), spy, TrainConfig(steps=60, learning_rate=0.05, ascent_cap=0,
                                                                       shared_noise=True, ascent_until_tie=True))
    on = [bool(h["ascent_active"]) for h in res.history]
    assert on == [bool(l[0] < l[1:3].mean()) for l in seen]  # rows: target, 2 distractors, retain
    assert 5 < sum(on) < 55  # both happen in this run
    assert all(("target" in h) == o and "distractor" in h and "retain" in h for h, o in zip(res.history, on))


@pytest.mark.parametrize("lr", [0.01, 0.05])
def test_ascent_until_tie_bounds_an_unguarded_ascent_where_the_target_ties_with_its_distractors(concept_setup, lr):
    """With no guard (ascent_cap 0), the plain ascent sends the target's loss past 10x its untouched value; with
    ascent_until_tie it ends tied with its distractors' loss on a fixed probe (within 10 %) and within 2x of
    where it started."""
    model, data = concept_setup
    start, _ = _probe_losses(model, data)
    ends = {}
    for tie in (False, True):
        m, d = concept_setup_copy(concept_setup)
        _train(m, d, steps=200, learning_rate=lr, ascent_cap=0, shared_noise=True, ascent_until_tie=tie)
        ends[tie] = _probe_losses(m, d)
    assert ends[False][0] > 10 * start
    (target, distractors) = ends[True]
    assert abs(target / distractors - 1) < 0.1 and target < 2 * start, (start, ends)


def test_ascent_until_tie_needs_shared_noise():
    with pytest.raises(SurgUnError, match="needs shared_noise on"):
        TrainConfig(ascent_until_tie=True, shared_noise=False)
    assert TrainConfig(ascent_until_tie=True, shared_noise=True).ascent_until_tie


def test_ascent_until_erased_holds_the_ascent_off_while_no_render_draws_the_target(concept_setup):
    """The renders are read every guard_every steps: a reading of 0 holds the ascent off (the descent terms go on),
    a later reading above 0 brings it back; the last step's reading is recorded and switches nothing (no step follows)."""
    model, data = concept_setup
    readings = iter([1.0, 0.5, 0.0, 0.0, 0.25, 0.0, 0.0])  # at steps 10, 20, ..., 70

    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    config = TrainConfig(steps=70, learning_rate=1e-3, ascent_cap=0, shared_noise=True, ascent_until_erased=True)
    res = train_competition(ps, ConceptData(**data), eps_loss_fn(model), config, drawn=lambda: {"": next(readings)})
    on = [bool(h["ascent_active"]) for h in res.history]
    assert on == [True] * 30 + [False] * 20 + [True] * 10 + [False] * 10
    assert res.erased_at == {"": [30, 60]} and [s for s, _ in res.drawn] == [10, 20, 30, 40, 50, 60, 70]
    assert render_checks(config) == [10, 20, 30, 40, 50, 60]
    assert render_checks(dataclasses.replace(config, steps=10)) == [] and render_checks(dataclasses.replace(
        config, weights=CompetitionWeights(0.0, 1.0, 1.0))) == [] and render_checks(TrainConfig(steps=70)) == []
    assert all("distractor" in h and "retain" in h for h in res.history)


def test_ascent_until_erased_reads_the_renders_only_while_the_ascent_is_on(concept_setup):
    """While the guard holds the ascent off, no render is made (the renders would have nothing to hold off): a check
    falls due every 10 steps and is made exactly where the ascent is on after that step's guard measurement."""
    model, data = concept_setup
    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    res = train_competition(ps, ConceptData(**data), eps_loss_fn(model),
                            TrainConfig(steps=80, learning_rate=0.05, ascent_cap=1.5, shared_noise=True, ascent_until_erased=True),
                            drawn=lambda: {"": 1.0})
    on_next = {h["step"] - 1: bool(h["ascent_active"]) for h in res.history}  # the ascent's state after each step
    read = [s for s, _ in res.drawn]
    assert read == [s for s in range(10, 80, 10) if on_next[s]] + [80] * (80 in read)
    assert res.guard_stops and any(not on_next[s] for s in range(10, 80, 10)), "the guard must hold some checks off"
    assert not res.erased_at


def test_ascent_until_erased_needs_shared_noise_and_a_renderer(concept_setup):
    with pytest.raises(SurgUnError, match="needs shared_noise on"):
        TrainConfig(ascent_until_erased=True, shared_noise=False)
    model, data = concept_setup
    with pytest.raises(SurgUnError, match="no renderer was given"):
        _train(model, data, steps=20, shared_noise=True, ascent_until_erased=True)


def test_ascent_until_erased_without_a_check_inside_the_run_says_so_and_trains_as_without_it(concept_setup, caplog):
    import copy
    import logging

    model, data = concept_setup
    with caplog.at_level(logging.WARNING, logger="SurgUn"):
        on = _train(copy.deepcopy(model), data, steps=10, learning_rate=1e-2, shared_noise=True, ascent_until_erased=True)
    off = _train(copy.deepcopy(model), data, steps=10, learning_rate=1e-2, shared_noise=True)
    assert [h["loss"] for h in on.history] == [h["loss"] for h in off.history] and not on.drawn
    said = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "the renders are checked every 10 steps and the run has 10" in said[0]
    assert "Give more than 10 steps, or turn ascent_until_erased off." in said[0]



def test_with_the_ascent_the_only_term_training_ends_once_the_renders_hold_it_off(concept_setup):
    """Nothing else trains the weights, so the renders could never read the target back: the run ends there."""
    model, data = concept_setup
    ps = _params(model)
    for p in ps:
        p.requires_grad_(True)
    res = train_competition(ps, ConceptData(**data), eps_loss_fn(model),
                            TrainConfig(steps=60, learning_rate=1e-3, weights=CompetitionWeights(1.0, 0.0, 0.0), ascent_cap=0,
                                        shared_noise=True, ascent_until_erased=True),
                            drawn=lambda: {"": 0.0})
    assert len(res.history) == 10 and res.erased_at == {"": [10]}
