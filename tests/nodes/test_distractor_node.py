"""SurgUnDistractorBuilder in the real executor, and its DISTRACTORS driving SurgUnTrain."""

import pytest
from surgun_graphs import train_inputs


def builder(**over):
    inputs = {"clip": ["1", 1], "target": "Claude Monet", "kind": "artist", "k": 4, "seed": 0, "use_pool": True,
              "candidates": "", "protected": "Frida Kahlo"}
    inputs.update(over)
    return {"class_type": "SurgUnDistractorBuilder", "inputs": inputs}


def test_distractors_drive_training_end_to_end(comfy):
    g = {
        "1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 0}},
        "b": builder(),
        "2": {"class_type": "SurgUnTrain", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], **train_inputs(target="", distractors="ignored line", steps=3),
            "distractor_set": ["b", 0]}},
    }
    res = comfy.run(g)
    assert res.success, res.error_text()
    chosen, preview = res.outputs["b"][0][0], res.outputs["b"][1][0]
    weights = res.outputs["2"][1][0]
    assert len(chosen.prompts) == 4 and all(p.startswith("a painting in the style of ") for p in chosen.prompts)
    assert "Claude Monet" not in chosen.names and "Frida Kahlo" not in chosen.names
    assert weights.metadata["target"] == "a painting in the style of Claude Monet"
    assert weights.metadata["distractors"] == chosen.names
    # paired: the builder's target prompt with its name swapped for each distractor is the builder's prompt
    assert weights.metadata["groups"][0]["distractors"] == chosen.prompts and weights.metadata["groups"][0]["paired"]
    meta = weights.metadata["distractor_builder"]
    assert meta["names"] == chosen.names and meta["params"]["k"] == 4 and meta["thresholds"]["applied"]
    assert meta["pool"]["size"] > 500 and meta["encoder"].startswith("SD1ClipModel:")
    for p in chosen.prompts:
        assert p in preview


def test_rebuilding_for_another_target_reuses_the_pool_embeddings(comfy):
    g = {"1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 0}}, "b": builder(target="Zorblax Quux", k=3)}
    g["k"] = {"class_type": "PreviewAny", "inputs": {"source": ["b", 1]}}
    res = comfy.run(g)
    assert res.success, res.error_text()
    text = res.outputs["b"][1][0]
    cached = int(text.rsplit("; ", 1)[1].split(" ")[0])
    assert cached > 500  # the artist pool was encoded by the test above, with the same encoder


def test_builder_errors_are_clear(comfy):
    base = {"1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 0}}}
    res = comfy.run({**base, "b": builder(target=""), "k": {"class_type": "PreviewAny", "inputs": {"source": ["b", 1]}}})
    assert "target is empty" in res.error["exception_message"]
    res = comfy.run({**base, "b": builder(k=64, band_quantile=0.95), "k": {"class_type": "PreviewAny", "inputs": {"source": ["b", 1]}}})
    assert "admissible candidates for k=64" in res.error["exception_message"]
    res = comfy.run({**base, "b": builder(kind="painter"), "k": {"class_type": "PreviewAny", "inputs": {"source": ["b", 1]}}})
    assert not res.success and "kind" in str(res.error["node_errors"]) and "painter" in str(res.error["node_errors"])


def test_several_targets_are_erased_in_one_run_each_with_its_own_distractors(comfy):
    g = {
        "1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 0}},
        "b": builder(target="Claude Monet\nHokusai", k=3),
        "2": {"class_type": "SurgUnTrain", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], **train_inputs(target="", distractors="", steps=4), "distractor_set": ["b", 0]}},
    }
    res = comfy.run(g)
    assert res.success, res.error_text()
    sets = res.outputs["b"][0][0].sets
    meta = res.outputs["2"][1][0].metadata
    assert meta["concepts"] == ["Claude Monet", "Hokusai"]
    assert [gr["target"] for gr in meta["groups"]] == ["a painting in the style of Claude Monet", "a painting in the style of Hokusai"]
    for group, chosen in zip(meta["groups"], sets):
        assert group["distractors"] == chosen.prompts and group["paired"]  # each concept against its own set
        assert not {n.lower() for n in chosen.names} & {"claude monet", "monet", "hokusai", "frida kahlo"}
    assert set(meta["guard_per_concept"]) == {"Claude Monet", "Hokusai"}
    assert all(v["reference_probe_loss"] > 0 for v in meta["guard_per_concept"].values())
    assert set(meta["readout"]["per_target"]) == {gr["target"] for gr in meta["groups"]}
    assert [s["target"] for s in meta["distractor_builder"]["sets"]] == ["Claude Monet", "Hokusai"]
    shown = res.ui["2"]["text"][0]
    assert "erased 2 concepts ('Claude Monet', 'Hokusai')" in shown and "for the 2 concepts" in shown
    assert "the ascent ran" not in shown and "never stopped" not in shown  # one guard per concept: no single-guard story
    assert meta["readout"]["per_concept_first_stop"] == {"claude monet": None, "hokusai": None}  # 4 steps, first measurement at 10
    assert "the guard first stopped each concept's ascent at: never, never" in shown
    assert "[1/2] target: 'a painting in the style of Claude Monet'" in res.outputs["b"][1][0]


def test_several_target_errors_name_the_fix(comfy):
    base = {"1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 0}}}
    res = comfy.run({**base, "b": builder(target="Claude Monet\nHokusai\nMonet"), "k": {"class_type": "PreviewAny", "inputs": {"source": ["b", 1]}}})
    assert "target lists the concept 'Claude Monet' twice (lines 1 and 3: 'Monet'). Remove line 3" in res.error["exception_message"]
    # typed targets: one concept among another's distractors
    res = comfy.run({**base, "2": {"class_type": "SurgUnTrain", "inputs": {"model": ["1", 0], "clip": ["1", 1], **train_inputs(
        target="a painting by {zorblax}\na painting by {quux}", distractors="monet\nquux")}}})
    assert "'quux' is erased in this run and also a distractor or retained concept of 'zorblax'" in res.error["exception_message"]
    # a one-concept node fed with several
    res = comfy.run({**base, "b": builder(target="Claude Monet\nHokusai", k=3), "c": {"class_type": "SurgUnEraseRetainCompare", "inputs": {
        "original": ["1", 0], "erased": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "target": "", "retain_prompts": "a dog",
        "distractors": "", "images_per_prompt": 1, "steps": 1, "size": 64, "cfg": 3.0, "seed": 0, "distractor_set": ["b", 0]}},
        "k": {"class_type": "PreviewAny", "inputs": {"source": ["c", 1]}}})
    assert "SurgUn Erase/Retain Compare checks one concept, but distractor_set holds 2 targets" in res.error["exception_message"]


def test_typed_distractors_can_be_listed_per_concept_under_a_braced_header(comfy):
    from surgun_graphs import graph

    res = comfy.run(graph("sd1", steps=2, target="a painting by {zorblax}\na photo of a {quux}",
                          distractors="{zorblax}\nmonet\nhokusai\n{quux}\ncar\nboat"))
    assert res.success, res.error_text()
    meta = res.outputs["2"][1][0].metadata
    assert meta["concepts"] == ["zorblax", "quux"]
    assert meta["groups"][0]["distractors"] == ["a painting by monet", "a painting by hokusai"]
    assert meta["groups"][1]["distractors"] == ["a photo of a car", "a photo of a boat"]
    # shared lines above the first header go to every concept without its own list
    res = comfy.run(graph("sd1", steps=2, target="a painting by {zorblax}\na photo of a {quux}", distractors="monet\n{quux}\ncar"))
    assert res.success, res.error_text()
    assert [g["distractors"] for g in res.outputs["2"][1][0].metadata["groups"]] == [["a painting by monet"], ["a photo of a car"]]


@pytest.mark.parametrize("distractors, message", [
    ("{zorblax}\nmonet\n{quux}", "the header '{quux}' with no names under it"),
    ("{zorblax}\nmonet\n{ZORBLAX}\nhokusai", "lists the header '{ZORBLAX}' twice"),
    ("{zorblax}\nmonet", "the concept 'quux' has no distractors while distractor_weight > 0. List its distractors under a line '{quux}'"),
    ("{zorblax}\nmonet\n{quux}\ncar\n{blorp}\nx", "distractors are listed for 'blorp', but no target line erases it"),
])
def test_per_concept_distractor_mistakes_name_the_fix(comfy, distractors, message):
    from surgun_graphs import graph

    res = comfy.run(graph("sd1", steps=2, target="a painting by {zorblax}\na photo of a {quux}", distractors=distractors))
    assert not res.success and message in res.error["exception_message"], res.error
