"""Real ComfyUI, in process: the executor, this pack loaded as a custom node, tiny models."""

from pathlib import Path

import pytest

FIXTURE_NODES = Path(__file__).resolve().parents[1] / "fixtures" / "custom_nodes"
FAMILIES = ["sd1", "sd2v", "sdxl", "sd3", "flux"]


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
def _clean_loras(request):
    yield
    if "comfy" in request.fixturenames:
        c = request.getfixturevalue("comfy")
        c.server.progress_listeners.clear()


def train_inputs(**over):
    base = {
        "target": "a painting by zorblax", "distractors": "a painting by monet\na painting by hokusai\na photo of a red car",
        "retain_prompts": "a photo of a dog\na city street", "blocks": "cross_attention", "block_pattern": "",
        "steps": 4, "learning_rate": 1e-3, "ascent_weight": 1.0, "distractor_weight": 1.0, "retain_weight": 1.0,
        "ascent_cap": 2.0, "seed": 0, "sample_size": 64, "sample_steps": 2, "samples_per_prompt": 2,
        "sample_cfg": 3.0, "filename_prefix": "",
    }
    base.update(over)
    return base


def graph(family="sd1", model_seed=0, width=32, **train):
    return {
        "1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": family, "seed": model_seed, "width": width}},
        "2": {"class_type": "SurgUnTrain", "inputs": {"model": ["1", 0], "clip": ["1", 1], **train_inputs(**train)}},
    }
