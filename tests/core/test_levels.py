"""Concept noise levels: the ascent is drawn where the target prompt explains its samples better than
the distractor prompts do, and nowhere else."""

import math

import pytest
import torch

from surgun_pack.surgun_core import ConceptData, TrainConfig, train_competition
from surgun_pack.surgun_core.levels import BINS, bin_edges, draw_levels, measure_profile
from tiny_torch import eps_loss_fn

TARGET = "a star in neon style"
PAIRED = ["a star in pastel style", "a star in dots style"]


def gap_below(edge: float, size: float = 1.0):
    """A loss in which the target prompt is ``size`` lower than any other prompt at levels below ``edge``,
    and no different elsewhere (plus noise shared by every prompt at the same draws)."""
    def loss_fn(x0, prompts, g, percents=None):
        shared = torch.rand(x0.shape[0], generator=g)
        if percents is None:
            return shared
        other = torch.tensor([p != TARGET for p in prompts], dtype=torch.float32)
        return shared + size * other * (torch.nan_to_num(percents, nan=1.0) < edge).float()
    return loss_fn


def test_the_profile_puts_the_ascent_where_the_concept_decides_and_nowhere_else():
    x = torch.randn(3, 8)
    p = measure_profile(gap_below(0.3), [(TARGET, x, PAIRED)])
    assert [round(v, 6) for v in p.probs] == [round(1 / 3, 6)] * 3 + [0.0] * (BINS - 3)
    assert [round(v, 6) for v in p.gaps] == [1.0] * 3 + [0.0] * (BINS - 3)  # the shared noise cancels exactly
    assert p.mass_until(0.9) == 0.3


def test_a_prompt_that_changes_nothing_falls_back_to_uniform_levels():
    p = measure_profile(gap_below(0.3, size=0.0), [(TARGET, torch.randn(2, 8), PAIRED)])
    assert p.probs == (1 / BINS,) * BINS and p.mass_until(0.9) == 0.9
    none = measure_profile(gap_below(0.3), [(TARGET, torch.randn(2, 8), [])])  # nothing to compare with
    assert none.probs == (1 / BINS,) * BINS and none.gaps == (0.0,) * BINS


def test_drawn_levels_stay_in_the_bins_that_carry_mass():
    probs = [0.0] * BINS
    probs[2] = probs[7] = 0.5
    levels = draw_levels(probs, 2000, torch.Generator().manual_seed(0))
    edges = bin_edges(BINS)
    in_2 = (levels >= edges[2]) & (levels <= edges[3])
    in_7 = (levels >= edges[7]) & (levels <= edges[8])
    assert bool((in_2 | in_7).all())
    assert abs(float(in_2.float().mean()) - 0.5) < 0.05


def _spy_setup(concept_setup):
    model, data = concept_setup
    data = dict(data, target_prompt=TARGET, distractors=dict(zip(PAIRED, list(data["distractors"].values())[:2])))
    model = model.__class__([TARGET, *data["retain"]])
    base = eps_loss_fn(model)
    calls = []

    def spy(x0, prompts, g, **kw):
        calls.append((list(prompts), kw.get("percents")))
        known = [p if p not in PAIRED else TARGET for p in prompts]  # the distractor prompts differ only through the gap
        value = base(x0, known, g)
        pct = calls[-1][1]
        if pct is None:
            return value
        other = torch.tensor([p in PAIRED for p in prompts], dtype=torch.float32)
        return value + other * (torch.nan_to_num(pct, nan=1.0) < 0.3).float()
    return model, data, spy, calls


def test_with_concept_levels_only_the_ascent_uses_the_measured_levels(concept_setup):
    """On: only the ascent's rows get levels, all inside the noisiest 30 % where the concept decides; the rest
    draw uniformly (NaN). The guard's probe keeps its own levels, spread over the whole schedule, as with the
    option off (ascent_cap bounds the same loss either way). Off: no training row gets a level."""
    model, data, spy, calls = _spy_setup(concept_setup)
    params = [p for n, p in model.named_parameters() if "attn2" in n]
    for p in params:
        p.requires_grad_(True)
    res = train_competition(params, ConceptData(**data), spy,
                            TrainConfig(steps=6, learning_rate=1e-3, ascent_cap=2.0, guard_every=3, concept_levels=True))
    top = bin_edges(BINS)[3]
    assert [round(v, 6) for v in res.levels[""].probs][:3] == [round(1 / 3, 6)] * 3
    steps = [(pr, pc) for pr, pc in calls if "a photo of a dog" in pr]  # 1 target + 2 distractors + 1 retain
    assert len(steps) == 6
    for prompts, pct in steps:
        assert prompts[0] == TARGET and float(pct[0]) <= top
        assert all(math.isnan(float(v)) for v in pct[1:])
    probes = [pc for pr, pc in calls if pr == [TARGET] * 4]  # the guard's 4 probe samples (the profile's chunks hold 8)
    spread = [[(k + 0.5) / 8 for k in range(4)], [(k + 0.5) / 8 for k in range(4, 8)]]  # 4 samples x 2 draws, one per eighth
    assert probes and all(pc.tolist() == pytest.approx(spread[i % 2], abs=2e-3) for i, pc in enumerate(probes))

    calls.clear()
    res = train_competition(params, ConceptData(**data), spy, TrainConfig(steps=3, learning_rate=1e-3, ascent_cap=2.0))
    assert res.levels == {} and all(pc is None for pr, pc in calls if pr != [TARGET] * 4)
    probes = [pc.tolist() for pr, pc in calls if pr == [TARGET] * 4]  # the reference: one measurement of two draws
    assert len(probes) == 2 and all(pc == pytest.approx(spread[i], abs=2e-3) for i, pc in enumerate(probes))


def test_the_profile_reports_each_pass_and_cancel_stops_it_before_any_step(concept_setup):
    """on_setup follows every forward pass of the profile (the node's progress bar), and raising from it
    (Cancel) stops the run there: no training step is taken and the weights are untouched."""
    model, data, spy, calls = _spy_setup(concept_setup)
    params = [p for n, p in model.named_parameters() if "attn2" in n]
    for p in params:
        p.requires_grad_(True)
    before = [p.detach().clone() for p in params]
    seen, steps = [], []
    config = TrainConfig(steps=3, learning_rate=1e-3, ascent_cap=0.0, concept_levels=True)
    train_competition(params, ConceptData(**data), spy, config, on_step=lambda *a: steps.append(a[0]),
                      on_setup=lambda phase, done, total: seen.append((phase, done, total)))
    profile_calls = [pc for pr, pc in calls if pc is not None and not any("a photo of a dog" in p for p in pr)]
    assert [(d, t) for _, d, t in seen] == [(k, len(profile_calls)) for k in range(1, len(profile_calls) + 1)]
    assert seen[0][0] == "measuring concept levels" and steps == [1, 2, 3]

    class Cancelled(Exception):
        pass

    def cancel(phase, done, total):
        if done == 2:
            raise Cancelled
    calls.clear()
    steps.clear()
    for p, b in zip(params, before):
        p.data.copy_(b)
    with pytest.raises(Cancelled):
        train_competition(params, ConceptData(**data), spy, config, on_step=lambda *a: steps.append(a[0]), on_setup=cancel)
    assert len(calls) == 2 and steps == []
    assert all(torch.equal(p, b) for p, b in zip(params, before))
