"""SurgUnBlockLocalizer in the real executor."""

import pytest
import torch

from surgun_checks import base_weights
from surgun_graphs import train_inputs


def localizer(**over):
    inputs = {
        "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "target": "a painting by {zorblax}\nzorblax artwork",
        "distractors": "monet\nhokusai", "retain_prompts": "a photo of a dog", "blocks": "cross_attention",
        "granularity": "attention", "probe_steps": 2, "learning_rate": 1e-3, "train_steps": 4, "keep": 2, "min_fraction": 0.0,
        # the tiny models are random: their images are noise, so plumbing is tested with any erase passing
        "noise_floor": False, "erase_threshold": -1.0, "images_per_prompt": 1, "render_steps": 2, "render_size": 32, "render_cfg": 3.0,
        "max_blocks": 4, "seed": 0,
    }
    inputs.update(over)
    return {"class_type": "SurgUnBlockLocalizer", "inputs": inputs}


def base(family="sd1"):
    return {"1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": family, "seed": 0}}}


def keep_outputs(g):
    g["p"] = {"class_type": "PreviewAny", "inputs": {"source": ["L", 2]}}
    return g


@pytest.mark.parametrize("family", ["sd1", "flux"])
def test_blocks_drive_training_and_the_model_is_untouched(comfy, tiny, family):
    # the tiny Flux has one double block: its cross-attention preset is a single block
    g = {**base(family), "L": localizer(max_blocks=3, blocks="all_attention" if family == "flux" else "cross_attention")}
    g["2"] = {"class_type": "SurgUnTrain", "inputs": {"model": ["1", 0], "clip": ["1", 1], **train_inputs(steps=2), "block_set": ["L", 0]}}
    res = comfy.run(g)
    assert res.success, res.error_text()
    blocks, report, table = res.outputs["L"][0][0], res.outputs["L"][1][0], res.outputs["L"][2][0]
    weights = res.outputs["2"][1][0]
    assert len(blocks.names) == 2
    bar = [d for e, d in res.messages if e == "progress" and d["node"] == "L"]
    assert bar[-1]["value"] == bar[-1]["max"]  # the bar ends full: the skipped retain renders moved its end in
    # every trained layer lies inside a chosen block, and every chosen block is trained
    assert all(any(m.startswith(b + ".") for b in blocks.names) for m in weights.modules)
    assert all(any(m.startswith(b + ".") for m in weights.modules) for b in blocks.names)
    meta = weights.metadata["block_localizer"]
    assert meta["chosen"] == blocks.names and len(meta["table"]) == 3 and meta["embedding"].startswith("pixel fallback")
    assert report.shape == (1, 76 + 3 * 22, 900, 3)
    assert '"chosen"' in table
    source = res.outputs["1"][0][0]
    with torch.inference_mode():
        ref = tiny.build_model(family).model.diffusion_model.state_dict()
    now = base_weights(source)
    assert all(torch.equal(now[k], ref[k]) for k in ref) and source.patches == {}
    assert all(not getattr(m, "weight_function", []) for m in source.model.diffusion_model.modules())


def test_report_has_one_bar_row_per_probed_block(comfy):
    res = comfy.run(keep_outputs({**base(), "L": localizer(max_blocks=0, keep=1, granularity="transformer_block")}))
    assert res.success, res.error_text()
    rows = res.outputs["L"][0][0].table
    source = res.outputs["1"][0][0]
    n_blocks = sum(1 for n, _ in source.model.diffusion_model.named_modules() if n.endswith("transformer_blocks.0"))
    assert len(rows) == n_blocks == 7
    assert res.outputs["L"][1][0].shape[1] == 76 + n_blocks * 22


def test_cancel_mid_probe(comfy, tiny):
    import comfy.model_management as mm

    def cancel(value, total, node_id):  # a third of the way: inside the 40-step update
        if node_id == "L" and total // 3 <= value < total:
            mm.interrupt_current_processing(True)

    comfy.server.progress_listeners.append(cancel)
    res = comfy.run(keep_outputs({**base("sdxl"), "L": localizer(probe_steps=40, seed=3)}))
    assert not res.success and res.error["event"] == "execution_interrupted"
    import asyncio

    model = asyncio.run(comfy.executor.caches.outputs.get("1")).outputs[0][0]
    with torch.inference_mode():
        ref = tiny.build_model("sdxl").model.diffusion_model.state_dict()
    now = base_weights(model)
    assert all(torch.equal(now[k], ref[k]) for k in ref)


@pytest.mark.parametrize("over, message", [
    (dict(block_filter="nothing_like_this"), "there are no candidate blocks"),
    (dict(keep=5, max_blocks=4), "keep=5 but there are 4 candidate blocks"),
    (dict(retain_prompts=""), "retain_prompts is empty"),
])
def test_localizer_errors(comfy, over, message):
    res = comfy.run(keep_outputs({**base(), "L": localizer(**over)}))
    assert not res.success and message in res.error["exception_message"]


def test_missing_vae_is_refused(comfy):
    node = localizer()
    del node["inputs"]["vae"]
    res = comfy.run(keep_outputs({**base(), "L": node}))
    assert not res.success and "vae" in str(res.error["node_errors"])
