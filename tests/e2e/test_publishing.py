"""What the Comfy Registry and ComfyUI-Manager see of this repository: `comfy node validate`
(comfy-cli) passes, the archive `comfy node pack` makes is small and holds the pack without the
development folders, and the Manager's node scanner finds exactly the pack's nodes."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMFY_CLI = Path(sys.executable).parent / "comfy"
PACK_MODULE = "ComfyUI-SurgUn"


def cli_env(tmp_path) -> dict:
    # comfy-cli keeps its config under the home folder, and ruff (run by validate) its cache in the cwd
    return {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config"), "RUFF_NO_CACHE": "true"}


def test_comfy_node_validate_passes(tmp_path):
    res = subprocess.run([str(COMFY_CLI), "--skip-prompt", "node", "validate"], cwd=REPO, env=cli_env(tmp_path),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "All validation checks passed" in out and "Security warnings" not in out and "Warning" not in out, out


def test_registry_metadata_points_at_real_things(server):
    from comfy_cli.registry.config_parser import extract_node_configuration

    config = extract_node_configuration(str(REPO / "pyproject.toml"))
    repo_url = config.project.urls.repository
    assert config.project.urls.issues == repo_url + "/issues"
    # kept by the registry only in its own format (else it warns and drops it); a lower bound at or below
    # the release these tests run on
    bound = re.fullmatch(r">=(\d+)\.(\d+)\.(\d+)", config.project.supported_comfyui_version)
    assert bound, config.project.supported_comfyui_version
    running = server.get("/system_stats")["system"]["comfyui_version"]
    assert tuple(map(int, bound.groups())) <= tuple(map(int, running.split(".")[:3]))
    icon_url = config.tool_comfy.icon
    raw_prefix = repo_url.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    assert icon_url.startswith(raw_prefix), icon_url
    from PIL import Image

    with Image.open(REPO / icon_url[len(raw_prefix):]) as icon:  # the file the URL serves once pushed
        assert icon.width == icon.height <= 400


def packed(tmp_path) -> zipfile.ZipFile:
    """The archive `comfy node pack` writes (its own zip_files: git-tracked files minus .comfyignore)."""
    out = tmp_path / "node.zip"
    code = ("import sys; from comfy_cli.file_utils import zip_files; "
            "from comfy_cli.registry.config_parser import extract_node_configuration; "
            "c = extract_node_configuration(); zip_files(sys.argv[1], includes=c.tool_comfy.includes)")
    subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, env=cli_env(tmp_path), check=True,
                   capture_output=True, timeout=300)
    return zipfile.ZipFile(out)


def test_registry_archive_is_under_a_megabyte_and_holds_the_pack_only(tmp_path):
    archive = packed(tmp_path)
    names = archive.namelist()
    size = Path(archive.filename).stat().st_size
    assert size < 1_000_000, f"the archive is {size / 1e6:.2f} MB"
    assert not [n for n in names if n.split("/")[0] in ("benchmarks", "tests", ".ci", "docs", "surgun_diffusers")]
    for needed in ("__init__.py", "pyproject.toml", "LICENSE", "nodes/train_node.py", "surgun_comfy/events.py",
                   "surgun_core/train.py", "web/js/surgun.js"):
        assert needed in names, needed
    workflows = sorted(p.name for p in (REPO / "workflows").iterdir())
    assert sorted(n[len("workflows/"):] for n in names if n.startswith("workflows/")) == workflows
    assert any(n.startswith("surgun_core/pools/") for n in names)


def scanner_nodes(source: str) -> set[str]:
    """The node ids ComfyUI-Manager's scanner (scanner.py, 2.0.x) reads from one file: string literals
    given as node_id (its regex), classes that subclass ``ComfyNode`` by name (their Schema node_id, else the class name),
    and NODE_CLASS_MAPPINGS keys."""
    found = set(re.findall(r'node_id\s*=\s*["\']([^"\']+)["\']', source))
    found |= set(re.findall(r'_CLASS_MAPPINGS\s*\[\s*["\']([^"\']+)["\']\s*\]', source))
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith("_CLASS_MAPPINGS") for t in node.targets):
            if isinstance(node.value, ast.Dict):
                found |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
        if not isinstance(node, ast.ClassDef):
            continue
        if not any((isinstance(b, ast.Name) and b.id == "ComfyNode") or (isinstance(b, ast.Attribute) and b.attr == "ComfyNode")
                   for b in node.bases):
            continue
        ids = [kw.value.value for call in ast.walk(node) if isinstance(call, ast.Call)
               and getattr(call.func, "attr", getattr(call.func, "id", None)) == "Schema"
               for kw in call.keywords if kw.arg == "node_id" and isinstance(kw.value, ast.Constant)]
        found |= set(ids[:1]) if ids else {node.name}
    return found


def test_manager_scanner_finds_exactly_the_nodes_the_pack_registers(server):
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert tracked, "git ls-files found no .py files"
    scanned = set()
    for path in tracked:
        scanned |= scanner_nodes((REPO / path).read_text(encoding="utf-8"))
    info = server.get("/object_info")
    registered = {name for name, spec in info.items() if PACK_MODULE in str(spec.get("python_module", ""))}
    assert len(registered) == 6, registered
    assert scanned == registered
