"""The weights file written from diffusers loads in ComfyUI and gives the same erased model.

* every ComfyUI name the file uses is the one ``comfy.utils.unet_to_diffusers`` gives (checked
  over all keys of full-size SD1.5 and SDXL layouts and of the tiny test layouts);
* SD1.5: the tiny pipeline's UNet is written as a ComfyUI diffusion-model file (ComfyUI's names),
  loaded by the stock ``UNETLoader`` (ComfyUI detects it as SD1.5) in ComfyUI's executor, and the
  erasure applied by the pack's ``SurgUnApplyErasedWeights`` and by stock ``LoraLoaderModelOnly``;
* SDXL (whose detector needs the full-size layout): the same weights in a ComfyUI SDXL model built
  from ComfyUI's classes, the erasure applied by the pack's apply node and ComfyUI's LoRA loader.

In each case the ComfyUI UNet's output equals the diffusers UNet's with the trained deltas.
"""

import pytest
import torch
from safetensors.torch import save_file

from surgun_core.train import TrainConfig
from surgun_diffusers.adapter.model import DeltaModel
from surgun_diffusers.erase import EraseRequest, SamplingOptions, erase
from surgun_diffusers.export import save_weights_file
from surgun_diffusers.names import UNetNames

SD15 = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, transformer_layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SDXL = dict(block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))


def comfy_unet_config(c: dict) -> dict:
    """ComfyUI's unet_config for a diffusers UNet2DConditionModel config (SD-style layouts)."""
    n = len(c["block_out_channels"])
    L = c["layers_per_block"]
    tl = c.get("transformer_layers_per_block", 1)
    tl = [tl] * n if isinstance(tl, int) else list(tl)
    attn = ["CrossAttn" in t for t in c["down_block_types"]]
    cfg = {
        "num_res_blocks": [L] * n, "channel_mult": [ch // c["block_out_channels"][0] for ch in c["block_out_channels"]],
        "transformer_depth": [d for i in range(n) for d in [tl[i] if attn[i] else 0] * L],
        "transformer_depth_output": [d for i in range(n) for d in [tl[i] if attn[i] else 0] * (L + 1)],
        "transformer_depth_middle": tl[-1],
    }
    if "cross_attention_dim" in c:
        heads = c.get("attention_head_dim", 8)
        cfg.update(image_size=32, in_channels=c.get("in_channels", 4), out_channels=c.get("out_channels", 4),
                   model_channels=c["block_out_channels"][0], context_dim=c["cross_attention_dim"],
                   num_heads=heads if isinstance(heads, int) else heads[0], num_head_channels=-1,
                   use_linear_in_transformer=bool(c.get("use_linear_projection")), use_temporal_attention=False,
                   use_spatial_transformer=True, legacy=False,
                   adm_in_channels=c.get("projection_class_embeddings_input_dim"))
        if c.get("addition_embed_type") == "text_time":
            cfg["num_classes"] = "sequential"
    return cfg


@pytest.mark.parametrize("layout", ["sd15", "sdxl", "tiny_sd1", "tiny_sdxl"])
def test_names_agree_with_comfyui_for_every_key(comfy, load, layout):
    import comfy.utils as comfy_utils

    cfg = {"sd15": SD15, "sdxl": SDXL}.get(layout) or dict(load(layout[5:]).unet.config)
    table = comfy_utils.unet_to_diffusers(comfy_unet_config(cfg))
    names = UNetNames(cfg)
    assert len(table) > 100
    wrong = {k: (v, names.to_comfy(k.rsplit(".", 1)[0]) + "." + k.rsplit(".", 1)[1]) for k, v in table.items()
             if names.to_comfy(k.rsplit(".", 1)[0]) + "." + k.rsplit(".", 1)[1] != v}
    assert not wrong, list(wrong.items())[:3]


def _erase(pipe):
    req = EraseRequest(concept="Zorblax", targets=("a painting by {}",), distractors=("Monet", "Hokusai"),
                       retain=("a photo of a dog",), train=TrainConfig(steps=3, learning_rate=1e-3, seed=1),
                       sampling=SamplingOptions(size=8 * int(pipe.vae_scale_factor), steps=2, per_prompt=1, cfg=3.0))
    return erase(pipe, req)


def _comfy_state(unet) -> dict:
    names = UNetNames(unet.config)
    return {names.to_comfy(k.rsplit(".", 1)[0]) + "." + k.rsplit(".", 1)[1]: v.detach().clone()
            for k, v in unet.state_dict().items()}


def _inputs(unet, batch=2, side=8, seed=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, side, side, generator=g)
    ctx = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    t = torch.tensor([300.0, 800.0])
    return x, t, ctx


def _diffusers_out(unet, deltas, x, t, ctx, added=None):
    with torch.no_grad(), DeltaModel(unet, names=list(deltas)) as dm:
        dm.load(deltas)
        return unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample.float()


def _comfy_out(patcher, x, t, ctx, y=None):
    import comfy.model_management as mm

    with torch.inference_mode():
        mm.load_models_gpu([patcher], force_full_load=True)
        net = patcher.model.diffusion_model
        return net(x, timesteps=t, context=ctx, y=y).float().clone()


def _apply_node(patcher, weights_file: str):
    import nodes

    out = nodes.NODE_CLASS_MAPPINGS["SurgUnApplyErasedWeights"].execute(model=patcher, weights_file=weights_file, strength=1.0)
    return out.result[0]


def test_sd15_file_loads_in_comfyui_executor_and_gives_the_same_model(comfy, load):
    pipe = load("sd1")
    er = _erase(pipe)
    rel = "surgun_diffusers/sd1_zorblax.safetensors"
    save_weights_file(str(comfy.loras_dir / rel), pipe, er.family, er.deltas, er.metadata, torch.float32)
    # the same UNet weights as a ComfyUI diffusion-model file (ComfyUI's names), for the stock UNETLoader
    unet_file = comfy.models_dir / "diffusion_models" / "surgun_diffusers_tiny_sd1.safetensors"
    save_file(_comfy_state(pipe.unet), str(unet_file))

    res = comfy.run({
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet_file.name, "weight_dtype": "default"}},
        "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": rel, "strength_model": 1.0}},
        "4": {"class_type": "SurgUnApplyErasedWeights", "inputs": {"model": ["1", 0], "weights_file": rel, "strength": 1.0}},
        "k": {"class_type": "SurgUnTestKeep", "inputs": {"a": ["3", 0], "b": ["4", 0], "c": ["1", 0]}},
    })
    assert res.success, res.error_text()
    plain, stock, ours = (res.outputs[k][0][0] for k in ("1", "3", "4"))
    assert type(plain.model.model_config).__name__ == "SD15"
    assert sorted(ours.patches) == sorted(f"diffusion_model.{n}.weight" for n in UNetNames(pipe.unet.config).table(er.deltas).values())

    x, t, ctx = _inputs(pipe.unet)
    with torch.no_grad():
        want_plain = pipe.unet(x, t, encoder_hidden_states=ctx).sample.float()
    want = _diffusers_out(pipe.unet, er.deltas, x, t, ctx)
    assert (want - want_plain).abs().mean() > 1e-5  # the erasure changes the prediction
    assert torch.allclose(_comfy_out(plain, x, t, ctx), want_plain, atol=1e-4)
    assert torch.allclose(_comfy_out(ours, x, t, ctx), want, atol=1e-4)
    assert torch.allclose(_comfy_out(stock, x, t, ctx), want, atol=1e-4)


def test_sdxl_file_applies_in_comfyui_and_gives_the_same_model(comfy, load):
    import comfy.model_patcher as model_patcher
    import comfy.sd as comfy_sd
    import comfy.supported_models as supported_models
    import folder_paths

    pipe = load("sdxl")
    er = _erase(pipe)
    rel = "surgun_diffusers/sdxl_zorblax.safetensors"
    save_weights_file(str(comfy.loras_dir / rel), pipe, er.family, er.deltas, er.metadata)

    unet_config = comfy_unet_config(dict(pipe.unet.config))
    cfg = supported_models.SDXL(unet_config)
    cfg.unet_config.update(num_heads=unet_config["num_heads"], num_head_channels=-1)  # SDXL's class assumes 64-channel heads
    base = cfg.get_model({})
    missing, unexpected = base.diffusion_model.load_state_dict(_comfy_state(pipe.unet), strict=True)
    assert not missing and not unexpected
    cpu = torch.device("cpu")
    plain = model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)
    ours = _apply_node(plain, rel)
    from surgun_core.weights import load_erased_weights

    stock, _ = comfy_sd.load_lora_for_models(plain, None, load_erased_weights(folder_paths.get_full_path("loras", rel)).deltas, 1.0, 0)

    x, t, ctx = _inputs(pipe.unet)
    text_embeds = torch.randn(2, 32, generator=torch.Generator().manual_seed(9))
    ids = torch.tensor([[16.0, 16, 0, 0, 16, 16]]).repeat(2, 1)
    added = {"text_embeds": text_embeds, "time_ids": ids}
    y = torch.cat([text_embeds, pipe.unet.add_time_proj(ids.flatten()).reshape(2, -1)], dim=-1)  # what diffusers feeds add_embedding
    want = _diffusers_out(pipe.unet, er.deltas, x, t, ctx, added)
    with torch.no_grad():
        want_plain = pipe.unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample.float()
    assert (want - want_plain).abs().mean() > 1e-6
    assert torch.allclose(_comfy_out(plain, x, t, ctx, y), want_plain, atol=1e-4)
    assert torch.allclose(_comfy_out(ours, x, t, ctx, y), want, atol=1e-4)
    assert torch.allclose(_comfy_out(stock, x, t, ctx, y), want, atol=1e-4)


def test_a_single_checkpoint_file_loads_with_local_configs_and_erases(comfy, load, tiny_path, tmp_path):
    """An original-layout single file (written here with ComfyUI's VAE key converter) loads through
    diffusers' from_single_file with the configs of a local folder, offline, and the CLI erases from it."""
    import json

    import comfy.diffusers_convert as diffusers_convert
    import tiny_pipelines as tiny

    from surgun_diffusers.cli import main
    from surgun_diffusers.loading import load_pipeline, sniff_single_file

    pipe = load("sd1")
    names = UNetNames(pipe.unet.config)
    single = tiny.save_single_file(pipe, tmp_path / "tiny-sd15.safetensors", names.to_comfy, diffusers_convert.convert_vae_state_dict)
    assert sniff_single_file(str(single)) == "sd1"
    p2 = load_pipeline(str(single), config=str(tiny_path("sd1")), device="cpu")
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(pipe, part).state_dict(), getattr(p2, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    out = tmp_path / "out"
    assert main(["--model", str(single), "--config", str(tiny_path("sd1")), "--concept", "Zorblax", "--distractors", "Monet",
                 "--retain", "a photo of a dog", "--steps", "1", "--lr", "1e-3", "--sample-size", "64", "--sample-steps", "1",
                 "--samples-per-prompt", "1", "--lora-check-images", "0", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads((out / "Zorblax.json").read_text())["family"] == "sd1"
