"""Erase on each tiny family, save both outputs, reload the pipeline from disk and apply them."""

import dataclasses

import pytest
import torch
from safetensors import safe_open

from surgun_core.errors import SurgUnError
from surgun_core.train import TrainConfig
from surgun_diffusers.adapter.model import DeltaModel
from surgun_diffusers.conditioning import Denoiser, PromptEncoder
from surgun_diffusers.erase import EraseRequest, SamplingOptions, erase
from surgun_diffusers.export import apply_weights_file, load_weights_file, save_weights_file
from surgun_diffusers.families import detect_family
from surgun_diffusers.lora import lora_from_deltas, save_lora

SIZE = {"sd1": 64, "sdxl": 16, "sana": 32}  # 8x8, 8x8 and 16x16 latents


def request(family, **kw):
    # the retain plan off: the export checks below (the 0.5-energy LoRA keeps part of the erasure; a reload
    # equals the erased model to 1e-5) were measured on these deltas; with the plan on, sd1's 0.5-energy
    # LoRA misses more than the whole erasure's effect and SANA's reload differs by ~1e-5 (stop 23)
    base = dict(concept="Zorblax", targets=("a painting of a village by {}", "a portrait by {}"),
                distractors=("Monet", "Hokusai", "Klimt"), retain=("a photo of a dog", "a city street"),
                retain_distractors=False, retain_nearest_first=False,
                train=TrainConfig(steps=3, learning_rate=1e-3, seed=3),
                sampling=SamplingOptions(size=SIZE[family], steps=2, per_prompt=1, cfg=3.0))
    base.update(kw)
    return EraseRequest(**base)


def outputs(pipe):
    """The denoiser's output on fixed inputs, for the target and a retain prompt."""
    fam = detect_family(pipe)
    side = SIZE[fam.id] // int(pipe.vae_scale_factor)
    x = torch.randn(2, 4, side, side, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([300.0, 800.0]) if fam.id == "sana" else torch.tensor([300, 800])
    with torch.no_grad():
        return Denoiser(pipe, fam, PromptEncoder(pipe, fam))(x, t, ["a painting of a village by Zorblax", "a photo of a dog"]).float()


@pytest.mark.parametrize("family", ["sd1", "sdxl", "sana"])
def test_erase_save_reload_apply(load, family, tmp_path):
    pipe = load(family)
    fam = detect_family(pipe)
    net = getattr(pipe, fam.denoiser)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    original = outputs(pipe)

    er = erase(pipe, request(family))
    after = net.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)  # the pipeline itself is untouched
    assert sorted(er.deltas) == sorted(er.modules) and all(".attn2." in n for n in er.modules)
    assert all(d.abs().max() > 0 for d in er.deltas.values())
    # paired: each target line's distractors are the same line with the concept swapped
    assert er.plan.groups[1] == ("a portrait by Zorblax", {"Monet": "a portrait by Monet", "Hokusai": "a portrait by Hokusai",
                                                           "Klimt": "a portrait by Klimt"})
    with DeltaModel(net, names=list(er.deltas)) as dm:
        dm.load(er.deltas)
        expected = outputs(pipe)
    effect = (expected - original).abs().mean()
    assert effect > 1e-5

    wfile = save_weights_file(str(tmp_path / "w.safetensors"), pipe, fam, er.deltas, er.metadata, torch.float32)
    with safe_open(wfile, "pt") as f:
        keys = sorted(f.keys())
    if family == "sd1":  # ComfyUI's module names
        assert "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.diff" in keys
        assert all(k.startswith(("diffusion_model.input_blocks.", "diffusion_model.middle_block.", "diffusion_model.output_blocks.")) for k in keys)
    elif family == "sdxl":
        assert "diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_out.0.diff" in keys
    else:
        assert "diffusion_model.transformer_blocks.0.attn2.to_q.diff" in keys
    exact_full = str(tmp_path / "full.lora.safetensors")
    save_lora(pipe, fam, lora_from_deltas(er.deltas, energy=1.0)[0], exact_full)
    sd_low, report = lora_from_deltas(er.deltas, energy=0.5)
    low = str(tmp_path / "low.lora.safetensors")
    save_lora(pipe, fam, sd_low, low)

    # a fresh pipeline from disk + the weights file = the erased model
    p2 = load(family)
    deltas, meta = load_weights_file(wfile, p2)
    assert sorted(deltas) == sorted(er.deltas) and meta["family"] == family
    apply_weights_file(p2, wfile)
    assert torch.allclose(outputs(p2), expected, atol=1e-5)

    # a fresh pipeline + the LoRA through diffusers' own loader
    p3 = load(family)
    p3.load_lora_weights(str(tmp_path), weight_name="full.lora.safetensors")
    assert torch.allclose(outputs(p3), expected, atol=1e-5)
    p4 = load(family)
    p4.load_lora_weights(str(tmp_path), weight_name="low.lora.safetensors")
    low_err = (outputs(p4) - expected).abs().mean()
    assert 0 < low_err < effect  # the rank-reduced LoRA keeps part of the erasure, and misses part of it
    assert report.energy_kept >= 0.5 and max(report.ranks.values()) < min(min(d.shape[:2]) for d in er.deltas.values())


def test_a_file_for_another_family_is_refused(load, tmp_path):
    pipe = load("sdxl")
    er = erase(pipe, request("sdxl", train=TrainConfig(steps=1, learning_rate=1e-3)))
    path = save_weights_file(str(tmp_path / "x.safetensors"), pipe, er.family, er.deltas, er.metadata)
    with pytest.raises(SurgUnError, match=r"made for 'SDXL' \(family id 'sdxl'\) but this pipeline is SD1.x"):
        load_weights_file(path, load("sd1"))


def test_esd_x_runs_through_the_same_loop(load):
    er = erase(load("sdxl"), request("sdxl", method="esd_x"))
    assert er.metadata["method"] == "esd_x" and er.metadata["hyperparameters"]["weights"] == {"ascent": 0.0, "distract": 1.0, "retain": 0.0}
    assert all(d.abs().max() > 0 for d in er.deltas.values())


def test_the_lora_image_check_measures_zero_for_an_exact_lora_and_leaves_the_pipeline_as_it_was(load, tmp_path):
    from surgun_diffusers.check import lora_image_error

    pipe = load("sdxl")
    fam = detect_family(pipe)
    er = erase(pipe, request("sdxl"))
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    names_before = [n for n, _ in pipe.unet.named_modules()]
    for energy, name in ((1.0, "full"), (0.3, "low")):
        save_lora(pipe, fam, lora_from_deltas(er.deltas, energy=energy)[0], str(tmp_path / f"{name}.safetensors"))
    kw = dict(prompts=["a painting of a village by Zorblax", "a photo of a dog"], count=1, steps=2, cfg=3.0, size=16, seed=4)
    full = lora_image_error(pipe, fam, er.deltas, str(tmp_path / "full.safetensors"), **kw)
    low = lora_image_error(pipe, fam, er.deltas, str(tmp_path / "low.safetensors"), **kw)
    assert full["images"] == 2 and full["exact_vs_original"]["mean_abs"] > 0
    assert full["lora_vs_exact"]["mean_abs"] < 1e-5  # full energy: the LoRA is the exact erasure
    assert low["lora_vs_exact"]["mean_abs"] > full["lora_vs_exact"]["mean_abs"]
    assert low["exact_vs_original"] == full["exact_vs_original"]  # the same seeds: the same exact and original images
    assert [n for n, _ in pipe.unet.named_modules()] == names_before  # the PEFT layers are gone again
    assert all(torch.equal(pipe.unet.state_dict()[k], before[k]) for k in before)


def test_distractors_are_retained_by_default_and_nearest_first_on_request(load):
    """The diffusers path trains SurgUn with the node's retain plan: each target line's distractor prompts join its
    retain prompts; on request they are drawn 1/rank by the pipeline's text encoder (the Distractor Builder's embedding)."""
    from surgun_core.retain import nearest_first
    from surgun_diffusers.erase import concept_groups, plan, retain_plan

    default = EraseRequest(concept="Zorblax", retain=())
    assert default.retain_distractors and not default.retain_nearest_first  # as the node: nearest first on request
    pipe = load("sd1")
    req = dataclasses.replace(request("sd1"), retain_distractors=True, retain_nearest_first=True)
    fam = detect_family(pipe)
    enc = PromptEncoder(pipe, fam)
    p = plan(pipe, req, enc)
    samples = {q: torch.zeros(1, 4, 8, 8) for q in p.prompts}
    keep, embed = retain_plan(req, enc)
    data = concept_groups("surgun", p, samples, "cpu", (keep, embed))
    first = data[0]
    assert list(first.retain) == ["a photo of a dog", "a city street", "a painting of a village by Monet",
                                  "a painting of a village by Hokusai", "a painting of a village by Klimt"]
    e = enc.selection_embedder()([first.target_prompt, *first.retain])
    assert first.retain_weights == dict(zip(first.retain, nearest_first(e[0], e[1:])))
    off = concept_groups("surgun", p, samples, "cpu", retain_plan(request("sd1"), enc))
    assert list(off[0].retain) == ["a photo of a dog", "a city street"] and off[0].retain_weights == {}
    er = erase(pipe, req)
    assert er.metadata["retain_plan"] == {"distractors_retained": True, "nearest_first": True}
