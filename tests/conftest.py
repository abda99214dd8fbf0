"""Shared test settings: one torch thread (two fight over this 2-core machine), repo on sys.path."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(int(os.environ.get("SURGUN_TORCH_THREADS", "1")))
except ImportError:  # pragma: no cover
    pass


import pytest  # noqa: E402

# The tiny checkpoint stands in under these names: the e2e graphs' own, and the one the shipped
# workflows load (so the browser layer queues them unchanged).
CHECKPOINTS = ("tiny_sd15.safetensors", "v1-5-pruned-emaonly.safetensors")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real ComfyUI server with the pack for the whole session (tests/e2e and tests/browser)."""
    from comfy_server import start_server

    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        pytest.fail("COMFYUI_PATH is not set; run the tests through scripts/test.sh")
    try:
        srv = start_server(tmp_path_factory.mktemp("server"), comfy_path, CHECKPOINTS)
    except RuntimeError as e:
        pytest.fail(str(e))
    yield srv
    srv.stop()
