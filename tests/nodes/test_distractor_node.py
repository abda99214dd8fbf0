"""SurgUnDistractorBuilder in the real executor, and its DISTRACTORS driving SurgUnTrain."""

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
