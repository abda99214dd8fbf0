"""The browser layer: ComfyUI's own frontend, served by the session's real ComfyUI server with the
pack installed (tests/conftest.py), driven in headless Chromium by Playwright.

Chromium comes from the system (scripts/browser.sh installs Debian's package when it is missing;
SURGUN_CHROMIUM points at another binary); Playwright never downloads a browser. Screenshots go to
``$SURGUN_SCREENSHOTS`` when set (``docs/screenshots`` for the README), else to a temporary folder.
"""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture(scope="session")
def chromium():
    from comfy_page import chromium_path

    try:
        return chromium_path()
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def browser(chromium):
    # module scope: Playwright's sync API keeps an asyncio loop running in this thread while it is open,
    # and later layers (tests/e2e, tests/nodes) start their own loops with asyncio.run
    from playwright.sync_api import sync_playwright

    from comfy_page import launch

    with sync_playwright() as p:
        b = launch(p, chromium)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page with the app open; ``page.console`` holds what the page reported."""
    from comfy_page import VIEWPORT, Console, open_app

    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    pg.console = Console()
    pg.console.attach(pg)
    open_app(pg, server.url)
    yield pg
    context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory):
    out = os.environ.get("SURGUN_SCREENSHOTS")
    path = Path(out) if out else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
