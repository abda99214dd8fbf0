"""Recovery Check math: score, verdict, concept vector, soft-prompt loop (pure torch)."""

import pytest
import torch

from surgun_pack.surgun_core.errors import SurgUnError
from surgun_pack.surgun_core.recovery import (
    add_direction, add_to_last_rows, concept_direction, concept_similarity, optimise_offset, recovery_score,
    reference, verdict,
)


def emb(center, n=4, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(center, dtype=torch.float32).repeat(n, 1) + noise * torch.randn(n, len(center), generator=g)


T, D = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]


def setup():
    target_ref, distractor_ref = emb(T, seed=1), emb(D, seed=2)
    original, erased = emb(T, seed=3), emb(D, seed=4)
    return target_ref, distractor_ref, reference(original, erased, target_ref, distractor_ref), original, erased


def test_recovery_is_zero_for_the_erased_output_and_one_for_the_original():
    t, d, ref, original, erased = setup()
    assert ref.gap > 1.0 and not ref.nothing_erased
    assert recovery_score(erased, ref, t, d) == pytest.approx(0.0, abs=1e-6)
    assert recovery_score(original, ref, t, d) == pytest.approx(1.0, abs=1e-6)
    halfway = emb([1.0, 1.0, 0.0], seed=5)
    assert 0.3 < recovery_score(halfway, ref, t, d) < 0.7
    # further than the erased output, or closer than the original: clamped into [0, 1]
    assert recovery_score(emb([-1.0, 1.0, 0.0], noise=0.0), ref, t, d) == 0.0
    assert recovery_score(emb(T, noise=0.0), ref, t, d) == 1.0


def test_without_distractors_only_the_target_term_counts():
    t = emb(T, seed=1)
    assert concept_similarity(emb(T, noise=0.0), t).tolist() == pytest.approx([1.0] * 4, abs=1e-2)
    assert concept_similarity(emb(D, noise=0.0), t).abs().max() < 0.1
    ref = reference(emb(T, seed=3), emb(D, seed=4), t)
    assert recovery_score(emb(D, seed=4), ref, t) == pytest.approx(0.0, abs=1e-6)


def test_same_images_mean_nothing_erased():
    t, d = emb(T, seed=1), emb(D, seed=2)
    same = emb(T, seed=3)
    ref = reference(same, same, t, d)
    assert ref.nothing_erased
    assert recovery_score(emb(D), ref, t, d) == 1.0
    assert verdict({"soft prompt": 1.0}, 0.5, nothing_erased=True, gap=ref.gap).startswith("NOTHING TO RECOVER: ")
    assert verdict({}, 0.5, nothing_erased=True).startswith("no attack ran")


def test_verdict_names_the_strongest_attack():
    assert verdict({"soft prompt": 0.81, "concept vector": 0.2}, 0.5) == "RECOVERED by soft prompt (0.81 > recovered_above 0.50)"
    held = verdict({"soft prompt": 0.12, "concept vector": 0.05}, 0.5)
    assert held.startswith("held under all attacks (max 0.12, by soft prompt")
    assert verdict({}, 0.5).startswith("no attack ran")


def test_concept_direction_is_the_mean_difference():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(1, 77, 8, generator=g)
    without = torch.randn(3, 77, 8, generator=g)
    d = concept_direction(target, without)
    assert d.shape == (1, 77, 8)
    assert torch.allclose(d[0], (target[0] - without).mean(0), atol=1e-6)
    # adding the direction to a "without" prompt at strength 1 gives the target plus the others' spread
    assert torch.allclose(add_direction(without.mean(0, keepdim=True), d, 1.0), target, atol=1e-5)
    assert torch.equal(add_direction(target, d, 0.0), target)
    with pytest.raises(SurgUnError, match="one token length"):
        concept_direction(target, torch.zeros(1, 154, 8))


def test_offset_goes_on_the_last_rows_only():
    cond = torch.zeros(2, 6, 3)
    out = add_to_last_rows(cond, torch.ones(2, 3))
    assert out.shape == (2, 6, 3)
    assert out[:, :4].abs().sum() == 0 and torch.equal(out[:, 4:], torch.ones(2, 2, 3))
    assert torch.equal(add_to_last_rows(cond, torch.zeros(0, 3)), cond)
    with pytest.raises(SurgUnError, match="soft_tokens is 7"):
        add_to_last_rows(cond, torch.ones(7, 3))


def test_soft_prompt_loop_lowers_a_toy_loss():
    goal = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    cond = torch.zeros(1, 10, 8)

    def loss_fn(offset):
        return (add_to_last_rows(cond, offset)[0, -4:] - goal).pow(2).mean()

    seen = []
    res = optimise_offset(loss_fn, (4, 8), steps=60, lr=0.1, on_step=lambda s, n, v: seen.append((s, n)))
    assert seen[0] == (1, 60) and seen[-1] == (60, 60)
    assert res.losses[-1] < 0.2 * res.losses[0]
    assert not res.offset.requires_grad and res.offset.shape == (4, 8)
    assert optimise_offset(loss_fn, (4, 8), steps=0, lr=0.1).offset.abs().sum() == 0


def test_soft_prompt_loop_stops_when_on_step_raises():
    class Cancelled(Exception):
        pass

    calls = []

    def on_step(step, total, loss):
        calls.append(step)
        if step == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        optimise_offset(lambda o: o.pow(2).sum() + 1.0, (2, 2), steps=100, lr=0.1, on_step=on_step)
    assert calls == [1, 2, 3]


def test_non_finite_loss_names_the_fix():
    with pytest.raises(SurgUnError, match="attack_lr"):
        optimise_offset(lambda o: o.sum() * float("nan"), (1, 2), steps=5, lr=0.1)


def test_a_gap_inside_the_rows_own_noise_makes_the_verdict_uncertain():
    t, d = emb(T, seed=1), emb(D, seed=2)
    clear = reference(emb(T, seed=3), emb(D, seed=4), t, d)
    assert clear.separable and 0 < clear.noise < clear.gap / 10
    # two rows of the same wide spread, barely apart: the yardstick is noise
    mixed_a = torch.cat([emb(T, n=2, seed=5), emb(D, n=2, seed=6)])
    mixed_b = torch.cat([emb(T, n=2, seed=7), emb(D, n=3, seed=8)])
    blurred = reference(mixed_a, mixed_b, t, d)
    assert 0 < blurred.gap and not blurred.separable
    line = verdict({"soft prompt": 0.97, "concept vector": 0.1}, 0.5, blurred.nothing_erased, blurred.gap, blurred.noise)
    assert line.startswith("UNCERTAIN: max 0.97 by soft prompt, but the original and erased rows are only ")
    assert "connect CLIP_VISION" in line
    assert verdict({"soft prompt": 0.97}, 0.5, clear.nothing_erased, clear.gap, clear.noise).startswith("RECOVERED by soft prompt")
