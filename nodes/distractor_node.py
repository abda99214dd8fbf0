"""SurgUnDistractorBuilder: a diverse, deterministic distractor set from the model's own text encoder."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..surgun_core.distractors import KINDS, DistractorParams, build_distractor_sets, load_pool
from ..surgun_comfy.progress import NodeProgress
from ..surgun_comfy.text_embed import CACHE, cached_embedder
from .inputs import require_socket, split_lines
from .sockets import DistractorsSocket


class SurgUnDistractorBuilder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SurgUnDistractorBuilder",
            display_name="SurgUn Distractor Builder",
            category="SurgUn",
            description=(
                "Chooses K distractor concepts for each target (one per line; several targets are erased together) by an explicit algorithm: candidates from a built-in pool (and/or "
                "your list) are embedded with the connected text encoder; the target, its aliases, near-synonyms (top "
                "similarity quantile) and protected entries are removed; candidates must stay within the kind band (a "
                "similarity quantile); then greedy farthest-point selection starting from the nearest admissible candidate. "
                "With several targets, each gets its own set and the other targets are never chosen for it."
            ),
            search_aliases=["distractors", "anchor concepts"],
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the model you will erase from; similarities are measured with it."),
                io.String.Input("target", multiline=True, default="", placeholder="Van Gogh",
                                tooltip="The concept to erase, as a name (the kind's template makes it a prompt). Required. "
                                        "Several concepts erased in one SurgUn Train run: one per line, each gets its own K "
                                        "distractors (a concept listed twice, or with an alias, is refused)."),
                io.Combo.Input("kind", options=list(KINDS), default="artist",
                               tooltip="Kind of the target: picks the built-in pool and its prompt template "
                                       "(artist: 'a painting in the style of {x}', character: 'an image of {x}', object: "
                                       "'a photo of a {x}', nsfw: safe clothed scenes, custom: no pool, template '{x}')."),
                io.Int.Input("k", default=8, min=1, max=64, tooltip="How many distractors to choose (per target)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=io.ControlAfterGenerate.fixed,
                             tooltip="Breaks exact ties only; the selection is otherwise fully determined by pool, encoder and k. Kept fixed after each run."),
                io.Boolean.Input("use_pool", default=True,
                                 tooltip="Use the built-in candidate pool of the kind. Off = only your candidates."),
                io.String.Input("candidates", multiline=True, default="",
                                tooltip="Your own candidate concepts, one per line, added to the pool. Empty = none."),
                io.String.Input("protected", multiline=True, default="",
                                tooltip="Concepts that must never be used as distractors, one per line (their aliases too). Empty = none."),
                io.Float.Input("exclude_quantile", default=0.98, min=0.5, max=1.0, step=0.005, advanced=True, optional=True,
                               tooltip="Candidates at or above this quantile of similarity to the target are removed as "
                                       "near-synonyms. 1.0 turns the exclusion off."),
                io.Float.Input("band_quantile", default=0.5, min=0.0, max=0.99, step=0.01, advanced=True, optional=True,
                               tooltip="Candidates below this quantile of similarity to the target are outside the kind band. "
                                       "0 turns the band off."),
            ],
            outputs=[
                DistractorsSocket.Output(display_name="DISTRACTORS", tooltip="The chosen distractors; connect to SurgUn Train."),
                io.String.Output(display_name="preview", tooltip="Each distractor with its similarity to the target and to the others."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, clip: io.Clip.Type, target: str, kind: str, k: int, seed: int, use_pool: bool, candidates: str,
                protected: str, exclude_quantile: float = 0.98, band_quantile: float = 0.5) -> io.NodeOutput:
        require_socket("clip", clip, "CLIP")
        params = DistractorParams(k=k, exclude_quantile=exclude_quantile, band_quantile=band_quantile, seed=seed)
        pool_size = len(load_pool(kind).entries) if use_pool and kind in KINDS else 0
        extra = split_lines(candidates)
        targets = [line.strip() for line in (target or "").splitlines() if line.strip()]
        progress = NodeProgress((pool_size + len(extra) + 1) * max(1, len(targets)), cls.hidden.unique_id)
        ident, embed = cached_embedder(clip, on_prompt=progress.tick)
        cached_before = CACHE.size(ident)
        chosen = build_distractor_sets(
            targets, kind, embed, params, candidates=extra, use_pool=use_pool,
            protected=split_lines(protected), encoder_id=ident,
        )
        progress.tick(progress.total)
        text = chosen.preview() + f"\n(encoder {ident}; {cached_before} prompt embeddings were cached)"
        return io.NodeOutput(chosen, text, ui=ui.PreviewText(text))
