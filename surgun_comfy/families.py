"""Model families: what a loaded ComfyUI model is, its objective, and where its attention lives.

Detection uses the objects ComfyUI already built (the model config class, the diffusion network
class and the model-sampling prediction type), never file names or sizes, so fine-tunes,
merges and small test models of a family are recognised like the originals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..surgun_core.errors import SurgUnError


@dataclass(frozen=True)
class Architecture:
    """Naming rules of one network layout (shared by every family built on it)."""

    key: str
    presets: dict[str, str]
    """Preset name -> full regex over module names of the diffusion network."""
    units: dict[str, str] = field(default_factory=dict)
    """Granularity -> full regex of the block units BlockLocalizer probes one at a time."""
    sampler: str = "euler"
    scheduler: str = "normal"
    checkpoint_units: str | None = None
    """Full regex of the blocks run under gradient checkpointing while training (None = none).
    Saves activation memory; required where blocks add into their inputs in place (Flux)."""


UNET = Architecture(
    key="unet",
    presets={
        "cross_attention": r"(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\.transformer_blocks\.\d+\.attn2\.(to_q|to_k|to_v|to_out\.0)",
        "self_attention": r"(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\.transformer_blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)",
        "all_attention": r"(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)",
    },
    units={
        "attention": r"(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\.transformer_blocks\.\d+\.attn[12]",
        "transformer_block": r"(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\.transformer_blocks\.\d+",
    },
    checkpoint_units=r"(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\.transformer_blocks\.\d+",
)

# SD3 (MMDiT): text and image tokens attend jointly; the text stream's projections
# (context_block.attn) are where the prompt enters, the analogue of UNet cross-attention.
MMDIT = Architecture(
    key="mmdit",
    presets={
        "cross_attention": r"joint_blocks\.\d+\.context_block\.attn\.(qkv|proj)",
        "self_attention": r"joint_blocks\.\d+\.x_block\.attn2?\.(qkv|proj)",
        "all_attention": r"joint_blocks\.\d+\.(context_block|x_block)\.attn2?\.(qkv|proj)",
    },
    units={
        "attention": r"joint_blocks\.\d+\.(context_block|x_block)\.attn2?",
        "transformer_block": r"joint_blocks\.\d+",
    },
    scheduler="simple",
    checkpoint_units=r"joint_blocks\.\d+",
)

# Flux: double blocks keep separate text (txt_attn) and image (img_attn) projections; single
# blocks fuse qkv with the MLP input in linear1 (rows 0:3H are qkv).
FLUX = Architecture(
    key="flux",
    presets={
        "cross_attention": r"double_blocks\.\d+\.txt_attn\.(qkv|proj)",
        "self_attention": r"double_blocks\.\d+\.img_attn\.(qkv|proj)",
        "all_attention": r"(double_blocks\.\d+\.(img|txt)_attn\.(qkv|proj)|single_blocks\.\d+\.linear[12])",
    },
    units={
        "attention": r"(double_blocks\.\d+\.(img|txt)_attn|single_blocks\.\d+)",
        "transformer_block": r"(double_blocks|single_blocks)\.\d+",
    },
    scheduler="simple",
    checkpoint_units=r"(double_blocks|single_blocks)\.\d+",
)

PRESETS = ["cross_attention", "self_attention", "all_attention"]
SUPPORTED = "SD1.x, SD2.x (eps and v), SDXL, SD3.x, Flux, and other UNet models with SD-style attention"


@dataclass(frozen=True)
class Defaults:
    """What "auto" (0 or -1 on the nodes) means for a family, and where the numbers come from."""

    learning_rate: float = 1e-5
    steps: int = 200
    cfg: float = 5.0
    source: str = ("lr 1e-5: ESD-x's published setting for cross-attention on SD1.4 (Gandikota et al. 2023); "
                   "200 steps and cfg 5: this pack's choice, not yet measured on full-size checkpoints")


# Flux is guidance-distilled: it samples at cfg 1 (its embedded guidance, 3.5 by default, does the work)
FLUX_DEFAULTS = Defaults(cfg=1.0, source=Defaults.source + "; cfg 1: Flux is guidance-distilled (ComfyUI's Flux examples)")


@dataclass(frozen=True)
class ModelFamily:
    id: str
    """Stable id written into weights files: sd1, sd2, sdxl, sd3, flux, or unet:<ConfigName>."""
    name: str
    prediction: str
    """eps, v or flow: the objective the model was trained with."""
    arch: Architecture
    defaults: Defaults = Defaults()

    def resolve(self, learning_rate: float, steps: int, cfg: float) -> tuple[float, int, float]:
        """The node values with "auto" replaced by this family's defaults: learning_rate 0, steps 0, cfg -1."""
        return (learning_rate if learning_rate != 0 else self.defaults.learning_rate,
                steps if steps != 0 else self.defaults.steps,
                self.auto_cfg(cfg))

    def auto_cfg(self, cfg: float) -> float:
        """A CFG input with -1 ("auto") replaced by this family's default."""
        return cfg if cfg != -1 else self.defaults.cfg

    def preset(self, name: str) -> str:
        if name not in self.arch.presets:
            raise SurgUnError(f"[SurgUn] unknown block preset {name!r}; choose one of {', '.join(self.arch.presets)}.")
        return self.arch.presets[name]

    def attention_units(self, module_names, granularity: str = "attention") -> list[str]:
        rx = re.compile(self.arch.units[granularity])
        return [n for n in module_names if rx.fullmatch(n)]


def _config_chain(model_config) -> list[str]:
    return [c.__name__ for c in type(model_config).__mro__]


def _prediction(model_sampling) -> str:
    import comfy.model_sampling as ms

    if isinstance(model_sampling, getattr(ms, "EDM", ())):
        raise SurgUnError(
            "[SurgUn] EDM-parameterised models (e.g. Playground 2.5, EDM v-prediction fine-tunes) are not supported yet. "
            f"Supported families: {SUPPORTED}."
        )
    x0_types = tuple(getattr(ms, n) for n in ("X0", "IMG_TO_IMG", "IMG_TO_IMG_FLOW") if hasattr(ms, n))
    if x0_types and isinstance(model_sampling, x0_types):
        raise SurgUnError(f"[SurgUn] x0-predicting models are not supported. Supported families: {SUPPORTED}.")
    # the prediction's own denoising formula: a subclass that changes it (e.g. LCM) is another objective
    for base, name in ((ms.V_PREDICTION, "v"), (ms.CONST, "flow"), (ms.EPS, "eps")):
        if isinstance(model_sampling, base):
            if type(model_sampling).calculate_denoised is not base.calculate_denoised:
                raise SurgUnError(
                    f"[SurgUn] this model's sampling ({type(model_sampling).__name__}, e.g. an LCM patch) computes its "
                    f"prediction differently from plain {name}-prediction, so SurgUn cannot train it. Remove the "
                    f"model-sampling patch before SurgUn Train. Supported families: {SUPPORTED}."
                )
            return name
    raise SurgUnError(
        f"[SurgUn] unknown prediction type {type(model_sampling).__name__}. Supported families: {SUPPORTED}."
    )


def detect_family(model_patcher) -> ModelFamily:
    """The family of a ComfyUI MODEL (a ModelPatcher), or a SurgUnError naming what it is.

    Every fact is read through the patcher (``get_model_object``): model-sampling patches such
    as ModelSamplingDiscrete live on the patcher, and the shared model holds whatever the last
    loaded patcher left on it."""
    from comfy.ldm.flux.model import Flux
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    base = model_patcher.model
    net = model_patcher.get_model_object("diffusion_model")
    sampling = model_patcher.get_model_object("model_sampling")  # this patcher's, not what the last job left on the shared model
    chain = _config_chain(base.model_config)
    config_name = chain[0]
    found = f"{config_name} ({type(net).__name__})"

    if type(net) is UNetModel:
        prediction = _prediction(sampling)
        if "SDXL" in chain or "SDXLRefiner" in chain:
            return ModelFamily("sdxl", "SDXL", prediction, UNET)
        if "SD20" in chain:
            return ModelFamily("sd2", f"SD2.x ({prediction})", prediction, UNET)
        if "SD15" in chain:
            return ModelFamily("sd1", "SD1.x", prediction, UNET)
        if not any(".attn2." in n for n, _ in net.named_modules()):
            raise SurgUnError(f"[SurgUn] this UNet model ({found}) has no cross-attention, so a prompt cannot be erased from it.")
        return ModelFamily(f"unet:{config_name}", f"{config_name} (UNet)", prediction, UNET)
    if isinstance(net, MMDiT) and "SD3" in chain:
        return ModelFamily("sd3", "SD3.x", _prediction(sampling), MMDIT)
    if type(net) is Flux and "Flux" in chain:
        return ModelFamily("flux", "Flux", _prediction(sampling), FLUX, FLUX_DEFAULTS)
    raise SurgUnError(
        f"[SurgUn] this model family is not supported yet: {found}. Supported families: {SUPPORTED}."
    )
