"""SurgUn Train pairs each target line with its distractors in the same context (concept in braces)."""

import pytest
from surgun_graphs import graph


def test_braced_target_lines_train_against_their_own_swapped_lines(comfy):
    res = comfy.run(graph("sd1", steps=2, target="a painting of a harbour by {zorblax}\na {zorblax} sketch of a cat",
                          distractors="monet\nhokusai", retain_prompts="{picasso}\na photo of a dog",
                          retain_distractors=False, retain_nearest_first=False))
    assert res.success, res.error_text()
    groups = res.outputs["2"][1][0].metadata["groups"]
    assert groups == [
        {"target": "a painting of a harbour by zorblax", "concept": "zorblax", "paired": True,
         "distractors": ["a painting of a harbour by monet", "a painting of a harbour by hokusai"],
         "retain": ["a painting of a harbour by picasso", "a photo of a dog"]},
        {"target": "a zorblax sketch of a cat", "concept": "zorblax", "paired": True,
         "distractors": ["a monet sketch of a cat", "a hokusai sketch of a cat"],
         "retain": ["a picasso sketch of a cat", "a photo of a dog"]},
    ]
    assert "unpaired" not in res.ui["2"]["text"][0]
    assert res.outputs["2"][1][0].metadata["concepts"] == ["zorblax"]  # two phrasings, one concept


def test_by_default_distractors_are_also_retained_and_nearest_first_draws_are_used_when_on(comfy, monkeypatch):
    from surgun_pack.surgun_core import train as core_train

    drawn = []
    real = core_train._draw_weighted
    monkeypatch.setattr(core_train, "_draw_weighted", lambda *a: drawn.append(a[1]) or real(*a))
    lines = dict(target="a painting of a harbour by {zorblax}\na {zorblax} sketch of a cat",
                 distractors="monet\nhokusai", retain_prompts="{picasso}\na photo of a dog")
    res = comfy.run(graph("sd1", steps=2, **lines))
    assert res.success, res.error_text()
    meta = res.outputs["2"][1][0].metadata
    first = meta["groups"][0]
    assert first["retain"] == ["a painting of a harbour by picasso", "a photo of a dog",
                               "a painting of a harbour by monet", "a painting of a harbour by hokusai"]
    assert meta["groups"][1]["retain"][2:] == ["a monet sketch of a cat", "a hokusai sketch of a cat"]
    assert meta["retain_plan"] == {"distractors_retained": True, "nearest_first": False}
    assert "retain_draw" not in first and drawn == []  # uniform draws by default

    on = comfy.run(graph("sd1", steps=3, retain_nearest_first=True, **lines))
    assert on.success, on.error_text()
    draw = on.outputs["2"][1][0].metadata["groups"][0]["retain_draw"]
    assert list(draw) == first["retain"]
    # weights 1/rank, normalised: 1, 1/2, 1/3, 1/4 over 25/12, in the order of the text encoder's similarity
    assert sorted(draw.values(), reverse=True) == pytest.approx([12 / 25, 6 / 25, 4 / 25, 3 / 25], abs=1e-4)
    # and the training loop drew with them, every step (the weights reach train_competition)
    assert len(drawn) == 3 and all(sorted(w.values(), reverse=True) == pytest.approx([12 / 25, 6 / 25, 4 / 25, 3 / 25], abs=1e-4)
                                   for w in drawn)


def test_unpaired_stays_available_and_is_said(comfy):
    off = comfy.run(graph("sd1", steps=2, target="a painting by {zorblax}", distractors="a painting by monet", paired=False))
    assert off.success, off.error_text()
    assert off.outputs["2"][1][0].metadata["groups"][0]["distractors"] == ["a painting by monet"]
    plain = comfy.run(graph("sd1", steps=2, target="a painting by zorblax", distractors="a painting by monet"))
    assert "1 of 1 target lines trained unpaired" in plain.ui["2"]["text"][0]


def test_readout_says_how_strongly_the_run_erased(comfy):
    res = comfy.run(graph("sd1", steps=3))
    readout = res.outputs["2"][1][0].metadata["readout"]
    assert set(readout) == {"target_similarity", "retain_similarity", "guard_ratio", "distractor_first", "distractor_last",
                            "ascent_steps", "steps", "guard_first_stop"}
    assert -1.0 <= readout["target_similarity"] <= 1.0 and readout["guard_ratio"] > 0
    assert f"similarity {readout['target_similarity']:.2f} (1 = unchanged)" in res.ui["2"]["text"][0]


def test_readout_says_when_the_guard_stopped_the_ascent(comfy):
    """A user reads how many steps the ascent ran: with a cap just above the start it stops at the first
    measurement (step 10) and the steps after it carry no ascent; with the guard far away it never stops."""
    stopped = comfy.run(graph("sd1", steps=14, learning_rate=5e-2, ascent_cap=1.02, distractor_weight=0.01, retain_weight=0.0))
    assert stopped.success, stopped.error_text()
    m = stopped.outputs["2"][1][0].metadata
    first = m["guard"]["stops"][0]
    assert first == 10 and m["readout"]["ascent_steps"] == 10 and m["readout"]["steps"] == 14
    assert "the ascent ran 10 of 14 steps (the guard first stopped it at step 10)" in stopped.ui["2"]["text"][0]
    never = comfy.run(graph("sd1", steps=3, learning_rate=1e-6))
    assert never.outputs["2"][1][0].metadata["guard"]["stops"] == []
    assert "the guard never stopped the ascent (3 steps)" in never.ui["2"]["text"][0]


def test_readout_says_how_many_steps_the_ascent_tied_with_the_distractors(comfy):
    """With ascent_until_tie a user reads how many steps ran the ascent and how many found the target already
    tied with its distractors; the two add up to the run's steps while the guard has not stopped it."""
    res = comfy.run(graph("sd1", steps=8, learning_rate=5e-2, ascent_until_tie=True))
    assert res.success, res.error_text()
    r = res.outputs["2"][1][0].metadata["readout"]
    assert r["guard_first_stop"] is None and r["ascent_steps"] + r["ascent_tied"] == r["steps"] == 8
    assert f"the ascent ran {r['ascent_steps']} of 8 steps ({r['ascent_tied']} tied with the distractors)" in res.ui["2"]["text"][0]
    plain = comfy.run(graph("sd1", steps=3))
    assert "ascent_tied" not in plain.outputs["2"][1][0].metadata["readout"] and "tied" not in plain.ui["2"]["text"][0]
