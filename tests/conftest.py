"""Shared test settings and fixtures.

One torch thread (two fight over this 2-core machine). The pack is imported as the package
``surgun_pack`` (scripts/pack.py): never through a node id, and never with the repository root
on sys.path. ``comfy`` starts ComfyUI's real executor in this process (once per session) with
this pack and the test-only nodes in tests/fixtures loaded as custom nodes.
"""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_NODES = REPO / "tests" / "fixtures" / "custom_nodes"
sys.path.insert(0, str(REPO / "scripts"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pack  # noqa: E402

pack.load()

try:
    import torch

    torch.set_num_threads(int(os.environ.get("SURGUN_TORCH_THREADS", "1")))
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    import headless

    return headless.start([FIXTURE_NODES], root=str(tmp_path_factory.mktemp("comfy")))


@pytest.fixture(scope="session")
def tiny(comfy):
    """The fixture module that builds tiny models (as loaded by ComfyUI)."""
    return sys.modules[[k for k in sys.modules if k.endswith("surgun_test_nodes.tiny")][0]]


@pytest.fixture(autouse=True)
def _no_leftover_progress_listeners(request):
    yield
    if "comfy" in request.fixturenames:
        request.getfixturevalue("comfy").server.progress_listeners.clear()
