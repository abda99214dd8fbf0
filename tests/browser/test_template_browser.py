"""The pack's workflows in the frontend's template browser, and the download it offers for a missing
checkpoint (from the loader's ``properties.models``)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from comfy_page import load_workflow

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
PACK = "ComfyUI-SurgUn"
SHIPPED = sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def wait_until(page, js: str, arg=None, timeout_ms: int = 60_000) -> None:
    """Wait for a condition in the page; on timeout the assertion after it says what was seen."""
    try:
        page.wait_for_function(js, arg=arg, timeout=timeout_ms, polling=200)
    except Exception:  # playwright's TimeoutError: fall through to the assertion with the values
        pass


def visible_texts(page, selector: str) -> list[str]:
    return page.evaluate("""(sel) => [...document.querySelectorAll(sel)]
        .filter(d => d.getClientRects().length > 0).map(d => d.innerText)""", selector)


def test_template_browser_shows_each_workflow_with_its_title_and_thumbnail(page, server, screenshots):
    served = {}
    page.on("response", lambda r: served.__setitem__(urllib.parse.unquote(r.url.split("/")[-1]), r.status)
            if f"/api/workflow_templates/{PACK}/" in r.url and r.url.endswith(".jpg") else None)
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.get_by_text(PACK, exact=True).click()
    cards = page.locator('[data-testid^="template-workflow-"]')
    cards.first.wait_for()
    wait_until(page, """() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')].every(c =>
        [...c.querySelectorAll('img')].some(i => i.complete && i.naturalWidth === 512))""")
    shown = page.evaluate("""() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')].map(c => ({
        name: c.dataset.testid.slice('template-workflow-'.length), lines: c.innerText.split('\\n'), images: [...c.querySelectorAll('img')].map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth}))}))""")
    assert sorted(c["name"] for c in shown) == SHIPPED
    for card in shown:
        assert card["name"] in card["lines"], card  # the file name is the card's title
    # each card's picture is the pack's own .jpg (512 px), not the frontend's placeholder (224 px)
    assert served == {f"{name}.jpg": 200 for name in SHIPPED}
    for card in shown:
        assert [i["width"] for i in card["images"]] == [512], (card["name"], card["images"])
    page.screenshot(path=str(screenshots / "template_browser.png"))

    page.get_by_text("SurgUn erase a character", exact=True).first.click()
    wait_until(page, "() => app.graph.nodes.some(n => n.type === 'SurgUnTrain') && !document.querySelector('[role=\"dialog\"]')")
    loaded = sorted(page.evaluate("() => app.graph.nodes.map(n => n.type)"))
    expected = sorted(n["type"] for n in json.loads((WORKFLOWS / "SurgUn erase a character.json").read_text())["nodes"])
    assert loaded == expected
    assert visible_texts(page, '[role="dialog"]') == []  # the browser closed, no missing-node dialog


@pytest.mark.parametrize("with_models", [True, False], ids=["with_properties_models", "without"])
def test_a_missing_checkpoint_is_offered_for_download(page, server, screenshots, with_models):
    """With the loader's properties.models the frontend offers the download; without them it cannot."""
    workflow = json.loads((WORKFLOWS / "SurgUn erase a character.json").read_text())
    missing = f"surgun-test-missing-checkpoint-{'with' if with_models else 'without'}-models.safetensors"  # one name per case
    loader = next(n for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple")
    loader["widgets_values"] = [missing]
    loader["properties"]["models"][0]["name"] = missing

    notice_js = """(name) => [...document.querySelectorAll('[role="status"], [role="alert"]')]
        .some(d => d.getClientRects().length > 0 && d.innerText.includes(name))"""

    def offer(wf) -> tuple[list[str], int]:
        load_workflow(page, wf, "missing checkpoint")
        wait_until(page, notice_js, missing)
        notices = [t for t in visible_texts(page, '[role="status"], [role="alert"]') if missing in t]
        if notices:
            page.get_by_text("View details").first.click()
            # the panel that lists the missing models, with a Download button where the workflow gives a url
            wait_until(page, """(name) => [...document.querySelectorAll('*')].some(e => e.children.length === 0
                && e.getClientRects().length > 0 && e.textContent.trim() === name && !e.closest('[role="status"]'))""", missing)
            page.wait_for_timeout(300)
        downloads = page.evaluate("""() => [...document.querySelectorAll('button')]
            .filter(b => b.getClientRects().length > 0 && /^Download$/i.test(b.innerText.trim())).length""")
        return notices, downloads

    if not with_models:
        del loader["properties"]["models"]
    notices, downloads = offer(workflow)
    if not notices:
        page.screenshot(path=str(screenshots / f"missing_checkpoint_{'with' if with_models else 'without'}_models.png"))
    assert notices, "no notice that the checkpoint is missing"
    assert downloads == (1 if with_models else 0)
