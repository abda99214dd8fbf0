"""The pack inside a real ComfyUI server: node definitions, a full graph, Cancel."""

import asyncio
import json
import uuid

NODES = ["SurgUnTrain", "SurgUnApplyErasedWeights"]


def train_graph(steps=8, prefix="surgun/e2e", sample_steps=3):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "SurgUnTrain", "inputs": {
            "model": ["1", 0], "clip": ["1", 1], "target": "a painting by zorblax",
            "distractors": "a painting by monet\na painting by hokusai\na photo of a red car",
            "retain_prompts": "a photo of a dog", "blocks": "cross_attention", "block_pattern": "",
            "steps": steps, "learning_rate": 1e-4, "ascent_weight": 1.0, "distractor_weight": 1.0, "retain_weight": 1.0,
            "ascent_cap": 2.0, "seed": 0, "sample_size": 64, "sample_steps": sample_steps, "samples_per_prompt": 1,
            "sample_cfg": 3.0, "filename_prefix": prefix}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a painting by zorblax"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 0, "steps": 3, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["3", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "surgun_e2e"}},
    }


def test_object_info_lists_the_nodes_with_a_tooltip_on_every_input(server):
    info = server.get("/object_info")
    for node in NODES:
        assert node in info, f"{node} missing from /object_info"
        spec = info[node]
        assert spec["category"].startswith("SurgUn")
        inputs = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        assert inputs
        for name, (_, opts) in ((n, v if len(v) > 1 else (v[0], {})) for n, v in inputs.items()):
            assert opts.get("tooltip"), f"{node}.{name} has no tooltip"
        assert spec["description"]
    assert info["SurgUnTrain"]["output"] == ["MODEL", "ERASED_WEIGHTS"]


def test_every_seed_stays_fixed_after_a_run_by_default(server):
    """The frontend gives every INT input named seed a 'control after generate' widget; undeclared it
    randomises the seed after each run, against "same seed and inputs, same weights"."""
    info = server.get("/object_info")
    seeds = {(name, key): opts for name, spec in info.items() if spec["category"].startswith("SurgUn")
             for key, (kind, *rest) in {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}.items()
             if kind == "INT" and "seed" in key for opts in (rest[0] if rest else {},)}
    assert {n for n, _ in seeds} >= {"SurgUnTrain", "SurgUnDistractorBuilder", "SurgUnBlockLocalizer", "SurgUnEraseRetainCompare"}
    assert {k: o.get("control_after_generate") for k, o in seeds.items()} == {k: "fixed" for k in seeds}


def test_checkpoint_to_erasure_to_image(server):
    client = str(uuid.uuid4())
    status, body = server.post("/prompt", {"prompt": train_graph(), "client_id": client})
    assert status == 200, body
    hist = server.wait_history(body["prompt_id"])
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:2000]
    files = list((server.base / "models" / "loras" / "surgun").glob("e2e_*.safetensors"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    images = hist["outputs"]["8"]["images"]
    assert images and (server.base / "output" / images[0]["filename"]).is_file()
    assert "erased 'a painting by zorblax'" in hist["outputs"]["2"]["text"][0]


def test_interrupt_during_training_stops_it_and_writes_nothing(server):
    import aiohttp

    sampling_ticks = 5 * 3  # 5 prompts x 3 sampler steps come before the training steps
    # (ComfyUI throttles progress events to 0.5% steps: with 3000 steps one arrives every ~15)

    async def scenario():
        client = str(uuid.uuid4())
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client}") as ws:
                async with session.post(f"{server.url}/prompt", json={"prompt": train_graph(steps=3000, prefix="surgun/cancel"), "client_id": client}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                interrupted = False
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    data = event.get("data", {})
                    if event["type"] == "progress" and data.get("node") == "2" and data["value"] > sampling_ticks and not interrupted:
                        async with session.post(f"{server.url}/interrupt", json={}) as r:
                            assert r.status == 200
                        interrupted = True
                    if event["type"] in ("execution_interrupted", "execution_error", "execution_success") and data.get("prompt_id") == prompt_id:
                        return event["type"], prompt_id

    kind, prompt_id = asyncio.run(asyncio.wait_for(scenario(), timeout=300))
    assert kind == "execution_interrupted"
    assert not list((server.base / "models" / "loras").rglob("cancel_*"))
    hist = server.wait_history(prompt_id)
    assert hist["status"]["status_str"] == "error"
