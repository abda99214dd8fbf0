"""Tiny, randomly initialised diffusers pipelines of each family, built offline.

Nothing is downloaded: every component is constructed from diffusers/transformers classes with
small configs and seeded weights, and the tokenizers are written here:

* CLIP (SD1.5, SDXL): a byte-level BPE vocabulary of the 256 byte symbols, each also with the
  end-of-word suffix ``</w>``, plus CLIP's two special tokens; a handful of merges so common
  letters pair up. Every string tokenises (one token per byte at worst).
* Gemma (SANA): transformers' ``GemmaTokenizer`` over a vocabulary built here (the tokenizers
  library's BPE with byte fallback): the special tokens, the 256 byte-fallback tokens and the
  lower-case letters, so any text, the SANA "complex human instruction" included, tokenises.

Families:

* ``sd1``:  UNet with SD1.5's layout rules (320 channels, context 768, 8 heads, conv
  projections) but one level, so ComfyUI's own detector recognises the same weights as SD1.5;
  a 1-layer CLIP of width 768; a slim 4-level AutoencoderKL (downscale 8, as SD's), so the three
  can also be written as one original-layout checkpoint file (:func:`save_single_file`).
* ``sdxl``: SDXL's layout (first level without attention, linear projections, text_time
  conditioning, two text encoders, two res blocks per level, 1 and 2 transformer layers) at
  width 32/64.
* ``sana``: SanaTransformer2DModel (2 layers, SANA-1.5's RMS q/k norm), a 1-layer Gemma2
  encoder, a 2-level DC-AE.
"""

from __future__ import annotations

from pathlib import Path

import torch

FAMILIES = ("sd1", "sdxl", "sana")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (what byte-level BPE works on)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_tokenizer(max_length: int = 77):
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for pair in ("t h", "th e</w>", "a n", "i n", "o n", "e r", "r e", "e s", "a r", "o r"):
        a, b = pair.split()
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    tok.model_max_length = max_length
    return tok


def gemma_tokenizer():
    from transformers import GemmaTokenizer

    vocab: dict[str, int] = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in "▁abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
    tok = GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=True)  # Gemma prepends <bos>, as the real one does
    tok.padding_side = "right"
    return tok


def _clip_text(hidden: int, seed: int, projection: int | None = None, vocab_size: int = 600):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=projection or hidden, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        hidden_act="gelu",
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def _kl_vae(seed: int, channels: tuple = (32, 64)):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=channels, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels), latent_channels=4, norm_num_groups=32, sample_size=32,
    ).eval()


def _ddpm_config(prediction: str) -> dict:
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type=prediction, steps_offset=1, clip_sample=False, set_alpha_to_one=False)


def build_sd1(seed: int = 0, prediction: str = "epsilon"):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(320,), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",), cross_attention_dim=768,
        attention_head_dim=8, norm_num_groups=32, use_linear_projection=False,
    ).eval()
    return StableDiffusionPipeline(
        vae=_kl_vae(seed + 1, (32, 32, 32, 32)), text_encoder=_clip_text(768, seed + 2), tokenizer=clip_tokenizer(), unet=unet,
        scheduler=EulerDiscreteScheduler(**{k: v for k, v in _ddpm_config(prediction).items() if k not in ("clip_sample", "set_alpha_to_one")}),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_sdxl(seed: int = 0):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), cross_attention_dim=64, attention_head_dim=2, norm_num_groups=32,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 32,
    ).eval()
    return StableDiffusionXLPipeline(
        vae=_kl_vae(seed + 1), text_encoder=_clip_text(32, seed + 2), text_encoder_2=_clip_text(32, seed + 3, projection=32),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=unet,
        scheduler=EulerDiscreteScheduler(**{k: v for k, v in _ddpm_config("epsilon").items() if k not in ("clip_sample", "set_alpha_to_one")}),
        force_zeros_for_empty_prompt=True,
    )


def build_sana(seed: int = 0):
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tok = gemma_tokenizer()
    torch.manual_seed(seed)
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=8,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16,
        sample_size=32, qk_norm="rms_norm_across_heads",
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1], downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    ).eval()
    torch.manual_seed(seed + 2)
    text_encoder = Gemma2Model(Gemma2Config(
        head_dim=8, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
        num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=4096, pad_token_id=0, bos_token_id=2,
        eos_token_id=1, attn_implementation="eager",
    )).eval()
    return SanaPipeline(tokenizer=tok, text_encoder=text_encoder, vae=vae, transformer=transformer,
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


BUILDERS = {"sd1": build_sd1, "sdxl": build_sdxl, "sana": build_sana}


def build(family: str, seed: int = 0):
    if family not in BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}; one of {FAMILIES}")
    return BUILDERS[family](seed)


def save(family: str, root: Path, seed: int = 0) -> Path:
    """Write the tiny pipeline of ``family`` as a diffusers folder under ``root``; returns it."""
    out = Path(root) / f"tiny-{family}"
    if not (out / "model_index.json").is_file():
        build(family, seed).save_pretrained(str(out), safe_serialization=True)
    return out


def save_single_file(pipe, path: Path, unet_to_ldm, vae_to_ldm) -> Path:
    """The SD1.x pipeline as one checkpoint in the original (LDM) layout, the way single-file SD1.5
    checkpoints are distributed: ``model.diffusion_model.*`` (``unet_to_ldm(module name)``),
    ``first_stage_model.*`` (``vae_to_ldm(state dict)``) and ``cond_stage_model.transformer.text_model.*``."""
    from safetensors.torch import save_file

    sd = {}
    for k, v in pipe.unet.state_dict().items():
        module, _, param = k.rpartition(".")
        sd[f"model.diffusion_model.{unet_to_ldm(module)}.{param}"] = v
    for k, v in vae_to_ldm(pipe.vae.state_dict()).items():
        sd[f"first_stage_model.{k}"] = v
    for k, v in pipe.text_encoder.state_dict().items():  # transformers >= 5.6 flattened CLIPTextModel's keys
        sd["cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = v
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return Path(path)
