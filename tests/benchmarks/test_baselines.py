import pytest
import torch

from surgun_pack.benchmarks.toy_canvas.baselines import ESD_ROLE, METHODS, method_data


def samples():
    t = torch.zeros(2, 3)
    d = {"p_a": torch.ones(2, 3), "p_b": 2 * torch.ones(2, 3)}
    r = {"p_r": 3 * torch.ones(2, 3)}
    return t, d, r


@pytest.mark.parametrize("name, distractors, retain, weights", [
    ("surgun", ["p_a", "p_b"], ["p_r"], (1, 1, 1)),
    ("surgun_no_distractor", [], ["p_r"], (1, 0, 1)),
    ("surgun_one_distractor", ["p_b"], ["p_r"], (1, 1, 1)),
    ("ga", [], [], (1, 0, 0)),
    ("ca", ["p_b"], ["p_b"], (0, 1, 1)),  # anchor under the target prompt + its prior preservation
])
def test_roles_of_each_method(name, distractors, retain, weights):
    t, d, r = samples()
    m = METHODS[name]
    md = method_data(m, "target prompt", t, d, r, anchor="p_b")
    assert sorted(md.data.distractors) == distractors and sorted(md.data.retain) == retain
    assert (m.weights.ascent, m.weights.distract, m.weights.retain) == weights
    md.data.validate(m.weights)
    if name == "ga":
        assert m.ascent_cap == 0.0  # unguarded, as published


def test_esd_trains_the_concept_prompt_on_target_samples():
    t, d, r = samples()
    md = method_data(METHODS["esd_x"], "a circle in dots style", t, d, r, anchor="p_a", concept_prompt="dots style")
    assert md.esd_prompt == "dots style" and md.data.target_prompt == "dots style"
    assert list(md.data.distractors) == [ESD_ROLE] and md.data.distractors[ESD_ROLE] is t
    assert METHODS["esd_x"].esd_eta == 1.0


def test_anchor_must_be_a_distractor():
    t, d, r = samples()
    with pytest.raises(KeyError):
        method_data(METHODS["ca"], "x", t, d, r, anchor="nope")
