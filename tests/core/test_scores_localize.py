import json

import pytest
import torch

from surgun_pack.surgun_core.errors import SurgUnError
from surgun_pack.surgun_core.localize import BlockRow, SelectConfig, localize, reach_of, report_image, select_blocks
from surgun_pack.surgun_core.scores import centred_cosine, competition, erase_score, pixel_embed, retain_score, ssim


def images(n=4, seed=0, side=32):
    g = torch.Generator().manual_seed(seed)
    # smooth random images (structure for SSIM to see)
    x = torch.rand(n, 3, side // 4, side // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


def test_identical_images_erase_zero_retain_one():
    a = images()
    e = erase_score(pixel_embed(a), pixel_embed(a), pixel_embed(images(seed=5)))
    assert e["erase"] == pytest.approx(0.0, abs=1e-6)
    r = retain_score(pixel_embed(a), pixel_embed(a), a, a)
    assert r["retain"] == pytest.approx(1.0, abs=1e-5)
    assert ssim(a, a).tolist() == pytest.approx([1.0] * 4, abs=1e-5)


def test_shuffled_images_get_low_retain():
    a, b = images(seed=0), images(seed=1)
    same = retain_score(pixel_embed(a), pixel_embed(a), a, a)["retain"]
    shuffled = retain_score(pixel_embed(a.flip(0)), pixel_embed(a), a.flip(0), a)["retain"]
    other = retain_score(pixel_embed(b), pixel_embed(a), b, a)["retain"]
    assert shuffled < 0.5 * same and other < 0.5 * same


def test_erase_rewards_moving_toward_the_distractors():
    target, distractor = images(seed=0), images(seed=9)
    halfway = 0.5 * target + 0.5 * distractor
    away_only = images(seed=3)
    e_half = erase_score(pixel_embed(halfway), pixel_embed(target), pixel_embed(distractor))
    assert e_half["toward"] > 0.1 and e_half["away"] > 0
    e_full = erase_score(pixel_embed(distractor), pixel_embed(target), pixel_embed(distractor))
    assert e_full["erase"] > e_half["erase"] > 0
    assert erase_score(pixel_embed(away_only), pixel_embed(target), pixel_embed(distractor))["toward"] < e_full["toward"]


def rows(table):
    return [BlockRow(block=b, erase=e, retain=r) for b, e, r in table]


def test_blocks_that_do_nothing_never_win_on_retain():
    """Most blocks barely move the target; they keep retain perfectly. They must not be chosen."""
    rs = rows([*((f"idle{i}", 0.002, 0.999) for i in range(8)), ("strong", 0.26, 0.95), ("medium", 0.15, 0.97), ("weak", 0.05, 0.99)])
    threshold, cutoff, _ = select_blocks(rs, floor=0.01, config=SelectConfig(keep=2, min_fraction=0.5))
    assert [r.block for r in rs if r.chosen] == ["strong", "medium"]
    assert threshold == pytest.approx(0.13) and cutoff == pytest.approx(0.95)
    assert not any(r.eligible for r in rs if r.block.startswith("idle") or r.block == "weak")


def test_eligible_blocks_are_ranked_by_retain():
    rs = rows([("a", 0.9, 0.2), ("b", 0.8, 0.9), ("c", 0.0, 0.99), ("d", 0.7, 0.85), ("e", 0.6, 0.86)])
    select_blocks(rs, floor=0.05, config=SelectConfig(keep=2, min_fraction=0.5))
    assert [r.block for r in rs if r.chosen] == ["b", "e"]  # c retains best but does not erase


def test_near_ties_are_reported_and_user_threshold_wins():
    rs = rows([("a", 0.9, 0.80), ("b", 0.9, 0.795), ("c", 0.9, 0.5)])
    select_blocks(rs, 0.0, SelectConfig(keep=1, min_fraction=0.0, near_tie=0.01))
    assert [r.chosen for r in rs] == [True, False, False] and [r.near_tie for r in rs] == [False, True, False]
    rs = rows([("a", 0.2, 0.9), ("b", 0.6, 0.5)])
    select_blocks(rs, 0.0, SelectConfig(keep=2, noise_floor=False, erase_threshold=0.5))
    assert [r.block for r in rs if r.chosen] == ["b"]  # only b reaches the absolute threshold
    with pytest.raises(SurgUnError, match="no block erases above the noise floor"):
        select_blocks(rows([("a", 0.2, 0.9)]), 0.0, SelectConfig(keep=1, noise_floor=False, erase_threshold=0.5))
    with pytest.raises(SurgUnError, match="floor 0.3"):
        select_blocks(rows([("a", 0.2, 0.9), ("b", 0.25, 0.9)]), 0.3, SelectConfig(keep=1))


def test_held_out_check_reports_overlap_and_erase_there():
    rs = rows([("a", 0.5, 0.9), ("b", 0.4, 0.95), ("c", 0.45, 0.5)])
    for r, h in zip(rs, (0.02, 0.4, 0.5)):
        r.erase_heldout = h
    _, _, referee = select_blocks(rs, 0.05, SelectConfig(keep=2, min_fraction=0.5))
    assert [r.block for r in rs if r.chosen] == ["a", "b"]
    # on the held-out prompts a does not erase: the held-out choice is b and c
    assert referee["chosen_by_heldout"] == ["b", "c"] and referee["overlap"] == pytest.approx(0.5)
    assert referee["chosen_erase_heldout"] == pytest.approx((0.02 + 0.4) / 2)


@pytest.mark.parametrize("n, keep, match", [(0, 1, "no candidate blocks"), (3, 4, "keep=4 but there are 3")])
def test_selection_errors(n, keep, match):
    with pytest.raises(SurgUnError, match=match):
        SelectConfig(keep=keep).check_candidates(n)


def test_localize_end_to_end_with_callbacks_and_report():
    target, distractors = images(seed=0), images(seed=2)
    ref = {"target": target, "heldout": images(seed=4), "retain": images(seed=1), "floor": target * 0.98 + 0.01,
           "target_ref": target, "distractors": distractors}
    # "good" erases and keeps retain; "bad" erases and wrecks retain; "idle" does nothing
    outcomes = {
        "good": {"target": distractors, "heldout": distractors, "retain": ref["retain"]},
        "bad": {"target": distractors, "heldout": distractors, "retain": images(seed=7)},
        "idle": {"target": ref["target"], "heldout": ref["heldout"], "retain": ref["retain"]},
    }
    seen, asked, eligible = [], [], []

    def probe(block, parts):
        asked.append((block, tuple(parts)))
        return {k: outcomes[block][k] for k in parts}

    res = localize(["good", "bad", "idle"], probe, pixel_embed, ref, SelectConfig(keep=1),
                   "pixel", on_block=lambda i, n, row: seen.append((i, n, row.block)), on_eligible=eligible.append)
    assert res.chosen == ["good"]
    # every block's erase first, then retain for the eligible ones only ("idle" erases nothing)
    assert seen == [(1, 3, "good"), (2, 3, "bad"), (3, 3, "idle"), (1, 3, "good"), (2, 3, "bad")]
    assert eligible == [["good", "bad"]]
    assert [b for b, parts in asked if "retain" in parts] == ["good", "bad"]
    assert all("target" in parts and "retain" not in parts for b, parts in asked[:3])
    text = res.to_json()
    assert "NaN" not in text
    table = {r["block"]: r for r in json.loads(text)["blocks"]}
    assert table["idle"]["erase"] == pytest.approx(0.0, abs=1e-6) and not table["idle"]["eligible"]
    assert table["idle"]["retain"] is None and table["bad"]["retain"] < table["good"]["retain"]
    assert table["good"]["retain"] == pytest.approx(1.0, abs=1e-5) and table["good"]["erase"] > res.floor > 0
    assert res.referee["available"] and res.referee["overlap"] == 1.0
    img = report_image(res)
    assert img.shape[0] == 1 and img.shape[-1] == 3 and img.shape[1] == 76 + 3 * 22


def test_retain_is_rendered_for_blocks_eligible_only_on_the_held_out_prompts():
    """The referee's choice ranks by retain too: a block that erases only on the held-out prompts is rendered."""
    target, distractors = images(seed=0), images(seed=2)
    ref = {"target": target, "heldout": images(seed=4), "retain": images(seed=1), "floor": target * 0.98 + 0.01,
           "target_ref": target, "distractors": distractors}
    outcomes = {
        "trained": {"target": distractors, "heldout": ref["heldout"], "retain": ref["retain"]},
        "held": {"target": ref["target"], "heldout": distractors, "retain": images(seed=7)},
        "idle": {"target": ref["target"], "heldout": ref["heldout"], "retain": ref["retain"]},
    }
    asked = []

    def probe(block, parts):
        asked.append((block, tuple(parts)))
        return {k: outcomes[block][k] for k in parts}

    res = localize(list(outcomes), probe, pixel_embed, ref, SelectConfig(keep=1), "pixel")
    assert [b for b, parts in asked if "retain" in parts] == ["trained", "held"]
    assert res.chosen == ["trained"] and res.referee["chosen_by_heldout"] == ["held"] and res.referee["overlap"] == 0.0


@pytest.mark.parametrize("erases", [True, False])
def test_untouched_retain_images_are_rendered_once_and_only_if_a_block_is_eligible(erases):
    target, distractors, retain = images(seed=0), images(seed=2), images(seed=1)
    rendered = []

    def render_retain():
        rendered.append(1)
        return retain

    ref = {"target": target, "heldout": None, "retain": render_retain, "floor": target * 0.98 + 0.01,
           "target_ref": target, "distractors": distractors}
    moved = distractors if erases else target

    def probe(block, parts):
        return {"target": moved, "retain": retain}

    if erases:
        res = localize(["a", "b"], probe, pixel_embed, ref, SelectConfig(keep=1), "pixel")
        assert rendered == [1] and res.chosen == ["a"]
        assert all(r.retain == pytest.approx(1.0, abs=1e-5) for r in res.rows)
    else:
        with pytest.raises(SurgUnError, match="no block erases above the noise floor"):
            localize(["a", "b"], probe, pixel_embed, ref, SelectConfig(keep=1), "pixel")
        assert rendered == []


def test_a_refusal_says_when_the_embedding_cannot_see_the_concept():
    """When even the distractors' own images score no higher than the noise floor, no probe strength can help:
    the refusal says to connect CLIP vision instead of to raise the probe (the pixel fallback on toy objects)."""
    target = images(seed=0)
    idle = lambda block, parts: {"target": target, "retain": target}
    blind = {"target": target, "heldout": None, "retain": target, "floor": images(seed=9),  # re-render moves a lot
             "target_ref": target, "distractors": target * 0.9 + images(seed=2) * 0.1}  # distractors look like the target
    with pytest.raises(SurgUnError, match="can hardly tell the target from its distractors.*clip_vision"):
        localize(["a", "b"], idle, pixel_embed, blind, SelectConfig(keep=1), "pixel")
    sighted = {**blind, "floor": target * 0.98 + 0.01, "distractors": images(seed=2)}
    with pytest.raises(SurgUnError, match="too weak to tell the blocks apart") as err:
        localize(["a", "b"], idle, pixel_embed, sighted, SelectConfig(keep=1), "pixel")
    assert "clip_vision" not in str(err.value)
    t_emb, d_emb = pixel_embed(target), pixel_embed(sighted["distractors"])
    reach = reach_of(t_emb, d_emb, competition(t_emb, t_emb, d_emb)["score"])
    assert f"a complete erasure would score {reach:.3g}" in str(err.value)
    one = {**sighted, "distractors": images(seed=2)[:1]}  # one distractor image: the reach is unknown
    with pytest.raises(SurgUnError, match="too weak to tell the blocks apart") as err:
        localize(["a", "b"], idle, pixel_embed, one, SelectConfig(keep=1), "pixel")
    assert "nan" not in str(err.value) and "complete erasure" not in str(err.value)


def test_reach_is_the_distractors_own_score_left_one_out():
    """Two identical distractor images, orthogonal to one target image: each distractor scores cos 1 to the other
    and cos 0 to the target, so a complete erasure scores 1 above the untouched target's mean score."""
    t = torch.tensor([[1.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 2.0, 0.0], [0.0, 3.0, 0.0]])
    assert reach_of(t, d, torch.tensor([-0.5, -1.5])) == pytest.approx(1.0 - (-1.0))
    assert reach_of(t, d[:1], torch.zeros(1)) != reach_of(t, d[:1], torch.zeros(1))  # NaN with one image
    mixed = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # not scored against itself: 1/sqrt2 and 1/sqrt2 - 1/sqrt2
    assert reach_of(t, mixed, torch.zeros(1)) == pytest.approx(2 ** -0.5 / 2)


def test_the_centred_cosine_is_a_per_row_correlation():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    assert torch.allclose(centred_cosine(a, 2 * a + 7), torch.ones(3), atol=1e-5)  # brightness and contrast do not move it
    assert torch.allclose(centred_cosine(a, -a), -torch.ones(3), atol=1e-5)
    r = centred_cosine(a, b)
    x, y = a[1].flatten() - a[1].mean(), b[1].flatten() - b[1].mean()
    assert r.shape == (3,) and abs(float(r[1]) - float(x @ y / (x.norm() * y.norm()))) < 1e-5
