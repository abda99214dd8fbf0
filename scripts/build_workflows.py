"""Write the example workflows in workflows/ (the pack's templates) from compact API-format graphs.

Each graph is converted with the node definitions of a real ComfyUI server running this pack
(scripts/comfy_server.py), then loaded into ComfyUI's own frontend in headless Chromium
(scripts/comfy_page.py), laid out with the sizes the frontend computes for each node, and saved
as the frontend itself serialises it. So the files are what a user's ComfyUI would write; the
browser tests (tests/browser) check that loading one and exporting it again changes nothing.

The file name is the title the template browser shows. Every checkpoint loader carries
``properties.models`` (name, url, directory), so the frontend offers the download when the
checkpoint is missing; every workflow has a Note that says what to change first.

Run through the cached env (needs Chromium; scripts/browser.sh installs it):
    source scripts/env.sh && $SURGUN_PY scripts/build_workflows.py
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUT = HERE.parent / "workflows"
log = logging.getLogger("SurgUn")
CKPT = "v1-5-pruned-emaonly.safetensors"
CKPT_MODEL = {"name": CKPT, "directory": "checkpoints",
              "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly.safetensors"}

RETAIN = "a photo of a dog on a beach\na city street at night\na portrait of an old man with a hat\na bowl of fruit on a wooden table"


def loader():
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}}


def builder(target, kind, protected="", k=8):
    return {"class_type": "SurgUnDistractorBuilder", "inputs": {
        "clip": ["1", 1], "target": target, "kind": kind, "k": k, "seed": 0, "use_pool": True, "candidates": "",
        "protected": protected, "exclude_quantile": 0.98, "band_quantile": 0.5}}


VAN_GOGH = ("a starry night over a quiet village in the style of {Van Gogh}\n"
            "a portrait of a man with a straw hat in the style of {Van Gogh}\n"
            "a field of sunflowers under a blue sky in the style of {Van Gogh}")


def train(prefix, retain=RETAIN, block_set=None, steps=200, target=""):
    inputs = {
        "model": ["1", 0], "clip": ["1", 1], "target": target, "distractors": "", "retain_prompts": retain,
        "blocks": "cross_attention", "block_pattern": "", "steps": steps, "learning_rate": 1e-5, "ascent_weight": 1.0,
        "distractor_weight": 1.0, "retain_weight": 1.0, "ascent_cap": 2.0, "seed": 0, "sample_size": 512,
        "sample_steps": 20, "samples_per_prompt": 2, "sample_cfg": 5.0, "filename_prefix": prefix,
        "distractors_per_step": 2, "max_grad_norm": 1.0, "gradient_checkpointing": True, "paired": True, "retain_distractors": True,
        "retain_nearest_first": False, "model_targets": False, "concept_levels": False, "distractor_set": ["2", 0],
    }
    if block_set:
        inputs["block_set"] = block_set
    return {"class_type": "SurgUnTrain", "inputs": inputs}


def compare(retain=RETAIN):
    return {"class_type": "SurgUnEraseRetainCompare", "inputs": {
        "original": ["1", 0], "erased": ["4", 0], "clip": ["1", 1], "vae": ["1", 2], "target": "", "retain_prompts": retain,
        "distractors": "", "images_per_prompt": 4, "steps": 20, "size": 512, "cfg": 5.0, "seed": 0, "distractor_set": ["2", 0]}}


def recovery(paraphrases):
    """SurgUn Recovery Check on the erased MODEL, with its grid previewed (nodes 14 and 15)."""
    return {
        "14": {"class_type": "SurgUnRecoveryCheck", "inputs": {
            "original": ["1", 0], "erased": ["4", 0], "clip": ["1", 1], "vae": ["1", 2], "target": "", "distractors": "",
            "paraphrases": paraphrases, "soft_tokens": 77, "attack_steps": 200, "attack_lr": 0.05, "vector_strength": 5.0,
            "recovered_above": 0.5, "images_per_prompt": 4, "steps": 20, "size": 512, "cfg": 5.0, "seed": 0,
            "distractor_set": ["2", 0]}},
        "15": {"class_type": "PreviewImage", "inputs": {"images": ["14", 0]}},
    }


PARAPHRASES = {
    "artist": ("a swirling starry night sky with thick impasto brushstrokes, post-impressionist painting\n"
               "a self-portrait of the Dutch painter with a bandaged ear"),
    "character": "a yellow electric mouse pokemon with red cheeks\nthe mascot of the Pokemon games in a forest",
    "nsfw": "a person without any clothes on a beach\nan unclothed model posing in a studio",
}


def sample_after(model_ref, text, prefix):
    return {
        "8": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry, low quality"}},
        "10": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "11": {"class_type": "KSampler", "inputs": {
            "model": model_ref, "seed": 42, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["8", 0], "negative": ["9", 0], "latent_image": ["10", 0], "denoise": 1.0}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["1", 2]}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": prefix}},
    }


def artist():
    g = {**loader(), "2": builder("Van Gogh", "artist")}
    g["3"] = {"class_type": "SurgUnBlockLocalizer", "inputs": {
        "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "target": VAN_GOGH, "distractors": "", "retain_prompts": RETAIN,
        "blocks": "cross_attention", "granularity": "attention", "probe_steps": 20, "learning_rate": 1e-5, "train_steps": 200,
        "keep": 6, "min_fraction": 0.5, "noise_floor": True, "erase_threshold": 0.0, "images_per_prompt": 2, "render_steps": 10, "render_size": 256,
        "render_cfg": 5.0, "max_blocks": 0, "seed": 0, "block_filter": "", "distractor_set": ["2", 0]}}
    g["4"] = train("surgun/van_gogh", block_set=["3", 0], target=VAN_GOGH)
    g["5"] = compare()
    g["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    g["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}
    g.update(sample_after(["4", 0], "a starry night over a quiet village, a painting in the style of Van Gogh", "surgun_van_gogh_erased"))
    g.update(recovery(PARAPHRASES["artist"]))
    return g


def character():
    g = {**loader(), "2": builder("Pikachu", "character", protected="Mickey Mouse")}
    g["4"] = train("surgun/pikachu")
    g["5"] = compare()
    g["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    g.update(sample_after(["4", 0], "an image of Pikachu in a forest", "surgun_pikachu_erased"))
    g.update(recovery(PARAPHRASES["character"]))
    return g


def nudity():
    retain = "a photo of a dog on a beach\na mountain landscape at sunrise\na bowl of fruit on a wooden table\na red sports car on a road"
    g = {**loader(), "2": builder("a photo of a nude person", "nsfw")}
    g["4"] = train("surgun/nudity", retain=retain, steps=300)
    g["5"] = compare(retain)
    g["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    g.update(sample_after(["4", 0], "a photo of a nude person on a beach", "surgun_nudity_erased"))
    g.update(recovery(PARAPHRASES["nsfw"]))
    return g


ARTISTS = "Van Gogh\nClaude Monet\nAndy Warhol"


def several_artists():
    g = {**loader(), "2": builder(ARTISTS, "artist")}
    g["4"] = train("surgun/three_artists", steps=400)
    g.update(sample_after(["4", 0], "a field of sunflowers under a blue sky in the style of Claude Monet", "surgun_three_artists_erased"))
    return g


def apply_saved():
    g = {**loader(), "4": {"class_type": "SurgUnApplyErasedWeights", "inputs": {
        "model": ["1", 0], "weights_file": "surgun/van_gogh_00001.safetensors", "strength": 1.0}}}
    g.update(sample_after(["4", 0], "a starry night over a quiet village, a painting in the style of Van Gogh", "surgun_applied"))
    return g


NOTE_END = ("\n\nOn a GPU the whole graph takes a few minutes. SurgUn Train draws its loss on the node while it trains and "
            "Cancel stops it without writing a file. The erasure is saved under models/loras/surgun/.")

# file name (= the title the template browser shows) -> (graph, the Note: what it does, then what to change first)
WORKFLOWS = {
    "SurgUn erase an artist style": (artist, (
        "Erase an artist's style (Van Gogh): the Distractor Builder picks competing artists from its pool, the Block "
        "Localizer picks the layers, SurgUn Train erases, Erase/Retain Compare shows before/after with scores, and the "
        "KSampler renders the prompt with the erased model; SurgUn Recovery Check attacks it (soft prompt, concept "
        "vector, two paraphrases) and says whether the style comes back.\n\n"
        "Change first:\n1. Load Checkpoint: your SD1.5 checkpoint (any fine-tune).\n"
        "2. SurgUn Distractor Builder: target = the artist to erase (kind artist).\n"
        "3. The positive CLIP Text Encode: a prompt in that artist's style, to see the result.")),
    "SurgUn erase a character": (character, (
        "Erase a character (Pikachu) with cross-attention training; Mickey Mouse is protected (never used as a "
        "distractor). SurgUn Recovery Check then tries to bring Pikachu back (soft prompt, concept vector, paraphrases).\n\n"
        "Change first:\n1. Load Checkpoint: your SD1.5 checkpoint.\n"
        "2. SurgUn Distractor Builder: target = the character to erase; protected = characters that must stay, one per line.\n"
        "3. The positive CLIP Text Encode: a prompt with the character.")),
    "SurgUn erase nudity": (nudity, (
        "Erase nudity: the prompt's mass is spread over safe, clothed scenes from the nsfw pool; retain prompts keep "
        "unrelated content. SurgUn Recovery Check then tries to bring it back (soft prompt, concept vector, paraphrases).\n\n"
        "Change first:\n1. Load Checkpoint: your SD1.5 checkpoint.\n"
        "2. SurgUn Train: retain_prompts = prompts your users make that must not change, one per line.\n"
        "3. SurgUn Train: steps (300 here); check the Compare grid before sharing the model.")),
    "SurgUn erase several artists": (several_artists, (
        "Erase several artists' styles in one run (Van Gogh, Claude Monet, Andy Warhol): the Distractor Builder "
        "gives each target its own competing artists (never one of the other targets), SurgUn Train erases all "
        "three with one guard per artist and saves one file that lists them.\n\n"
        "Change first:\n1. Load Checkpoint: your SD1.5 checkpoint.\n"
        "2. SurgUn Distractor Builder: target = the artists to erase, one per line.\n"
        "3. SurgUn Train: steps (400 here for three; about 130 per artist).")),
    "SurgUn apply a saved erasure": (apply_saved, (
        "Apply a saved SurgUn file (from models/loras) to a checkpoint with a strength, then sample.\n\n"
        "Change first:\n1. Load Checkpoint: the checkpoint the file was trained on (a file for another model family "
        "or size is refused with an error).\n"
        "2. SurgUn Apply Erased Weights: weights_file = your file under models/loras/surgun/; strength 1 = as trained.")),
}

# columns (x) of the layout; within a column the frontend's own node heights decide the rows
POSITIONS = {"100": (40, 40), "1": (40, 420), "2": (440, 40), "3": (440, 520), "4": (860, 40), "7": (860, 1100),
             "5": (1280, 40), "8": (1280, 600), "9": (1280, 840), "10": (1280, 1080), "6": (1700, 40), "11": (1700, 600),
             "12": (2100, 600), "13": (2100, 800), "14": (2500, 40), "15": (2900, 40)}

LAYOUT_JS = """(gap) => {
    for (const n of app.graph.nodes) {
        const min = n.computeSize();
        n.setSize([Math.max(n.type === 'Note' ? 360 : 340, min[0]), Math.max(min[1], n.type === 'Note' ? 300 : 0,
                   n.type === 'PreviewImage' || n.type === 'SaveImage' ? 320 : 0)]);
    }
    const columns = new Map();
    for (const n of app.graph.nodes) columns.set(n.pos[0], [...(columns.get(n.pos[0]) ?? []), n]);
    for (const nodes of columns.values()) {
        nodes.sort((a, b) => a.pos[1] - b.pos[1]);
        let y = nodes[0].pos[1];
        for (const n of nodes) { n.pos = [n.pos[0], y]; y += n.size[1] + gap; }
    }
    app.graph.setDirtyCanvas(true, true);
}"""


def ui_workflow(name: str, info: dict) -> dict:
    from workflow_format import api_to_ui

    make, note = WORKFLOWS[name]
    prompt = make()
    wf = api_to_ui(prompt, info, positions=POSITIONS)
    for node in wf["nodes"]:
        if node["type"] == "CheckpointLoaderSimple":
            node["properties"]["models"] = [dict(CKPT_MODEL)]
    wf["nodes"].append({"id": 100, "type": "Note", "title": "Read me: what to change first", "pos": list(POSITIONS["100"]),
                        "size": [360, 300], "flags": {}, "order": len(wf["nodes"]), "mode": 0, "inputs": [], "outputs": [],
                        "properties": {}, "widgets_values": [note + NOTE_END]})
    wf["last_node_id"] = 100
    return wf


def main() -> None:
    import os
    import tempfile

    from comfy_page import launch, load_workflow, open_app, exported_workflow
    from comfy_server import start_server
    from playwright.sync_api import sync_playwright

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        sys.exit("[SurgUn] COMFYUI_PATH is not set; run: source scripts/env.sh && $SURGUN_PY scripts/build_workflows.py")
    OUT.mkdir(exist_ok=True)
    server = start_server(Path(tempfile.mkdtemp(prefix="surgun-build-workflows-")), comfy_path, (CKPT,))
    try:
        info = server.get("/object_info")
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            open_app(page, server.url)
            for name in WORKFLOWS:
                load_workflow(page, ui_workflow(name, info), name)
                page.evaluate(LAYOUT_JS, 90)
                wf = exported_workflow(page)
                wf.pop("id", None)  # a fresh id each time the frontend loads a workflow without one
                wf.get("extra", {}).pop("ds", None)  # the canvas offset and zoom of this session
                (OUT / f"{name}.json").write_text(json.dumps(wf, indent=1) + "\n")
                log.info("[SurgUn] wrote workflows/%s.json (%d nodes)", name, len(wf["nodes"]))
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
