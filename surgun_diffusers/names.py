"""diffusers UNet module names <-> ComfyUI's (the original LDM layout), for SD1.x/SD2.x/SDXL.

ComfyUI names a UNet's modules as the original Stable Diffusion code did
(``input_blocks.1.1.transformer_blocks.0.attn2.to_k``), diffusers by block
(``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k``). The pack's weights file is
keyed by ComfyUI's names so that ComfyUI loads it as is. The rules (those of
``comfy.utils.unet_to_diffusers``, against which the tests check every key):

* down block ``i`` starts at ``input_blocks.n_i`` with ``n_0 = 1`` and ``n_{i+1} = n_i + L_i + 1``
  (``L_i`` res blocks then a downsampler); its res block / attention ``j`` is
  ``input_blocks.{n_i + j}.0`` / ``.1``; its downsampler ``input_blocks.{n_i + L_i}.0.op``;
* the middle block is ``middle_block.0`` (res), ``.1`` (attention), ``.2`` (res);
* up block ``i`` starts at ``output_blocks.m_i`` with ``m_{i+1} = m_i + L'_i + 1`` where ``L'`` are
  the up blocks' res counts (``L`` reversed, plus one); res / attention ``j`` is
  ``output_blocks.{m_i + j}.0`` / ``.1``; its upsampler ``output_blocks.{m_i + L'_i - 1}.{1|2}.conv``;
* inside attentions and transformer blocks the names are the same; res block layers are renamed
  (``norm1 -> in_layers.0``, ``conv1 -> in_layers.2``, ``time_emb_proj -> emb_layers.1``,
  ``norm2 -> out_layers.0``, ``conv2 -> out_layers.3``, ``conv_shortcut -> skip_connection``).
"""

from __future__ import annotations

import re
from typing import Iterable

from surgun_core.errors import SurgUnError

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
BASIC = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
         "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
         "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2",
         "conv_norm_out": "out.0", "conv_out": "out.2"}


class UNetNames:
    """Name mapping for one ``UNet2DConditionModel`` config."""

    def __init__(self, config):
        down = list(config["down_block_types"])
        up = list(config["up_block_types"])
        lpb = config["layers_per_block"]
        self.layers = [int(lpb)] * len(down) if isinstance(lpb, int) else [int(x) for x in lpb]
        self.up_layers = [x + 1 for x in reversed(self.layers)]
        self.down_attn = ["CrossAttn" in t for t in down]
        self.up_attn = ["CrossAttn" in t for t in up]
        self.down_start = [1]
        for L in self.layers[:-1]:
            self.down_start.append(self.down_start[-1] + L + 1)
        self.up_start = [0]
        for L in self.up_layers[:-1]:
            self.up_start.append(self.up_start[-1] + L)

    def to_comfy(self, name: str) -> str:
        """ComfyUI's name of the diffusers module ``name`` (a SurgUnError if it has none)."""
        m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)(\..+)?", name)
        if m:
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4] or ""
            n = self.down_start[i]
            if kind == "attentions":
                return f"input_blocks.{n + j}.1{rest}"
            if kind == "resnets":
                return f"input_blocks.{n + j}.0{self._resnet(rest, name)}"
            if rest.startswith(".conv"):
                return f"input_blocks.{n + self.layers[i]}.0.op{rest[len('.conv'):]}"
        m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)(\..+)?", name)
        if m:
            kind, j, rest = m[1], int(m[2]), m[3] or ""
            if kind == "attentions":
                return f"middle_block.1{rest}"
            return f"middle_block.{0 if j == 0 else 2}{self._resnet(rest, name)}"
        m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)(\..+)?", name)
        if m:
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4] or ""
            n = self.up_start[i]
            if kind == "attentions":
                return f"output_blocks.{n + j}.1{rest}"
            if kind == "resnets":
                return f"output_blocks.{n + j}.0{self._resnet(rest, name)}"
            if rest.startswith(".conv"):
                return f"output_blocks.{n + self.up_layers[i] - 1}.{2 if self.up_attn[i] else 1}.conv{rest[len('.conv'):]}"
        for k, v in BASIC.items():
            if name == k or name.startswith(k + "."):
                return v + name[len(k):]
        raise SurgUnError(
            f"[SurgUn] the diffusers layer {name!r} has no ComfyUI name; the ComfyUI weights file covers the UNet's blocks "
            "(attention, res blocks, samplers, embeddings). Train attention layers, or use the LoRA output only."
        )

    @staticmethod
    def _resnet(rest: str, name: str) -> str:
        if not rest:
            return ""
        head, _, tail = rest[1:].partition(".")
        if head not in RESNET:
            raise SurgUnError(f"[SurgUn] unknown res-block layer in {name!r}.")
        return "." + RESNET[head] + ("." + tail if tail else "")

    def table(self, names: Iterable[str]) -> dict[str, str]:
        """``{diffusers name: ComfyUI name}`` for ``names``; refuses a mapping that is not one-to-one."""
        out = {n: self.to_comfy(n) for n in names}
        if len(set(out.values())) != len(out):
            raise SurgUnError("[SurgUn] two diffusers layers map to the same ComfyUI name; the UNet layout is not SD-like.")
        return out

    def inverse(self, names: Iterable[str]) -> dict[str, str]:
        """``{ComfyUI name: diffusers name}`` over the mappable ones among ``names``."""
        out = {}
        for n in names:
            try:
                out[self.to_comfy(n)] = n
            except SurgUnError:
                continue
        return out
