"""End-to-end check through ComfyUI's real executor (no server, no network):

    SurgUnToyCanvasLoader -> CLIPTextEncode (+/-) -> EmptyChromaRadianceLatentImage
        -> KSampler (shipped settings) -> VAEDecode -> SaveImage

then classify the saved images.

    python -m benchmarks.toy_canvas.graph_check [--prompt "a star in neon style"] [--weights PATH]

Library: ``build_graph(...)`` (the API-format prompt dict) and
``run_graph(...)`` (-> list of (H, W, 3) float images read back from SaveImage).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import uuid
from typing import Dict, List, Optional

import torch

from . import constants
from ._comfy import ensure_comfy

log = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_PACKAGE_DIR = os.path.join(HERE, "comfy_nodes")


def build_graph(prompt: str, seed: int = constants.GATE_SEED, batch_size: int = 4, weights_path: str = "",
                negative: str = constants.NEGATIVE_PROMPT, filename_prefix: str = "toy_canvas") -> Dict[str, dict]:
    return {
        "1": {"class_type": "SurgUnToyCanvasLoader", "inputs": {"weights_path": weights_path}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyChromaRadianceLatentImage",
              "inputs": {"width": constants.WIDTH, "height": constants.HEIGHT, "batch_size": batch_size}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": constants.STEPS, "cfg": constants.CFG,
            "sampler_name": constants.SAMPLER_NAME, "scheduler": constants.SCHEDULER,
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": constants.DENOISE}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": filename_prefix}},
    }


class _NullServer:
    """The little of PromptServer that PromptExecutor touches."""

    def __init__(self) -> None:
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: List[tuple] = []

    def send_sync(self, event, data, sid=None) -> None:
        self.messages.append((event, data))


async def _init_nodes() -> None:
    import nodes

    if "SurgUnToyCanvasLoader" in nodes.NODE_CLASS_MAPPINGS:
        return
    if "EmptyChromaRadianceLatentImage" not in nodes.NODE_CLASS_MAPPINGS:
        await nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False)
    ok = await nodes.load_custom_node(NODE_PACKAGE_DIR)
    if not ok or "SurgUnToyCanvasLoader" not in nodes.NODE_CLASS_MAPPINGS:
        raise RuntimeError("could not load the toy canvas custom node package")


def run_graph(prompt_graph: Dict[str, dict], output_dir: Optional[str] = None) -> List[torch.Tensor]:
    """Validate and execute an API-format graph with ComfyUI's PromptExecutor.
    Returns the images written by SaveImage nodes, as (H, W, 3) floats in [0, 1]."""
    ensure_comfy()
    import numpy as np
    from PIL import Image

    import execution
    import folder_paths

    asyncio.run(_init_nodes())
    out_dir = output_dir or tempfile.mkdtemp(prefix="toy_canvas_graph_")
    folder_paths.set_output_directory(out_dir)
    prompt_id = str(uuid.uuid4())
    valid = asyncio.run(execution.validate_prompt(prompt_id, prompt_graph, None))
    if not valid[0]:
        raise RuntimeError(f"invalid graph: {valid[1]} {valid[3]}")
    server = _NullServer()
    executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    executor.execute(prompt_graph, prompt_id, {}, valid[2])
    if not executor.success:
        errors = [m for m in executor.status_messages if m[0] == "execution_error"]
        raise RuntimeError(f"graph execution failed: {errors}")
    images = []
    for node_out in executor.history_result.get("outputs", {}).values():
        for item in node_out.get("images", []):
            path = os.path.join(out_dir, item.get("subfolder", ""), item["filename"])
            arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
            images.append(torch.from_numpy(arr))
    return images


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", default="a star in neon style")
    p.add_argument("--weights", default="")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=constants.GATE_SEED)
    p.add_argument("--output-dir", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    images = run_graph(build_graph(args.prompt, seed=args.seed, batch_size=args.batch_size, weights_path=args.weights),
                       output_dir=args.output_dir)
    from . import classifier, world

    out = classifier.classify(classifier.load_classifier(), torch.stack(images))
    result = {"prompt": args.prompt, "n_images": len(images),
              "objects": [world.OBJECTS[i] for i in out["object"].tolist()],
              "styles": [world.STYLES[i] for i in out["style"].tolist()]}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
