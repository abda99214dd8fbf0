"""ComfyUI's own frontend in headless Chromium (Playwright), for the browser tests and for
scripts/build_workflows.py.

Playwright never downloads a browser here: it drives the system's Chromium, which
scripts/browser.sh finds or installs (Debian's ``chromium`` package).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1920, "height": 1080}


def chromium_path() -> str:
    """The Chromium binary (scripts/browser.sh installs it when missing). RuntimeError if none."""
    res = subprocess.run(["bash", str(REPO / "scripts" / "browser.sh")], capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout.strip():
        raise RuntimeError("[SurgUn] no Chromium for the browser tests:\n" + res.stderr[-3000:])
    return res.stdout.strip().splitlines()[-1]


def launch(playwright, executable: str | None = None):
    return playwright.chromium.launch(executable_path=executable or chromium_path(), headless=True, args=CHROMIUM_ARGS)


@dataclass
class Console:
    """Everything the page reported: console messages, uncaught errors, failed requests."""

    messages: list[tuple[str, str]] = field(default_factory=list)

    def attach(self, page) -> None:
        page.on("console", lambda m: self.messages.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.messages.append(("pageerror", str(e))))
        page.on("requestfailed", lambda r: self.messages.append(("requestfailed", r.url)))
        page.on("response", lambda r: self.messages.append(("http", f"{r.status} {r.url}")) if r.status >= 400 else None)

    def errors(self) -> list[str]:
        return [f"{kind}: {text}" for kind, text in self.messages if kind in ("error", "pageerror", "requestfailed", "http")]

    def clear(self) -> None:
        self.messages.clear()


def open_app(page, url: str, timeout_ms: int = 120_000) -> None:
    """Open the ComfyUI frontend and wait until its app, graph, canvas and extensions are ready."""
    page.goto(url)
    page.wait_for_function("() => window.app && app.graph && app.canvas && (app.extensions?.length ?? 0) > 0",
                           timeout=timeout_ms)


def load_workflow(page, workflow: dict, name: str) -> None:
    """Load a UI workflow as a file drop or the template browser does (``app.loadGraphData``)."""
    page.evaluate("([wf, name]) => app.loadGraphData(wf, true, true, name)", [workflow, name])
    page.wait_for_timeout(500)


def live_widgets(page) -> dict[str, dict]:
    """``{node id: {"type", "title", "widgets": {name: value}, "serialize_off": [names]}}`` read from the live graph."""
    return page.evaluate("""() => Object.fromEntries(app.graph.nodes.map(n => [String(n.id), {
        type: n.type, title: n.title, collapsed: !!n.flags?.collapsed, properties: n.properties ?? {},
        widgets: Object.fromEntries((n.widgets ?? []).map(w => [w.name, w.value ?? null])),
        serialize_off: (n.widgets ?? []).filter(w => w.options?.serialize === false).map(w => w.name),
    }]))""")


def exported_workflow(page) -> dict:
    """The workflow as the frontend serialises it (what Save / Export writes)."""
    return page.evaluate("() => JSON.parse(JSON.stringify(app.graph.serialize()))")


def frame_graph(page) -> None:
    """Fit the whole graph in view, drawn in full detail (for screenshots)."""
    page.evaluate("""async () => {
        await app.extensionManager?.setting?.set?.('LiteGraph.Canvas.MinFontSizeForLOD', 1);
        await app.extensionManager?.setting?.set?.('Comfy.Minimap.Visible', false);
        app.canvas.deselectAll?.();
        await app.extensionManager?.command?.execute?.('Comfy.Canvas.FitView');
        app.graph.setDirtyCanvas(true, true);
    }""")
    page.wait_for_timeout(700)


def focus_node(page, node_id, scale: float = 1.0, side: int = 900) -> dict:
    """Centre the canvas on a node at ``scale`` and return a square screenshot clip around it."""
    box = page.evaluate("""([id, s]) => {
        const n = app.graph.getNodeById(id);
        const el = app.canvas.canvas, r = el.getBoundingClientRect();
        const [cx, cy] = [n.pos[0] + n.size[0] / 2, n.pos[1] + n.size[1] / 2 - 15];
        app.canvas.ds.scale = s;
        app.canvas.ds.offset = [r.width / (2 * s) - cx, r.height / (2 * s) - cy];
        app.canvas.setDirty(true, true);
        return {x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height};
    }""", [node_id, scale])
    page.wait_for_timeout(500)
    half = min(side, box["w"], box["h"]) / 2
    return {"x": box["x"] - half, "y": box["y"] - half, "width": 2 * half, "height": 2 * half}
