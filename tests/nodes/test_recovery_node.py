"""SurgUnRecoveryCheck in the real executor, on the tiny test models."""

import re

import pytest

from surgun_graphs import train_inputs

SOURCE = {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 0}}
# an erasure the tiny random model shows: with the retain plan on (the default since stop 23) 8 steps at 1e-2 move
# its target images no closer to the distractors (gap -0.06, "nothing to recover"), and with shared noise on (the
# default since stop 27) neither (gap -0.005), so this fixture trains without both
ERASED = {"class_type": "SurgUnTrain", "inputs": {"model": ["1", 0], "clip": ["1", 1], **train_inputs(
    steps=8, learning_rate=1e-2, retain_distractors=False, retain_nearest_first=False, shared_noise=False)}}
SCORE = re.compile(r"^(soft prompt|concept vector|paraphrase '.*'): recovery (\d\.\d{3}) \(", re.M)


def check(erased_ref, **over):
    inputs = {"original": ["1", 0], "erased": erased_ref, "clip": ["1", 1], "vae": ["1", 2],
              "target": "a painting by {zorblax}", "distractors": "monet\nhokusai", "paraphrases": "a zorblax-style canvas",
              "soft_tokens": 2, "attack_steps": 3, "attack_lr": 0.05, "vector_strength": 2.0, "recovered_above": 0.5,
              "images_per_prompt": 2, "steps": 2, "size": 32, "cfg": 3.0, "seed": 0}
    inputs.update(over)
    return {"class_type": "SurgUnRecoveryCheck", "inputs": inputs}


def run(comfy, g):
    g["p"] = {"class_type": "PreviewAny", "inputs": {"source": ["R", 1]}}
    return comfy.run(g)


@pytest.fixture
def grid_rows(monkeypatch):
    """The rows each run hands to labelled_grid (what the user reads beside the images)."""
    from surgun_pack.surgun_comfy import recovery

    seen = []
    real = recovery.labelled_grid

    def spy(rows, **kw):
        seen.append(rows)
        return real(rows, **kw)

    monkeypatch.setattr(recovery, "labelled_grid", spy)
    return seen


def test_erased_report_scores_every_attack(comfy, grid_rows):
    res = run(comfy, {"1": SOURCE, "2": ERASED, "R": check(["2", 0], seed=11, attack_steps=12)})
    assert res.success, res.error_text()
    grid, report, best = (res.outputs["R"][i][0] for i in range(3))
    scores = {name: float(v) for name, v in SCORE.findall(report)}
    assert list(scores) == ["soft prompt", "concept vector", "paraphrase 'a zorblax-style canvas'"]
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert best == pytest.approx(max(scores.values()), abs=1e-3)
    verdict = report.splitlines()[-1]
    assert re.match(r"verdict: (RECOVERED by .+ \(\d\.\d\d > recovered_above 0\.50\)|held under all attacks \(max \d\.\d\d"
                    r"|UNCERTAIN: max \d\.\d\d by .+ only \d+\.\d standard errors apart)", verdict)
    gap, se = map(float, re.search(r"\(gap (-?[\d.]+), standard error ([\d.]+)\)", report).groups())
    assert verdict.startswith("verdict: UNCERTAIN") == (gap <= 2 * se)  # the tiny model erases nothing real
    # the soft prompt lowered the erased model's own denoising loss on the target (same noise before and after)
    before, after = map(float, re.search(r"2 token rows, 12 steps at lr 0\.05, erased model's loss on fixed noise (\S+) -> (\S+),", report).groups())
    assert after < before
    assert "same MODEL" not in report
    # rows: original, erased, then one per attack; 32 px renders shown at 96 px
    rows = grid_rows[-1]
    assert [r.tag for r in rows] == ["original model", "erased model"] + ["erased + attack"] * 3
    assert [r.prompt for r in rows[2:]] == ["soft prompt (2 tokens)", "concept vector x2", "a zorblax-style canvas"]
    assert all(tuple(r.images.shape) == (2, 32, 32, 3) for r in rows)
    assert grid.shape[0] == 1 and grid.shape[1] >= 5 * 96 and grid.shape[-1] == 3
    # progress reached its end: 5 rows + target reference + attack samples (2 sampler steps each) + 1 distractor batch + 12 attack steps
    progress = [d for e, d in res.messages if e == "progress" and d["node"] == "R"]
    assert progress[-1]["value"] == progress[-1]["max"] == 7 * 2 + 2 + 12


def test_same_model_in_both_says_nothing_was_erased(comfy, grid_rows):
    res = run(comfy, {"1": SOURCE, "R": check(["1", 0], seed=12, paraphrases="", attack_steps=2)})
    assert res.success, res.error_text()
    report, best = res.outputs["R"][1][0], res.outputs["R"][2][0]
    assert "note: erased and original are the same MODEL: nothing was erased" in report
    assert report.splitlines()[-1].startswith("verdict: NOTHING TO RECOVER: ")
    assert best == 1.0
    assert len(grid_rows[-1]) == 4


def test_attacks_off(comfy, grid_rows):
    res = run(comfy, {"1": SOURCE, "2": ERASED, "R": check(["2", 0], seed=13, paraphrases="", attack_steps=0, vector_strength=0.0)})
    assert res.success, res.error_text()
    assert res.outputs["R"][1][0].splitlines()[-1].startswith("verdict: no attack ran")
    assert res.outputs["R"][2][0] == 0.0
    assert len(grid_rows[-1]) == 2


def test_unrelated_model_is_refused(comfy):
    other = {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 1}}
    res = run(comfy, {"1": SOURCE, "9": other, "R": check(["9", 0], seed=14)})
    assert not res.success
    assert "erased is not derived from original: connect SurgUn Train's MODEL output" in res.error_text()


@pytest.mark.parametrize("over, message", [
    (dict(target="  "), "target is empty"),
    (dict(soft_tokens=400), "Value 400 bigger than max of 308"),
])
def test_bad_inputs_name_the_input(comfy, over, message):
    res = run(comfy, {"1": SOURCE, "R": check(["1", 0], seed=15, **over)})
    assert not res.success and message in res.error_text() + str(res.error)


def test_request_checks_ranges_whatever_the_route():
    from surgun_pack.surgun_comfy.recovery import RecoveryRequest
    from surgun_pack.surgun_core.errors import SurgUnError

    with pytest.raises(SurgUnError, match=r"attack_steps must be a finite number in \[0, 10000\], got '-1'\. .*0 turns"):
        RecoveryRequest(target="a painting by zorblax", attack_steps=-1)
    with pytest.raises(SurgUnError, match=r"vector_strength .* got 'nan'"):
        RecoveryRequest(target="a painting by zorblax", vector_strength=float("nan"))
    with pytest.raises(SurgUnError, match="target is empty"):
        RecoveryRequest(target="")


def test_cancel_stops_the_attack(comfy):
    import comfy.model_management as mm

    def cancel(value, total, node_id):  # inside the attack: it starts after 4 renders + 1 distractor batch (x 2 steps)
        if node_id == "R" and 10 + 2 <= value < total:
            mm.interrupt_current_processing(True)

    comfy.server.progress_listeners.append(cancel)
    res = run(comfy, {"1": SOURCE, "2": ERASED, "R": check(["2", 0], seed=16, attack_steps=200)})
    assert not res.success and res.error["event"] == "execution_interrupted"


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_every_attack_runs_on_other_families(comfy, family):
    g = {"1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": family, "seed": 0}},
         "R": check(["1", 0], seed=17, attack_steps=2, cfg=-1.0)}
    res = run(comfy, g)
    assert res.success, res.error_text()
    assert len(SCORE.findall(res.outputs["R"][1][0])) == 3


def test_definition_has_a_tooltip_on_every_input(comfy):
    spec = comfy.object_info(["SurgUnRecoveryCheck"])["SurgUnRecoveryCheck"]
    assert spec["display_name"] == "SurgUn Recovery Check" and spec["category"] == "SurgUn" and spec["description"]
    inputs = {**spec["input"]["required"], **spec["input"].get("optional", {})}
    assert all(len(v) > 1 and v[1].get("tooltip") for v in inputs.values()), [k for k, v in inputs.items() if len(v) < 2 or not v[1].get("tooltip")]
    assert inputs["seed"][1]["control_after_generate"] == "fixed"
    assert spec["output"] == ["IMAGE", "STRING", "FLOAT"]
