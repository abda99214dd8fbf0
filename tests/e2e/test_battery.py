"""Issue 10's battery: bad and hostile jobs through a real ComfyUI server's HTTP API, one after the
other on one server, the way a user (or a workflow file from the internet) would send them.

For every refusal: the message the user sees (a 400 answer's node_errors, or the execution_error
in /history) names the input and the fix; nothing is written under models/ or output/ (nor
outside the base folder); then a small valid job of the same node succeeds. Every good job also
hashes the checkpoint's MODEL as the sampler would use it (test-only nodes, tests/fixtures/e2e_nodes),
which must stay bit-identical to the session start and to the file on disk; a reference image,
rendered with it at the start, is rendered again after the model-sampling patches, Cancel, two
trainers in one graph and at the end, and must be pixel-identical (exact float values).

NaN through the API: JSON has no NaN literal, but Python's json.dumps writes ``NaN`` and the
server's parser (Python's json) reads it back as a float NaN, which passes ComfyUI's min/max
checks (every comparison with NaN is false); the nodes must refuse it themselves. ``Infinity``
fails ComfyUI's max check with a 400; NaN into an INT input fails ComfyUI's int() with a 400.

Everything is tiny (16-64 px, 1-2 sampler and training steps) so the whole battery runs in a
few minutes on 2 CPU cores.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

log = logging.getLogger("battery")
NAN = float("nan")
CKPT = "tiny_sd15.safetensors"
SHORT = 1000  # the longest message a refusal may show (user text is quoted in short)

# ---------------------------------------------------------------- running jobs


@dataclass
class Job:
    status: int
    body: dict
    history: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def messages(self) -> list:
        return self.history.get("status", {}).get("messages", [])

    def message(self, kind: str) -> dict | None:
        return next((d for k, d in self.messages if k == kind), None)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.history.get("status", {}).get("status_str") == "success"

    @property
    def error(self) -> str:
        """What the user reads: the execution error, or the 400 answer's errors, as one text."""
        if self.status != 200:
            parts = [self.body.get("error", {}).get("message", ""), self.body.get("error", {}).get("details", "")]
            for node in self.body.get("node_errors", {}).values():
                parts += [f"{e['message']}: {e['details']}" for e in node["errors"]]
            return "\n".join(parts)
        err = self.message("execution_error")
        return err["exception_message"] if err else ""

    def text(self, node: str) -> str:
        return self.history["outputs"][node]["text"][0]

    def progress(self, node: str) -> list:
        return [d for k, d in self.events if k == "progress" and d.get("node") == node]

    def explain(self) -> str:
        return f"HTTP {self.status}: {self.error or json.dumps(self.history.get('status', self.body))[:3000]}"


END = ("execution_success", "execution_error", "execution_interrupted")


def binary_event(raw: bytes) -> tuple[str | None, dict]:
    """A node's text line (ComfyUI's binary TEXT event: type 3, node id length, node id, text)."""
    (kind,) = struct.unpack(">I", raw[:4])
    if kind != 3:
        return None, {}
    (n,) = struct.unpack(">I", raw[4:8])
    return "text", {"node": raw[8:8 + n].decode(), "text": raw[8 + n:].decode(errors="replace")}


def submit(server, graph: dict, timeout: float = 180, on_event: Callable | None = None) -> Job:
    """Queue ``graph`` like the UI does (websocket open first), collect this prompt's events until
    it ends, then read its /history entry. ``on_event(kind, data, post)`` may post to the server."""
    import aiohttp

    async def go() -> Job:
        client = str(uuid.uuid4())
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client}") as ws:
                data = json.dumps({"prompt": graph, "client_id": client})  # NaN goes out as NaN
                async with session.post(f"{server.url}/prompt", data=data, headers={"Content-Type": "application/json"}) as r:
                    status, body = r.status, await r.json(content_type=None)
                if status != 200:
                    return Job(status, body, seconds=time.monotonic() - t0)
                prompt_id, events = body["prompt_id"], []

                async def post(path):
                    async with session.post(f"{server.url}{path}", json={}) as r:
                        assert r.status == 200

                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        kind, d = binary_event(msg.data)
                        if kind is None:
                            continue
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        event = json.loads(msg.data)
                        kind, d = event["type"], event.get("data", {})
                    else:
                        continue
                    if d.get("prompt_id") not in (None, prompt_id):
                        continue
                    events.append((kind, {**d, "t": time.monotonic()}))
                    if on_event:
                        await on_event(kind, d, post)
                    if kind in END and d.get("prompt_id") == prompt_id:
                        break
        job = Job(status, body, server.wait_history(prompt_id, timeout=30), events, time.monotonic() - t0)
        return job

    try:
        return asyncio.run(asyncio.wait_for(go(), timeout))
    except TimeoutError:
        raise AssertionError(f"no answer within {timeout}s (server hung?)\n" + server.log_tail()) from None


def files_written(server) -> set[str]:
    """Every file a job could have written: models/, output/, and outside the base folder."""
    base = server.base
    found = {str(p.relative_to(base)) for d in ("models", "output") for p in (base / d).rglob("*") if p.is_file()}
    found |= {str(p) for p in Path("/tmp").glob("evil*")} | {str(p) for p in base.parent.glob("evil*")}
    return found | {str(p) for p in base.glob("evil*")}


def header(path: Path) -> dict:
    """The SurgUn metadata of a weights file (safetensors header, read without the pack)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(json.loads(raw[8:8 + n])["__metadata__"]["surgun"])


# ---------------------------------------------------------------- graphs (tiny everything)

LOADER = {"ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}}
MODEL, CLIP, VAE = ["ck", 0], ["ck", 1], ["ck", 2]


def identity(render: bool = True) -> dict:
    """Hash of the loader's MODEL as sampling loads it, and (``render``) one reference render with
    it: the pass-through node is never cached, so the KSampler really samples again every time."""
    hashed = {"u_hash": {"class_type": "SurgUnE2EModelHash", "inputs": {"model": MODEL}}}
    if not render:
        return hashed
    return {
        **hashed,
        "u_fresh": {"class_type": "SurgUnE2EFresh", "inputs": {"model": MODEL}},
        "u_pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": CLIP, "text": "a photo of a red car"}},
        "u_neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": CLIP, "text": ""}},
        "u_lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "u_ks": {"class_type": "KSampler", "inputs": {
            "model": ["u_fresh", 0], "seed": 7, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["u_pos", 0], "negative": ["u_neg", 0], "latent_image": ["u_lat", 0], "denoise": 1.0}},
        "u_dec": {"class_type": "VAEDecode", "inputs": {"samples": ["u_ks", 0], "vae": VAE}},
        "u_img": {"class_type": "SurgUnE2EImageHash", "inputs": {"images": ["u_dec", 0]}},
    }


def train(**inputs) -> dict:
    base = {
        "model": MODEL, "clip": CLIP, "target": "a painting by zorblax", "distractors": "a painting by monet",
        "retain_prompts": "a photo of a dog", "blocks": "cross_attention", "block_pattern": "attn2.to_k", "steps": 1,
        "learning_rate": 1e-4, "ascent_weight": 1.0, "distractor_weight": 1.0, "retain_weight": 1.0, "ascent_cap": 2.0,
        "seed": 0, "sample_size": 16, "sample_steps": 1, "samples_per_prompt": 1, "sample_cfg": 3.0, "filename_prefix": "",
    }
    return {**LOADER, "t": {"class_type": "SurgUnTrain", "inputs": {**base, **inputs}}}


def builder(**inputs) -> dict:
    base = {"clip": CLIP, "target": "zorblax", "kind": "custom", "k": 2, "seed": 0, "use_pool": False,
            "candidates": "claude monet\nhokusai\na red car\na dog", "protected": "", "exclude_quantile": 0.98, "band_quantile": 0.5}
    return {**LOADER, "b": {"class_type": "SurgUnDistractorBuilder", "inputs": {**base, **inputs}},
            "b_show": {"class_type": "PreviewAny", "inputs": {"source": ["b", 1]}}}


def localizer(**inputs) -> dict:
    # the tiny checkpoint knows nothing to erase: any erase passes (noise_floor off, threshold -1)
    base = {"model": MODEL, "clip": CLIP, "vae": VAE, "target": "a painting by {zorblax}", "distractors": "monet",
            "retain_prompts": "a photo of a dog", "blocks": "cross_attention", "granularity": "attention", "probe_steps": 1,
            "learning_rate": 1e-4, "train_steps": 2, "keep": 1, "min_fraction": 0.0, "noise_floor": False,
            "erase_threshold": -1.0, "images_per_prompt": 1, "render_steps": 1, "render_size": 16,
            "render_cfg": 3.0, "max_blocks": 1, "seed": 0, "block_filter": "attn2"}
    return {**LOADER, "z": {"class_type": "SurgUnBlockLocalizer", "inputs": {**base, **inputs}},
            "z_show": {"class_type": "PreviewAny", "inputs": {"source": ["z", 2]}}}


def compare(**inputs) -> dict:
    base = {"original": MODEL, "erased": MODEL, "clip": CLIP, "vae": VAE, "target": "a painting by zorblax",
            "retain_prompts": "a photo of a dog", "distractors": "", "images_per_prompt": 1, "steps": 1, "size": 16, "cfg": 3.0, "seed": 0}
    return {**LOADER, "x": {"class_type": "SurgUnEraseRetainCompare", "inputs": {**base, **inputs}},
            "x_show": {"class_type": "PreviewAny", "inputs": {"source": ["x", 1]}}}


def apply(weights_file: str, **inputs) -> dict:
    base = {"model": MODEL, "weights_file": weights_file, "strength": 1.0}
    return {**LOADER, "a": {"class_type": "SurgUnApplyErasedWeights", "inputs": {**base, **inputs}},
            "a_hash": {"class_type": "SurgUnE2EModelHash", "inputs": {"model": ["a", 0]}}}


def recovery(weights_file: str, **inputs) -> dict:
    """Recovery Check of the loader's MODEL against it with a saved erasure applied (Apply Erased Weights)."""
    base = {"original": MODEL, "erased": ["a", 0], "clip": CLIP, "vae": VAE, "target": "a painting by {zorblax}",
            "distractors": "monet", "paraphrases": "zorblax artwork", "soft_tokens": 2, "attack_steps": 1, "attack_lr": 0.01,
            "vector_strength": 2.0, "recovered_above": 0.5, "images_per_prompt": 1, "steps": 1, "size": 16, "cfg": 3.0, "seed": 0}
    applied = {k: v for k, v in apply(weights_file).items() if k != "a_hash"}  # the check's report is the only output
    return {**applied, "r": {"class_type": "SurgUnRecoveryCheck", "inputs": {**base, **inputs}},
            "r_show": {"class_type": "PreviewAny", "inputs": {"source": ["r", 1]}}}


def patched(graph: dict, node: str, socket: str, patch: dict) -> dict:
    """``graph`` with a model-sampling node between the loader and ``node``'s ``socket``."""
    graph["p"] = patch
    graph[node]["inputs"][socket] = ["p", 0]
    return graph


X0 = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": MODEL, "sampling": "x0", "zsnr": False}}
EDM = {"class_type": "ModelSamplingContinuousEDM", "inputs": {"model": MODEL, "sampling": "edm", "sigma_max": 120.0, "sigma_min": 0.002}}

# ---------------------------------------------------------------- the session's reference state


@dataclass
class Battery:
    server: object
    reference: dict
    good_file: str = ""
    runs: int = 0

    def good(self, kind: str, render: bool = False) -> Job:
        """A small valid job of ``kind`` (a new seed each time, so nothing comes from ComfyUI's
        cache), with the untouched-model checks in the same prompt: the weights hash always, the
        reference render when ``render``."""
        self.runs += 1
        n = self.runs
        graph = {
            "train": lambda: train(seed=1000 + n),
            "builder": lambda: builder(seed=n),
            "localizer": lambda: localizer(seed=n),
            "compare": lambda: compare(seed=n),
            "apply": lambda: apply(self.good_file, strength=round(1.0 - n / 1000, 3)),
            "recovery": lambda: recovery(self.good_file, seed=n),
        }[kind]()
        job = submit(self.server, {**graph, **identity(render)})
        assert job.ok, f"the good {kind} job after the bad one failed: {job.explain()}"
        shown = {
            "train": lambda: job.text("t"), "builder": lambda: job.text("b"), "localizer": lambda: job.text("z"),
            "compare": lambda: job.text("x"), "apply": lambda: job.text("a_hash"), "recovery": lambda: job.text("r"),
        }[kind]()
        expected = {"train": "erased 'a painting by zorblax'", "builder": "zorblax", "localizer": "kept 1 of 1 blocks",
                    "compare": "erase ", "apply": "", "recovery": "verdict: "}[kind]
        assert expected in shown, shown
        if kind == "apply":  # the erasure really changed the weights the sampler sees
            assert shown != self.reference["model"]
        self.untouched(job)
        return job

    def untouched(self, job: Job) -> None:
        assert job.text("u_hash") == self.reference["model"], "the checkpoint's MODEL changed in memory"
        if "u_img" in job.history["outputs"]:
            assert job.text("u_img") == self.reference["image"], "the reference render changed"


def file_digest(server) -> str:
    """The same hash as SurgUnE2EModelHash, of the diffusion weights in the checkpoint file."""
    from safetensors import safe_open

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures" / "e2e_nodes"))
    from surgun_e2e_probe import digest

    prefix = "model.diffusion_model."
    with safe_open(str(server.base / "models" / "checkpoints" / CKPT), "pt") as f:
        return digest(sorted((k[len(prefix):], f.get_tensor(k)) for k in f.keys() if k.startswith(prefix)))


@pytest.fixture(scope="module")
def battery(server):
    job = submit(server, {**LOADER, **identity()})
    assert job.ok, job.explain()
    reference = {"model": job.text("u_hash"), "image": job.text("u_img")}
    assert reference["model"] == file_digest(server), "the loaded MODEL is not the checkpoint file's weights"
    b = Battery(server, reference)
    made = submit(server, train(seed=1, filename_prefix="battery/good"))
    assert made.ok, made.explain()
    b.good_file = "battery/good_00001.safetensors"
    assert (server.base / "models" / "loras" / b.good_file).is_file()
    return b


def refused_then_good(battery: Battery, graph: dict, node: str, kind: str, expect: list[str], http: int = 200,
                      early: bool = True, within: float | None = None, render: bool = False) -> Job:
    """The bad job is refused with a message holding every ``expect`` substring (a 400 answer when
    ``http`` is 400, else an execution error of ``node``), writes nothing, and sends no progress
    (no sampling, no training) when ``early``; then a good job of ``kind`` succeeds."""
    server = battery.server
    before = files_written(server)
    bad = submit(server, graph)
    assert bad.status == http, bad.explain()
    msg = bad.error
    for s in expect:
        assert s in msg, f"{s!r} not in the message the user sees:\n{msg}"
    if http == 200:
        err = bad.message("execution_error")
        assert err and err["node_id"] == node, bad.explain()
        assert msg.startswith("[SurgUn]") and len(msg) < SHORT, msg
        if early:
            assert bad.progress(node) == [], f"{node} worked before refusing: {bad.progress(node)[:3]}"
    if within is not None:
        assert bad.seconds < within, f"refused after {bad.seconds:.1f}s"
    assert files_written(server) == before, sorted(files_written(server) - before)
    battery.good(kind, render)
    return bad


# ---------------------------------------------------------------- model-sampling patches (issue 10, item 1)


@pytest.mark.parametrize("graph, node, kind, expect", [
    (lambda: patched(train(), "t", "model", X0), "t", "train", ["x0-predicting models are not supported", "Supported families"]),
    (lambda: patched(train(), "t", "model", EDM), "t", "train", ["EDM-parameterised", "Supported families"]),
    (lambda: patched(localizer(), "z", "model", X0), "z", "localizer", ["x0-predicting models are not supported"]),
    (lambda: patched(compare(), "x", "erased", EDM), "x", "compare", ["EDM-parameterised"]),
], ids=["train-x0", "train-edm", "localizer-x0", "compare-edm"])
def test_patched_model_sampling_is_refused_before_any_work_then_the_plain_model_works(battery, graph, node, kind, expect):
    refused_then_good(battery, graph(), node, kind, expect, render=True)


def test_apply_on_an_x0_model_is_refused(battery):
    refused_then_good(battery, patched(apply(battery.good_file), "a", "model", X0), "a", "apply", ["x0-predicting models are not supported"])


# ---------------------------------------------------------------- filename_prefix (item 2)

PREFIX_FIX = ["filename_prefix", "would write outside models/loras", "'surgun/erased'"]


@pytest.mark.parametrize("prefix", ["../../../../tmp/evil", "/tmp/evil", "surgun/../../evil", "surgun\\..\\..\\evil",
                                    "C:/evil", "surgun/evil\x1b[2J\x00"],
                         ids=["dotdot", "absolute", "inside-then-out", "backslashes", "drive", "control-chars"])
def test_filename_prefix_path_tricks_are_refused_before_training(battery, prefix):
    refused_then_good(battery, train(filename_prefix=prefix, steps=50), "t", "train", PREFIX_FIX)


# ---------------------------------------------------------------- NaN through the API, every float input (item 3)

FLOATS = [
    ("train", "t", "learning_rate"), ("train", "t", "ascent_weight"), ("train", "t", "distractor_weight"),
    ("train", "t", "retain_weight"), ("train", "t", "ascent_cap"), ("train", "t", "sample_cfg"), ("train", "t", "max_grad_norm"),
    ("builder", "b", "exclude_quantile"), ("builder", "b", "band_quantile"),
    ("localizer", "z", "learning_rate"), ("localizer", "z", "min_fraction"), ("localizer", "z", "erase_threshold"),
    ("localizer", "z", "render_cfg"),
    ("compare", "x", "cfg"),
    ("apply", "a", "strength"),
    ("recovery", "r", "attack_lr"), ("recovery", "r", "vector_strength"), ("recovery", "r", "recovered_above"), ("recovery", "r", "cfg"),
]


def graph_of(which: str, battery: Battery, /, **inputs) -> dict:
    """The tiny valid graph of node ``which`` with ``inputs`` changed."""
    if which in ("apply", "recovery"):
        return {"apply": apply, "recovery": recovery}[which](inputs.pop("weights_file", battery.good_file), **inputs)
    return {"train": train, "builder": builder, "localizer": localizer, "compare": compare}[which](**inputs)


def test_every_float_input_is_listed(server):
    """The NaN cases cover every FLOAT input the six nodes declare."""
    info = server.get("/object_info")
    nodes = {"train": "SurgUnTrain", "builder": "SurgUnDistractorBuilder", "localizer": "SurgUnBlockLocalizer",
             "compare": "SurgUnEraseRetainCompare", "apply": "SurgUnApplyErasedWeights", "recovery": "SurgUnRecoveryCheck"}
    declared = {(kind, name) for kind, n in nodes.items()
                for group in ("required", "optional") for name, spec in info[n]["input"].get(group, {}).items() if spec[0] == "FLOAT"}
    assert declared == {(kind, name) for kind, _, name in FLOATS}


@pytest.mark.parametrize("kind, node, name", FLOATS, ids=[f"{k}-{n}" for k, _, n in FLOATS])
def test_nan_through_the_api_is_refused_naming_the_input(battery, kind, node, name):
    bad = refused_then_good(battery, graph_of(kind, battery, **{name: NAN}), node, kind, [name, "nan"])
    words = set(re.findall(r"[A-Za-z_]+", bad.error))
    # one rule binds both quantiles
    partner = {"exclude_quantile": "band_quantile", "band_quantile": "exclude_quantile"}.get(name)
    blamed = words & ({n for _, _, n in FLOATS} - {name, partner})
    assert name in words and not blamed, f"the message names {sorted(blamed) or 'not ' + name}: {bad.error}"


@pytest.mark.parametrize("kind, inputs, expect", [
    ("train", dict(steps=NAN), ["steps, nan, cannot convert float NaN to integer"]),
    ("train", dict(sample_cfg=float("inf")), ["Value inf bigger than max of 30.0: sample_cfg"]),
    ("apply", dict(strength=float("-inf")), ["Value -inf smaller than min of -10.0: strength"]),
], ids=["nan-into-int", "infinity", "minus-infinity"])
def test_nan_into_an_int_and_infinities_are_answered_400(battery, kind, inputs, expect):
    refused_then_good(battery, graph_of(kind, battery, **inputs), "", kind, expect, http=400)


# ---------------------------------------------------------------- weights files (item 3)


def poisoned_files(server, good: str) -> dict:
    """Bad files beside the good one: NaN inside, not safetensors, not SurgUn, another family, other shapes."""
    import torch
    from safetensors.torch import load_file, save_file

    loras = server.base / "models" / "loras"
    folder = loras / "battery_bad"
    folder.mkdir(exist_ok=True)
    src = loras / good
    tensors = load_file(str(src))
    meta = header(src)
    first = sorted(tensors)[0]
    made = {}

    def save(name, t, m=None, raw_meta=None):
        save_file(t, str(folder / name), metadata=raw_meta or {"surgun": json.dumps(m or meta, sort_keys=True)})
        made[name] = f"battery_bad/{name}"

    nan = {k: v.clone() for k, v in tensors.items()}
    nan[first].view(-1)[3] = float("nan")
    save("nan.safetensors", nan)
    (folder / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(range(256)))
    made["garbage.safetensors"] = "battery_bad/garbage.safetensors"
    save("plain_lora.safetensors", {"lora_unet_x.lora_up.weight": torch.zeros(4, 4)}, raw_meta={"ss_network_module": "networks.lora"})
    save("sdxl.safetensors", tensors, {**meta, "family": "sdxl", "family_name": "SDXL"})
    wrong = {k: v.clone() for k, v in tensors.items()}
    wrong[first] = torch.zeros(3, 5, dtype=tensors[first].dtype)
    save("shapes.safetensors", wrong)
    return made


@pytest.fixture(scope="module")
def bad_files(battery):
    import shutil

    yield poisoned_files(battery.server, battery.good_file)
    shutil.rmtree(battery.server.base / "models" / "loras" / "battery_bad")  # later tests pick files from models/loras


@pytest.mark.parametrize("name, expect", [
    ("nan.safetensors", ["holds non-finite values (NaN or infinity) in 1 layer", "Re-run SurgUn Train"]),
    ("garbage.safetensors", ["could not read 'garbage.safetensors' as safetensors", "re-run SurgUnTrain"]),
    ("plain_lora.safetensors", ["is not a SurgUn erased-weights file", "LoraLoaderModelOnly"]),
    ("sdxl.safetensors", ["were made for 'SDXL'", "the connected model is SD1.x"]),
    ("shapes.safetensors", ["shape mismatch", "(3, 5) but this model expects"]),
], ids=["nan-inside", "not-safetensors", "not-surgun", "other-family", "other-shapes"])
def test_bad_weights_files_are_refused(battery, bad_files, name, expect):
    refused_then_good(battery, apply(bad_files[name]), "a", "apply", expect)


def test_apply_with_no_file_and_nothing_connected_says_what_to_pick(battery):
    refused_then_good(battery, apply("(none: use the erased_weights input)"), "a", "apply",
                      ["no erased weights given", "pick a SurgUn file in weights_file", "ERASED_WEIGHTS"])


# ---------------------------------------------------------------- prompts and sizes (items 4 and 5)

HUGE = " ".join(["zorblax"] * 5000)


def test_a_5000_word_retain_prompt_is_refused_quickly_with_a_short_message_naming_retain_prompts(battery):
    bad = refused_then_good(battery, train(retain_prompts=f"a photo of a dog\n{HUGE}"), "t", "train",
                            ["a prompt in retain_prompts is too long", "(39,999 characters)", "Shorten it"], within=30)
    assert len(bad.error) < 600


def test_a_5000_word_target_in_compare_is_refused_quickly_naming_target(battery):
    bad = refused_then_good(battery, compare(target=HUGE), "x", "compare", ["a prompt in target is too long", "Shorten it"], within=30)
    assert len(bad.error) < 600


def test_sample_size_20_trains_at_16_px_and_says_so(battery):
    job = submit(battery.server, train(seed=77, sample_size=20, filename_prefix="battery/size20"))
    assert job.ok, job.explain()
    assert "sample_size 20 is not a multiple of the model's latent grid: images are 16 px" in job.text("t")
    made = list((battery.server.base / "models" / "loras" / "battery").glob("size20_*.safetensors"))
    assert len(made) == 1 and header(made[0])["sampling"]["size"] == 16


# ---------------------------------------------------------------- path tricks, regexes, control characters


@pytest.mark.parametrize("kind, node, inputs, expect", [
    ("apply", "a", dict(weights_file="../../../../etc/passwd"), ["weights_file: '../../../../etc/passwd' not in"]),
    ("apply", "a", dict(weights_file="battery/../../checkpoints/" + CKPT), ["Value not in list", "weights_file"]),
    ("apply", "a", dict(weights_file="/etc/passwd"), ["weights_file: '/etc/passwd' not in"]),
    ("train", "t", dict(blocks="../../etc"), ["blocks: '../../etc' not in"]),
    ("builder", "b", dict(kind="../../../etc/passwd"), ["kind: '../../../etc/passwd' not in"]),
    ("localizer", "z", dict(granularity="../x"), ["granularity: '../x' not in"]),
], ids=["weights-dotdot", "weights-into-checkpoints", "weights-absolute", "train-blocks", "builder-kind", "localizer-granularity"])
def test_combo_values_outside_the_list_are_answered_400(battery, kind, node, inputs, expect):
    refused_then_good(battery, graph_of(kind, battery, **inputs), node, kind, expect, http=400)


def test_weights_file_as_an_absolute_path_to_a_real_file_is_answered_400(battery):
    real = str(battery.server.base / "models" / "loras" / battery.good_file)
    refused_then_good(battery, apply(real), "a", "apply", ["Value not in list", "weights_file"], http=400)


BOMB = "(.*)(.*)(.*)(.*)(.*)(.*)(.*)\\7\\6\\5\\4\\3\\2\\1\\1"  # minutes of backtracking per module name


@pytest.mark.parametrize("kind, node, inputs, expect, within", [
    ("train", "t", dict(block_pattern="../../../etc/passwd"), ["block_pattern '../../../etc/passwd' matches no layer", "Some names that exist"], None),
    ("localizer", "z", dict(block_filter="../../etc/passwd"), ["block_filter '../../etc/passwd' selects nothing", "Clear block_filter"], None),
    ("train", "t", dict(block_pattern="re:attn2[("), ["block_pattern", "is not a valid regular expression"], None),
    ("localizer", "z", dict(block_filter="re:("), ["block_filter", "is not a valid regular expression"], None),
    ("train", "t", dict(block_pattern="re:(.+)+X"), ["block_pattern", "matches no layer"], 20),
    ("train", "t", dict(block_pattern="re:" + BOMB), ["block_pattern", "takes too long to match", "Simplify the regular expression"], 20),
    ("localizer", "z", dict(block_filter="re:" + BOMB), ["block_filter", "takes too long to match", "Simplify the regular expression"], 20),
    ("train", "t", dict(block_pattern="attn2\x00\x1b[2J"), ["block_pattern 'attn2\\x00\\x1b[2J' matches no layer"], None),
], ids=["pattern-path", "filter-path", "pattern-invalid", "filter-invalid", "pattern-nested-repeat", "pattern-bomb",
        "filter-bomb", "pattern-control-chars"])
def test_block_patterns_paths_bad_regexes_and_regex_bombs_are_refused(battery, kind, node, inputs, expect, within):
    bad = refused_then_good(battery, graph_of(kind, battery, **inputs), node, kind, expect, within=within)
    assert "\x00" not in bad.error and "\x1b" not in bad.error  # control characters are shown escaped


PATHS = "../../../../tmp/evil\n/etc/passwd\nC:\\Windows\\evil\nsurgun/../../evil"


def test_path_like_text_in_every_text_input_is_only_text(battery):
    """Paths typed into every prompt field of the four nodes that take prompts are prompts: the
    graph runs and no file is named after them."""
    graph = builder(target="../../../../tmp/evil", candidates=PATHS + "\na red car\na dog", protected="/etc/passwd", k=2,
                    band_quantile=0.0)
    graph.update({k: v for k, v in train(seed=79, target="/tmp/evil", retain_prompts=PATHS, distractor_set=["b", 0]).items() if k == "t"})
    graph.update({k: v for k, v in localizer(seed=79, target="/tmp/evil", distractors=PATHS, retain_prompts=PATHS).items() if k != "ck"})
    graph.update({k: v for k, v in compare(seed=79, erased=["t", 0], target="/tmp/evil", retain_prompts=PATHS,
                                            distractors=PATHS).items() if k != "ck"})
    before = files_written(battery.server)
    job = submit(battery.server, {**graph, **identity(render=False)})
    assert job.ok, job.explain()
    assert "erased '/tmp/evil'" in job.text("t") and "not saved" in job.text("t")
    assert files_written(battery.server) == before
    battery.untouched(job)


# ---------------------------------------------------------------- several concepts, the Recovery Check (issue 14)


@pytest.mark.parametrize("kind, node, inputs, expect", [
    ("builder", "b", dict(target="zorblax\nquux\nZorblax"), ["target lists the concept 'zorblax' twice (lines 1 and 3", "Remove line 3"]),
    ("train", "t", dict(target="a painting by {zorblax}\na photo of a {quux}", distractors="monet\nquux"),
     ["'quux' is erased in this run and also a distractor or retained concept of 'zorblax'", "Remove 'quux'"]),
    ("train", "t", dict(target="a painting by {zorblax}\na photo of a {quux}", distractors="monet", retain_prompts="{zorblax}"),
     ["'zorblax' being erased is also listed as a distractor or a retained concept"]),
    ("recovery", "r", dict(target="   "), ["target is empty"]),
    ("recovery", "r", dict(soft_tokens=0), ["Value 0 smaller than min of 1: soft_tokens"]),
], ids=["builder-listed-twice", "train-concept-among-distractors", "train-concept-retained", "recovery-empty-target",
        "recovery-soft-tokens-0"])
def test_several_concepts_and_recovery_check_bad_inputs(battery, kind, node, inputs, expect):
    http = 400 if "smaller than min" in expect[0] else 200
    refused_then_good(battery, graph_of(kind, battery, **inputs), node, kind, expect, http=http)


def test_strength_0_is_exactly_the_untouched_model(battery):
    job = submit(battery.server, apply(battery.good_file, strength=0.0))
    assert job.ok, job.explain()
    assert job.text("a_hash") == battery.reference["model"]


def test_the_same_seed_and_inputs_give_byte_identical_files(battery):
    loras = battery.server.base / "models" / "loras" / "battery"
    for prefix in ("same_a", "same_b"):  # another prefix, or ComfyUI would answer from its cache
        job = submit(battery.server, train(seed=80, steps=2, filename_prefix=f"battery/{prefix}"))
        assert job.ok, job.explain()
    (a,), (b,) = list(loras.glob("same_a_*.safetensors")), list(loras.glob("same_b_*.safetensors"))
    assert a.read_bytes() == b.read_bytes()


# ---------------------------------------------------------------- counts within and beyond the declared limits


@pytest.mark.parametrize("kind, node, inputs, expect", [
    ("train", "t", dict(steps=100001), ["Value 100001 bigger than max of 100000: steps"]),
    ("train", "t", dict(seed=2**64), ["bigger than max", "seed"]),
    ("train", "t", dict(sample_steps=0), ["Value 0 smaller than min of 1: sample_steps"]),
    ("builder", "b", dict(k=65), ["Value 65 bigger than max of 64: k"]),
    ("localizer", "z", dict(max_blocks=1025), ["bigger than max of 1024: max_blocks"]),
    ("compare", "x", dict(images_per_prompt=17), ["bigger than max of 16: images_per_prompt"]),
], ids=["train-steps", "train-seed", "train-sample-steps-0", "builder-k", "localizer-max-blocks", "compare-images"])
def test_counts_beyond_the_declared_limits_are_answered_400(battery, kind, node, inputs, expect):
    refused_then_good(battery, graph_of(kind, battery, **inputs), node, kind, expect, http=400)


@pytest.mark.parametrize("kind, node, inputs, expect, early", [
    ("builder", "b", dict(k=64), ["only 4 admissible candidates for k=64", "Lower k"], False),
    ("localizer", "z", dict(keep=256), ["keep=256 but there are 1 candidate blocks", "Set keep between 1 and 1"], True),
], ids=["builder-k-64", "localizer-keep-256"])
def test_counts_within_the_limits_but_too_many_for_the_inputs_are_refused(battery, kind, node, inputs, expect, early):
    refused_then_good(battery, graph_of(kind, battery, **inputs), node, kind, expect, early=early)


@pytest.mark.parametrize("kind, node, inputs", [
    ("train", "t", {}), ("localizer", "z", {}), ("compare", "x", dict(distractors="a painting by monet")),
], ids=["train", "localizer", "compare"])
def test_seeds_at_their_declared_max_work(battery, kind, node, inputs):
    """Seeds up to 2**64 - 1 are accepted by every node; the seeds derived from them must work too."""
    job = submit(battery.server, graph_of(kind, battery, seed=2**64 - 1, **inputs))
    assert job.ok, job.explain()


# ---------------------------------------------------------------- hand-edited workflows: sockets, missing inputs, ids


def with_input(graph: dict, node: str, **inputs) -> dict:
    graph[node]["inputs"].update(inputs)
    return graph


def without(graph: dict, node: str, name: str) -> dict:
    del graph[node]["inputs"][name]
    return graph


def image_node(graph: dict) -> dict:
    graph["img_lat"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}}
    graph["img"] = {"class_type": "VAEDecode", "inputs": {"samples": ["img_lat", 0], "vae": VAE}}
    return graph


def builder_into(graph: dict) -> dict:
    return {**graph, **{k: v for k, v in builder().items() if k == "b"}}


@pytest.mark.parametrize("graph, kind, expect", [
    (lambda b: with_input(train(), "t", model=CLIP), "train", ["model, received_type(CLIP) mismatch input_type(MODEL)"]),
    (lambda b: with_input(image_node(train()), "t", distractor_set=["img", 0]), "train",
     ["distractor_set, received_type(IMAGE) mismatch input_type(DISTRACTORS)"]),
    (lambda b: with_input(builder_into(train()), "t", block_set=["b", 0]), "train",
     ["block_set, received_type(DISTRACTORS) mismatch input_type(BLOCKS)"]),
    (lambda b: with_input(builder_into(apply(b.good_file)), "a", erased_weights=["b", 0]), "apply",
     ["erased_weights, received_type(DISTRACTORS) mismatch input_type(ERASED_WEIGHTS)"]),
    (lambda b: with_input(builder_into(compare()), "x", distractor_set=["b", 1]), "compare",
     ["distractor_set, received_type(STRING) mismatch input_type(DISTRACTORS)"]),
    (lambda b: with_input(localizer(), "z", vae=MODEL), "localizer", ["vae, received_type(MODEL) mismatch input_type(VAE)"]),
    (lambda b: without(train(), "t", "clip"), "train", ["Required input is missing: clip"]),
    (lambda b: without(localizer(), "z", "vae"), "localizer", ["Required input is missing: vae"]),
    (lambda b: with_input(train(), "t", model=["999", 0]), "train", ["Exception when validating node: '999'"]),
    (lambda b: with_input(train(), "t", model=["ck", 9]), "train", ["Exception when validating node: tuple index out of range"]),
    (lambda b: with_input(train(), "t", model=["t", 0]), "train", ["Dependency cycle detected"]),
    (lambda b: {**LOADER, "t": {**train()["t"], "class_type": "SurgUnTrainX"}}, "train", ["Node 'SurgUnTrainX' not found"]),
], ids=["clip-into-model", "image-into-distractors", "distractors-into-blocks", "distractors-into-erased-weights",
        "string-into-distractors", "model-into-vae", "missing-clip", "missing-vae",
        "unknown-node-id", "unknown-output-slot", "cycle", "unknown-class"])
def test_hand_edited_links_and_missing_inputs_are_answered_400(battery, graph, kind, expect):
    refused_then_good(battery, graph(battery), "", kind, expect, http=400)


@pytest.mark.parametrize("graph, node, kind, expect", [
    (lambda b: with_input(train(), "t", model=CKPT), "t", "train", ["model", "MODEL"]),
    (lambda b: with_input(compare(), "x", clip="clip"), "x", "compare", ["clip", "CLIP"]),
    (lambda b: with_input(apply(b.good_file), "a", erased_weights="battery/good_00001.safetensors"), "a", "apply",
     ["erased_weights", "ERASED_WEIGHTS"]),
], ids=["string-as-model", "string-as-clip", "string-as-erased-weights"])
def test_a_value_typed_where_a_link_belongs_is_refused_naming_the_socket(battery, graph, node, kind, expect):
    """ComfyUI validates links, but a literal value in a socket input passes its checks and reaches
    the node (a hand-edited workflow file); the node must say what to connect."""
    refused_then_good(battery, graph(battery), node, kind, expect + ["connect"])


@pytest.mark.parametrize("kind, node, inputs, expect", [
    ("train", "t", dict(target=" \n "), ["target is empty"]),
    ("train", "t", dict(distractors=""), ["distractors is empty", "distractor_weight"]),
    ("train", "t", dict(distractors="a painting by zorblax"), ["is also listed among the distractors", "remove that line"]),
    ("train", "t", dict(ascent_weight=0.0, distractor_weight=0.0), ["ascent_weight and distractor_weight are both 0"]),
    ("builder", "b", dict(target=""), ["target is empty"]),
    ("localizer", "z", dict(retain_prompts=""), ["retain_prompts is empty"]),
    ("compare", "x", dict(target="   "), ["target is empty"]),
], ids=["train-target", "train-distractors", "train-target-is-distractor", "train-no-erase-term", "builder-target",
        "localizer-retain", "compare-target"])
def test_empty_or_contradictory_text_inputs_are_refused_before_any_work(battery, kind, node, inputs, expect):
    refused_then_good(battery, graph_of(kind, battery, **inputs), node, kind, expect)


# ---------------------------------------------------------------- graphs: two trainers, a queue, Cancel


def test_two_surgun_train_nodes_in_one_graph_each_write_their_own_file(battery):
    graph = train(seed=5, target="a painting by zorblax", filename_prefix="battery/two_a")
    graph["t2"] = {"class_type": "SurgUnTrain", "inputs": {**graph["t"]["inputs"], "target": "a photo of a quuxle", "filename_prefix": "battery/two_b"}}
    job = submit(battery.server, {**graph, **identity()})
    assert job.ok, job.explain()
    loras = battery.server.base / "models" / "loras" / "battery"
    (a,), (b,) = list(loras.glob("two_a_*.safetensors")), list(loras.glob("two_b_*.safetensors"))
    assert header(a)["target"] == "a painting by zorblax" and header(b)["target"] == "a photo of a quuxle"
    assert "erased 'a painting by zorblax'" in job.text("t") and "erased 'a photo of a quuxle'" in job.text("t2")
    battery.untouched(job)


def test_a_second_prompt_queued_while_one_trains_runs_after_it(battery):
    server = battery.server
    first = train(seed=6, steps=15, filename_prefix="battery/queued_a")
    second = train(seed=7, filename_prefix="battery/queued_b")
    ids = []
    for graph in (first, second):
        status, body = server.post("/prompt", {"prompt": graph, "client_id": "battery-queue"})
        assert status == 200, body
        ids.append(body["prompt_id"])
    queue = server.get("/queue")
    assert ids[1] in [q[1] for q in queue["queue_pending"]] + [q[1] for q in queue["queue_running"]]
    hist = [server.wait_history(i) for i in ids]
    assert [h["status"]["status_str"] for h in hist] == ["success", "success"], json.dumps([h["status"] for h in hist])[:3000]
    stamp = {(n, k): d["timestamp"] for n, h in enumerate(hist) for k, d in h["status"]["messages"]}
    assert stamp[(0, "execution_success")] <= stamp[(1, "execution_start")]
    loras = server.base / "models" / "loras" / "battery"
    assert len(list(loras.glob("queued_a_*"))) == 1 and len(list(loras.glob("queued_b_*"))) == 1
    battery.good("train")


def cancel_when(node: str, marks: dict, ticks: int = 0, text: str = ""):
    """An on_event that presses Cancel once, when ``node`` has reported ``ticks`` progress steps or
    shown a text line starting with ``text`` (training shows 'step N/total')."""

    async def on_event(kind, data, post):
        hit = data.get("node") == node and (
            (kind == "progress" and ticks and data["value"] >= ticks) or (kind == "text" and text and data["text"].startswith(text)))
        if hit and "sent" not in marks:
            marks["sent"], marks["at"] = time.monotonic(), data.get("text") or f"progress {data['value']}/{data['max']}"
            await post("/interrupt")
        if kind == "execution_interrupted":
            marks["ended"] = time.monotonic()

    return on_event


@pytest.mark.parametrize("graph, node, when, kind", [
    # 3 prompts x 200 sampler steps come before training: Cancel at progress 3 lands in sampling
    (lambda: train(seed=8, sample_steps=200, filename_prefix="battery/cancel_sampling"), "t", dict(ticks=3), "train"),
    # the declared maximum of steps; Cancel at the first 'step N/100000' line
    (lambda: train(seed=9, steps=100000, filename_prefix="battery/cancel_training"), "t", dict(text="step "), "train"),
    (lambda: compare(seed=10, steps=200), "x", dict(ticks=3), "compare"),
    # 3 one-step reference renders, then the probe's 1000 steps
    (lambda: localizer(seed=11, probe_steps=1000), "z", dict(ticks=10), "localizer"),
], ids=["train-sampling", "train-training", "compare-rendering", "localizer-probing"])
def test_cancel_stops_the_run_within_seconds_writes_nothing_and_the_next_job_works(battery, graph, node, when, kind):
    before = files_written(battery.server)
    marks: dict = {}
    job = submit(battery.server, graph(), on_event=cancel_when(node, marks, **when), timeout=300)
    assert "sent" in marks, f"{node} never reached {when}: {job.explain()}"
    assert job.message("execution_interrupted") and "ended" in marks, job.explain()
    took = marks["ended"] - marks["sent"]
    log.warning("Cancel at %s of %s: interrupted %.2fs later", marks["at"], node, took)
    assert took < 5.0, f"Cancel took {took:.1f}s"
    assert job.history["status"]["status_str"] == "error"
    assert files_written(battery.server) == before
    battery.good(kind, render=True)


# ---------------------------------------------------------------- memory over repeated jobs, and the model at the end


def test_memory_stays_flat_over_five_training_jobs(battery, tmp_path_factory):
    server = battery.server
    series = [server.rss_mb()]
    for i in range(5):
        job = submit(server, train(seed=500 + i, steps=2))
        assert job.ok, job.explain()
        series.append(server.rss_mb())
    out = tmp_path_factory.mktemp("results") / "rss_mb.json"
    out.write_text(json.dumps({"before": series[0], "after_each_job": series[1:]}, indent=1))
    log.warning("server RSS (MB) before and after each of 5 training jobs: %s (written to %s)",
                ", ".join(f"{v:.1f}" for v in series), out)
    growth = max(series[2:]) - series[2]
    assert growth < 100, f"RSS grew {growth:.0f} MB after the second job: {series}"


def test_the_untouched_model_is_bit_identical_at_the_end(battery):
    job = submit(battery.server, {**LOADER, **identity()})
    assert job.ok, job.explain()
    battery.untouched(job)
    assert job.text("u_hash") == file_digest(battery.server)
