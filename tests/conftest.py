"""Shared test settings and fixtures.

One torch thread (two fight over this 2-core machine). The pack is imported as the package
``surgun_pack`` (scripts/pack.py): never through a node id, and never with the repository root
on sys.path.

* ``comfy``: ComfyUI's real executor in this process (once per session) with this pack and the
  test-only nodes in tests/fixtures/custom_nodes loaded as custom nodes;
* ``server``: one real ComfyUI server with the pack for the whole session (tests/e2e and
  tests/browser), started by scripts/comfy_server.py.
"""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_NODES = REPO / "tests" / "fixtures" / "custom_nodes"
# Test-only nodes the battery needs beside the pack (MODEL weight hashes, image hashes); not part of the pack.
E2E_NODES = REPO / "tests" / "fixtures" / "e2e_nodes"
# The tiny checkpoint stands in under these names: the e2e graphs' own, and the one the shipped
# workflows load (so the browser layer queues them unchanged).
CHECKPOINTS = ("tiny_sd15.safetensors", "v1-5-pruned-emaonly.safetensors")

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


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    from comfy_server import start_server

    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        pytest.fail("COMFYUI_PATH is not set; run the tests through scripts/test.sh")
    try:
        srv = start_server(tmp_path_factory.mktemp("server"), comfy_path, CHECKPOINTS,
                           extra_node_packs=tuple(p for p in E2E_NODES.iterdir() if (p / "__init__.py").is_file()))
    except RuntimeError as e:
        pytest.fail(str(e))
    yield srv
    srv.stop()
