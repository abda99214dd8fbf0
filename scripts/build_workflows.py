"""Write the example workflows in workflows/ (UI format) from compact API-format graphs.

Node definitions come from ComfyUI itself (this pack loaded in the real executor), so widget
order and defaults match what the front end expects. Run:  scripts/bench.sh ../scripts/build_workflows
or through the cached env:  $SURGUN_PY scripts/build_workflows.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUT = HERE.parent / "workflows"
CKPT = "v1-5-pruned-emaonly.safetensors"

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
        "distractors_per_step": 2, "max_grad_norm": 1.0, "gradient_checkpointing": True, "paired": True, "distractor_set": ["2", 0],
    }
    if block_set:
        inputs["block_set"] = block_set
    return {"class_type": "SurgUnTrain", "inputs": inputs}


def compare(retain=RETAIN):
    return {"class_type": "SurgUnEraseRetainCompare", "inputs": {
        "original": ["1", 0], "erased": ["4", 0], "clip": ["1", 1], "vae": ["1", 2], "target": "", "retain_prompts": retain,
        "distractors": "", "images_per_prompt": 4, "steps": 20, "size": 512, "cfg": 5.0, "seed": 0, "distractor_set": ["2", 0]}}


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
    return g


def character():
    g = {**loader(), "2": builder("Pikachu", "character", protected="Mickey Mouse")}
    g["4"] = train("surgun/pikachu")
    g["5"] = compare()
    g["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    g.update(sample_after(["4", 0], "an image of Pikachu in a forest", "surgun_pikachu_erased"))
    return g


def nudity():
    retain = "a photo of a dog on a beach\na mountain landscape at sunrise\na bowl of fruit on a wooden table\na red sports car on a road"
    g = {**loader(), "2": builder("a photo of a nude person", "nsfw")}
    g["4"] = train("surgun/nudity", retain=retain, steps=300)
    g["5"] = compare(retain)
    g["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    g.update(sample_after(["4", 0], "a photo of a nude person on a beach", "surgun_nudity_erased"))
    return g


def apply_saved():
    g = {**loader(), "4": {"class_type": "SurgUnApplyErasedWeights", "inputs": {
        "model": ["1", 0], "weights_file": "surgun/van_gogh_00001.safetensors", "strength": 1.0}}}
    g.update(sample_after(["4", 0], "a starry night over a quiet village, a painting in the style of Van Gogh", "surgun_applied"))
    return g


WORKFLOWS = {
    "surgun_erase_artist_style": (artist, "Erase an artist's style (Van Gogh): distractors from the artist pool, blocks chosen by the "
                                  "Block Localizer, training, then a before/after comparison and a sample from the erased model."),
    "surgun_erase_character": (character, "Erase a character (Pikachu) with cross-attention training; Mickey Mouse is protected "
                               "(never used as a distractor)."),
    "surgun_erase_nudity": (nudity, "Erase nudity: the prompt's mass is spread over safe, clothed scenes from the nsfw pool; "
                            "retain prompts keep unrelated content."),
    "surgun_apply_saved_erasure": (apply_saved, "Apply a saved SurgUn file (from models/loras) to a checkpoint with a strength, "
                                   "then sample."),
}

POSITIONS = {"1": (40, 300), "2": (420, 40), "3": (420, 420), "4": (820, 40), "5": (1220, 40), "6": (1620, 40),
             "7": (820, 760), "8": (1220, 620), "9": (1220, 860), "10": (1220, 1060), "11": (1620, 560), "12": (1980, 560), "13": (2300, 560)}


def main() -> None:
    import headless
    from workflow_format import api_to_ui

    comfy = headless.start()
    OUT.mkdir(exist_ok=True)
    for name, (make, note) in WORKFLOWS.items():
        prompt = make()
        info = comfy.object_info({n["class_type"] for n in prompt.values()})
        wf = api_to_ui(prompt, info, positions=POSITIONS)
        wf["nodes"].append({"id": 100, "type": "Note", "pos": [40, 40], "size": [340, 220], "flags": {}, "order": len(wf["nodes"]),
                            "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [
                                note + "\n\nNeeds an SD1.5 checkpoint (any fine-tune works). On a GPU the whole graph takes a few "
                                "minutes; SurgUn Train shows its loss on the node and Cancel stops it without writing a file."]})
        wf["last_node_id"] = 100
        (OUT / f"{name}.json").write_text(json.dumps(wf, indent=1) + "\n")
        print(f"wrote workflows/{name}.json ({len(prompt)} nodes)")


if __name__ == "__main__":
    main()
