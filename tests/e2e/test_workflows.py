"""The example workflows in workflows/ as the server offers them: every one listed as a template of
the pack and served with its thumbnail. Loading them in ComfyUI's frontend, their widget values and
running them from the page are tested in a real browser (tests/browser)."""

import json
import urllib.parse
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
SHIPPED = ["SurgUn apply a saved erasure", "SurgUn erase a character", "SurgUn erase an artist style", "SurgUn erase nudity",
           "SurgUn erase several artists"]


def test_every_workflow_is_listed():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == SHIPPED


def test_workflows_are_served_as_templates_with_thumbnails(server):
    listing = server.get("/api/workflow_templates")
    assert sorted(listing["ComfyUI-SurgUn"]) == SHIPPED
    for name in SHIPPED:
        quoted = urllib.parse.quote(name)
        served = server.get(f"/api/workflow_templates/ComfyUI-SurgUn/{quoted}.json")
        served = json.loads(served) if isinstance(served, bytes) else served
        assert served == json.loads((WORKFLOWS / f"{name}.json").read_text())
        thumbnail = server.get(f"/api/workflow_templates/ComfyUI-SurgUn/{quoted}.jpg")
        assert thumbnail[:3] == b"\xff\xd8\xff", f"{name}.jpg is not a JPEG"  # the card's picture
