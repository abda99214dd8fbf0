"""SurgUnTrain and SurgUnApplyErasedWeights in ComfyUI's real executor, one tiny model per family."""

import inspect
import math

import pytest
import torch

from surgun_graphs import FAMILIES, graph
from surgun_pack.surgun_comfy import losses
from surgun_checks import base_weights, effective_weight, expected_cross_attention, predict


def lora_files(comfy):
    return sorted(p.relative_to(comfy.loras_dir).as_posix() for p in comfy.loras_dir.rglob("*.safetensors"))


def fresh(tiny, family, seed=0, width=32):
    with torch.inference_mode():
        return tiny.build_model(family, seed, width)


@pytest.mark.parametrize("family", FAMILIES)
def test_training_changes_only_the_selected_layers_and_never_the_input(comfy, tiny, family):
    res = comfy.run(graph(family, steps=3))
    assert res.success, res.error_text()
    source = res.outputs["1"][0][0]
    erased, weights = res.outputs["2"][0][0], res.outputs["2"][1][0]

    names = [n for n, _ in source.model.diffusion_model.named_modules()]
    expected = expected_cross_attention(names, family)
    assert expected and sorted(weights.modules) == sorted(expected)
    assert sorted(erased.patches) == sorted(f"diffusion_model.{n}.weight" for n in expected)
    assert all(weights.deltas[k].abs().max() > 0 for k in weights.deltas)

    # every other weight of the erased model is the input's, bit for bit
    before = base_weights(source)
    for key, w in before.items():
        module = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and module in expected:
            delta = weights.deltas[f"diffusion_model.{module}.diff"].float()
            assert torch.allclose(effective_weight(erased, module), w.float() + delta, atol=1e-6)
    assert source.patches == {}

    # the input MODEL is bit-identical to a fresh build of the same tiny model
    reference = fresh(tiny, family).model.diffusion_model.state_dict()
    assert before.keys() == reference.keys()
    assert all(torch.equal(before[k], reference[k]) for k in reference)
    # and no training adapter is left on the shared network
    assert all(not getattr(m, "weight_function", []) for m in source.model.diffusion_model.modules())
    assert not any(p.requires_grad for p in source.model.diffusion_model.parameters())


def test_metadata_records_the_run(comfy):
    res = comfy.run(graph("sd1", steps=2, seed=5))
    w = res.outputs["2"][1][0]
    m = w.metadata
    assert m["family"] == "sd1" and m["prediction"] == "eps"
    assert m["target"] == "a painting by zorblax"
    assert m["distractors"] == ["a painting by monet", "a painting by hokusai", "a photo of a red car"]
    assert m["retain"] == ["a photo of a dog", "a city street"]
    assert m["hyperparameters"]["steps"] == 2 and m["hyperparameters"]["seed"] == 5
    assert sorted(m["blocks"]["modules"]) == sorted(w.modules)
    assert m["pack_version"] and math.isfinite(m["guard"]["reference_probe_loss"]) and m["guard"]["multiple"] == 2.0
    assert m["guard"]["cap"] == m["guard"]["reference_probe_loss"] * 2.0


def test_same_inputs_give_identical_weights(comfy):
    a = comfy.run(graph("sd1", steps=3, seed=11, learning_rate=2e-3)).outputs["2"][1][0]
    comfy.executor.caches.outputs.clean_unused() if hasattr(comfy.executor.caches.outputs, "clean_unused") else None
    b = comfy.run(graph("sd1", steps=3, seed=11, learning_rate=2e-3, filename_prefix=" ")).outputs["2"][1][0]
    assert a is not b
    assert all(torch.equal(a.deltas[k], b.deltas[k]) for k in a.deltas)


@pytest.mark.parametrize("family", ["sd1", "sd3", "flux"])
def test_saved_file_through_stock_lora_loader_reproduces_the_node_output(comfy, tiny, family):
    prefix = f"surgun/{family}_repro"
    res = comfy.run(graph(family, steps=3, filename_prefix=prefix))
    assert res.success, res.error_text()
    files = [f for f in lora_files(comfy) if f.startswith(prefix)]
    assert len(files) == 1
    erased, weights = res.outputs["2"][0][0], res.outputs["2"][1][0]
    assert weights.path.endswith(files[0])

    stock = comfy.run({
        "1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": family, "seed": 0}},
        "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": files[0], "strength_model": 1.0}},
        "4": {"class_type": "SurgUnApplyErasedWeights", "inputs": {"model": ["1", 0], "weights_file": files[0], "strength": 1.0}},
        "k": {"class_type": "SurgUnTestKeep", "inputs": {"a": ["3", 0], "b": ["4", 0]}},
    })
    assert stock.success, stock.error_text()
    clip = res.outputs["1"][1][0]
    node_out = predict(erased, clip, "a painting by zorblax")
    stock_out = predict(stock.outputs["3"][0][0], clip, "a painting by zorblax")
    apply_out = predict(stock.outputs["4"][0][0], clip, "a painting by zorblax")
    plain_out = predict(res.outputs["1"][0][0], clip, "a painting by zorblax")
    assert torch.equal(node_out, stock_out)
    assert torch.equal(node_out, apply_out)
    assert not torch.equal(node_out, plain_out)


def test_strength_zero_is_identity_and_half_is_half(comfy):
    prefix = "surgun/strength"
    res = comfy.run(graph("sd1", steps=3, filename_prefix=prefix))
    file = [f for f in lora_files(comfy) if f.startswith(prefix)][0]
    weights = res.outputs["2"][1][0]
    out = comfy.run({
        "1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": "sd1", "seed": 0}},
        "0": {"class_type": "SurgUnApplyErasedWeights", "inputs": {"model": ["1", 0], "weights_file": file, "strength": 0.0}},
        "h": {"class_type": "SurgUnApplyErasedWeights", "inputs": {"model": ["1", 0], "weights_file": file, "strength": 0.5}},
        "s": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": file, "strength_model": 0.5}},
        "k": {"class_type": "SurgUnTestKeep", "inputs": {"a": ["0", 0], "b": ["h", 0], "c": ["s", 0]}},
    })
    assert out.success, out.error_text()
    source, zero, half, stock_half = (out.outputs[k][0][0] for k in ("1", "0", "h", "s"))
    assert zero is source  # strength 0 returns the input model itself
    clip = out.outputs["1"][1][0]
    assert torch.equal(predict(zero, clip, "x"), predict(source, clip, "x"))
    base = base_weights(source)
    for module in weights.modules:
        delta = weights.deltas[f"diffusion_model.{module}.diff"].float()
        assert torch.allclose(effective_weight(half, module), base[f"{module}.weight"].float() + 0.5 * delta, atol=1e-7)
    assert torch.equal(predict(half, clip, "x"), predict(stock_half, clip, "x"))


def test_erased_weights_socket_drives_apply_node(comfy):
    g = graph("sd1", steps=2)
    g["5"] = {"class_type": "SurgUnApplyErasedWeights", "inputs": {
        "model": ["1", 0], "weights_file": "(none: use the erased_weights input)", "strength": 1.0, "erased_weights": ["2", 1]}}
    g["k"] = {"class_type": "SurgUnTestKeep", "inputs": {"a": ["5", 0]}}
    res = comfy.run(g)
    assert res.success, res.error_text()
    assert res.outputs["5"][0][0].patches.keys() == res.outputs["2"][0][0].patches.keys()


def test_progress_and_loss_reach_the_ui(comfy):
    res = comfy.run(graph("sd1", steps=3, sample_steps=2))
    assert res.success
    progress = [d for e, d in res.messages if e == "progress" and d["node"] == "2"]
    # 6 prompts x 2 images sampled in one batch of 12 (2 sampler steps), then 3 training steps, then the
    # readout: a target and a retain prompt in one batch, before and after (2 x 2 sampler steps)
    assert [p["value"] for p in progress][-1] == progress[-1]["max"] == 1 * 2 + 3 + 2 * 2
    texts = [d["text"] for e, d in res.messages if e == "progress_text" and d["node"] == "2"]
    assert any(t.startswith("step 3/3") and "loss=" in t for t in texts)
    ui = [d for e, d in res.messages if e == "executed" and d.get("node") == "2"]
    assert ui and "erased 'a painting by zorblax'" in ui[0]["output"]["text"][0]


def test_cancel_mid_training_leaves_no_file_and_an_intact_model(comfy, tiny):
    import comfy.model_management as mm

    def cancel_at(value, total, node_id):
        if node_id == "2" and 1 * 2 + 2 <= value < total:  # once training has begun (updates are throttled)
            mm.interrupt_current_processing(True)

    comfy.server.progress_listeners.append(cancel_at)
    before = set(lora_files(comfy))
    res = comfy.run(graph("sdxl", steps=50, filename_prefix="surgun/cancelled"))
    assert not res.success and res.error["event"] == "execution_interrupted"
    assert set(lora_files(comfy)) == before
    source = fresh(tiny, "sdxl")
    net = comfy.executor.caches.outputs  # the tiny model node's output is cached; check it is intact
    import asyncio
    model = asyncio.run(net.get("1")).outputs[0][0]
    now = base_weights(model)
    ref = source.model.diffusion_model.state_dict()
    assert all(torch.equal(now[k], ref[k]) for k in ref)
    assert all(not getattr(m, "weight_function", []) for m in model.model.diffusion_model.modules())


def test_nan_in_the_loss_is_caught_with_a_clear_error_and_no_file(comfy, monkeypatch):
    real = losses.denoising_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] > 3 else out  # 2 guard probe draws, one good step

    monkeypatch.setattr(losses, "denoising_loss", poisoned)
    before = set(lora_files(comfy))
    res = comfy.run(graph("sd1", steps=10, seed=77, filename_prefix="surgun/nan"))
    assert not res.success
    assert "non-finite at step 2" in res.error["exception_message"]
    assert "Lower learning_rate" in res.error["exception_message"]
    assert set(lora_files(comfy)) == before


def test_several_target_phrasings_are_all_sampled_and_trained(comfy):
    res = comfy.run(graph("sd1", steps=4, target="a painting by zorblax\nzorblax artwork\n\n", sample_steps=2))
    assert res.success, res.error_text()
    meta = res.outputs["2"][1][0].metadata
    assert meta["targets"] == ["a painting by zorblax", "zorblax artwork"] and meta["target"] == "a painting by zorblax"
    progress = [d for e, d in res.messages if e == "progress" and d["node"] == "2"]
    # 2 targets + 3 distractors + 2 retain prompts: 7 prompts x 2 images in one sampler batch of 14, then 4 steps,
    # then the readout (one batch before and after, 2 sampler steps each)
    assert progress[-1]["max"] == 1 * 2 + 4 + 2 * 2
    assert len(meta["targets"]) == 2 and meta["hyperparameters"]["steps"] == 4


@pytest.mark.parametrize("family", ["sd1", "sd3"])
def test_gradient_checkpointing_gives_the_same_weights(comfy, family):
    on = comfy.run(graph(family, steps=3, seed=9, learning_rate=2e-3, gradient_checkpointing=True))
    off = comfy.run(graph(family, steps=3, seed=9, learning_rate=2e-3, gradient_checkpointing=False))
    assert on.success and off.success, (on.error_text(), off.error_text())
    a, b = on.outputs["2"][1][0], off.outputs["2"][1][0]
    assert a.metadata["gradient_checkpointing"] and not b.metadata["gradient_checkpointing"]
    assert all(torch.allclose(a.deltas[k], b.deltas[k], rtol=1e-4, atol=1e-7) for k in a.deltas)


@pytest.mark.parametrize("family", ["sd1", "sd3", "flux"])
def test_model_targets_reach_the_loop_and_are_recorded(comfy, family):
    """model_targets on: at the first step (nothing trained yet) the retain prompt's own prediction is its target,
    so the retain term is 0; off, it is the ordinary denoising loss. The distractor term is then the gap between the
    target prompt's prediction and each distractor's, far under the sample's noise. The weights file records it."""
    finals = {}
    for on in (True, False):
        res = comfy.run(graph(family, steps=1, ascent_weight=0.0, model_targets=on))
        assert res.success, res.error_text()
        m = res.outputs["2"][1][0].metadata
        assert m["hyperparameters"]["model_targets"] is on
        finals[on] = m["final"]
    assert finals[True]["retain"] == pytest.approx(0.0, abs=1e-6)
    assert finals[False]["retain"] > 1e-3 and 0 < finals[True]["distractor"] < finals[False]["distractor"] / 10


def test_the_concept_levels_profile_moves_the_progress_bar_and_cancel_stops_it(comfy):
    """The profile's forward passes are on the node's bar and its text line, and Cancel during the profile
    stops the job there: no training step, no file."""
    res = comfy.run(graph("sd1", steps=3, sample_steps=2, concept_levels=True))
    assert res.success, res.error_text()
    texts = [d["text"] for e, d in res.messages if e == "progress_text" and d["node"] == "2"]
    first = [t for t in texts if t.startswith("measuring concept levels 1/")]
    assert first, texts
    passes = int(first[0].rsplit("/", 1)[1])
    progress = [d for e, d in res.messages if e == "progress" and d["node"] == "2"]
    # sampling (1 batch x 2 sampler steps), the profile's passes, 3 training steps, the readout (2 x 2)
    assert [p["value"] for p in progress][-1] == progress[-1]["max"] == 2 + passes + 3 + 4

    import comfy.model_management as mm

    ticks = []

    def cancel_in_profile(value, total, node_id):
        if node_id == "2":
            ticks.append(value)
            if total == 2 + passes + 3 + 4 and 2 < value < 2 + passes:  # inside the profile (updates are throttled)
                mm.interrupt_current_processing(True)

    comfy.server.progress_listeners.append(cancel_in_profile)
    before = set(lora_files(comfy))
    res = comfy.run(graph("sd1", steps=3, sample_steps=2, concept_levels=True, filename_prefix="surgun/cancelled"))
    assert not res.success and res.error["event"] == "execution_interrupted"
    assert max(ticks) <= 2 + passes and set(lora_files(comfy)) == before


@pytest.mark.parametrize("family", ["sd1", "flux"])
def test_concept_levels_reach_the_loop_and_the_user_sees_where_the_ascent_went(comfy, family):
    """concept_levels on: the profile is measured through the family's own loss, recorded in the weights file
    (10 levels whose draw probabilities sum to 1) and told on the node; off, neither appears."""
    for on in (True, False):
        res = comfy.run(graph(family, steps=2, concept_levels=on))
        assert res.success, res.error_text()
        m = res.outputs["2"][1][0].metadata
        assert m["hyperparameters"]["concept_levels"] is on
        text = [d for e, d in res.messages if e == "executed" and d.get("node") == "2"][0]["output"]["text"][0]
        if not on:
            assert "concept_levels" not in m and "(concept_levels)" not in text
            continue
        (profile,) = m["concept_levels"].values()
        assert len(profile["probs"]) == len(profile["gaps"]) == 10 and sum(profile["probs"]) == pytest.approx(1.0, abs=1e-3)
        assert all(math.isfinite(v) for v in profile["gaps"])
        assert "of the schedule (concept_levels)" in text


@pytest.mark.parametrize("family", ["sd1", "flux"])
def test_shared_noise_is_the_default_and_reaches_the_sampling_and_every_training_step(comfy, monkeypatch, family):
    """SurgUn Train's default: its training images start from shared noises, and every step's distractor rows take
    the target row's noise and level (the retain row keeps its own); the weights file says so. Off: each image
    and row draws its own."""
    from surgun_pack.surgun_comfy import render

    real_loss, real_sample = losses.denoising_loss, render.sample_prompts
    rows, shared = [], []

    def loss(*a, **k):
        rows.append(inspect.signature(real_loss).bind(*a, **k).arguments.get("noise_rows"))
        return real_loss(*a, **k)

    def sample(*a, shared_noise=False, **k):
        shared.append(shared_noise)
        return real_sample(*a, shared_noise=shared_noise, **k)

    monkeypatch.setattr(losses, "denoising_loss", loss)
    monkeypatch.setattr(render, "sample_prompts", sample)
    for on in (True, False):
        rows.clear(), shared.clear()
        res = comfy.run(graph(family, steps=3, seed=21, **({} if on else {"shared_noise": False})))
        assert res.success, res.error_text()
        assert res.outputs["2"][1][0].metadata["hyperparameters"]["shared_noise"] is on
        assert shared[0] is on  # the training images (the readout renders its own after)
        steps = [r for r in rows if r is not None]
        # one target row, two distractor rows, one retain row per step
        assert steps == ([[0, 0, 0, 3]] * 3 if on else [])


def test_ascent_until_tie_reaches_training_and_without_shared_noise_stops_with_a_clear_error(comfy):
    """The option's value goes into the training and the weights file; asked for without shared noise, the
    graph stops with an error that names both inputs and the fix, and the next job runs."""
    res = comfy.run(graph("sd1", steps=3, seed=21, ascent_until_tie=True))
    assert res.success, res.error_text()
    meta = res.outputs["2"][1][0].metadata
    assert meta["hyperparameters"]["ascent_until_tie"] is True and meta["final"]["ascent_active"] + meta["final"]["ascent_tied"] == 1
    bad = comfy.run(graph("sd1", steps=3, seed=21, ascent_until_tie=True, shared_noise=False))
    assert not bad.success and "ascent_until_tie" in bad.error_text() and "Turn shared_noise on" in bad.error_text()
    assert comfy.run(graph("sd1", steps=3, seed=22)).success


def test_text_subspace_confines_the_prompt_reading_layers_to_the_measured_directions_and_trains_the_rest_freely(comfy):
    """With text_subspace on, the to_k/to_v deltas together act on no more text directions than the run measured (their
    rows lie in that span) while the other chosen layers train as before; off, the same layers' deltas use more. The
    layers trained are still the user's choice (block_pattern)."""
    used = lambda weights, names: int(torch.linalg.matrix_rank(  # noqa: E731
        torch.cat([weights.deltas[f"diffusion_model.{n}.diff"].float() for n in names]), rtol=1e-4))
    on = comfy.run(graph("sd1", steps=4, seed=23, learning_rate=2e-3, text_subspace=True))
    assert on.success, on.error_text()
    w = on.outputs["2"][1][0]
    meta = w.metadata["text_subspace"]
    assert sorted(meta["confined"] + meta["free"]) == sorted(w.modules)
    assert meta["confined"] and all(m.endswith(("attn2.to_k", "attn2.to_v")) for m in meta["confined"])
    assert meta["free"] and all(m.endswith(("attn2.to_q", "attn2.to_out.0")) for m in meta["free"])
    assert all(w.deltas[f"diffusion_model.{m}.diff"].abs().max() > 0 for m in meta["free"])
    assert 1 <= meta["rank"] < meta["dim"] and used(w, meta["confined"]) <= meta["rank"]
    off = comfy.run(graph("sd1", steps=4, seed=23, learning_rate=2e-3))
    assert off.success, off.error_text()
    assert used(off.outputs["2"][1][0], meta["confined"]) > meta["rank"]
    kv = comfy.run(graph("sd1", steps=2, seed=23, learning_rate=2e-3, text_subspace=True, block_pattern="attn2.to_k, attn2.to_v"))
    assert kv.success, kv.error_text()
    assert sorted(kv.outputs["2"][1][0].modules) == sorted(meta["confined"]) and not kv.outputs["2"][1][0].metadata["text_subspace"]["free"]


def test_text_subspace_on_a_model_without_prompt_reading_layers_stops_with_a_clear_error(comfy):
    bad = comfy.run(graph("flux", steps=2, seed=3, text_subspace=True))
    assert not bad.success and "text_subspace" in bad.error_text() and "turn text_subspace off" in bad.error_text()
    assert comfy.run(graph("sd1", steps=2, seed=3)).success


@pytest.mark.parametrize("family", FAMILIES)
def test_adversary_steps_trains_against_a_soft_prompt_that_moved_from_each_target_line(comfy, family):
    """adversary_steps moves a soft prompt per target line (the family's own cross-attention context, its other conds
    kept) and trains the competition under it as well: the file says how far each moved, and the weights differ from
    the same run without it. Off: no soft prompt and no record of one."""
    on = comfy.run(graph(family, steps=3, seed=17, learning_rate=2e-3, adversary_steps=2))
    assert on.success, on.error_text()
    w = on.outputs["2"][1][0]
    adv = w.metadata["adversary"]
    assert adv["steps"] == 2 == w.metadata["hyperparameters"]["adversary_steps"]
    assert sorted(adv["drift"]) == sorted(w.metadata["targets"]) and all(v > 0 for v in adv["drift"].values())
    off = comfy.run(graph(family, steps=3, seed=17, learning_rate=2e-3))
    assert off.success, off.error_text()
    o = off.outputs["2"][1][0]
    assert "adversary" not in o.metadata
    assert any(not torch.equal(w.deltas[k], o.deltas[k]) for k in w.deltas)


def test_the_render_stop_renders_the_training_clone_and_leaves_the_training_as_it_was(comfy, monkeypatch):
    """ascent_until_erased renders the target on the clone as it trains (every 10 steps while the ascent is on);
    renders that still find the target drawn leave the run exactly as with the option off (ComfyUI's noise reseeds
    the global generator, which the training must not read), and the readout tells how many checks ran."""
    from surgun_pack.surgun_comfy import drawn

    renders = []
    real = drawn.DrawnProbe.render

    def still_drawn(self, model_patcher):
        prompts = [d.target_prompt for d in self.lines]
        renders.append(real(self, model_patcher, prompts, self.seeds[0], dict(zip(prompts, self.noise[0]))))
        return {c: 1.0 for c in self.masks}

    monkeypatch.setattr(drawn.DrawnProbe, "__call__", still_drawn)
    off = comfy.run(graph("sd1", steps=20, seed=23))
    on = comfy.run(graph("sd1", steps=20, seed=23, ascent_until_erased=True))
    assert off.success and on.success, (off.error_text(), on.error_text())
    a, b = off.outputs["2"][1][0], on.outputs["2"][1][0]
    assert len(renders) == 2 and all(torch.isfinite(x).all() for r in renders for x in r.values())  # steps 10 and 20
    assert a.deltas.keys() == b.deltas.keys() and all(torch.equal(a.deltas[k], b.deltas[k]) for k in a.deltas)
    assert [s for s, _ in b.metadata["readout"]["drawn"]] == [10, 20] and b.metadata["readout"]["erased_at"] == {"": []}
    said = on.ui["2"]["text"][0]
    assert "the renders drew the target at every check (2; 100% of them at the last), so they never held the ascent off" in said
    bad = comfy.run(graph("sd1", steps=3, seed=21, ascent_until_erased=True, shared_noise=False))
    assert not bad.success and "ascent_until_erased" in bad.error_text() and "Turn shared_noise on" in bad.error_text()
