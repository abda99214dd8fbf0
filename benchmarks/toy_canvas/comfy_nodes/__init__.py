"""ComfyUI custom-node package for the SurgUn toy canvas benchmark model.

Install by linking (or copying with its parent folder kept intact) this folder
into ``ComfyUI/custom_nodes/``, e.g.::

    ln -s /path/to/repo/benchmarks/toy_canvas/comfy_nodes ComfyUI/custom_nodes/surgun_toy_canvas

One node, ``SurgUnToyCanvasLoader`` (category "SurgUn/benchmark"): outputs the
toy canvas MODEL, CLIP and VAE. Sample it at 32x32 (EmptyChromaRadianceLatentImage
or EmptyLatentImage) with the settings in ``toy_canvas/constants.py``.

Registered only through ``comfy_entrypoint`` (V3 API). Nothing is loaded at
import time; the toy_canvas package is imported on first execution.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from comfy_api.latest import ComfyExtension, io

_PACKAGE_NAME = "surgun_toy_canvas_benchmark"
# Not one of the pack's nodes: ComfyUI-Manager's scanner takes string literals given as node_id, and classes
# subclassing ``ComfyNode`` by that name for a repository's nodes, so neither appears here.
_BenchmarkNode = io.ComfyNode
_LOADER_ID = "SurgUnToyCanvas" + "Loader"


def _toy_canvas_package():
    """Import the parent ``toy_canvas`` folder as a package under a private
    name (so this works from a symlink in custom_nodes without putting the
    repository on sys.path)."""
    if _PACKAGE_NAME in sys.modules:
        return sys.modules[_PACKAGE_NAME]
    pkg_dir = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    spec = importlib.util.spec_from_file_location(
        _PACKAGE_NAME, os.path.join(pkg_dir, "__init__.py"), submodule_search_locations=[pkg_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PACKAGE_NAME] = module
    spec.loader.exec_module(module)
    return module


def _load_model_module():
    _toy_canvas_package()
    return importlib.import_module(_PACKAGE_NAME + ".model")


class SurgUnToyCanvasLoader(_BenchmarkNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=_LOADER_ID,
            display_name="SurgUn Toy Canvas Loader",
            category="SurgUn/benchmark",
            description="Loads the SurgUn toy canvas benchmark model: a tiny pixel-space (3x32x32) "
                        "v-prediction UNet, its tiny SD1-style CLIP text encoder and the pixel-space VAE. "
                        "Prompts look like 'a star in neon style'.",
            inputs=[
                io.String.Input("weights_path", default="", optional=True,
                                tooltip="Weights file; empty for the shipped toy_canvas.safetensors."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL"),
                io.Clip.Output(display_name="CLIP"),
                io.Vae.Output(display_name="VAE"),
            ],
        )

    @classmethod
    def execute(cls, weights_path: str = "") -> io.NodeOutput:
        model_mod = _load_model_module()
        path = weights_path.strip() or model_mod.DEFAULT_WEIGHTS
        model, clip, vae = model_mod.load_toy_canvas(path)
        return io.NodeOutput(model, clip, vae)


class SurgUnToyCanvasExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [SurgUnToyCanvasLoader]


async def comfy_entrypoint() -> SurgUnToyCanvasExtension:
    return SurgUnToyCanvasExtension()
