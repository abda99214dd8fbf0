"""SurgUnRecoveryCheck: does the erased concept come back under attack (soft prompt, concept vector, paraphrases)?"""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..surgun_comfy.families import detect_family
from ..surgun_comfy.recovery import RecoveryRequest, run_recovery
from .inputs import require_socket, resolve_distractors, split_lines
from .sockets import DistractorsSocket


class SurgUnRecoveryCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SurgUnRecoveryCheck",
            display_name="SurgUn Recovery Check",
            category="SurgUn",
            description=(
                "Attacks the erased model's target prompt and checks whether the concept comes back: a soft prompt "
                "(free offsets on the last token rows of the target's text conditioning, optimised with the model's own "
                "denoising loss on fresh original-model samples of the target), a concept vector (Ring-A-Bell style: the "
                "target's conditioning minus the same prompt without the concept, added back) and paraphrases. Every row "
                "uses the same seeds. Recovery per attack, in [0, 1]: 0 = as far from the target as the erased model's "
                "plain output, 1 = as close as the original model's (cosine to the original's target images minus cosine "
                "to its distractor images; CLIP vision when connected, else a pixel fallback)."
            ),
            inputs=[
                io.Model.Input("original", tooltip="The model before erasure (the checkpoint's MODEL)."),
                io.Model.Input("erased", tooltip="The erased model: SurgUn Train's MODEL output made from original "
                               "(or original with erased weights applied). Must share original's network."),
                io.Clip.Input("clip", tooltip="The text encoder of the checkpoint."),
                io.Vae.Input("vae", tooltip="Decodes the renders to pixels."),
                io.String.Input("target", default="", placeholder="a painting by {Van Gogh}",
                                tooltip="Prompt of the erased concept (concept in braces lets the concept vector swap it out). "
                                        "Required, unless DISTRACTORS is connected (then empty = its target)."),
                io.String.Input("distractors", multiline=True, default="",
                                tooltip="Other concepts, one per line (put into the target's braces), or full prompts: the "
                                        "'away from' reference of the score and the 'without the concept' prompts of the concept "
                                        "vector. Empty = score by closeness to the target only; the vector then removes the concept."),
                io.String.Input("paraphrases", multiline=True, default="",
                                tooltip="Attack: other ways to ask for the concept, one prompt per line, rendered with the erased "
                                        "model. Empty = no paraphrase attack."),
                io.Int.Input("soft_tokens", default=77, min=1, max=308,
                             tooltip="Soft-prompt attack: how many token rows (the last ones) of the target's conditioning it may "
                                     "change; 77 = a whole CLIP window (the default: on the toy canvas model 4 rows recovered "
                                     "nothing where all rows recovered the erased style fully)."),
                io.Int.Input("attack_steps", default=200, min=0, max=10000,
                             tooltip="Soft-prompt attack: optimisation steps (each a forward and backward pass of the erased model "
                                     "on images_per_prompt samples). 0 = soft-prompt attack off."),
                io.Float.Input("attack_lr", default=0.05, min=0.000001, max=1.0, step=1e-6, round=False,
                               tooltip="Soft-prompt attack: Adam learning rate of the token-row offsets. Larger = a stronger, less natural attack."),
                io.Float.Input("vector_strength", default=5.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Concept-vector attack: how much of (target minus target-without-concept) is added to the "
                                       "target's conditioning. 0 = concept-vector attack off."),
                io.Float.Input("recovered_above", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="The verdict says RECOVERED when an attack's recovery is above this (1 = never)."),
                io.Int.Input("images_per_prompt", default=4, min=1, max=64,
                             tooltip="Images per row (the same seeds in every row), and samples the soft prompt trains on."),
                io.Int.Input("steps", default=20, min=1, max=1000, tooltip="Sampler steps of every render."),
                io.Int.Input("size", default=512, min=16, max=8192, step=16, tooltip="Side of the renders in pixels."),
                io.Float.Input("cfg", default=-1.0, min=-1.0, max=30.0, step=0.1,
                               tooltip="CFG scale of the renders. -1 = the family's default (1.0 for Flux, 5.0 for the others)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=io.ControlAfterGenerate.fixed,
                             tooltip="Seed of the rows (the same for every row); references and the attack's samples use seed + offsets."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="Optional: score with CLIP-vision image embeddings. Not connected = the pixel fallback."),
                DistractorsSocket.Input("distractor_set", optional=True,
                                        tooltip="Optional: distractors from SurgUn Distractor Builder (replace the text field)."),
            ],
            outputs=[
                io.Image.Output(display_name="grid", tooltip="Rows (same seeds): original on the target, erased on the target, "
                                                             "then the erased model under each attack, with its recovery."),
                io.String.Output(display_name="report", tooltip="One line per attack with its recovery in [0, 1], and a verdict."),
                io.Float.Output(display_name="max_recovery", tooltip="The largest recovery of any attack (0 when no attack ran)."),
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
        distractors: str,
        paraphrases: str,
        soft_tokens: int,
        attack_steps: int,
        attack_lr: float,
        vector_strength: float,
        recovered_above: float,
        images_per_prompt: int,
        steps: int,
        size: int,
        cfg: float,
        seed: int,
        clip_vision: io.ClipVision.Type | None = None,
        distractor_set: DistractorsSocket.Type | None = None,
    ) -> io.NodeOutput:
        for name, value, kind in (("original", original, "MODEL"), ("erased", erased, "MODEL"),
                                  ("clip", clip, "CLIP"), ("vae", vae, "VAE")):
            require_socket(name, value, kind)
        require_socket("clip_vision", clip_vision, "CLIP_VISION", optional=True)
        require_socket("distractor_set", distractor_set, "DISTRACTORS", optional=True)
        cfg = detect_family(original).auto_cfg(cfg)
        chosen = resolve_distractors(target, distractors, distractor_set, single="SurgUn Recovery Check")
        request = RecoveryRequest(target=chosen.target, distractors=chosen.names, concept=chosen.concept,
                                  distractor_prompts=chosen.prompts, paraphrases=split_lines(paraphrases),
                                  soft_tokens=soft_tokens, attack_steps=attack_steps, attack_lr=attack_lr,
                                  vector_strength=vector_strength, recovered_above=recovered_above,
                                  images_per_prompt=images_per_prompt, steps=steps, size=size, cfg=cfg, seed=seed)
        image, report, best = run_recovery(original, erased, clip, vae, clip_vision, request,
                                           node_id=cls.hidden.unique_id)
        return io.NodeOutput(image, report, best, ui=ui.PreviewText(report.splitlines()[-1]))
