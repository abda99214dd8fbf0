"""Tiny offline pipelines of each family (saved once per session), and ComfyUI in process for
the tests that load the same files there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))


def _installed_view() -> Path:
    """``surgun_core`` and ``surgun_diffusers`` importable as top-level packages, as
    ``pip install "comfyui-surgun[diffusers]"`` installs them (pyproject's packages), without the
    repository root on sys.path (the rest of the suite imports the pack as ``surgun_pack``)."""
    import atexit
    import shutil
    import tempfile

    view = Path(tempfile.mkdtemp(prefix="surgun-site-"))
    atexit.register(shutil.rmtree, view, ignore_errors=True)
    for name in ("surgun_core", "surgun_diffusers"):
        (view / name).symlink_to(REPO / name, target_is_directory=True)
    return view


sys.path.insert(0, str(_installed_view()))
# The repository root is itself a package (ComfyUI imports it as a custom node), and pytest imports
# it under its folder's name (with the parent folder on sys.path) when it sets up the tests. A
# checkout whose folder is named "diffusers" would then shadow the diffusers library. For that case
# only: import the real library first and let pytest accept it as the root package's module
# (PY_IGNORE_IMPORTMISMATCH; the pack's __init__ has no setup_module to run).
# Any other folder beside the checkout (another checkout named "diffusers", a "transformers" folder)
# would shadow a library the same way, so the parent folder leaves sys.path in every case.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO.parent]
if REPO.name == "diffusers":
    import os

    shadow = sys.modules.get("diffusers")
    if shadow is not None and Path(getattr(shadow, "__file__", "") or "").resolve() == REPO / "__init__.py":
        del sys.modules["diffusers"]
    os.environ["PY_IGNORE_IMPORTMISMATCH"] = "1"
# pytest puts the parent folder back on sys.path when it collects the root package; the libraries
# are bound now, while only the real ones can be found.
import accelerate  # noqa: F401,E402
import diffusers  # noqa: F401,E402
import peft  # noqa: F401,E402
import transformers  # noqa: F401,E402


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-diffusers")


@pytest.fixture(scope="session")
def tiny_path(tiny_root):
    """``tiny_path(family) -> Path`` of the saved tiny pipeline (built on first use)."""
    import tiny_pipelines as tiny

    def get(family: str) -> Path:
        return tiny.save(family, tiny_root)

    return get


@pytest.fixture
def load(tiny_path):
    """``load(family) -> pipeline``: a fresh pipeline from the saved folder, progress bars off."""
    from surgun_diffusers.loading import load_pipeline

    def get(family: str):
        return load_pipeline(str(tiny_path(family)), device="cpu")

    return get


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    import headless

    # the same custom-node folders as tests/nodes (one ComfyUI per process; whichever fixture starts it)
    return headless.start([REPO / "tests" / "fixtures" / "custom_nodes"], root=str(tmp_path_factory.mktemp("comfy")))
