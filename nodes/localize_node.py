"""SurgUnBlockLocalizer: choose the attention blocks to train by probing each one in pixels."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..surgun_core.localize import SelectConfig, report_image
from ..surgun_core.objective import CompetitionWeights
from .erase import split_lines
from .localize_bridge import LocalizeRequest, run_localizer
from .sockets import BlocksSocket, DistractorsSocket


class SurgUnBlockLocalizer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SurgUnBlockLocalizer",
            display_name="SurgUn Block Localizer",
            category="SurgUn",
            description=(
                "Probes each candidate attention block with a short SurgUn update (starting each time from the untouched "
                "weights), renders target and retain prompts with fixed seeds, decodes to pixels and scores erase (target "
                "images moved away and toward the distractors) and retain (retain images unchanged). Blocks reaching the "
                "erase threshold are ranked by retain; the top ones go out as BLOCKS for SurgUn Train."
            ),
            search_aliases=["localize", "which layers", "block selection"],
            inputs=[
                io.Model.Input("model", tooltip="The model to erase from (never modified: every probe runs on a clone)."),
                io.Clip.Input("clip", tooltip="The text encoder of the same checkpoint."),
                io.Vae.Input("vae", tooltip="Decodes probe renders to pixels, where the scores are measured. Required."),
                io.String.Input("target", default="", placeholder="a painting in the style of Van Gogh",
                                tooltip="Prompt of the concept to erase. Required, unless DISTRACTORS is connected (then empty = its target)."),
                io.String.Input("distractors", multiline=True, default="",
                                tooltip="Competing concepts, one prompt per line; ignored when DISTRACTORS is connected."),
                io.String.Input("retain_prompts", multiline=True, default="", placeholder="a photo of a dog\na city street at night",
                                tooltip="Unrelated prompts whose images must not change; their renders are what retain scores. Required."),
                io.Combo.Input("granularity", options=["attention", "transformer_block"], default="attention",
                               tooltip="Unit probed at a time: one attention module (SD: attn1/attn2 of a transformer block; "
                                       "SD3/Flux: one stream's attention) or a whole transformer block."),
                io.Int.Input("probe_steps", default=10, min=1, max=1000, tooltip="SurgUn steps per probe. More = clearer scores, slower."),
                io.Float.Input("probe_lr", default=1e-4, min=0.0, max=1.0, step=1e-5, round=False,
                               tooltip="Learning rate of the probe updates (larger than training's, since probes are short)."),
                io.Int.Input("keep", default=4, min=1, max=256, tooltip="How many blocks to keep."),
                io.Float.Input("erase_quantile", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="Blocks must reach this quantile of the erase scores to be kept. 0 = every block qualifies."),
                io.Float.Input("erase_threshold", default=-1.0, min=-1.0, max=10.0, step=0.01,
                               tooltip="An absolute erase threshold instead of the quantile. -1 = off (use erase_quantile)."),
                io.Int.Input("images_per_prompt", default=2, min=1, max=16, tooltip="Images rendered per prompt for each probe."),
                io.Int.Input("render_steps", default=10, min=1, max=100, tooltip="Sampler steps of the probe renders."),
                io.Int.Input("render_size", default=256, min=16, max=2048, step=16, tooltip="Side in pixels of the probe renders."),
                io.Float.Input("render_cfg", default=5.0, min=0.0, max=30.0, step=0.1, tooltip="CFG of the probe renders (1.0 for Flux)."),
                io.Int.Input("max_blocks", default=16, min=0, max=1024,
                             tooltip="Cap on candidate blocks (evenly spaced through the network). 0 = probe every block."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=io.ControlAfterGenerate.fixed,
                             tooltip="Seed of renders and probe updates. Kept fixed after each run."),
                io.String.Input("block_filter", default="", advanced=True, optional=True,
                                tooltip="Restrict candidates: names/suffixes separated by commas, or 're:<full regex>'. Empty = all."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="Optional CLIP vision model: scores use its image embeddings. Without it, a pixel-level "
                                            "fallback embedding is used (labelled in the report)."),
                DistractorsSocket.Input("distractor_set", optional=True, tooltip="Distractors from SurgUn Distractor Builder."),
            ],
            outputs=[
                BlocksSocket.Output(display_name="BLOCKS", tooltip="The chosen blocks; connect to SurgUn Train's block_set."),
                io.Image.Output(display_name="report", tooltip="One bar pair per probed block (erase, retain), chosen blocks marked, thresholds drawn."),
                io.String.Output(display_name="table_json", tooltip="The full per-block table as JSON."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, clip, vae, target, distractors, retain_prompts, granularity, probe_steps, probe_lr, keep,
                erase_quantile, erase_threshold, images_per_prompt, render_steps, render_size, render_cfg, max_blocks, seed,
                block_filter="", clip_vision=None, distractor_set=None) -> io.NodeOutput:
        distractor_prompts = split_lines(distractors)
        if distractor_set is not None:
            distractor_prompts = tuple(distractor_set.prompts)
            if not (target or "").strip():
                target = distractor_set.target_prompt
        request = LocalizeRequest(
            target=(target or "").strip(), distractors=distractor_prompts, retain=split_lines(retain_prompts),
            granularity=granularity, block_filter=block_filter or "", max_blocks=max_blocks,
            probe_steps=probe_steps, probe_lr=probe_lr, weights=CompetitionWeights(),
            select=SelectConfig(keep=keep, erase_quantile=erase_quantile, erase_threshold=None if erase_threshold < 0 else erase_threshold),
            images_per_prompt=images_per_prompt, render_steps=render_steps, render_size=render_size,
            render_cfg=render_cfg, seed=seed,
        )
        result, blocks = run_localizer(model, clip, vae, clip_vision, request, node_id=cls.hidden.unique_id)
        summary = f"kept {len(result.chosen)} of {len(result.rows)} blocks ({result.embedding}):\n" + "\n".join(result.chosen)
        return io.NodeOutput(blocks, report_image(result), result.to_json(), ui=ui.PreviewText(summary))
