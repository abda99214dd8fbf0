"""The main job: erase a concept end to end through ComfyUI's real executor, no download.

Model: a tiny SD1.5-layout checkpoint made on the fly with random weights (it draws noise, so
the grid shows the mechanics, not a meaningful erasure). The graph is the one a user builds:

    CheckpointLoaderSimple -> SurgUnTrain -> KSampler -> VAEDecode -> SaveImage
                           \\-------------> KSampler -> VAEDecode -> SaveImage   (before)

Writes into --out: the erased weights file, before/after images, grid.png and numbers.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGET = "a painting by zorblax"
DISTRACTORS = ["a painting by claude monet", "a painting by katsushika hokusai", "a painting by frida kahlo", "a photo of a red car"]
RETAIN = ["a photo of a dog", "a city street at night"]


def sample_nodes(prefix: str, model_ref: list, prompt_node: str, seed_node_id: str) -> dict:
    return {
        f"{seed_node_id}k": {"class_type": "KSampler", "inputs": {
            "model": model_ref, "seed": 7, "steps": 6, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": [prompt_node, 0], "negative": ["neg", 0], "latent_image": ["lat", 0], "denoise": 1.0}},
        f"{seed_node_id}d": {"class_type": "VAEDecode", "inputs": {"samples": [f"{seed_node_id}k", 0], "vae": ["ckpt", 2]}},
        f"{seed_node_id}s": {"class_type": "SaveImage", "inputs": {"images": [f"{seed_node_id}d", 0], "filename_prefix": prefix}},
    }


def build_graph(steps: int) -> dict:
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "surgun_tiny_sd15.safetensors"}},
        "train": {"class_type": "SurgUnTrain", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1], "target": TARGET, "distractors": "\n".join(DISTRACTORS),
            "retain_prompts": "\n".join(RETAIN), "blocks": "cross_attention", "block_pattern": "", "steps": steps,
            "learning_rate": 1e-4, "ascent_weight": 1.0, "distractor_weight": 1.0, "retain_weight": 1.0,
            "ascent_cap": 2.0, "seed": 0, "sample_size": 128, "sample_steps": 8, "samples_per_prompt": 2,
            "sample_cfg": 4.0, "filename_prefix": "surgun/demo"}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
        "pt": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": TARGET}},
        "pr": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": RETAIN[0]}},
    }
    g.update(sample_nodes("before_target", ["ckpt", 0], "pt", "bt"))
    g.update(sample_nodes("after_target", ["train", 0], "pt", "at"))
    g.update(sample_nodes("before_retain", ["ckpt", 0], "pr", "br"))
    g.update(sample_nodes("after_retain", ["train", 0], "pr", "ar"))
    return g


def grid(rows: list[tuple[str, list[Path]]], out: Path) -> None:
    from PIL import Image, ImageDraw

    images = [[Image.open(p).convert("RGB") for p in paths] for _, paths in rows]
    w, h = images[0][0].size
    label_w = 150
    cols = max(len(r) for r in images)
    canvas = Image.new("RGB", (label_w + cols * w, len(rows) * h), "white")
    draw = ImageDraw.Draw(canvas)
    for r, ((label, _), imgs) in enumerate(zip(rows, images)):
        draw.text((6, r * h + h // 2 - 6), label, fill="black")
        for c, img in enumerate(imgs):
            canvas.paste(img, (label_w + c * w, r * h))
    canvas.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description="Erase a concept end to end through ComfyUI's executor (no download).")
    ap.add_argument("--out", type=Path, default=Path("surgun-demo"), help="output folder (default: ./surgun-demo)")
    ap.add_argument("--steps", type=int, default=60, help="SurgUnTrain steps (default 60)")
    args = ap.parse_args()
    t0 = time.monotonic()

    import os

    import headless
    import make_tiny_checkpoint

    import hashlib

    cache = Path(os.environ.get("SURGUN_CACHE", Path.home() / ".cache" / "surgun"))
    maker = hashlib.sha256(Path(make_tiny_checkpoint.__file__).read_bytes()).hexdigest()[:8]
    ckpt = cache / "demo" / f"surgun_tiny_sd15_{maker}.safetensors"  # rebuilt when the maker changes
    if not ckpt.exists():
        print(f"[SurgUn demo] writing a tiny random SD1.5-layout checkpoint to {ckpt} (one time)")
        make_tiny_checkpoint.build(ckpt)
    comfy = headless.start()
    shutil.copy(ckpt, comfy.models_dir / "checkpoints" / "surgun_tiny_sd15.safetensors")

    print("[SurgUn demo] running CheckpointLoaderSimple -> SurgUnTrain -> KSampler -> VAEDecode -> SaveImage")
    res = comfy.run(build_graph(args.steps))
    if not res.success:
        sys.exit(f"[SurgUn demo] the graph failed: {res.error_text()}")

    args.out.mkdir(parents=True, exist_ok=True)
    weights = res.outputs["train"][1][0]
    shutil.copy(weights.path, args.out / Path(weights.path).name)
    output_dir = comfy.root / "output"
    rows = []
    for prefix in ("before_target", "after_target", "before_retain", "after_retain"):
        paths = sorted(output_dir.glob(f"{prefix}_*.png"))
        for p in paths:
            shutil.copy(p, args.out / p.name)
        rows.append((prefix.replace("_", " "), [args.out / p.name for p in paths]))
    grid(rows, args.out / "grid.png")

    meta = weights.metadata
    numbers = {
        "model": "tiny random SD1.5-layout checkpoint made on the fly (draws noise)",
        "target": TARGET, "distractors": DISTRACTORS, "retain": RETAIN,
        "layers_trained": len(weights.deltas), "weights_in_file": weights.num_params(),
        "target_loss_untouched": meta["reference_target_loss"], "ascent_cap_value": meta["ascent_cap_value"],
        "final_step": meta["final"], "timing_s": {**meta["timing_s"], "whole_demo": round(time.monotonic() - t0, 1)},
    }
    (args.out / "numbers.json").write_text(json.dumps(numbers, indent=2))
    print(json.dumps(numbers, indent=2))
    print(f"[SurgUn demo] wrote {args.out}/grid.png, numbers.json and {Path(weights.path).name}")


if __name__ == "__main__":
    main()
