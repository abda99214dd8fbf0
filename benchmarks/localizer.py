"""BlockLocalizer cost on the tiny test models of each family (CPU).

Runs SurgUnBlockLocalizer through ComfyUI's real executor on the tiny SD1/SDXL/SD3/Flux
models of the test suite and reports, per family: candidate blocks, time of the reference
renders, probe time per block split into update (SurgUn steps) and rendering (sampling +
VAE decode), and the total. Run:  scripts/bench.sh localizer
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
FIXTURES = REPO / "tests" / "fixtures" / "custom_nodes"

SETTINGS = dict(probe_steps=10, images_per_prompt=2, render_steps=10, render_size=64, keep=2, max_blocks=0)


def main() -> None:
    import headless

    comfy = headless.start([FIXTURES])
    rows = {}
    for family in ("sd1", "sdxl", "sd3", "flux"):
        g = {
            "1": {"class_type": "SurgUnTestTinyModel", "inputs": {"family": family, "seed": 0}},
            "L": {"class_type": "SurgUnBlockLocalizer", "inputs": {
                "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "target": "a painting by zorblax",
                "distractors": "a painting by monet\na photo of a red car\na painting by hokusai",
                "retain_prompts": "a photo of a dog\na city street", "granularity": "attention", "probe_lr": 1e-3,
                "erase_quantile": 0.5, "erase_threshold": -1.0, "render_cfg": 3.0, "seed": 0, **SETTINGS}},
            "p": {"class_type": "PreviewAny", "inputs": {"source": ["L", 2]}},
        }
        t0 = time.perf_counter()
        res = comfy.run(g)
        total = time.perf_counter() - t0
        if not res.success:
            raise SystemExit(f"{family}: {res.error_text()}")
        table = json.loads(res.outputs["L"][2][0])
        blocks = table["blocks"]
        upd = [b["update_s"] for b in blocks]
        ren = [b["render_s"] for b in blocks]
        rows[family] = {
            "blocks": len(blocks), "reference_s": round(table["reference_s"], 2),
            "update_s_per_block": round(statistics.mean(upd), 3), "render_s_per_block": round(statistics.mean(ren), 3),
            "probe_s_per_block": round(statistics.mean(u + r for u, r in zip(upd, ren)), 3),
            "render_share": round(sum(ren) / (sum(ren) + sum(upd)), 3), "total_s": round(total, 2),
            "chosen": table["chosen"],
        }
        print(family, rows[family], flush=True)
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "localizer.json").write_text(json.dumps({"settings": SETTINGS, "families": rows}, indent=2))
    lines = ["# BlockLocalizer cost on the tiny test models (CPU, 1 thread)", "",
             f"Settings: {SETTINGS}; 1 target + 3 distractors + 2 retain prompts; every attention module probed.", "",
             "| family | blocks | reference renders (s) | update / block (s) | render / block (s) | probe / block (s) | render share | total (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for f, r in rows.items():
        lines.append(f"| {f} | {r['blocks']} | {r['reference_s']} | {r['update_s_per_block']} | {r['render_s_per_block']} | "
                     f"{r['probe_s_per_block']} | {r['render_share']:.0%} | {r['total_s']} |")
    (out / "localizer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
