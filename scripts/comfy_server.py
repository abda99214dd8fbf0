"""A real ComfyUI server (main.py --cpu on 127.0.0.1) with this pack installed, for the e2e and
browser tests and for scripts/build_workflows.py.

The pack is reached through an extra model paths file (``custom_nodes: pack``, where
``pack/ComfyUI-SurgUn`` links to this repository), exactly as a user's custom_nodes folder would
hold it. Tiny checkpoints (scripts/make_tiny_checkpoint.py) stand in for the real ones under the
file names the workflows use.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_FOLDER = "ComfyUI-SurgUn"
log = logging.getLogger("SurgUn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: Path, port: int, proc: subprocess.Popen, log_path: Path):
        self.base, self.port, self.proc, self.log = base, port, proc, log_path
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, payload: dict | None = None):
        data = json.dumps(payload or {}).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait_history(self, prompt_id: str, timeout: float = 300) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                if h[prompt_id]["status"].get("status_str") in ("success", "error"):
                    return h[prompt_id]
            if self.proc.poll() is not None:
                raise RuntimeError("server died:\n" + self.log_tail())
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s\n" + self.log_tail())

    def rss_mb(self) -> float:
        """Resident memory of the server process (VmRSS), in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# the frontend's settings for the default user: a returning user (no first-run template browser
# over the canvas) and graphs drawn in full detail at any zoom (for screenshots)
FRONTEND_SETTINGS = {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 1, "Comfy.Minimap.Visible": False}


def start_server(base: Path, comfy_path: str | os.PathLike, checkpoints: tuple[str, ...] = ("tiny_sd15.safetensors",),
                 extra_args: tuple[str, ...] = (), timeout: float = 180, settings: dict | None = None,
                 extra_node_packs: tuple[Path, ...] = ()) -> Server:
    """Start ComfyUI with the pack under ``base`` (a fresh folder); every name in ``checkpoints``
    is a tiny SD1.5 checkpoint (one file, the other names link to it); ``settings`` are the
    frontend settings of the default user (default FRONTEND_SETTINGS); ``extra_node_packs`` are
    test-only custom-node folders loaded beside the pack. Raises RuntimeError when the server does
    not come up, with the end of its log."""
    base = Path(base)
    (base / "pack").mkdir(parents=True, exist_ok=True)
    link = base / "pack" / PACK_FOLDER
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    for node_pack in extra_node_packs:
        if not (base / "pack" / node_pack.name).exists():
            (base / "pack" / node_pack.name).symlink_to(node_pack, target_is_directory=True)
    for sub in ("models/checkpoints", "models/loras", "input", "output", "user", "custom_nodes"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ckpt_dir = base / "models" / "checkpoints"
    first = ckpt_dir / checkpoints[0]
    if not first.exists():
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_tiny_checkpoint.py"), str(first)],
                       check=True, env=env, capture_output=True)
    for name in checkpoints[1:]:
        if not (ckpt_dir / name).exists():
            (ckpt_dir / name).symlink_to(first.name)
    user = base / "user" / "default"
    user.mkdir(parents=True, exist_ok=True)
    (user / "comfy.settings.json").write_text(json.dumps(FRONTEND_SETTINGS if settings is None else settings, indent=1))
    paths = base / "extra_model_paths.yaml"
    paths.write_text(f"surgun_test:\n  base_path: {base}\n  custom_nodes: pack\n")
    port = free_port()
    log_path = base / "server.log"
    extra = list(extra_args)
    front_end = os.environ.get("SURGUN_FRONT_END_ROOT")
    if front_end:  # an older release's frontend, when trying older ComfyUI releases
        extra += ["--front-end-root", front_end]
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--extra-model-paths-config", str(paths), "--base-directory", str(base),
         "--use-pytorch-cross-attention", "--disable-api-nodes", *extra],
        cwd=str(comfy_path), env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
    )
    srv = Server(base, port, proc, log_path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            srv.get("/system_stats")
            return srv
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("ComfyUI did not start:\n" + srv.log_tail())
            time.sleep(0.5)
