"""Helpers for node tests: effective weights and predictions of ComfyUI MODEL objects."""

import torch


def base_weights(model_patcher) -> dict[str, torch.Tensor]:
    """The diffusion network's own (unpatched) weights, copied."""
    import comfy.model_management

    comfy.model_management.unload_all_models()  # puts back any weights a loaded clone patched
    return {k: v.detach().clone() for k, v in model_patcher.model.diffusion_model.state_dict().items()}


def effective_weight(model_patcher, module: str) -> torch.Tensor:
    """What ComfyUI will compute for ``diffusion_model.<module>.weight`` when it loads this patcher."""
    import comfy.lora

    key = f"diffusion_model.{module}.weight"
    w = base_weights(model_patcher)[f"{module}.weight"].float()
    patches = model_patcher.patches.get(key)
    return w if not patches else comfy.lora.calculate_weight(patches, w.clone(), key)


def predict(model_patcher, clip, prompt: str, seed: int = 123, size: int = 64) -> torch.Tensor:
    """Denoised prediction of the model (loaded the way samplers load it) on a fixed noisy input."""
    import comfy.model_management

    from surgun_pack.surgun_comfy.prompts import PromptBank
    from surgun_pack.surgun_comfy.render import latent_shape_for

    with torch.inference_mode():
        comfy.model_management.load_models_gpu([model_patcher])
        shape = latent_shape_for(model_patcher, size)
        bank = PromptBank(clip, model_patcher, shape, torch.device("cpu"))
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn((2, *shape), generator=g)
        sigma = torch.tensor([float(model_patcher.model.model_sampling.percent_to_sigma(p)) for p in (0.3, 0.7)])
        xt = model_patcher.model.model_sampling.noise_scaling(sigma, torch.randn(x0.shape, generator=g), x0)
        return model_patcher.model.apply_model(xt, sigma, **bank.batch([prompt, prompt])).clone()


def expected_cross_attention(module_names, family: str) -> list[str]:
    """Cross-attention projections written out independently of the pack's regexes."""
    if family in ("sd1", "sd2v", "sdxl"):
        return [n for n in module_names if ".attn2." in n and n.rsplit("attn2.", 1)[1] in ("to_q", "to_k", "to_v", "to_out.0")]
    if family == "sd3":
        return [n for n in module_names if ".context_block.attn." in n and n.endswith((".qkv", ".proj"))]
    if family == "flux":
        return [n for n in module_names if ".txt_attn." in n and n.endswith((".qkv", ".proj"))]
    raise ValueError(family)
