"""A real ComfyUI server (main.py --cpu on 127.0.0.1) with this pack visible through an
extra model paths file, started once per session and stopped afterwards.

Beside the pack, the server loads the test-only nodes of tests/fixtures/e2e_nodes (hashes of a
MODEL's weights and of images, for the battery's untouched-model checks); they are not part of
the pack."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
E2E_NODES = REPO / "tests" / "fixtures" / "e2e_nodes"
sys.path.insert(0, str(REPO / "scripts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: Path, port: int, proc: subprocess.Popen, log: Path):
        self.base, self.port, self.proc, self.log = base, port, proc, log
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


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        pytest.fail("COMFYUI_PATH is not set; run the tests through scripts/test.sh")
    base = tmp_path_factory.mktemp("server")
    # the pack lives in its own folder, reached only through the extra model paths file
    (base / "pack").mkdir()
    (base / "pack" / "ComfyUI-SurgUn").symlink_to(REPO, target_is_directory=True)
    for node_pack in E2E_NODES.iterdir():
        if (node_pack / "__init__.py").is_file():
            (base / "pack" / node_pack.name).symlink_to(node_pack, target_is_directory=True)
    for sub in ("models/checkpoints", "models/loras", "input", "output", "user", "custom_nodes"):
        (base / sub).mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_tiny_checkpoint.py"), str(base / "models" / "checkpoints" / "tiny_sd15.safetensors")],
        check=True, env=env, capture_output=True,
    )
    paths = base / "extra_model_paths.yaml"
    paths.write_text(
        "surgun_e2e:\n"
        f"  base_path: {base}\n"
        "  custom_nodes: pack\n"
    )
    port = free_port()
    log = base / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--extra-model-paths-config", str(paths), "--base-directory", str(base),
         "--use-pytorch-cross-attention", "--disable-api-nodes"],
        cwd=comfy_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    srv = Server(base, port, proc, log)
    deadline = time.monotonic() + 180
    while True:
        try:
            srv.get("/system_stats")
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("ComfyUI did not start:\n" + srv.log_tail())
            time.sleep(0.5)
    yield srv
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
