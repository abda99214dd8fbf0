"""Families of diffusers pipelines: what a loaded pipeline is, its objective, and where its
attention layers are.

Detection reads the objects diffusers built (the denoiser's class and config, the scheduler's
prediction type), never file names. Family ids ``sd1``, ``sd2`` and ``sdxl`` are the ones the
ComfyUI side writes into weights files, so a file made here loads there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from surgun_core.errors import SurgUnError

_UNET_BLOCK = r"(down_blocks\.\d+\.attentions\.\d+|mid_block\.attentions\.\d+|up_blocks\.\d+\.attentions\.\d+)"
_PROJ = r"(to_q|to_k|to_v|to_out\.0)"

UNET_PRESETS = {
    "cross_attention": rf"{_UNET_BLOCK}\.transformer_blocks\.\d+\.attn2\.{_PROJ}",
    "self_attention": rf"{_UNET_BLOCK}\.transformer_blocks\.\d+\.attn1\.{_PROJ}",
    "all_attention": rf"{_UNET_BLOCK}\.transformer_blocks\.\d+\.attn[12]\.{_PROJ}",
}
UNET_UNITS = {
    "attention": rf"{_UNET_BLOCK}\.transformer_blocks\.\d+\.attn[12]",
    "cross_attention": rf"{_UNET_BLOCK}\.transformer_blocks\.\d+\.attn2",
    "transformer_block": rf"{_UNET_BLOCK}\.transformer_blocks\.\d+",
}
# SANA: every block has linear self-attention (attn1) and softmax cross-attention to the Gemma
# caption (attn2), the analogue of the UNet's attn2.
SANA_PRESETS = {
    "cross_attention": rf"transformer_blocks\.\d+\.attn2\.{_PROJ}",
    "self_attention": rf"transformer_blocks\.\d+\.attn1\.{_PROJ}",
    "all_attention": rf"transformer_blocks\.\d+\.attn[12]\.{_PROJ}",
}
SANA_UNITS = {
    "attention": r"transformer_blocks\.\d+\.attn[12]",
    "cross_attention": r"transformer_blocks\.\d+\.attn2",
    "transformer_block": r"transformer_blocks\.\d+",
}
PRESETS = ("cross_attention", "self_attention", "all_attention")
SUPPORTED = "SD1.x, SD2.x (eps and v), SDXL (StableDiffusion/StableDiffusionXL pipelines) and SANA / SANA-1.5 (SanaPipeline)"


@dataclass(frozen=True)
class Family:
    id: str
    """sd1, sd2, sdxl (ComfyUI's ids) or sana."""
    name: str
    prediction: str
    """eps, v or flow: the objective the model was trained with."""
    denoiser: str
    """The pipeline attribute holding the trained network: ``unet`` or ``transformer``."""
    presets: dict
    units: dict
    in_comfyui: bool
    """Whether ComfyUI 0.33 has this family (then the weights file uses ComfyUI's module names)."""

    def preset(self, name: str) -> str:
        if name not in self.presets:
            raise SurgUnError(f"[SurgUn] unknown block preset {name!r}; choose one of {', '.join(self.presets)}.")
        return self.presets[name]

    def attention_units(self, module_names, granularity: str = "cross_attention") -> list[str]:
        if granularity not in self.units:
            raise SurgUnError(f"[SurgUn] unknown granularity {granularity!r}; choose one of {', '.join(self.units)}.")
        rx = re.compile(self.units[granularity])
        return [n for n in module_names if rx.fullmatch(n)]


def _unet_prediction(scheduler) -> str:
    kind = getattr(scheduler, "config", {}).get("prediction_type", "epsilon")
    if kind == "epsilon":
        return "eps"
    if kind == "v_prediction":
        return "v"
    raise SurgUnError(
        f"[SurgUn] the scheduler's prediction_type is {kind!r}; SurgUn trains eps- and v-prediction UNets "
        f"(prediction_type 'epsilon' or 'v_prediction'). Supported: {SUPPORTED}."
    )


def detect_family(pipe) -> Family:
    """The family of a diffusers pipeline, or a SurgUnError naming what it is."""
    from diffusers import SanaTransformer2DModel, UNet2DConditionModel

    unet = getattr(pipe, "unet", None)
    transformer = getattr(pipe, "transformer", None)
    found = f"{type(pipe).__name__} ({type(unet or transformer).__name__})"
    if isinstance(unet, UNet2DConditionModel):
        prediction = _unet_prediction(pipe.scheduler)
        cfg = unet.config
        if cfg.get("addition_embed_type") == "text_time" and getattr(pipe, "text_encoder_2", None) is not None:
            return Family("sdxl", "SDXL", prediction, "unet", UNET_PRESETS, UNET_UNITS, True)
        if cfg.get("addition_embed_type") is not None:
            raise SurgUnError(f"[SurgUn] this UNet pipeline ({found}) has extra conditioning SurgUn does not know. Supported: {SUPPORTED}.")
        if cfg.get("cross_attention_dim") == 1024:
            return Family("sd2", f"SD2.x ({prediction})", prediction, "unet", UNET_PRESETS, UNET_UNITS, True)
        return Family("sd1", "SD1.x", prediction, "unet", UNET_PRESETS, UNET_UNITS, True)
    if isinstance(transformer, SanaTransformer2DModel):
        if transformer.config.get("guidance_embeds"):
            raise SurgUnError(f"[SurgUn] SANA-Sprint (guidance-distilled, trigflow) is not supported; use a SANA / SANA-1.5 pipeline. Got {found}.")
        cfg = pipe.scheduler.config
        flow = type(pipe.scheduler).__name__.startswith("FlowMatch") or cfg.get("use_flow_sigmas") or cfg.get("prediction_type") == "flow_prediction"
        if not flow:
            raise SurgUnError(
                f"[SurgUn] SANA with a {type(pipe.scheduler).__name__} scheduler that is not flow matching "
                f"(prediction_type {cfg.get('prediction_type')!r}) is not supported; SANA is a flow-matching model. "
                "Load the pipeline with its own scheduler (FlowMatchEulerDiscreteScheduler or DPMSolverMultistepScheduler with use_flow_sigmas)."
            )
        return Family("sana", "SANA", "flow", "transformer", SANA_PRESETS, SANA_UNITS, False)
    raise SurgUnError(f"[SurgUn] this pipeline is not supported: {found}. Supported: {SUPPORTED}.")
