"""Toy canvas erasure benchmark, the report: summary statistics, best learning rates, the
markdown table, the before/after PNG grids and the CI bounds of the quick mode."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch



def save_grid(rows: dict, path: Path, title: str, scale: int = 3) -> None:
    """A labelled PNG: one row per method (ComfyUI IMAGE tensors, (N, H, W, 3) in [0, 1]),
    upscaled ``scale``x with nearest neighbour so single pixels stay visible."""
    from PIL import Image, ImageDraw

    n, h, w, _ = next(iter(rows.values())).shape
    cell, gap, label_w, title_h = w * scale, 2, 150, 18
    split = 8  # target prompts | retain prompts
    width = label_w + n * (cell + gap) + 6
    canvas = Image.new("RGB", (width, title_h + len(rows) * (h * scale + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill="black")
    for r, (label, images) in enumerate(rows.items()):
        y = title_h + r * (h * scale + gap)
        draw.text((4, y + h * scale // 2 - 5), label, fill="black")
        for i in range(images.shape[0]):
            x = label_w + i * (cell + gap) + (6 if i >= split else 0)
            arr = (images[i].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            canvas.paste(Image.fromarray(arr).resize((cell, h * scale), Image.NEAREST), (x, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key in ("UA", "IRA", "CRA", "H", "IRA_rel", "CRA_rel", "cra_on_target", "recovered@40", "recovered@150"):
        vals = [r[key] for r in rows if key in r and r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
        if vals:
            out[key] = {"mean": statistics.mean(vals), "sd": statistics.pstdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}
    return out


def best_by_h(report: dict) -> dict:
    """Per kind and method, the grid point (lr) with the highest mean H over targets and seeds:
    every method gets its own best learning rate from the same grid."""
    out: dict = {}
    for key, d in report["summary"].items():
        m, lr, kind = key.split("|")
        best = out.get((kind, m))
        if "H" in d and (best is None or d["H"]["mean"] > best[1]["H"]["mean"]):
            out[(kind, m)] = (float(lr), d)
    return out


def markdown(report: dict) -> str:
    s = report["settings"]
    runs = report["runs"]
    atk = [f"recovered@{a}" for a in s["attack_steps"]]
    lines = [f"# Toy canvas erasure benchmark{' (quick mode)' if s['quick'] else ''}", "",
             f"Targets: {', '.join(report['targets'])}. Steps {s['steps']}, learning rates {list(s['lrs'])} (the same grid for "
             f"every method), seeds {list(s['seeds'])}, {len(report['trained_layers'])} cross-attention layers trained by every "
             f"method except `surgun_localized` (the Block Localizer's choice per target). Wall time {report['wall_s']} s "
             f"with {report.get('jobs', 1)} worker processes.",
             f"Model gate: object {report['gate']['object_accuracy']:.3f}, style {report['gate']['style_accuracy']:.3f} "
             f"({report['gate']['n_images']} images).", ""]
    if runs:
        r0 = runs[0]
        n_atk = next((r["n_images"] for r in runs if "n_images" in r), 0)
        lines += [f"Per run: UA on {r0['n_target_images']} target-prompt images, IRA and CRA on {r0['n_other_images']} images of "
                  f"prompts without the target" + (f", attack recovery on {n_atk} images (first seed only)" if atk else "") +
                  ". Cells: mean (sd) over targets x seeds; UA: target images not classified as the target; IRA/CRA: retain "
                  "accuracy in/across domain; rel = as a fraction of the untouched model on the same prompts and seeds; "
                  "H: harmonic mean of UA, IRA, CRA; recovered@N: share of images classified as the target after an N-step "
                  "soft-prompt attack (lower is better).", ""]

    def f(d, k):
        return f"{d[k]['mean']:.3f} ({d[k]['sd']:.3f})" if k in d else "-"

    cols = ("UA", "IRA", "CRA", "H", "IRA_rel", "CRA_rel", *atk)
    best = best_by_h(report)
    if best and len(s["lrs"]) > 1:
        lines += ["## Each method at its best learning rate (highest mean H on the grid)", "",
                  "| kind | method | lr | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
                  "|" + " --- |" * (3 + len(cols))]
        for (kind, m), (lr, d) in sorted(best.items(), key=lambda kv: (kv[0][0] != "style", -kv[1][1]["H"]["mean"])):
            lines.append(f"| {kind} | {m} | {lr:.0e} | " + " | ".join(f(d, k) for k in cols) + " |")
        lines += ["", "## Every grid point (UA-versus-retain curves)", ""]
    head = "| method | lr | kind | " + " | ".join(c.replace("_", " ") for c in cols) + " |"
    lines += [head, "|" + " --- |" * (3 + len(cols))]
    for key, d in report["summary"].items():
        m, lr, kind = key.split("|")
        lines.append("| " + " | ".join([m, f"{float(lr):.0e}", kind] + [f(d, k) for k in cols]) + " |")
    lines += ["", "## Untouched model (ceiling for retain, floor for UA)", "",
              "| target | UA | IRA | CRA | " + " | ".join(atk) + (" | " if atk else "") + "distractors chosen |",
              "|" + " --- |" * (5 + len(atk))]
    for t, b in report["untouched"].items():
        lines.append(f"| {t} | {b['UA']:.3f} | {b['IRA']:.3f} | {b['CRA']:.3f} | " + "".join(f"{b.get(a, float('nan')):.3f} | " for a in atk)
                     + f"{', '.join(b['distractors']['names'])} |")
    loc = {t: b["localizer"] for t, b in report["untouched"].items() if "localizer" in b}
    if loc:
        lines += ["", "## Blocks chosen by the Block Localizer", "", "| target | blocks | probe wall time (s) |", "| --- | --- | --- |"]
        for t, info in loc.items():
            lines.append(f"| {t} | {', '.join(b.replace('.transformer_blocks.0', '') for b in info['blocks'])} | {info['wall_s']} |")
    lines += ["", "Time per training step (s) and ratio to SurgUn, same layers: " + ", ".join(
        f"{m} {v:.3f} s" + (f" ({ratio:.2f}x)" if (ratio := report["step_cost_ratio_to_surgun"].get(m)) is not None else "")
        for m, v in report["step_cost_s"].items())]
    for g in report.get("grids", []):
        lines += ["", f"![{g}]({g})"]
    return "\n".join(lines) + "\n"


def check_quick(report: dict) -> None:
    """CI bounds: loose sanity only (the model gate, and SurgUn erases more than doing nothing)."""
    gate = report["gate"]
    assert gate["object_accuracy"] >= 0.8 and gate["style_accuracy"] >= 0.8, f"model gate failed: {gate}"
    for t, base in report["untouched"].items():
        su = [r for r in report["runs"] if r["target"] == t and r["method"] == "surgun"]
        assert su and min(r["UA"] for r in su) > base["UA"], f"SurgUn did not erase {t}: {su} vs untouched {base['UA']}"
