"""SurgUnEraseRetainCompare: before/after images and pixel-grounded erase/retain scores."""

from __future__ import annotations

import json

import torch
from comfy_api.latest import io, ui

from ..surgun_core.errors import SurgUnError
from ..surgun_core.grid_labels import GridRow, labelled_grid
from ..surgun_core.scores import erase_score, retain_score
from .bridge import PromptBank, decode_images, image_embedder, latent_shape_for, plan_batches, sample_prompts
from .erase import split_lines
from .families import detect_family
from .progress import NodeProgress
from .sockets import DistractorsSocket


def compare_grid(target: str, before: dict, after: dict, scores: dict, retain: tuple[str, ...]) -> torch.Tensor:
    """The labelled grid: target before/after, then each retain prompt before/after, each row with
    its prompt on the left and its scores on the right (surgun_core/grid_labels.py)."""
    rows = [GridRow(target, "before", before[target], "erased prompt"),
            GridRow(target, "after", after[target],
                    f"erase {scores['erase']:.3f}\naway {scores['away']:.3f}\ntoward {scores['toward']:.3f}")]
    for r in retain:
        s = scores["retain_prompts"][r]
        rows += [GridRow(r, "before", before[r], "retain prompt"),
                 GridRow(r, "after", after[r], f"retain {s['retain']:.3f}\nembed {s['retain_embed']:.3f}\nssim {s['retain_ssim']:.3f}")]
    title = f"SurgUn Erase/Retain Compare: erase {scores['erase']:.3f}" + (
        f", retain {scores['retain']:.3f}" if retain else "") + " (same seeds before and after)"
    notes = ["erase: mean of away (1 - cosine to the original image) and toward (moved toward the distractors' images); 0 = unchanged",
             "retain: mean of embedding cosine and SSIM to the original image; 1 = unchanged",
             f"embedding: {scores['embedding']}"]
    return labelled_grid(rows, title=title, notes=notes)


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
                io.Float.Input("cfg", default=5.0, min=0.0, max=30.0, step=0.1, tooltip="CFG scale (1.0 for Flux)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=io.ControlAfterGenerate.fixed,
                             tooltip="Seed of the renders (the same for before and after). Kept fixed after each run."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="Optional: score with CLIP-vision image embeddings instead of the pixel fallback."),
                DistractorsSocket.Input("distractor_set", optional=True, tooltip="Distractors from SurgUn Distractor Builder (replace the text field)."),
            ],
            outputs=[
                io.Image.Output(display_name="grid", tooltip="Rows: target before, target after, then each retain prompt before/after; "
                                "each row labelled with its prompt, and its scores printed beside it."),
                io.String.Output(display_name="scores_json", tooltip="Erase and retain scores (overall and per retain prompt) as JSON."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, original, erased, clip, vae, target, retain_prompts, distractors, images_per_prompt, steps, size,
                cfg, seed, clip_vision=None, distractor_set=None) -> io.NodeOutput:
        distractor_prompts = split_lines(distractors)
        if distractor_set is not None:
            distractor_prompts = tuple(distractor_set.prompts)
            target = (target or "").strip() or distractor_set.target_prompt
        target = (target or "").strip()
        if not target:
            raise SurgUnError("[SurgUn] target is empty. Type the prompt of the erased concept.")
        family = detect_family(original)
        if detect_family(erased).id != family.id:
            raise SurgUnError(f"[SurgUn] original ({family.name}) and erased ({detect_family(erased).name}) are different model families.")
        retain = split_lines(retain_prompts)
        bank = PromptBank(clip, original, latent_shape_for(original, size), original.load_device)
        # identical batches (hence identical noise) before and after
        shown = plan_batches(bank, [target, *retain], images_per_prompt)
        others = plan_batches(bank, distractor_prompts, images_per_prompt) if distractor_prompts else []
        progress = NodeProgress((2 * len(shown) + len(others)) * steps, cls.hidden.unique_id)

        def render(model, batches, batch_seed) -> dict:
            lat = sample_prompts(model, bank, batches, images_per_prompt, steps, cfg, batch_seed,
                                 family.arch.sampler, family.arch.scheduler, on_step=progress.tick)
            return {p: decode_images(vae, x) for p, x in lat.items()}

        embed, embed_name = image_embedder(clip_vision)
        before, after = render(original, shown, seed), render(erased, shown, seed)
        d_emb = torch.cat([embed(x) for x in render(original, others, seed + 1000).values()]) if others else None
        scores = {"embedding": embed_name, "target": target,
                  **erase_score(embed(after[target]), embed(before[target]), d_emb), "retain_prompts": {}}
        for r in retain:
            b, a = before[r], after[r]
            scores["retain_prompts"][r] = retain_score(embed(a), embed(b), a, b)
        if retain:
            per = scores["retain_prompts"].values()
            scores["retain"] = sum(p["retain"] for p in per) / len(retain)
        text = json.dumps(scores, indent=1)
        summary = f"erase {scores['erase']:.4f}" + (f", retain {scores['retain']:.4f}" if retain else "") + f" ({embed_name})"
        progress.chart("compare", {k: scores[k] for k in ("erase", "away", "toward", "retain", "embedding") if k in scores}
                       | {"target": target, "retain_prompts": {p: s["retain"] for p, s in scores["retain_prompts"].items()}})
        return io.NodeOutput(compare_grid(target, before, after, scores, retain), text, ui=ui.PreviewText(summary))
