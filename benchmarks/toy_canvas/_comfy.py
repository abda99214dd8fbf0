"""Make ComfyUI importable (lazily, without side effects at import time)."""

from __future__ import annotations

import os
import sys

DEFAULT_COMFYUI_PATH = os.path.join(os.path.expanduser("~"), ".cache", "surgun", "comfyui-783545f6")


def comfyui_path() -> str:
    return os.environ.get("COMFYUI_PATH", DEFAULT_COMFYUI_PATH)


def ensure_comfy() -> None:
    """Put ComfyUI on sys.path and initialise its options (CPU by default).

    A no-op when ``comfy`` is already importable and initialised (e.g. inside a
    running ComfyUI server, where the server parsed its own arguments).
    """
    if "comfy.model_management" in sys.modules:
        return
    try:
        import comfy  # noqa: F401  (already on the path: e.g. a ComfyUI process)
        on_path = True
    except ImportError:
        on_path = False
    if not on_path:
        path = comfyui_path()
        if not os.path.isfile(os.path.join(path, "comfy", "model_base.py")):
            raise ImportError(f"ComfyUI not found at {path!r}; set COMFYUI_PATH")
        sys.path.insert(0, path)
    if "comfy.options" not in sys.modules or "comfy.cli_args" not in sys.modules:
        saved = sys.argv
        try:
            sys.argv = ["main.py"] + ([] if os.environ.get("TOY_CANVAS_GPU") else ["--cpu"])
            import comfy.options
            comfy.options.enable_args_parsing()
            import comfy.cli_args  # noqa: F401  (parses sys.argv once)
        finally:
            sys.argv = saved
