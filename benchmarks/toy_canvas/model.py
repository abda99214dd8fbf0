"""The toy canvas text-to-image model, built only from ComfyUI's own classes.

- UNet: ``comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel`` with
  SpatialTransformer blocks (self-attention ``attn1`` + cross-attention
  ``attn2``) at the two lowest resolutions, wrapped in a
  ``comfy.model_base.BaseModel`` (v-prediction, ``ModelSamplingDiscrete``,
  SD1.x "scaled linear" beta schedule) configured by ``ToyCanvasConfig``
  (a ``comfy.supported_models_base.BASE`` subclass).
- Text encoder: a tiny SD1-style CLIP (``comfy.sd1_clip.SD1ClipModel`` with the
  stock SD1 tokenizer), as a ``comfy.sd.CLIP``.
- VAE: ComfyUI's pixel-space "VAE" (``comfy.sd.VAE(sd={"pixel_space_vae": ...})``):
  the model works directly on 3-channel 32x32 pixels in [-1, 1]
  (``comfy.latent_formats.ChromaRadiance``).

``load_toy_canvas()`` returns ``(ModelPatcher, CLIP, VAE)``. The weights file
is a safetensors file in SD1 checkpoint layout (``model.diffusion_model.*``,
``cond_stage_model.*``) whose metadata holds the configs.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional, Tuple

import torch

from ._comfy import ensure_comfy

log = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WEIGHTS = os.path.join(HERE, "weights", "toy_canvas.safetensors")

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model."

# Tiny SD1-style CLIP text encoder (hidden 64, 2 layers). The vocabulary is the
# stock CLIP BPE one (49408 tokens), so any text tokenises like SD1.5.
CLIP_CONFIG: Dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "projection_dim": 64,
}

# Default UNet: 32 -> 16 -> 8 -> 4, attention (attn1 + attn2) at 8x8 and 4x4 and in
# the middle block only.
UNET_CONFIG: Dict[str, Any] = {
    "image_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "model_channels": 32,
    "num_res_blocks": [1, 1, 1, 1],
    "channel_mult": [1, 2, 4, 4],
    "num_heads": 4,
    "num_head_channels": -1,
    "transformer_depth": [0, 0, 1, 1],
    "transformer_depth_output": [0, 0, 0, 0, 1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "context_dim": CLIP_CONFIG["hidden_size"],
    "use_linear_in_transformer": True,
    "use_scale_shift_norm": True,
    "adm_in_channels": None,
    "use_temporal_attention": False,
    "use_spatial_transformer": True,
    "legacy": False,
}

# SD1.x discrete schedule (1000 steps, scaled-linear betas 0.00085 .. 0.012),
# rescaled to zero terminal SNR (ComfyUI's ``zsnr``; sigma_max ~ 4519). Without
# zsnr the last timestep still leaks ~7% of the image, which at 32x32 is enough
# for the model to read the silhouette from the noise instead of the prompt.
SAMPLING_SETTINGS: Dict[str, Any] = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.012,
                                     "zsnr": True}


def unet_config_for(model_channels: int = 32, channel_mult=(1, 2, 4, 4), num_res_blocks: int = 1,
                    attention_levels: Optional[Tuple[int, ...]] = None, num_heads: int = 4,
                    context_dim: int = CLIP_CONFIG["hidden_size"]) -> Dict[str, Any]:
    """A UNet config with attention at ``attention_levels`` (default: the two
    lowest-resolution levels) and in the middle block."""
    n = len(channel_mult)
    if attention_levels is None:
        attention_levels = (n - 2, n - 1)
    td = [1 if lvl in attention_levels else 0 for lvl in range(n)]
    cfg = dict(UNET_CONFIG)
    cfg.update(
        model_channels=model_channels,
        channel_mult=list(channel_mult),
        num_res_blocks=[num_res_blocks] * n,
        num_heads=num_heads,
        transformer_depth=[d for d in td for _ in range(num_res_blocks)],
        transformer_depth_output=[d for d in td for _ in range(num_res_blocks + 1)],
        context_dim=context_dim,
    )
    return cfg


def _config_class():
    """Build the config class lazily (ComfyUI must be importable first)."""
    ensure_comfy()
    import comfy.latent_formats
    import comfy.model_base
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.utils

    class ToyCanvasConfig(comfy.supported_models_base.BASE):
        """Model config for the toy canvas pixel-space v-prediction UNet."""

        unet_config = dict(UNET_CONFIG)
        unet_extra_config: Dict[str, Any] = {}
        sampling_settings = dict(SAMPLING_SETTINGS)
        latent_format = comfy.latent_formats.ChromaRadiance
        memory_usage_factor = 0.05
        supported_inference_dtypes = [torch.float32, torch.float16, torch.bfloat16]
        text_encoder_key_prefix = [CLIP_PREFIX]

        def __init__(self, unet_config, sampling_settings=None):
            super().__init__(unet_config)
            if sampling_settings is not None:
                self.sampling_settings = dict(sampling_settings)

        def model_type(self, state_dict, prefix=""):
            return comfy.model_base.ModelType.V_PREDICTION

        def inpaint_model(self):
            return False

        def get_model(self, state_dict, prefix="", device=None):
            return comfy.model_base.BaseModel(self, model_type=self.model_type(state_dict, prefix), device=device)

        def clip_target(self, state_dict={}):  # noqa: B006  (the signature of comfy.supported_models_base.BASE)
            return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)

        def process_clip_state_dict(self, state_dict):
            return comfy.utils.state_dict_prefix_replace(state_dict, {CLIP_PREFIX: "clip_l."}, filter_keys=True)

        def process_clip_state_dict_for_saving(self, state_dict):
            return comfy.utils.state_dict_prefix_replace(state_dict, {"clip_l.": CLIP_PREFIX})

    return ToyCanvasConfig


_CONFIG_CLASS = None


def config_class():
    """The ``ToyCanvasConfig`` class (a ``comfy.supported_models_base.BASE`` subclass)."""
    global _CONFIG_CLASS
    if _CONFIG_CLASS is None:
        _CONFIG_CLASS = _config_class()
    return _CONFIG_CLASS


def reinit_torch_layers(module: torch.nn.Module) -> None:
    """comfy.ops layers skip weight init; run torch's own initialisers."""
    for m in module.modules():
        for cls in type(m).__mro__:
            if cls.__module__.startswith("torch.nn") and "reset_parameters" in cls.__dict__:
                cls.reset_parameters(m)
                break


def build_base_model(unet_config: Optional[Dict[str, Any]] = None, device=None,
                     sampling_settings: Optional[Dict[str, Any]] = None):
    """A fresh (randomly initialised) ``comfy.model_base.BaseModel``, fp32."""
    ensure_comfy()
    cfg = config_class()(unet_config or UNET_CONFIG, sampling_settings or SAMPLING_SETTINGS)
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, device=device)
    reinit_torch_layers(model.diffusion_model)
    return model


def build_clip(clip_config: Optional[Dict[str, Any]] = None, state_dict: Optional[Dict[str, torch.Tensor]] = None):
    """A ``comfy.sd.CLIP`` holding the tiny SD1-style text encoder (fp32).

    ``state_dict`` uses the ``clip_l.*`` layout of ``CLIP.get_sd()``; without it
    the encoder is randomly initialised (torch's initialisers).
    """
    ensure_comfy()
    import comfy.model_management
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    device = comfy.model_management.text_encoder_offload_device()
    opts = {"clip_l_model_config": dict(clip_config or CLIP_CONFIG), "dtype": torch.float32,
            "load_device": device, "offload_device": device, "initial_device": device}
    clip = comfy.sd.CLIP(target=target, model_options=opts, disable_dynamic=True)
    if state_dict is None:
        reinit_torch_layers(clip.cond_stage_model)
    else:
        missing, unexpected = clip.load_sd(state_dict, full_model=True)
        missing = [k for k in missing if "logit_scale" not in k and "text_projection" not in k]
        if missing or unexpected:
            raise RuntimeError(f"toy canvas CLIP weights mismatch: missing {missing}, unexpected {unexpected}")
    return clip


def build_vae():
    """ComfyUI's pixel-space VAE: IMAGE in [0, 1] <-> 3-channel latent in [-1, 1]."""
    ensure_comfy()
    import comfy.sd

    return comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})


def wrap_model_patcher(model):
    """Wrap a BaseModel the way ComfyUI's checkpoint loader does."""
    ensure_comfy()
    import comfy.model_management
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def checkpoint_state_dict(model, clip, dtype: Optional[torch.dtype] = torch.float16) -> Dict[str, torch.Tensor]:
    """Weights in SD1 checkpoint layout (optionally cast, default fp16)."""
    out = {}
    for k, v in model.diffusion_model.state_dict().items():
        out[UNET_PREFIX + k] = v
    for k, v in clip.get_sd().items():
        if k.startswith("clip_l."):
            out[CLIP_PREFIX + k[len("clip_l."):]] = v
    if dtype is not None:
        out = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in out.items()}
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


def save_checkpoint(path: str, model, clip, unet_config: Dict[str, Any], clip_config: Dict[str, Any],
                    extra_metadata: Optional[Dict[str, str]] = None, dtype: Optional[torch.dtype] = torch.float16) -> None:
    from safetensors.torch import save_file

    meta = {"toy_canvas.unet_config": json.dumps(unet_config), "toy_canvas.clip_config": json.dumps(clip_config),
            "toy_canvas.sampling_settings": json.dumps(model.model_config.sampling_settings),
            "toy_canvas.model_type": "v_prediction"}
    if extra_metadata:
        meta.update({k: str(v) for k, v in extra_metadata.items()})
    save_file(checkpoint_state_dict(model, clip, dtype=dtype), path, metadata=meta)


def read_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """(state dict, unet_config, clip_config, sampling_settings) from a toy canvas weights file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    sd = load_file(path)
    unet_config = json.loads(meta["toy_canvas.unet_config"]) if "toy_canvas.unet_config" in meta else dict(UNET_CONFIG)
    clip_config = json.loads(meta["toy_canvas.clip_config"]) if "toy_canvas.clip_config" in meta else dict(CLIP_CONFIG)
    sampling = json.loads(meta["toy_canvas.sampling_settings"]) if "toy_canvas.sampling_settings" in meta else dict(SAMPLING_SETTINGS)
    return sd, unet_config, clip_config, sampling


def build_from_state_dict(sd: Dict[str, torch.Tensor], unet_config: Dict[str, Any], clip_config: Dict[str, Any],
                          sampling_settings: Optional[Dict[str, Any]] = None):
    """(ModelPatcher, CLIP, VAE) from an SD1-layout state dict (fp32 in memory)."""
    ensure_comfy()
    cfg = config_class()(unet_config, sampling_settings or SAMPLING_SETTINGS)
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({})
    unet_sd = {k[len(UNET_PREFIX):]: v.float() for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    missing, unexpected = model.diffusion_model.load_state_dict(unet_sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"toy canvas UNet weights mismatch: missing {missing}, unexpected {unexpected}")
    clip_sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items() if k.startswith(CLIP_PREFIX)}
    clip_sd = cfg.process_clip_state_dict(clip_sd)
    clip = build_clip(clip_config, state_dict=clip_sd)
    return wrap_model_patcher(model), clip, build_vae()


def load_toy_canvas(weights_path: str = DEFAULT_WEIGHTS):
    """Load the shipped toy canvas model.

    Returns ``(model_patcher, clip, vae)``: a ``comfy.model_patcher.ModelPatcher``
    around a ``comfy.model_base.BaseModel`` (config ``ToyCanvasConfig``,
    v-prediction), a ``comfy.sd.CLIP`` and a pixel-space ``comfy.sd.VAE``.
    Sample with 3x32x32 latents (``EmptyChromaRadianceLatentImage`` 32x32, or an
    ``EmptyLatentImage`` of 32x32 which ComfyUI's KSampler rescales).
    """
    sd, unet_config, clip_config, sampling = read_checkpoint(weights_path)
    log.info("loading toy canvas model from %s", weights_path)
    return build_from_state_dict(sd, unet_config, clip_config, sampling)


def empty_latent(batch_size: int = 1, size: int = 32) -> torch.Tensor:
    """An empty 3-channel pixel-space latent (B, 3, size, size)."""
    return torch.zeros(batch_size, 3, size, size)
