"""Write a tiny, randomly initialised SD1.5-style checkpoint that ComfyUI's stock
CheckpointLoaderSimple detects as SD1.x (UNet with model_channels 320 and context_dim 768,
a full-size CLIP-L text encoder, and an SD VAE with a slim decoder).

It knows nothing: its images are noise. It exists so that the real loader, sampler and
decoder can run end to end with no download. Usage:

    python scripts/make_tiny_checkpoint.py OUT.safetensors [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder, for model_init

from model_init import reinit_  # noqa: E402


def _comfy_on_path() -> None:
    root = os.environ.get("COMFYUI_PATH")
    if not root:
        sys.exit("COMFYUI_PATH is not set; run through scripts/test.sh or scripts/demo.sh")
    sys.path.insert(0, root)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()


def build(out: Path, seed: int = 0) -> Path:
    _comfy_on_path()
    import torch

    import comfy.model_patcher
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.supported_models_base

    cpu = torch.device("cpu")
    unet = dict(
        image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1], channel_mult=[1],
        transformer_depth=[1], transformer_depth_output=[1, 1], transformer_depth_middle=1, context_dim=768,
        use_linear_in_transformer=False, adm_in_channels=None, use_temporal_attention=False,
        use_spatial_transformer=True, legacy=False,
    )
    config = comfy.supported_models.SD15(unet)
    base = config.get_model({})
    reinit_(base.diffusion_model, seed)
    model = comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)

    clip = comfy.sd.CLIP(target=comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel))
    reinit_(clip.cond_stage_model, seed + 1)

    # SD VAE layout; the decoder is slim (ComfyUI reads its width from decoder.conv_in)
    vae = comfy.sd.VAE(sd={"decoder.conv_in.weight": torch.zeros(128, 4, 3, 3), "post_quant_conv.weight": torch.zeros(4, 4, 1, 1),
                           "decoder.up.3.upsample.conv.weight": torch.zeros(128, 128, 3, 3)})  # 8x, like SD
    reinit_(vae.first_stage_model, seed + 2)

    base.half()
    clip.cond_stage_model.half()
    vae.first_stage_model.half()
    out.parent.mkdir(parents=True, exist_ok=True)
    comfy.sd.save_checkpoint(str(out), model, clip, vae, metadata={"surgun": "tiny random SD1.5-style test checkpoint"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t = time.monotonic()
    path = build(args.out, args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - t:.1f}s")


if __name__ == "__main__":
    main()
