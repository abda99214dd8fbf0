"""SurgUnBlockLocalizer: choose the attention blocks to train by probing each one in pixels."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..surgun_comfy.families import PRESETS, detect_family
from ..surgun_comfy.localize import LocalizeRequest
from ..surgun_comfy.probe import run_localizer
from ..surgun_core.localize import SelectConfig, reach_note, report_image
from ..surgun_core.objective import CompetitionWeights
from .inputs import require_socket, resolve_distractors, split_lines
from .sockets import BlocksSocket, DistractorsSocket


class SurgUnBlockLocalizer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SurgUnBlockLocalizer",
            display_name="SurgUn Block Localizer",
            category="SurgUn",
            description=(
                "Finds the attention blocks whose training erases the target while keeping the rest. One short SurgUn "
                "update on every candidate block stands in for the training; then each block's part of it alone is "
                "applied, and the target's images at unseen seeds (and held-out target lines) are scored for moving "
                "toward the distractors and away from the target, against a noise floor measured by re-rendering the "
                "untouched model. Blocks above the floor and near the best are ranked by retain; the top ones go out "
                "as BLOCKS for SurgUn Train."
            ),
            search_aliases=["localize", "which layers", "block selection"],
            inputs=[
                io.Model.Input("model", tooltip="The model to erase from (never modified: the update runs on a clone)."),
                io.Clip.Input("clip", tooltip="The text encoder of the same checkpoint."),
                io.Vae.Input("vae", tooltip="Decodes probe renders to pixels, where the scores are measured. Required."),
                io.String.Input("target", multiline=True, default="", placeholder="a harbour at dawn in the style of {Van Gogh}",
                                tooltip="Target lines, concept in braces, as in SurgUn Train. With two or more lines, every other "
                                        "line is held out of the update and used for the held-out check. Required, unless "
                                        "DISTRACTORS is connected (then empty = its target)."),
                io.String.Input("distractors", multiline=True, default="", placeholder="Claude Monet\nHokusai",
                                tooltip="Competing concepts, one name per line, as in SurgUn Train; ignored when DISTRACTORS is connected."),
                io.String.Input("retain_prompts", multiline=True, default="", placeholder="a photo of a dog\na city street at night",
                                tooltip="Prompts whose images must not change; their renders are what retain scores. Required."),
                io.Combo.Input("blocks", options=PRESETS, default="cross_attention",
                               tooltip="Candidates are the blocks holding this preset's layers: use the preset SurgUn Train would train."),
                io.Combo.Input("granularity", options=["attention", "transformer_block"], default="attention",
                               tooltip="Unit probed at a time: one attention module (SD: attn1/attn2 of a transformer block; "
                                       "SD3/Flux: one stream's attention) or a whole transformer block."),
                io.Int.Input("probe_steps", default=20, min=1, max=1000,
                             tooltip="Steps of the short update that stands in for the training. More = clearer scores, slower."),
                io.Float.Input("learning_rate", default=0.0, min=0.0, max=1.0, step=1e-6, round=False,
                               tooltip="The learning rate SurgUn Train will use (the probe's update runs at it). 0 = the family's default."),
                io.Int.Input("train_steps", default=0, min=0, max=100000,
                             tooltip="The steps SurgUn Train will run: each block's part of the update is applied at "
                                     "train_steps / probe_steps, the strength the training would reach. 0 = the family's default."),
                io.Int.Input("keep", default=4, min=1, max=256, tooltip="How many blocks to keep."),
                io.Float.Input("min_fraction", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="A block must reach this fraction of the best block's erase to be kept. 0 = any block "
                                       "above the noise floor."),
                io.Boolean.Input("noise_floor", default=True,
                                 tooltip="Blocks must erase more than the untouched model varies when re-rendered with other "
                                         "seeds. Off = use erase_threshold instead."),
                io.Float.Input("erase_threshold", default=0.0, min=-1.0, max=10.0, step=0.01,
                               tooltip="The erase a block must reach when noise_floor is off (it may be negative). Ignored "
                                       "while noise_floor is on."),
                io.Int.Input("images_per_prompt", default=2, min=1, max=16, tooltip="Images rendered per prompt and block."),
                io.Int.Input("render_steps", default=10, min=1, max=100, tooltip="Sampler steps of the probe renders."),
                io.Int.Input("render_size", default=256, min=16, max=2048, step=16, tooltip="Side in pixels of the probe renders."),
                io.Float.Input("render_cfg", default=-1.0, min=-1.0, max=30.0, step=0.1,
                               tooltip="CFG of the probe renders. -1 = the family's default (1.0 for Flux, 5.0 for the others)."),
                io.Int.Input("max_blocks", default=0, min=0, max=1024,
                             tooltip="Cap on candidate blocks (evenly spaced through the network). 0 = probe every candidate."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=io.ControlAfterGenerate.fixed,
                             tooltip="Seed of the training samples and the update; renders use seeds the update never saw. "
                                     "Kept fixed after each run."),
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
    def execute(
        cls,
        model: io.Model.Type,
        clip: io.Clip.Type,
        vae: io.Vae.Type,
        target: str,
        distractors: str,
        retain_prompts: str,
        blocks: str,
        granularity: str,
        probe_steps: int,
        learning_rate: float,
        train_steps: int,
        keep: int,
        min_fraction: float,
        noise_floor: bool,
        erase_threshold: float,
        images_per_prompt: int,
        render_steps: int,
        render_size: int,
        render_cfg: float,
        max_blocks: int,
        seed: int,
        block_filter: str = "",
        clip_vision: io.ClipVision.Type | None = None,
        distractor_set: DistractorsSocket.Type | None = None,
    ) -> io.NodeOutput:
        for name, value, kind in (("model", model, "MODEL"), ("clip", clip, "CLIP"), ("vae", vae, "VAE")):
            require_socket(name, value, kind)
        require_socket("clip_vision", clip_vision, "CLIP_VISION", optional=True)
        require_socket("distractor_set", distractor_set, "DISTRACTORS", optional=True)
        learning_rate, train_steps, render_cfg = detect_family(model).resolve(learning_rate, train_steps, render_cfg)
        chosen = resolve_distractors(target, distractors, distractor_set)
        request = LocalizeRequest(
            targets=split_lines(chosen.target), distractors=chosen.names, retain=split_lines(retain_prompts),
            concept=chosen.concepts or chosen.concept, distractor_prompts=chosen.prompts, preset=blocks, granularity=granularity,
            block_filter=block_filter or "", max_blocks=max_blocks, probe_steps=probe_steps, learning_rate=learning_rate,
            train_steps=train_steps, weights=CompetitionWeights(),
            select=SelectConfig(keep=keep, min_fraction=min_fraction, noise_floor=noise_floor, erase_threshold=erase_threshold),
            images_per_prompt=images_per_prompt, render_steps=render_steps, render_size=render_size,
            render_cfg=render_cfg, seed=seed,
        )
        result, chosen_blocks = run_localizer(model, clip, vae, clip_vision, request, node_id=cls.hidden.unique_id)
        ref = result.referee
        check = (f"held-out check: overlap {ref['overlap']:.2f}, chosen erase there {ref['chosen_erase_heldout']:.3g}"
                 if ref.get("available") else "held-out check: needs two or more target lines")
        note = reach_note(result.reach)
        reach = f" ({note})" if note else ""
        summary = (f"kept {len(result.chosen)} of {len(result.rows)} blocks ({result.embedding}); noise floor {result.floor:.3g}"
                   f"{reach}, threshold {result.threshold:.3g}; {check}:\n" + "\n".join(result.chosen))
        return io.NodeOutput(chosen_blocks, report_image(result), result.to_json(), ui=ui.PreviewText(summary))
