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
