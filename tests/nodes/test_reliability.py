"""One bad job must not break the next: model facts come from the connected patcher, every input is
checked before any work, nothing non-finite is applied, errors stay short, files are reproducible."""

import json
import math

import pytest

from surgun_graphs import graph


def files(comfy):
    return sorted(p.relative_to(comfy.loras_dir).as_posix() for p in comfy.loras_dir.rglob("*") if p.is_file())


def sampled(res, node="2"):
    """Progress events the node sent (each sampler step or training step sends one)."""
    return [d for e, d in res.messages if e == "progress" and d["node"] == node]


def patched_graph(patch: dict, **train):
    g = graph("sd1", **train)
    g["p"] = patch
    g["2"]["inputs"]["model"] = ["p", 0]
    return g


X0 = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["1", 0], "sampling": "x0", "zsnr": False}}
LCM = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["1", 0], "sampling": "lcm", "zsnr": False}}
EDM = {"class_type": "ModelSamplingContinuousEDM", "inputs": {"model": ["1", 0], "sampling": "edm", "sigma_max": 120.0, "sigma_min": 0.002}}


@pytest.mark.parametrize("patch, message", [(X0, "x0-predicting models are not supported"), (EDM, "EDM-parameterised"),
                                            (LCM, "computes its prediction differently")])
def test_patched_sampling_is_refused_before_any_work_and_the_next_job_works(comfy, patch, message):
    before = files(comfy)
    bad = comfy.run(patched_graph(patch, filename_prefix="surgun/patched"))
    assert not bad.success and message in bad.error["exception_message"]
    assert sampled(bad) == []  # refused before sampling or training
    assert files(comfy) == before
    good = comfy.run(graph("sd1", steps=2))  # the same tiny model, unpatched: trains as usual
    assert good.success, good.error_text()


@pytest.mark.parametrize("prefix", ["../../../../tmp/evil", "/tmp/evil", "surgun/../../evil", "..", "a<b", "C:/evil", "bad\x00name"])
def test_filename_prefix_outside_loras_is_refused_before_training(comfy, prefix):
    before = files(comfy)
    res = comfy.run(graph("sd1", steps=50, filename_prefix=prefix))
    msg = res.error["exception_message"]
    assert not res.success and "filename_prefix" in msg and "outside models/loras" in msg and "'surgun/erased'" in msg
    assert sampled(res) == []
    assert files(comfy) == before


def test_sub_folders_inside_loras_are_fine(comfy):
    res = comfy.run(graph("sd1", steps=1, filename_prefix="surgun/deep/er/run"))
    assert res.success, res.error_text()
    assert any(f.startswith("surgun/deep/er/run_") for f in files(comfy))


@pytest.mark.parametrize("inputs, name", [
    (dict(sample_cfg=float("nan")), "sample_cfg"),
    (dict(sample_cfg=float("inf")), "sample_cfg"),
    (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(ascent_cap=float("nan")), "ascent_cap"),
    (dict(max_grad_norm=float("nan")), "max_grad_norm"),
    (dict(retain_weight=float("nan")), "retain_weight"),
])
def test_non_finite_numbers_are_refused_before_any_work(comfy, inputs, name):
    res = comfy.run(graph("sd1", **inputs))
    msg = res.error["exception_message"] + str(res.error.get("node_errors", ""))
    assert not res.success and name in msg
    assert sampled(res) == []


def apply_graph(file, strength=1.0):
    return {
        "1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 0}},
        "2": {"class_type": "SurgUnApplyErasedWeights", "inputs": {"model": ["1", 0], "weights_file": file, "strength": strength}},
        "k": {"class_type": "SurgUnTestKeep", "inputs": {"a": ["2", 0]}},
    }


@pytest.fixture(scope="module")
def good_file(comfy):
    res = comfy.run(graph("sd1", steps=2, filename_prefix="surgun/reliable"))
    assert res.success, res.error_text()
    return res.outputs["2"][1][0]


def test_non_finite_strength_and_weights_are_refused(comfy, good_file):
    from safetensors.torch import save_file

    name = good_file.path.split("/loras/")[1]
    res = comfy.run(apply_graph(name, strength=float("nan")))
    assert not res.success and "strength must be a finite number" in res.error["exception_message"]
    poisoned = {k: v.clone() for k, v in good_file.deltas.items()}
    first = next(iter(poisoned))
    poisoned[first][0, 0] = float("nan")
    save_file(poisoned, str(comfy.loras_dir / "poisoned.safetensors"),
              metadata={"format": "surgun.erased_weights/1", "surgun": json.dumps(good_file.metadata)})
    res = comfy.run(apply_graph("poisoned.safetensors"))
    assert not res.success and "non-finite values (NaN or infinity) in 1 layer" in res.error["exception_message"]
    assert comfy.run(apply_graph(name)).success  # the next job works


def test_a_huge_prompt_is_refused_with_a_short_message_naming_its_input(comfy):
    huge = " ".join(["zorblax"] * 5000)
    res = comfy.run(graph("sd1", retain_prompts=f"a photo of a dog\n{huge}"))
    msg = res.error["exception_message"]
    assert not res.success and "a prompt in retain_prompts is too long" in msg
    assert "(39,999 characters)" in msg and len(msg) < 600
    assert sampled(res) == []


def test_a_two_window_target_trains(comfy):
    target = "a painting by zorblax, " + " ".join(f"detail{i}" for i in range(100))  # about 110 tokens: two CLIP windows
    res = comfy.run(graph("sd1", steps=2, target=target))
    assert res.success, res.error_text()


def test_a_size_off_the_latent_grid_is_said(comfy):
    res = comfy.run(graph("sd1", steps=1, sample_size=20))
    assert res.success, res.error_text()
    weights = res.outputs["2"][1][0]
    assert weights.metadata["sampling"]["size"] == 16
    assert "sample_size 20 is not a multiple of the model's latent grid: images are 16 px" in res.ui["2"]["text"][0]


def test_same_seed_and_inputs_give_byte_identical_files(comfy):
    paths = []
    for prefix in ("surgun/same_a", "surgun/same_b"):  # another prefix, or ComfyUI would answer from its cache
        res = comfy.run(graph("sd1", steps=2, seed=5, filename_prefix=prefix))
        assert res.success, res.error_text()
        paths.append(res.outputs["2"][1][0].path)
    a, b = (open(p, "rb").read() for p in paths)
    assert paths[0] != paths[1] and a == b


def test_loss_stays_finite_in_metadata(comfy):
    res = comfy.run(graph("sd1", steps=2))
    final = res.outputs["2"][1][0].metadata["final"]
    assert all(math.isfinite(v) for v in final.values())
    assert "timing_s" not in res.outputs["2"][1][0].metadata
