"""tests/e2e use the session's real ComfyUI server (the ``server`` fixture in tests/conftest.py,
started by scripts/comfy_server.py)."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
