"""BlockLocalizer cost on the tiny test models of each family (CPU).

Runs SurgUnBlockLocalizer through ComfyUI's real executor on the tiny SD1/SDXL/SD3/Flux
models of the test suite and reports, per family: candidate blocks, the localiser's own split of
its time (reference renders, the one shared update, the per-block renders) and the total. The tiny
models are random: no block erases above a noise floor, so the floor is off and every block is
eligible (``erase_threshold`` -1): every block's retain is rendered, the worst case. The toy canvas
model, which knows its concepts, is measured by ``scripts/bench.sh toy_canvas.yardstick --probe-cost``.
Run:  scripts/bench.sh localizer
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
FIXTURES = REPO / "tests" / "fixtures" / "custom_nodes"
log = logging.getLogger("surgun.bench.localizer")

SETTINGS = dict(probe_steps=10, images_per_prompt=2, render_steps=10, render_size=64, keep=2, max_blocks=0)


def main() -> None:
    import headless

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    comfy = headless.start([FIXTURES])
    rows = {}
    for family in ("sd1", "sdxl", "sd3", "flux"):
        g = {
            "1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": family, "seed": 0}},
            "L": {"class_type": "SurgUnBlockLocalizer", "inputs": {
                "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                "target": "a painting by {zorblax}\na drawing by {zorblax}", "distractors": "monet\nhokusai\nrembrandt",
                "retain_prompts": "a photo of a dog\na city street", "blocks": "all_attention", "granularity": "attention",
                "learning_rate": 1e-3, "train_steps": 100, "min_fraction": 0.0, "noise_floor": False, "erase_threshold": -1.0,
                "render_cfg": 3.0, "seed": 0, **SETTINGS}},
            "p": {"class_type": "PreviewAny", "inputs": {"source": ["L", 2]}},
        }
        t0 = time.perf_counter()
        res = comfy.run(g)
        total = time.perf_counter() - t0
        if not res.success:
            raise SystemExit(f"{family}: {res.error_text()}")
        table = json.loads(res.outputs["L"][2][0])
        blocks, timing = table["blocks"], table["timing_s"]
        rows[family] = {
            "blocks": len(blocks), "reference_s": timing["reference"], "update_s": timing["update"],
            "probe_s_per_block": round(statistics.mean(b["render_s"] for b in blocks), 3),
            "retain_rendered": sum(b["retain"] is not None for b in blocks), "total_s": round(total, 2), "chosen": table["chosen"],
        }
        log.info("[SurgUn] %s %s", family, rows[family])
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "localizer.json").write_text(json.dumps({"settings": SETTINGS, "families": rows}, indent=2))
    lines = ["# BlockLocalizer cost on the tiny test models (CPU, 1 thread)", "",
             f"Settings: {SETTINGS}; 2 target lines (one held out) x 3 distractors + 2 retain prompts; every attention "
             "module probed; floor off and erase_threshold -1, so every block is eligible and its retain rendered (worst case).", "",
             "| family | blocks | reference renders (s) | shared update (s) | renders per block (s) | retain rendered | total (s) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for f, r in rows.items():
        lines.append(f"| {f} | {r['blocks']} | {r['reference_s']} | {r['update_s']} | {r['probe_s_per_block']} | "
                     f"{r['retain_rendered']} | {r['total_s']} |")
    (out / "localizer.md").write_text("\n".join(lines) + "\n")
    log.info("\n".join(lines))


if __name__ == "__main__":
    main()
