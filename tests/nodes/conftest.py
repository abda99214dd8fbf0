"""Real ComfyUI, in process: the executor, this pack loaded as a custom node, tiny models."""

from pathlib import Path

import pytest

FIXTURE_NODES = Path(__file__).resolve().parents[1] / "fixtures" / "custom_nodes"


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    import headless

    return headless.start([FIXTURE_NODES], root=str(tmp_path_factory.mktemp("comfy")))


@pytest.fixture(scope="session")
def tiny(comfy):
    """The fixture module that builds tiny models (as loaded by ComfyUI)."""
    import sys

    return sys.modules[[k for k in sys.modules if k.endswith("surgun_test_nodes.tiny")][0]]


@pytest.fixture(autouse=True)
def _no_leftover_progress_listeners(request):
    yield
    if "comfy" in request.fixturenames:
        c = request.getfixturevalue("comfy")
        c.server.progress_listeners.clear()
