"""Run ComfyUI's real executor in this process, without the web server.

Used by the node tests and the demo. ``start()`` imports ComfyUI from ``$COMFYUI_PATH`` on
CPU, points its model folders at a scratch directory, and loads this pack plus any extra
custom-node folders exactly the way ComfyUI does at start-up. ``run(prompt)`` validates and
executes an API-format prompt and returns every node's outputs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pack

REPO = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-SurgUn"


@dataclass
class RunResult:
    success: bool
    outputs: dict
    """node id -> list of output values (as the executor cached them)."""
    ui: dict
    messages: list
    error: dict | None = None

    def error_text(self) -> str:
        if not self.error:
            return ""
        return f"{self.error.get('exception_type', '')}: {self.error.get('exception_message', '')}"


class StubServer:
    """What PromptExecutor needs from the web server: a message sink."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list = []

        self.node_replace_manager = _NoReplacements()
        self.progress_listeners: list = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def send_progress_text(self, text, node_id, sid=None):
        self.messages.append(("progress_text", {"node": node_id, "text": text}))


class _NoReplacements:
    def register(self, *args, **kwargs):
        pass


@dataclass
class Comfy:
    root: Path
    models_dir: Path
    executor: object = None
    server: StubServer = field(default_factory=StubServer)

    @property
    def loras_dir(self) -> Path:
        return self.models_dir / "loras"

    def object_info(self, names) -> dict:
        """Node definitions as the server's /object_info reports them (for the given node ids)."""
        import nodes
        from comfy_api.internal import _ComfyNodeInternal

        out = {}
        for name in names:
            cls = nodes.NODE_CLASS_MAPPINGS[name]
            if issubclass(cls, _ComfyNodeInternal):
                out[name] = cls.GET_NODE_INFO_V1()
                continue
            types = cls.INPUT_TYPES()
            out[name] = {
                "input": types, "input_order": {k: list(v) for k, v in types.items()}, "output": list(cls.RETURN_TYPES),
                "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            }
        return out

    def run(self, prompt: dict, client_id: str = "surgun-test") -> RunResult:
        import execution

        prompt_id = str(uuid.uuid4())
        valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            return RunResult(False, {}, {}, [], error={"exception_type": "validation", "exception_message": str(valid[1]), "node_errors": valid[3]})
        self.server.messages = []
        self.executor.execute(prompt, prompt_id, {"client_id": client_id}, valid[2])
        outputs = {}
        for node_id in prompt:
            entry = asyncio.run(self.executor.caches.outputs.get(node_id))
            if entry is not None:
                outputs[node_id] = entry.outputs
        error = None
        for event, data in self.server.messages:
            if event in ("execution_error", "execution_interrupted"):
                error = {"event": event, **data}
        return RunResult(self.executor.success, outputs, dict(self.executor.history_result.get("outputs", {})) if hasattr(self.executor, "history_result") else {}, list(self.server.messages), error)


_COMFY: Comfy | None = None


def _install_progress_hook(stub: StubServer) -> None:
    """What main.py's hijack_progress does: progress events, and Cancel checked on every update."""
    import comfy.model_management
    import comfy.utils
    from comfy_execution.progress import get_progress_state
    from comfy_execution.utils import get_executing_context

    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        ctx = get_executing_context()
        if node_id is None and ctx is not None:
            node_id = ctx.node_id
        for listener in list(stub.progress_listeners):
            listener(value, total, node_id)
        comfy.model_management.throw_exception_if_processing_interrupted()
        get_progress_state().update_progress(node_id, value, total, preview_image)
        stub.send_sync("progress", {"value": value, "max": total, "node": node_id}, stub.client_id)

    comfy.utils.set_progress_bar_global_hook(hook)


def comfyui_path() -> Path:
    path = os.environ.get("COMFYUI_PATH")
    if not path or not Path(path, "comfy", "model_base.py").is_file():
        raise RuntimeError(
            "COMFYUI_PATH must point at a ComfyUI 0.33.0 checkout; run through scripts/test.sh or scripts/demo.sh, "
            "which find or fetch it."
        )
    return Path(path)


def start(extra_custom_node_dirs=(), root: str | None = None, verbose: bool = False) -> Comfy:
    """Import ComfyUI (once per process), load this pack and ``extra_custom_node_dirs``."""
    global _COMFY
    if _COMFY is not None:
        return _COMFY
    comfy_root = comfyui_path()
    sys.path.insert(0, str(comfy_root))
    sys.argv = [sys.argv[0], "--cpu", "--use-pytorch-cross-attention"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401  (parses the argv above)

    import utils.extra_config  # noqa: F401  (ComfyUI imports it before nodes)
    import folder_paths

    scratch = Path(root or tempfile.mkdtemp(prefix="surgun-comfy-"))
    models = scratch / "models"
    for sub in ("checkpoints", "loras", "vae", "clip", "diffusion_models"):
        (models / sub).mkdir(parents=True, exist_ok=True)
        folder_paths.folder_names_and_paths[sub] = ([str(models / sub)], folder_paths.supported_pt_extensions)
    folder_paths.set_output_directory(str(scratch / "output"))
    folder_paths.set_input_directory(str(scratch / "input"))
    folder_paths.set_temp_directory(str(scratch / "temp"))
    folder_paths.set_user_directory(str(scratch / "user"))

    # the pack is loaded from a custom_nodes folder, as ComfyUI-Manager installs it
    pack_parent = scratch / "custom_nodes"
    pack_parent.mkdir(exist_ok=True)
    link = pack_parent / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    pack.share_with_comfyui(os.path.join(str(pack_parent), PACK_DIR_NAME))  # ComfyUI's modules are surgun_pack's
    folder_paths.folder_names_and_paths["custom_nodes"] = ([str(pack_parent), *map(str, extra_custom_node_dirs)], set())

    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
    import execution
    import nodes
    import server as comfy_server

    stub = StubServer()
    comfy_server.PromptServer.instance = stub
    _install_progress_hook(stub)
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    missing = [n for n in ("SurgUnTrain", "SurgUnApplyErasedWeights") if n not in nodes.NODE_CLASS_MAPPINGS]
    if missing:
        raise RuntimeError(f"the SurgUn pack did not load ({missing} missing); see the log above")
    executor = execution.PromptExecutor(stub, cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    _COMFY = Comfy(root=scratch, models_dir=models, executor=executor, server=stub)
    return _COMFY
