"""The ascent guard reads the target's loss over the whole noise schedule, whatever its seed."""

import pytest
import torch

from surgun_pack.surgun_core.guard import AscentGuard
from surgun_pack.surgun_core.levels import HI, LO


def level_world():
    """A loss that depends on the noise level as a real model's does: the untouched loss is largest at the noisy end
    (0.15 there, 0.03 at the clean end), and the erased model's rises only in the noisiest tenth of the schedule
    (x(1 + rise) there, as on the toy canvas model, where the ascent's rise sits). Levels are drawn like ComfyUI's:
    uniform, replaced by ``percents`` where given, the noise drawn either way."""
    state = {"rise": 0.0}

    def loss_fn(x0, prompts, g, percents=None):
        u = torch.rand(x0.shape[0], generator=g) * (HI - LO) + LO
        torch.randn(x0.shape, generator=g)
        if percents is not None:
            u = torch.where(torch.isnan(percents), u, percents.float())
        return (0.15 - 0.12 * u) * torch.where(u < 0.1, 1.0 + state["rise"], 1.0)

    def schedule_ratio(rise: float) -> float:
        """The erased loss over the untouched one, averaged over the whole schedule (exactly)."""
        noisy = 0.1 * 0.15 - 0.06 * 0.1**2
        return (0.09 + rise * noisy) / 0.09

    return state, loss_fn, schedule_ratio


def readings(rise: float, seeds=range(20), samples: int = 8, draws: int = 2) -> list[float]:
    state, loss_fn, _ = level_world()
    lines = [(f"a {o} in neon style", torch.randn(2, 3)) for o in ("star", "ring", "heart", "cross", "square", "circle", "diamond", "triangle")]
    out = []
    for seed in seeds:
        state["rise"] = 0.0
        guard = AscentGuard(loss_fn, lines, 2.0, draws=draws, max_samples=samples, seed=seed)
        state["rise"] = rise
        out.append(guard.measure() / guard.reference)
    return out


@pytest.mark.parametrize("rise", [2.0, 4.0, 8.0])
def test_the_guard_reads_the_schedule_mean_rise_whatever_its_seed(rise):
    """Over 20 probe seeds every reading lies within 15 % of the schedule-mean ratio (a probe whose levels were drawn
    at random read the same model anywhere from x1 to several times it, by how many of its few points fell in the
    noisiest tenth), and the readings agree with each other within 5 %."""
    truth = level_world()[2](rise)
    read = readings(rise)
    assert all(abs(r / truth - 1) <= 0.15 for r in read), (truth, read)
    assert max(read) / min(read) <= 1.05, read


def test_each_probe_sample_is_read_at_levels_far_apart_covering_the_schedule():
    """Eight samples at two draws: sixteen levels, one in each sixteenth of the schedule, and each sample's two levels
    half the schedule apart (one noisy, one clean), so no sample is read only where the loss is large."""
    guard = AscentGuard(level_world()[1], [("a star in neon style", torch.randn(8, 3))], 2.0, draws=2, max_samples=8)
    levels = torch.stack([guard.levels(d) for d in range(2)])  # [draw, sample]
    parts = (levels.flatten() * 16).floor().long().sort().values
    assert parts.tolist() == list(range(16))
    assert torch.allclose(levels[1] - levels[0], torch.full((8,), 0.5 * (HI - LO)))


def test_a_watching_guard_records_its_probe_but_neither_stops_nor_moves_the_weights():
    """After the render stop (TrainConfig.ascent_until_erased) the guard only watches: a probe far past the cap
    is recorded, no stop is counted and the weights stay where training put them (an active guard would settle
    them back toward the cap)."""
    w = torch.nn.Parameter(torch.zeros(()))

    def loss_fn(x0, prompts, g, percents=None):
        return (1.0 + w.detach() ** 2).expand(x0.shape[0])

    for watching in (False, True):
        with torch.no_grad():
            w.zero_()
        guard = AscentGuard(loss_fn, [("a star in neon style", torch.randn(2, 3))], 2.0, params=[w], every=10)
        with torch.no_grad():
            w.fill_(3.0)  # probe x10, far past the cap x2
        if watching:
            guard.watch(10)
            assert guard.stops == [] and float(w) == 3.0 and guard.history[-1] == (10, 10.0) and not guard.active
            guard.resume()
            assert not guard.active  # past the cap: it stays off until the probe falls below 90 % of it
            with torch.no_grad():
                w.fill_(0.5)
            guard.watch(20)
            guard.resume()
            assert guard.active and guard.after_step(30) is False and guard.stops == []
        else:
            assert guard.after_step(10) and guard.stops == [10] and float(w) < 3.0  # the active guard settles back
