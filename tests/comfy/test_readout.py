"""SurgUn Train's end text: what a user reads about the run before sampling."""

from surgun_pack.surgun_comfy.readout import readout_text


def _readout(**over):
    r = {"target_similarity": 0.1, "retain_similarity": 0.98, "guard_ratio": 1.5, "steps": 100, "ascent_steps": 100,
         "guard_first_stop": None, "distractor_first": 0.2, "distractor_last": 0.1}
    r.update(over)
    return readout_text(r, 2.0)


def test_the_end_text_says_when_the_renders_held_the_ascent_off_and_how_long_it_ran():
    checks = [[10 * (i + 1), {"neon": f}] for i, f in enumerate([1, 1, 1, 1, 0.5, 0, 0, 0.125, 0, 0])]
    said = _readout(ascent_steps=70, drawn=checks, erased_at={"neon": [60, 90]})
    assert "the ascent ran 70 of 100 steps; the guard never stopped it" in said
    assert "no render drew the target at steps 60, 90, so the ascent was held off from step 60 to 80 and from step 90 to " \
           "the end; at step 80 a render drew it again and the guard took the ascent back (it runs only below the guard's " \
           "cap) (10 render checks)" in said
    once = _readout(ascent_steps=50, drawn=checks[:5] + [[60, {"neon": 0.0}], [70, {"neon": 0.0}]], erased_at={"neon": [60]})
    assert "held off from step 60 to the end (7 render checks)" in once
    said = _readout(drawn=checks[:9] + [[100, {"neon": 0.125}]], erased_at={"neon": []})
    assert "the guard never stopped the ascent (100 steps)" in said
    assert "the renders drew the target at every check (10; 12% of them at the last), so they never held the ascent off" in said
    late = _readout(ascent_steps=90, drawn=checks[:8] + [[90, {"neon": 0.0}], [100, {"neon": 0.25}]], erased_at={"neon": [60, 90]})
    assert "from step 60 to 80 and from step 90 to the end; at step 80 a render drew it again" in late  # not at 100: the end
    two = _readout(drawn=[[30, {"neon": 0.0, "stripes": 0.5}]], erased_at={"neon": [30], "stripes": []})
    assert "neon: no render drew the target at step 30," in two and "stripes: the renders drew the target at every check" in two


def test_without_the_render_stop_the_end_text_says_nothing_of_renders():
    said = _readout()
    assert "render" not in said and "the guard never stopped the ascent (100 steps)" in said
