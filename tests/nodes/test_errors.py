"""Bad input gets a clear error that names the input and the fix; no file is written; the model is untouched."""

import pytest
import torch

from surgun_graphs import graph
from surgun_checks import base_weights


def files(comfy):
    return sorted(p.name for p in comfy.loras_dir.rglob("*") if p.is_file())


def intact(res, tiny, family="sd1"):
    model = res.outputs["1"][0][0]
    with torch.inference_mode():
        ref = tiny.build_model(family).model.diffusion_model.state_dict()
    now = base_weights(model)
    return all(torch.equal(now[k], ref[k]) for k in ref) and model.patches == {}


@pytest.mark.parametrize(
    "inputs, message",
    [
        (dict(target="  "), "target is empty"),
        (dict(distractors="a painting by monet\nA painting by Zorblax"), "also listed among the distractors"),
        (dict(retain_prompts="a photo of a dog\na painting by zorblax"), "also listed among the retain_prompts"),
        (dict(distractors=""), "distractors is empty (0 distractors received)"),
        (dict(retain_prompts=""), "retain_prompts is empty while retain_weight > 0"),
        (dict(block_pattern="attn9"), "matches no layer"),
        (dict(block_pattern="re:attn2[("), "not a valid regular expression"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
        (dict(ascent_weight=0.0, distractor_weight=0.0), "nothing would be erased"),
    ],
)
def test_bad_train_input(comfy, tiny, inputs, message):
    before = files(comfy)
    res = comfy.run(graph("sd1", filename_prefix="surgun/bad", **inputs))
    assert not res.success
    assert message in res.error["exception_message"]
    assert files(comfy) == before
    assert intact(res, tiny)


def test_pattern_error_lists_block_names_that_exist(comfy):
    res = comfy.run(graph("sd1", block_pattern="attn9"))
    msg = res.error["exception_message"]
    assert "input_blocks.1.1.transformer_blocks.0.attn1" in msg and "re:<full regex>" in msg


def test_steps_below_zero_is_refused_before_running(comfy):
    res = comfy.run(graph("sd1", steps=-1))  # 0 means the family's default
    assert not res.success and res.error["exception_type"] == "validation"
    assert "steps" in res.error["exception_message"] or "steps" in str(res.error["node_errors"])


@pytest.mark.parametrize("family, message", [("auraflow", "not supported yet: AuraFlow (MMDiT)"), ("sdxl_edm", "EDM-parameterised")])
def test_unsupported_family_is_named(comfy, family, message):
    before = files(comfy)
    res = comfy.run(graph(family, filename_prefix="surgun/unsupported"))
    assert not res.success
    assert message in res.error["exception_message"]
    assert "Supported families: SD1.x, SD2.x" in res.error["exception_message"]
    assert files(comfy) == before


def apply_graph(file, family="sd1", width=32):
    return {
        "1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": family, "seed": 0, "width": width}},
        "2": {"class_type": "SurgUnApplyErasedWeights", "inputs": {"model": ["1", 0], "weights_file": file, "strength": 1.0}},
        "k": {"class_type": "SurgUnTestKeep", "inputs": {"a": ["2", 0]}},
    }


@pytest.fixture(scope="module")
def sd1_file(comfy):
    res = comfy.run(graph("sd1", steps=2, filename_prefix="surgun/compat"))
    assert res.success, res.error_text()
    return res.outputs["2"][1][0].path.split("/loras/")[1]


def test_file_for_another_family_is_refused(comfy, sd1_file):
    res = comfy.run(apply_graph(sd1_file, family="sdxl"))
    msg = res.error["exception_message"]
    assert "made for 'SD1.x'" in msg and "the connected model is SDXL" in msg


def test_file_for_another_shape_is_refused(comfy, sd1_file):
    res = comfy.run(apply_graph(sd1_file, width=64))
    msg = res.error["exception_message"]
    assert "shape mismatch" in msg and "hold (32, 64)" in msg and "expects (64, 64)" in msg and "/" not in msg


def test_foreign_and_unreadable_files_are_refused(comfy):
    from safetensors.torch import save_file

    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, str(comfy.loras_dir / "someone_elses_lora.safetensors"))
    (comfy.loras_dir / "broken.safetensors").write_bytes(b"not a safetensors file at all")
    res = comfy.run(apply_graph("someone_elses_lora.safetensors"))
    assert "not a SurgUn erased-weights file" in res.error["exception_message"]
    assert "LoraLoaderModelOnly" in res.error["exception_message"]
    res = comfy.run(apply_graph("broken.safetensors"))
    assert "could not read 'broken.safetensors'" in res.error["exception_message"]


def test_apply_without_any_weights_says_what_to_connect(comfy):
    res = comfy.run(apply_graph("(none: use the erased_weights input)"))
    assert "pick a SurgUn file in weights_file, or connect" in res.error["exception_message"]
