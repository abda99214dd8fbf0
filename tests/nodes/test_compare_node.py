"""SurgUnEraseRetainCompare in the real executor."""

import json

import pytest

from surgun_graphs import train_inputs


def compare(erased_ref, **over):
    inputs = {"original": ["1", 0], "erased": erased_ref, "clip": ["1", 1], "vae": ["1", 2], "target": "a painting by zorblax",
              "retain_prompts": "a photo of a dog\na city street", "distractors": "a painting by monet",
              "images_per_prompt": 2, "steps": 2, "size": 32, "cfg": 3.0, "seed": 0}
    inputs.update(over)
    return {"class_type": "SurgUnEraseRetainCompare", "inputs": inputs}


def run(comfy, g):
    g["p"] = {"class_type": "PreviewAny", "inputs": {"source": ["c", 1]}}
    return comfy.run(g)


def test_same_model_scores_erase_zero_and_retain_one(comfy):
    res = run(comfy, {"1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 0}}, "c": compare(["1", 0])})
    assert res.success, res.error_text()
    grid, scores = res.outputs["c"][0][0], json.loads(res.outputs["c"][1][0])
    assert scores["erase"] == pytest.approx(0.0, abs=1e-6)
    assert scores["retain"] == pytest.approx(1.0, abs=1e-5)
    # target before/after + 2 retain prompts x before/after, 32 px renders shown at 96 px, labels beside them
    assert grid.shape[0] == 1 and grid.shape[1] >= 6 * 96 and grid.shape[2] > 2 * 96


def test_erased_model_moves_the_target(comfy):
    g = {"1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 0}},
         "2": {"class_type": "SurgUnTrain", "inputs": {"model": ["1", 0], "clip": ["1", 1], **train_inputs(steps=8, learning_rate=1e-2)}},
         "c": compare(["2", 0])}
    res = run(comfy, g)
    assert res.success, res.error_text()
    scores = json.loads(res.outputs["c"][1][0])
    assert scores["erase"] > 0.0 and scores["away"] > 0.0
    assert set(scores["retain_prompts"]) == {"a photo of a dog", "a city street"}
