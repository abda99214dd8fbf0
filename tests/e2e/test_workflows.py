"""The example workflows in workflows/ (UI format), converted through the server's /object_info
and run on the real server. Only sizes and step counts are shrunk for the CPU, and the
distractor pools are cut to their first 16 entries (encoding a 600-entry pool with the
full-size CLIP-L of the test checkpoint takes about 2 minutes on this CPU; pool selection
itself is covered by tests/nodes), and the Block Localizer takes any erase (noise_floor off, threshold -1) (the
tiny checkpoint knows nothing to erase). The graph, its links and every other value are the
workflow's own."""

import json
from pathlib import Path

import pytest

from workflow_format import ui_to_api

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
CPU_SIZES = {
    "steps": 2, "sample_size": 64, "sample_steps": 2, "samples_per_prompt": 1, "images_per_prompt": 1, "size": 64,
    "render_size": 64, "render_steps": 2, "probe_steps": 2, "max_blocks": 3, "keep": 2, "width": 64, "height": 64,
    "k": 3,
}


def shrink(prompt: dict, weights_file: str | None = None) -> dict:
    import sys

    sys.path.insert(0, str(WORKFLOWS.parent))
    from surgun_core.distractors import load_pool

    for node in prompt.values():
        if node["class_type"] == "SurgUnDistractorBuilder":
            node["inputs"]["use_pool"] = False
            node["inputs"]["candidates"] = "\n".join(load_pool(node["inputs"]["kind"]).entries[:16])
        for name in list(node["inputs"]):
            if name in CPU_SIZES and not isinstance(node["inputs"][name], list):
                node["inputs"][name] = CPU_SIZES[name]
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = "tiny_sd15.safetensors"
        if node["class_type"] == "SurgUnTrain":
            node["inputs"]["learning_rate"] = 1e-4
        if node["class_type"] == "SurgUnBlockLocalizer":
            # the tiny checkpoint knows no concept, so no block erases above its noise floor: any erase passes
            node["inputs"].update(noise_floor=False, erase_threshold=-1.0, min_fraction=0.0, learning_rate=1e-4)
        if weights_file and node["class_type"] == "SurgUnApplyErasedWeights":
            node["inputs"]["weights_file"] = weights_file
    return prompt


def test_every_workflow_is_listed():
    names = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    assert names == ["surgun_apply_saved_erasure", "surgun_erase_artist_style", "surgun_erase_character", "surgun_erase_nudity"]


def test_workflows_are_served_as_templates(server):
    listing = server.get("/api/workflow_templates")
    assert any("surgun_erase_artist_style" in str(v) for v in listing.values())


@pytest.mark.parametrize("name", ["surgun_erase_artist_style", "surgun_erase_character", "surgun_erase_nudity", "surgun_apply_saved_erasure"])
def test_workflow_runs_on_the_server(server, name):
    workflow = json.loads((WORKFLOWS / f"{name}.json").read_text())
    info = server.get("/object_info")
    weights_file = None
    if name == "surgun_apply_saved_erasure":
        made = sorted((server.base / "models" / "loras").rglob("*.safetensors"))
        assert made, "run after a workflow that trains"
        weights_file = made[0].relative_to(server.base / "models" / "loras").as_posix()
    prompt = shrink(ui_to_api(workflow, info), weights_file)
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": "workflow-test"})
    assert status == 200, json.dumps(body)[:3000]
    hist = server.wait_history(body["prompt_id"])
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    saved = [o for o in hist["outputs"].values() if "images" in o]
    assert saved


def test_workflows_match_the_current_node_definitions(server):
    """Every node's stored widget values line up with the node's widgets as the server defines them
    (a stale workflow would load with shifted values); rebuild with scripts/build_workflows.py."""
    from workflow_format import _has_control, _ordered_inputs, _spec, is_widget

    info = server.get("/object_info")
    for path in WORKFLOWS.glob("*.json"):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] not in info:
                continue
            spec = info[node["type"]]
            expected = sum(1 + _has_control(_spec(spec, n)) for n in _ordered_inputs(spec) if is_widget(_spec(spec, n)))
            assert len(node["widgets_values"]) == expected, (path.name, node["type"])
