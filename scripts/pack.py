"""Import this pack as the package ``surgun_pack``, whatever its folder is called.

ComfyUI loads a custom-node folder under a module name made from the folder's path, so the
pack's modules have no importable name of their own, and putting the repository root on
``sys.path`` would let the pack's ``nodes/`` shadow ComfyUI's ``nodes.py``. Tests, benchmarks
and scripts therefore call :func:`load` and import ``surgun_pack.<module>``.

When ComfyUI loads the pack as well (the headless executor), :func:`share_with_comfyui` makes
ComfyUI's name for the pack resolve to the same module objects, so a class or a cache is never
loaded twice.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from pathlib import Path

NAME = "surgun_pack"
REPO = Path(__file__).resolve().parents[1]


def load():
    """The pack as the package ``surgun_pack`` (imported once; importing it does no work)."""
    if NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(NAME, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[NAME]


class _SameModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``<ComfyUI's name for the pack>.<sub>`` to the already loaded ``surgun_pack.<sub>``."""

    def __init__(self, comfy_name: str):
        self.prefix = comfy_name + "."

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(self.prefix):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{NAME}.{spec.name[len(self.prefix):]}")

    def exec_module(self, module):
        pass  # already executed under its own name


def share_with_comfyui(pack_dir: str) -> None:
    """Call before ComfyUI loads the pack from ``pack_dir`` (a custom_nodes entry pointing here)."""
    load()
    comfy_name = str(pack_dir).replace(".", "_x_")  # how ComfyUI's load_custom_node names a folder
    if not any(isinstance(f, _SameModules) and f.prefix == comfy_name + "." for f in sys.meta_path):
        sys.meta_path.insert(0, _SameModules(comfy_name))
