"""SurgUnEraseRetainCompare: before/after images and pixel-grounded erase/retain scores."""

from __future__ import annotations

import json

from comfy_api.latest import io, ui

from ..surgun_comfy.compare import CompareRequest, compare
from ..surgun_comfy.families import detect_family
from .inputs import require_socket, resolve_distractors, split_lines
from .sockets import DistractorsSocket


class SurgUnEraseRetainCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SurgUnEraseRetainCompare",
            display_name="SurgUn Erase/Retain Compare",
            category="SurgUn",
            description=(
                "Renders the target and retain prompts with the original and the erased model (same seeds), shows them "
                "side by side and scores them in pixels: erase (target images moved away, and toward the distractors) "
                "and retain (retain images unchanged: embedding cosine and SSIM)."
            ),
            inputs=[
                io.Model.Input("original", tooltip="The model before erasure."),
                io.Model.Input("erased", tooltip="The model after erasure (SurgUn Train's MODEL, or one with erased weights applied)."),
                io.Clip.Input("clip", tooltip="The text encoder of the checkpoint."),
                io.Vae.Input("vae", tooltip="Decodes the renders to pixels."),
                io.String.Input("target", default="", placeholder="a painting in the style of Van Gogh",
                                tooltip="Prompt of the erased concept. Required, unless DISTRACTORS is connected (then empty = its target)."),
                io.String.Input("retain_prompts", multiline=True, default="",
                                tooltip="Unrelated prompts that should look the same before and after, one per line. Empty = no retain score."),
                io.String.Input("distractors", multiline=True, default="",
                                tooltip="Distractor prompts, one per line, for the 'toward' part of the erase score. Empty = away only."),
                io.Int.Input("images_per_prompt", default=4, min=1, max=16, tooltip="Images per prompt (same seeds before and after)."),
                io.Int.Input("steps", default=20, min=1, max=200, tooltip="Sampler steps."),
                io.Int.Input("size", default=512, min=16, max=4096, step=16, tooltip="Side of the renders in pixels."),
                io.Float.Input("cfg", default=-1.0, min=-1.0, max=30.0, step=0.1,
                               tooltip="CFG scale of the renders. -1 = the family's default (1.0 for Flux, 5.0 for the others)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=io.ControlAfterGenerate.fixed,
                             tooltip="Seed of the renders (the same for before and after). Kept fixed after each run."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="Optional: score with CLIP-vision image embeddings instead of the pixel fallback."),
                DistractorsSocket.Input("distractor_set", optional=True, tooltip="Distractors from SurgUn Distractor Builder (replace the text field)."),
            ],
            outputs=[
                io.Image.Output(display_name="grid", tooltip="Rows: target before, target after, then each retain prompt before/after."),
                io.String.Output(display_name="scores_json", tooltip="Erase and retain scores (overall and per retain prompt) as JSON."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls,
        original: io.Model.Type,
        erased: io.Model.Type,
        clip: io.Clip.Type,
        vae: io.Vae.Type,
        target: str,
        retain_prompts: str,
        distractors: str,
        images_per_prompt: int,
        steps: int,
        size: int,
        cfg: float,
        seed: int,
        clip_vision: io.ClipVision.Type | None = None,
        distractor_set: DistractorsSocket.Type | None = None,
    ) -> io.NodeOutput:
        for name, value, kind in (("original", original, "MODEL"), ("erased", erased, "MODEL"), ("clip", clip, "CLIP"), ("vae", vae, "VAE")):
            require_socket(name, value, kind)
        require_socket("clip_vision", clip_vision, "CLIP_VISION", optional=True)
        require_socket("distractor_set", distractor_set, "DISTRACTORS", optional=True)
        cfg = detect_family(original).auto_cfg(cfg)
        chosen = resolve_distractors(target, distractors, distractor_set, single="SurgUn Erase/Retain Compare")
        request = CompareRequest(target=chosen.target, retain=split_lines(retain_prompts), distractors=chosen.names,
                                 concept=chosen.concept, distractor_prompts=chosen.prompts,
                                 images_per_prompt=images_per_prompt, steps=steps, size=size, cfg=cfg, seed=seed)
        image, scores = compare(original, erased, clip, vae, clip_vision, request, node_id=cls.hidden.unique_id)
        text = json.dumps(scores, indent=1)
        summary = f"erase {scores['erase']:.4f}" + (f", retain {scores['retain']:.4f}" if "retain" in scores else "") + f" ({scores['embedding']})"
        return io.NodeOutput(image, text, ui=ui.PreviewText(summary))
