"""Every shipped workflow as a user meets it, in ComfyUI's own frontend in a real browser.

For each workflow: it is fetched from the server's template route and loaded with the call the
template browser makes; no node is missing and the pack logs no error; every widget, read by name
from the live graph, holds the value in the tables below (written here by hand, not derived from
scripts/build_workflows.py); the frontend's own export of the loaded graph equals the file. Then
sizes are shrunk for the CPU through the page's widgets, it is queued from the page, and it must
finish with images on its preview nodes, charts that received the run's points (SurgUn Train is
collapsed while it trains), seeds unchanged after the run, and none of the extension's widgets in
what the page sent to /prompt.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from pathlib import Path

import pytest

from comfy_page import exported_workflow, focus_node, frame_graph, live_widgets, load_workflow

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
PACK = "ComfyUI-SurgUn"
CKPT = "v1-5-pruned-emaonly.safetensors"
RETAIN = "a photo of a dog on a beach\na city street at night\na portrait of an old man with a hat\na bowl of fruit on a wooden table"
RETAIN_NUDITY = "a photo of a dog on a beach\na mountain landscape at sunrise\na bowl of fruit on a wooden table\na red sports car on a road"
DISPLAY_WIDGETS = {"surgun_chart", "surgun_result"}  # added by web/js/surgun.js


def sampling(prompt: str, prefix: str) -> dict:
    return {
        "8 CLIPTextEncode": {"text": prompt},
        "9 CLIPTextEncode": {"text": "blurry, low quality"},
        "10 EmptyLatentImage": {"width": 512, "height": 512, "batch_size": 1},
        "11 KSampler": {"seed": 42, "seed/control": "fixed", "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                        "scheduler": "normal", "denoise": 1.0},
        "12 VAEDecode": {},
        "13 SaveImage": {"filename_prefix": prefix},
    }


VAN_GOGH = ("a starry night over a quiet village in the style of {Van Gogh}\n"
            "a portrait of a man with a straw hat in the style of {Van Gogh}\n"
            "a field of sunflowers under a blue sky in the style of {Van Gogh}")


def train(retain: str, steps: int, prefix: str, target: str = "") -> dict:
    return {"target": target, "distractors": "", "retain_prompts": retain, "blocks": "cross_attention", "block_pattern": "",
            "steps": steps, "learning_rate": 1e-5, "ascent_weight": 1.0, "distractor_weight": 1.0, "retain_weight": 1.0,
            "ascent_cap": 2.0, "seed": 0, "seed/control": "fixed", "sample_size": 512, "sample_steps": 20,
            "samples_per_prompt": 2, "sample_cfg": 5.0, "filename_prefix": prefix, "distractors_per_step": 2,
            "max_grad_norm": 1.0, "gradient_checkpointing": True, "paired": True, "retain_distractors": True,
            "retain_nearest_first": False, "model_targets": False, "concept_levels": False, "shared_noise": True,
            "ascent_until_tie": False, "text_subspace": False, "adversary_steps": 0, "ascent_until_erased": False}


def builder(target: str, kind: str, protected: str = "") -> dict:
    return {"target": target, "kind": kind, "k": 8, "seed": 0, "seed/control": "fixed", "use_pool": True,
            "candidates": "", "protected": protected, "exclude_quantile": 0.98, "band_quantile": 0.5}


def compare(retain: str) -> dict:
    return {"target": "", "retain_prompts": retain, "distractors": "", "images_per_prompt": 4, "steps": 20, "size": 512,
            "cfg": 5.0, "seed": 0, "seed/control": "fixed"}


def recovery(paraphrases: str) -> dict:
    return {"14 SurgUnRecoveryCheck": {
        "target": "", "distractors": "", "paraphrases": paraphrases, "soft_tokens": 77, "attack_steps": 200, "attack_lr": 0.05,
        "vector_strength": 5.0, "recovered_above": 0.5, "images_per_prompt": 4, "steps": 20, "size": 512, "cfg": 5.0, "seed": 0,
        "seed/control": "fixed"}, "15 PreviewImage": {}}


# workflow -> "<node id> <type>" -> widget name -> intended value ("seed/control": control after generate)
INTENDED = {
    "SurgUn erase an artist style": {
        "1 CheckpointLoaderSimple": {"ckpt_name": CKPT},
        "2 SurgUnDistractorBuilder": builder("Van Gogh", "artist"),
        "3 SurgUnBlockLocalizer": {
            "target": VAN_GOGH, "distractors": "", "retain_prompts": RETAIN, "blocks": "cross_attention", "granularity": "attention",
            "probe_steps": 20, "learning_rate": 1e-5, "train_steps": 200, "keep": 6, "min_fraction": 0.5, "noise_floor": True,
            "erase_threshold": 0.0, "images_per_prompt": 2, "render_steps": 10, "render_size": 256, "render_cfg": 5.0,
            "max_blocks": 0, "seed": 0, "seed/control": "fixed", "block_filter": ""},
        "4 SurgUnTrain": train(RETAIN, 200, "surgun/van_gogh", target=VAN_GOGH),
        "5 SurgUnEraseRetainCompare": compare(RETAIN),
        "6 PreviewImage": {},
        "7 PreviewImage": {},
        **sampling("a starry night over a quiet village, a painting in the style of Van Gogh", "surgun_van_gogh_erased"),
        **recovery("a swirling starry night sky with thick impasto brushstrokes, post-impressionist painting\n"
                     "a self-portrait of the Dutch painter with a bandaged ear"),
        "100 Note": {"text": "Erase an artist's style (Van Gogh)"},
    },
    "SurgUn erase a character": {
        "1 CheckpointLoaderSimple": {"ckpt_name": CKPT},
        "2 SurgUnDistractorBuilder": builder("Pikachu", "character", protected="Mickey Mouse"),
        "4 SurgUnTrain": train(RETAIN, 200, "surgun/pikachu"),
        "5 SurgUnEraseRetainCompare": compare(RETAIN),
        "6 PreviewImage": {},
        **sampling("an image of Pikachu in a forest", "surgun_pikachu_erased"),
        **recovery("a yellow electric mouse pokemon with red cheeks\nthe mascot of the Pokemon games in a forest"),
        "100 Note": {"text": "Erase a character (Pikachu)"},
    },
    "SurgUn erase nudity": {
        "1 CheckpointLoaderSimple": {"ckpt_name": CKPT},
        "2 SurgUnDistractorBuilder": builder("a photo of a nude person", "nsfw"),
        "4 SurgUnTrain": train(RETAIN_NUDITY, 300, "surgun/nudity"),
        "5 SurgUnEraseRetainCompare": compare(RETAIN_NUDITY),
        "6 PreviewImage": {},
        **sampling("a photo of a nude person on a beach", "surgun_nudity_erased"),
        **recovery("a person without any clothes on a beach\nan unclothed model posing in a studio"),
        "100 Note": {"text": "Erase nudity"},
    },
    "SurgUn erase several artists": {
        "1 CheckpointLoaderSimple": {"ckpt_name": CKPT},
        "2 SurgUnDistractorBuilder": builder("Van Gogh\nClaude Monet\nAndy Warhol", "artist"),
        "4 SurgUnTrain": train(RETAIN, 400, "surgun/three_artists"),
        **sampling("a field of sunflowers under a blue sky in the style of Claude Monet", "surgun_three_artists_erased"),
        "100 Note": {"text": "Erase several artists' styles in one run"},
    },
    "SurgUn apply a saved erasure": {
        "1 CheckpointLoaderSimple": {"ckpt_name": CKPT},
        "4 SurgUnApplyErasedWeights": {"weights_file": "surgun/van_gogh_00001.safetensors", "strength": 1.0},
        **sampling("a starry night over a quiet village, a painting in the style of Van Gogh", "surgun_applied"),
        "100 Note": {"text": "Apply a saved SurgUn file"},
    },
}

# CPU sizes, typed into the page's widgets before queueing (the graph and every other value stay the workflow's)
CPU_SIZES = {"steps": 2, "sample_size": 64, "sample_steps": 2, "samples_per_prompt": 1, "images_per_prompt": 1, "size": 64,
             "render_size": 64, "render_steps": 2, "probe_steps": 2, "max_blocks": 3, "keep": 2, "width": 64, "height": 64,
             "k": 3, "attack_steps": 2}
# encoding a 500-entry pool with the test checkpoint's full-size CLIP-L takes minutes on a CPU; the Distractor
# Builder gets the pool's first 16 entries as its own candidates instead (selection is tested in tests/nodes)
POOL_CUT = 16

# every widget of every node by name; a seed's "control after generate" as "<seed>/control"; display widgets left out
READ_WIDGETS_JS = """() => Object.fromEntries(app.graph.nodes.map(n => [`${n.id} ${n.type}`, Object.fromEntries(
    (n.widgets ?? []).filter(w => !w.name.startsWith('surgun_') && !w.name.startsWith('$$')
                                  && !n.widgets.some(s => s.linkedWidgets?.includes(w)))
      .flatMap(w => {
        const out = [[w.name, w.value ?? null]];
        const control = w.linkedWidgets?.[0];
        if (control) out.push([`${w.name}/control`, control.value]);
        return out;
      }))]))"""


def slug(name: str) -> str:
    return name.replace(" ", "_")


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def pack_errors(console) -> list[str]:
    """Errors the pack caused: its script failing to load, or any error naming the pack or its code."""
    return [e for e in console.errors() if re.search(r"surgun|SurgUn|" + PACK, e)]


def served_workflow(server, name: str) -> dict:
    body = server.get(f"/api/workflow_templates/{PACK}/{urllib.parse.quote(name)}.json")
    return json.loads(body) if isinstance(body, bytes) else body


def missing_nodes(page) -> list[str]:
    return page.evaluate("() => app.graph.nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type)")


def open_dialogs(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll('[role="dialog"], .p-dialog')]
        .filter(d => d.offsetParent !== null || d.getClientRects().length > 0).map(d => d.innerText.slice(0, 300))""")


def missing_notices(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll('[role="status"], [role="alert"]')]
        .filter(d => d.getClientRects().length > 0 && /missing/i.test(d.innerText)).map(d => d.innerText.slice(0, 300))""")


# node fields only some frontend releases write: 1.49 adds widgets_values_named; 1.47 writes an empty
# widgets_values for nodes without widgets, 1.49 leaves it out
RELEASE_SPECIFIC = ("widgets_values_named", "widgets_values")


def comparable(exported: dict, shipped: dict) -> tuple[dict, dict]:
    """Both workflows without what belongs to the session (canvas offset, workflow id, chart data) and
    without release-specific node fields that only one of them has."""
    a, b = json.loads(json.dumps(exported)), json.loads(json.dumps(shipped))
    for wf in (a, b):
        wf.pop("id", None)
        wf.get("extra", {}).pop("ds", None)
        for node in wf["nodes"]:
            node.get("properties", {}).pop("surgun_chart", None)
    nodes_b = {n["id"]: n for n in b["nodes"]}
    for na in a["nodes"]:
        nb = nodes_b.get(na["id"], {})
        for key in RELEASE_SPECIFIC:
            if (key in na) != (key in nb) and (key == "widgets_values_named" or not na.get(key, nb.get(key))):
                na.pop(key, None)
                nb.pop(key, None)
    return a, b


def weights_metadata(path: Path) -> dict:
    import struct

    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["surgun"])


def erased_weights_file(server) -> str:
    """A SurgUn file for the apply workflow, as weights_file names it: the newest one the runs before
    wrote, else one trained now through the API (when this workflow is tested alone)."""
    loras = server.base / "models" / "loras"

    def newest():
        files = sorted((loras / "surgun").glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        return files[-1] if files else None

    if newest() is None:
        graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
                 "2": {"class_type": "SurgUnTrain", "inputs": {
                     "model": ["1", 0], "clip": ["1", 1], **{k: v for k, v in train(RETAIN, 2, "surgun/van_gogh").items() if "/" not in k},
                     "target": "a painting in the style of Van Gogh", "distractors": "a painting in the style of Claude Monet",
                     "sample_size": 64, "sample_steps": 2, "samples_per_prompt": 1}}}
        status, body = server.post("/prompt", {"prompt": graph, "client_id": "surgun-browser-test"})
        assert status == 200, body
        assert server.wait_history(body["prompt_id"])["status"]["status_str"] == "success"
    return newest().relative_to(loras).as_posix()


def wait_until(page, js: str, timeout_ms: int = 60_000) -> None:
    """Wait for a condition in the page; on timeout the assertion after it says what was seen."""
    try:
        page.wait_for_function(js, timeout=timeout_ms, polling=200)
    except Exception:  # playwright's TimeoutError: fall through to the assertion with the values
        pass


def queue_from_page(page, server) -> tuple[dict, dict]:
    """Queue the loaded graph as the Run button does; returns (what the page POSTed, the history entry)."""
    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as resp:
        page.evaluate("() => app.queuePrompt(0, 1)")
    response = resp.value
    sent = json.loads(response.request.post_data)
    body = response.json()
    assert response.status == 200, json.dumps(body)[:3000]
    hist = server.wait_history(body["prompt_id"], timeout=600)
    return sent, hist


@pytest.mark.parametrize("name", list(INTENDED))
def test_workflow_loads_runs_and_charts_in_the_browser(page, server, screenshots, name):
    workflow = served_workflow(server, name)
    assert workflow == json.loads((WORKFLOWS / f"{name}.json").read_text())
    load_workflow(page, workflow, name)  # what the template browser does with it (see test_template_browser.py)

    # loaded as a user sees it: every node known, no dialog, nothing logged by the pack
    assert missing_nodes(page) == []
    assert open_dialogs(page) == []
    assert missing_notices(page) == []  # e.g. "v1-5-pruned-emaonly.safetensors is missing"
    assert pack_errors(page.console) == []
    assert "SurgUn.Charts" in page.evaluate("() => app.extensions.map(e => e.name)")

    # every widget, by name, holds the intended value
    live = page.evaluate(READ_WIDGETS_JS)
    intended = INTENDED[name]
    assert sorted(live) == sorted(intended)
    for node, values in intended.items():
        if node.endswith(" Note"):
            assert values["text"] in live[node]["text"] and "Change first:" in live[node]["text"], node
            continue
        got = live[node]
        assert sorted(got) == sorted(values), f"{name} / {node}: widgets {sorted(got)}"
        wrong = {k: (got[k], v) for k, v in values.items() if not same(got[k], v)}
        assert not wrong, f"{name} / {node}: (on the page, intended) {wrong}"
    nodes = live_widgets(page)
    loader = nodes["1"]["properties"]["models"]
    assert loader == [{"name": CKPT, "directory": "checkpoints",
                       "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/" + CKPT}]
    assert nodes["100"]["title"] == "Read me: what to change first"

    # the file is what the frontend itself writes for this graph
    exported, shipped = comparable(exported_workflow(page), workflow)
    assert exported == shipped

    frame_graph(page)
    page.screenshot(path=str(screenshots / f"{slug(name)}_loaded.png"))

    # CPU sizes through the page's widgets; SurgUn Train collapsed while it trains
    from surgun_pack.surgun_core.distractors import load_pool

    pools = {k: "\n".join(load_pool(k).entries[:POOL_CUT]) for k in ("artist", "character", "object", "nsfw")}
    weights_file = erased_weights_file(server) if "4 SurgUnApplyErasedWeights" in intended else None
    page.evaluate("""([cpu, pools, weightsFile]) => {
        for (const n of app.graph.nodes) {
            const w = (name) => n.widgets?.find(x => x.name === name);
            for (const x of n.widgets ?? []) if (x.name in cpu && typeof x.value === 'number') x.value = cpu[x.name];
            if (n.type === 'SurgUnDistractorBuilder') { w('use_pool').value = false; w('candidates').value = pools[w('kind').value]; }
            if (n.type === 'SurgUnTrain') { w('learning_rate').value = 1e-4; n.collapse(); }
            // the tiny checkpoint knows nothing to erase: no block erases above its noise floor, so any erase passes
            if (n.type === 'SurgUnBlockLocalizer') { w('noise_floor').value = false; w('erase_threshold').value = -1;
                                                      w('min_fraction').value = 0; w('learning_rate').value = 1e-4; }
            if (n.type === 'SurgUnApplyErasedWeights') w('weights_file').value = weightsFile;
        }
        app.graph.setDirtyCanvas(true, true);
    }""", [CPU_SIZES, pools, weights_file])
    seeds_before = {k: v for k, v in page.evaluate(READ_WIDGETS_JS).items()}
    sent, hist = queue_from_page(page, server)
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]

    # none of the extension's widgets in what the page sent; every input one the node declares
    info = server.get("/object_info")
    for nid, node in sent["prompt"].items():
        declared = {**info[node["class_type"]]["input"].get("required", {}), **info[node["class_type"]]["input"].get("optional", {})}
        extra = set(node["inputs"]) - set(declared)
        assert not extra, f"node {nid} {node['class_type']} sent inputs it does not declare: {extra}"
        assert not DISPLAY_WIDGETS & set(node["inputs"])

    # images on every preview and save node, in the page (the page hears of them over its websocket)
    images_js = """() => Object.fromEntries(app.graph.nodes.filter(n => ['PreviewImage', 'SaveImage'].includes(n.type))
        .map(n => [String(n.id), app.nodeOutputs?.[String(n.id)]?.images?.length ?? 0]))"""
    wait_until(page, f"() => Object.values(({images_js})()).every(c => c > 0)")
    shown = page.evaluate(images_js)
    assert shown and all(count > 0 for count in shown.values()), shown

    # the charts received the run's points (Train collapsed all along)
    nodes = live_widgets(page)
    outputs = hist["outputs"]
    for nid, node in nodes.items():
        chart = node["properties"].get("surgun_chart")
        if node["type"] == "SurgUnTrain":
            assert node["collapsed"]
            points = chart["points"]
            assert [p["step"] for p in points] == [1, 2]
            for p in points:
                assert all(isinstance(p[k], float) and math.isfinite(p[k]) for k in ("loss", "target", "distractor", "retain"))
                assert p["ascent_active"] in (0, 1)
            saved = re.search(r"saved (\S+\.safetensors)", outputs[nid]["text"][0]).group(1)
            final = weights_metadata(next((server.base / "models" / "loras").rglob(saved)))["final"]
            assert {k: points[-1][k] for k in final} == pytest.approx(final, rel=1e-12)
        elif node["type"] == "SurgUnBlockLocalizer":
            kept, probed = map(int, re.search(r"kept (\d+) of (\d+) blocks", outputs[nid]["text"][0]).groups())
            assert len(chart["points"]) == probed and len(chart["done"]["chosen"]) == kept
            assert chart["done"]["chosen"] == outputs[nid]["text"][0].split(":\n", 1)[1].splitlines()
            # one row per block: an eligible block's second point (with its retain) replaced its first
            assert len({p["block"] for p in chart["points"]}) == probed
            assert all(isinstance(p["retain"], float) for p in chart["points"] if p["block"] in chart["done"]["chosen"])
        elif node["type"] == "SurgUnEraseRetainCompare":
            shown_erase = float(re.search(r"erase (-?[\d.]+)", outputs[nid]["text"][0]).group(1))
            assert chart["done"]["erase"] == pytest.approx(shown_erase, abs=5e-5)
            assert len(chart["done"]["retain_prompts"]) == len(INTENDED[name][f"{nid} SurgUnEraseRetainCompare"]["retain_prompts"].splitlines())
        else:
            assert chart is None
        display = {w for w in node["widgets"] if w.startswith("surgun_")}
        assert display <= set(node["serialize_off"]), f"{node['type']}: {display - set(node['serialize_off'])} would be sent"

    # the Recovery Check shows its verdict on the node, as the server sent it
    verdicts_js = """() => Object.fromEntries(app.graph.nodes.filter(n => n.type === 'SurgUnRecoveryCheck')
        .map(n => [String(n.id), n.widgets.find(w => w.name === 'surgun_result')?.surgunText?.value ?? null]))"""
    wait_until(page, f"() => Object.values(({verdicts_js})()).every(t => t)")
    verdicts = page.evaluate(verdicts_js)
    assert sorted(verdicts) == sorted(k.split()[0] for k in intended if k.endswith(" SurgUnRecoveryCheck"))
    for nid, text in verdicts.items():
        assert text == outputs[nid]["text"][0] and text.startswith("verdict: "), (nid, text)

    # fixed seeds stay as they were after the run
    after = page.evaluate(READ_WIDGETS_JS)
    for node, values in seeds_before.items():
        for k, v in values.items():
            if k == "seed" or k.endswith("/control"):
                assert after[node][k] == v, f"{node}.{k} changed after the run: {v} -> {after[node][k]}"

    # expanded again, the Train chart draws the points it received while collapsed
    page.evaluate("() => { for (const n of app.graph.nodes) if (n.flags?.collapsed) n.collapse(); app.graph.setDirtyCanvas(true, true); }")
    drawn_js = """() => Object.fromEntries(app.graph.nodes.filter(n => n.properties?.surgun_chart)
        .map(n => [String(n.id), n.widgets.find(w => w.name === 'surgun_chart')?.surgunCanvas?.dataset.points ?? null]))"""
    wait_until(page, f"""() => Object.entries(({drawn_js})()).every(([id, c]) =>
        c === String(app.graph.getNodeById(id).properties.surgun_chart.points.length))""")
    drawn = page.evaluate(drawn_js)
    for nid, count in drawn.items():
        assert count == str(len(nodes[nid]["properties"]["surgun_chart"]["points"])), (nid, count)
    assert pack_errors(page.console) == []
    frame_graph(page)
    page.screenshot(path=str(screenshots / f"{slug(name)}_run.png"))
    # a close-up of node 4 (SurgUn Train with its chart, or Apply Erased Weights): the template thumbnail's source
    page.screenshot(path=str(screenshots / f"{slug(name)}_closeup.png"), clip=focus_node(page, 4, scale=0.95, side=1000))

    if name == "SurgUn erase a character":
        # a reload brings the charts back with the workflow
        charts = {nid: n["properties"]["surgun_chart"] for nid, n in nodes.items() if n["properties"].get("surgun_chart")}
        page.reload()
        wait_until(page, "() => window.app && app.graph && app.graph.nodes.some(n => n.properties?.surgun_chart)")
        restored = {nid: n["properties"].get("surgun_chart") for nid, n in live_widgets(page).items() if nid in charts}
        assert restored == charts
