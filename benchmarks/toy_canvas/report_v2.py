"""Yardstick v2 report: tables from the runs JSONL, Pareto plots and attack bars (PIL only), quick bounds."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from . import split
from .methods_v2 import ABLATIONS, COMPUTE_MATCHED, UCE_LAMBDAS, V2_METHODS, VARIANTS

METRICS = ("UA", "IRA", "CRA", "H", "related_IRA", "kept_on_target", "mode_spread_bits")
def attack_keys(s) -> tuple:
    return (*(f"soft@{n}" for n in s.attack_steps), "paraphrase")
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75), (227, 119, 194),
           (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 0), (174, 199, 232), (255, 152, 150), (152, 223, 138),
           (255, 187, 120), (197, 176, 213), (196, 156, 148), (219, 219, 141), (158, 218, 229), (82, 84, 163),
           (107, 110, 207), (156, 158, 222), (99, 121, 57), (140, 162, 82), (181, 207, 107), (140, 109, 49), (189, 158, 57),
           (132, 60, 57), (173, 73, 74), (214, 97, 107), (123, 65, 115), (165, 81, 148), (206, 109, 189), (222, 158, 214),
           (57, 59, 121), (231, 186, 82), (253, 141, 60), (49, 163, 84), (116, 196, 118), (117, 107, 177),
           (158, 154, 200), (230, 85, 13), (255, 215, 0), (0, 128, 128), (128, 0, 64), (0, 100, 0), (255, 0, 255), (70, 130, 180), (160, 82, 45),
           (0, 0, 205), (128, 128, 0), (255, 105, 180), (0, 255, 127), (205, 92, 92), (85, 107, 47), (176, 48, 96), (0, 139, 139), (218, 112, 214),
           (72, 61, 139), (255, 99, 71)]
"""At least one colour per method of ``V2_METHODS``: no two curves share one."""


def changes(names) -> str:
    """The legend of ``names`` (ablations or variants): each with its change, grouped by the SurgUn it changes."""
    by: dict[str, list[str]] = {}
    for n in names:
        base, change = V2_METHODS[n].changes
        if change:  # surgun_v0..v2 are SurgUn itself at an earlier stop (the legend's prose)
            by.setdefault(base, []).append(f"{n} ({change})")
    return "; ".join(f"of SurgUn {b}, " + ", ".join(by[b]) for b in ("now", "v2", "v1", "v0") if b in by)


def read_jsonl(path: Path) -> dict:
    done = {}
    if path.exists():
        from .yardstick import run_key

        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[run_key(rec)] = rec
    return done


def ms(vals: list) -> dict | None:
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return {"mean": statistics.mean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def summarise(done: dict) -> dict:
    grid = [r for r in done.values() if r.get("phase") == "grid"]
    out: dict = {}
    for r in grid:
        out.setdefault(f"{r['method']}|{r['lr']}|{r['kind']}", []).append(r)
    return {k: {m: ms([r.get(m) for r in rows]) for m in (*METRICS, "IRA_rel", "CRA_rel")} | {"targets": sorted({r["target"] for r in rows})}
            for k, rows in out.items()}


def best_table(summary: dict) -> dict:
    best: dict = {}
    for key, d in summary.items():
        m, lr, kind = key.split("|")
        if d["H"] and (best.get((kind, m)) is None or d["H"]["mean"] > best[(kind, m)][1]["H"]["mean"]):
            best[(kind, m)] = (float(lr), d)
    return best


def records_at(done: dict, phase: str, target: str, method: str, lr: float | None) -> list[dict]:
    """The records of one method's runs of ``phase`` ("grid" or "attack") on ``target`` at ``lr`` (none for lr None)."""
    return [r for r in done.values() if r.get("phase") == phase and r.get("target") == target and r.get("method") == method
            and lr is not None and math.isclose(r["lr"], lr)]


def cell(vals: list, digits: int = 2, sd: bool = True) -> str:
    """A README cell: the mean, with the sample sd over seeds in brackets where there are several (and ``sd``); - for none."""
    d = ms(vals)
    if not d:
        return "-"
    return f"{d['mean']:.{digits}f}" + (f" ({d['sd']:.2f})" if sd and d["n"] > 1 else "")


STANDING = (("uce", "UCE"), ("ca", "CA model-based"), ("esd_x", "ESD-x concept-only"), ("esd_x_full", "ESD-x full prompts"),
            ("esd_u", "ESD-u concept-only"),
            ("surgun", "**SurgUn (defaults)**"), ("surgun_sp_subspace_adv", "SurgUn + text subspace + adversary"),
            ("surgun_sp_all_attn", "SurgUn + all attention layers"), ("surgun_sp_noxattn", "SurgUn on ESD-u's layers"),
            ("surgun_sp_noxattn_mt", "SurgUn on ESD-u's layers + model targets"),
            ("surgun_sp_noxattn_mt_rw3", "SurgUn on ESD-u's layers + model targets, retain weight 3"),
            ("surgun_sp_all_attn_mt", "SurgUn + all attention layers + model targets"),
            ("surgun_sp_all_attn_mt_ue3", "SurgUn + all attention layers + model targets, cap 3 + render stop"),
            ("surgun_sp_all_attn_mt_cap3", "SurgUn + all attention layers + model targets, cap 3"),
            ("surgun_sp_all_attn_mt_cap3_rw3", "SurgUn + all attention layers + model targets, cap 3, retain weight 3"),
            ("surgun_sp_1d", "ablation: one distractor"), ("surgun_sp_no_distractors", "ablation: no distractors"),
            ("surgun_sn_no_ascent", "ablation: no ascent"), ("surgun_sp_loc", "ablation: localised"))
"""The rows of "Where SurgUn stands": every baseline at its strongest, today's SurgUn, its nine leading variants (the
highest H before stop 43, the lowest recovery since stop 42, since stop 43 the styles' highest H with the lowest
recovery on neon, stop 48's two tries at keeping its retain, model targets with the retain weight at 1 and at 3, stop
44's try at low recovery with the retained images kept, and stop 46's two tries on it, ascent_cap 3 with and without
the render stop, which erase neon at the shared 1e-3, and stop 47's cap-3 row with the retain term weighted 3), and its
ablations (each one ingredient removed from today's SurgUn, through the node)."""


def standing_lr(done: dict, best: dict, m: str, t: str) -> float | None:
    """The lr a row of "Where SurgUn stands" shows for method ``m`` on target ``t``: its best lr for the kind (``best``);
    UCE's best lambda for the target (ties: the lambda its attack ran at, then the larger)."""
    if m != "uce":
        b = best.get((t.split(":")[0], m))
        return b[0] if b else None
    hs: dict = {}
    for r in done.values():
        if r.get("phase") == "grid" and r["method"] == m and r["target"] == t:
            hs.setdefault(r["lr"], []).append(r["H"])
    if not hs:
        return None
    top = max(statistics.mean(v) for v in hs.values())
    tied = [lr for lr, v in hs.items() if statistics.mean(v) == top]
    attacked = {r["lr"] for r in done.values() if r.get("phase") == "attack" and r["method"] == m and r["target"] == t}
    return max(tied, key=lambda lr: (lr in attacked, lr))


def pixel_records(done: dict, t: str, m: str, lr: float | None) -> list[dict]:
    """The runs of ``m`` on ``t`` at ``lr`` that scored retain in pixels, one per seed: a grid run's own score where it has
    one (grid runs since the yardstick scores it), else the ``pixel`` phase's rerun of that seed."""
    grid = [r for r in records_at(done, "grid", t, m, lr) if "pixel_retain" in r]
    seeds = {r["seed"] for r in grid}
    return grid + [r for r in records_at(done, "pixel", t, m, lr) if r["seed"] not in seeds]


def pixel_table(done: dict, best: dict, tnames: list[str]) -> list[str]:
    """The table "Retain in pixels": per method of ``STANDING`` (at the lr its row there shows) and target, the mean (sd
    over seeds) pixel retain on the retain prompts and on the related concepts' prompts, the classifier's retain (IRA x CRA
    relative to the untouched model's, and related kept) of the same runs beside it, and the untouched model's floor (the
    same prompts at other seeds)."""
    names = " / ".join(t.split(":")[1] for t in tnames)
    L = [f"| method | pixel retain ({names}) | pixel related ({names}) | classifier retain ({names}) | "
         f"classifier related ({names}) | seeds |", "|" + " --- |" * 6]
    floors = [next((r for r in done.values() if r.get("phase") == "pixel" and r.get("method") == "untouched"
                    and r.get("target") == t), None) for t in tnames]
    if all(floors):
        L.append("| untouched, other seeds (floor) | " + " / ".join(f"{r['pixel_retain']:.2f}" for r in floors) + " | "
                 + " / ".join(f"{r['pixel_related']:.2f}" for r in floors) + " | - | - | - |")
    for m, label in STANDING:
        runs = {t: pixel_records(done, t, m, standing_lr(done, best, m, t)) for t in tnames}
        if not any(runs.values()):
            continue
        col = lambda k: " / ".join(cell([r[k] for r in runs[t]], sd=False) for t in tnames)  # noqa: E731
        L.append(f"| {label} | " + " / ".join(cell([r["pixel_retain"] for r in runs[t]]) for t in tnames) + " | "
                 + col("pixel_related") + " | "
                 + " / ".join(cell([r["IRA_rel"] * r["CRA_rel"] for r in runs[t]], sd=False) for t in tnames) + " | "
                 + col("related_IRA") + " | " + " / ".join(str(len(runs[t])) for t in tnames) + " |")
    return L


def standing(done: dict, best: dict, tnames: list[str]) -> list[str]:
    """The table "Where SurgUn stands": per method of ``STANDING`` and target, H as mean (sd over seeds), the object kept on
    the target's prompts (styles), related concepts kept, the soft prompt's recovery after the last attack step and the
    paraphrases' (means), and the seeds (attack seeds). Each method at its best lr for the kind (``best``); UCE at its best
    lambda per target (ties: the lambda its attack ran at)."""
    attacks = [r for r in done.values() if r.get("phase") == "attack"]
    soft = max((k for r in attacks for k in r if k.startswith("soft@")), key=lambda k: int(k[5:]), default="soft@150")
    styles = [t for t in tnames if t.startswith("style:")]
    lr_for = lambda m, t: standing_lr(done, best, m, t)  # noqa: E731

    L = [f"| method | {' | '.join('H ' + t.split(':')[1] for t in tnames)} | object kept on target "
         f"({' / '.join(t.split(':')[1] for t in styles)}) | related kept ({' / '.join(t.split(':')[1] for t in tnames)}) | "
         f"soft prompt @{soft[5:]} ({' / '.join(t.split(':')[1] for t in tnames)}) | paraphrase "
         f"({' / '.join(t.split(':')[1] for t in tnames)}) | seeds (attack seeds) |", "|" + " --- |" * (len(tnames) + 6)]
    for m, label in STANDING:
        lrs = {t: lr_for(m, t) for t in tnames}  # once per target, not per record
        runs = {t: records_at(done, "grid", t, m, lrs[t]) for t in tnames}
        hits = {t: records_at(done, "attack", t, m, lrs[t]) for t in tnames}
        if not any(runs.values()):
            continue
        L.append(f"| {label} | " + " | ".join(cell([r["H"] for r in runs[t]], 3) for t in tnames)
                 + " | " + " / ".join(cell([r["kept_on_target"] for r in runs[t]], sd=False) for t in styles)
                 + " | " + " / ".join(cell([r["related_IRA"] for r in runs[t]], sd=False) for t in tnames)
                 + " | " + " / ".join(cell([r.get(soft) for r in hits[t]], sd=False) for t in tnames)
                 + " | " + " / ".join(cell([r.get("paraphrase") for r in hits[t]], sd=False) for t in tnames)
                 + " | " + " / ".join(f"{len(runs[t])} ({len(hits[t])})" for t in tnames) + " |")
    return L


README_LABELS = {
    'UCE': 'uce',
    'CA model-based': 'ca',
    'ESD-x, concept-only': 'esd_x',
    'ESD-x, full prompts': 'esd_x_full',
    'ESD-u, concept-only': 'esd_u',
    'SurgUn v1 (before shared noise)': 'surgun_v1',
    'SurgUn (spread guard probe, stop 31)': 'surgun',
    'SurgUn v2 (shared noise, drawn guard probe)': 'surgun_v2',
    'variant: ascent until tie': 'surgun_tie',
    'variant: text subspace, to_k/to_v only': 'surgun_subspace',
    'variant: to_k, to_v only': 'surgun_sn_kv',
    'variant: text subspace': 'surgun_subspace_all',
    'variant: adversary, 3 steps': 'surgun_adversary',
    "variant of today's SurgUn: ascent_cap 1.5": 'surgun_sp_cap15',
    "variant of today's SurgUn: ascent_cap 3": 'surgun_sp_cap3',
    "variant of today's SurgUn: model targets": 'surgun_sp_mt',
    "variant of today's SurgUn: ascent until tie": 'surgun_sp_tie',
    "variant of today's SurgUn: text subspace": 'surgun_sp_subspace_all',
    "variant of today's SurgUn: one distractor per step": 'surgun_sp_dps1',
    "variant of today's SurgUn: adversary, 3 steps": 'surgun_sp_adversary',
    "variant of today's SurgUn: text subspace and adversary": 'surgun_sp_subspace_adv',
    "variant of today's SurgUn: ascent until erased": 'surgun_sp_until_erased',
    "variant of today's SurgUn: all attention layers": 'surgun_sp_all_attn',
    "variant of today's SurgUn: ESD-u's layers": 'surgun_sp_noxattn',
    "variant of today's SurgUn: all attention layers, model targets": 'surgun_sp_all_attn_mt',
    "variant of today's SurgUn: all attention layers, model targets, ascent until erased": 'surgun_sp_all_attn_mt_ue',
    "variant of today's SurgUn: all attention layers, model targets, ascent until erased, ascent_cap 3": 'surgun_sp_all_attn_mt_ue3',
    "variant of today's SurgUn: all attention layers, model targets, ascent_cap 3": 'surgun_sp_all_attn_mt_cap3',
    "variant of today's SurgUn: all attention layers, model targets, ascent_cap 3, retain_weight 3": 'surgun_sp_all_attn_mt_cap3_rw3',
    "variant of today's SurgUn: ESD-u's layers, model targets, retain_weight 3": 'surgun_sp_noxattn_mt_rw3',
    "variant of today's SurgUn: ESD-u's layers, model targets": 'surgun_sp_noxattn_mt',
    "ablation of today's SurgUn: one distractor": 'surgun_sp_1d',
    "ablation of today's SurgUn: the first two distractors": 'surgun_sp_2d',
    "ablation of today's SurgUn: no distractors": 'surgun_sp_no_distractors',
    "ablation of today's SurgUn: localised": 'surgun_sp_loc',
    'ablation of v2: one distractor': 'surgun_sn_1d',
    'ablation: no ascent (no guard, so the same under v2 and today)': 'surgun_sn_no_ascent',
    'ablation of v2: localised': 'surgun_sn_loc',
    'CA noise variant': 'ca_noise',
    'GA': 'ga',
    'ESD-x concept-only, 4x steps (compute-matched)': 'esd_x@4x',
    'CA model-based, 2x steps (compute-matched)': 'ca@2x',
    'v0 variant: ascent_cap 1.5': 'surgun_cap15',
    'v0 variant: one distractor per step': 'surgun_dps1',
    'v0 variant: ascent_cap 3': 'surgun_cap3',
    'SurgUn v0 (before the retain plan)': 'surgun_v0',
    'v0 variant: related concepts protected': 'surgun_protect',
    'v0 ablation: one distractor': 'surgun_1d',
    'v0 ablation: no ascent': 'surgun_no_ascent',
    'v0 ablation: localised': 'surgun_loc',
    'v0 ablation: no distractors': 'surgun_no_distractors',
    'ablation: no ascent': 'surgun_rp_no_ascent',
    'variant: nearest retain prompts first': 'surgun_nearest',
}
"""The README's per-target tables name each method by a label; this is which method each one is (the test that their rows
are the records' reads it)."""


def row_cells(done: dict, target: str, method: str, lr: float) -> str | None:
    """One row of the README's per-target tables after its label: seeds (attack seeds where fewer), then UA, CRA, H, related
    IRA, kept on target, mode spread over the grid runs and soft@40, soft@150, paraphrase over the attacks, each as mean (sample
    sd over seeds), the mean alone for one run. None when the method has no grid run there."""
    grid, hits = records_at(done, "grid", target, method, lr), records_at(done, "attack", target, method, lr)
    if not grid:
        return None
    seeds = f"{len(grid)}" + ("" if len(hits) == len(grid) else f" (attacks {len(hits)})")
    return " | ".join([seeds, *(cell([r.get(k) for r in grid], 3 if k == "H" else 2)
                                for k in ("UA", "CRA", "H", "related_IRA", "kept_on_target", "mode_spread_bits")),
                       *(cell([r.get(k) for r in hits]) for k in ("soft@40", "soft@150", "paraphrase"))])


def grid_of(m: str, s) -> tuple:
    return UCE_LAMBDAS if m == "uce" else tuple(s.lrs)


def f(d, k="mean"):
    """mean (sd); the mean alone when there is one value (no sd to give)."""
    if not d:
        return "-"
    return f"{d['mean']:.3f}" if d["n"] == 1 else f"{d['mean']:.3f} ({d['sd']:.3f})"


def write_report(jsonl: Path, out: Path, stem: str, s, targets, wall_s: float | None = None) -> dict:
    done = read_jsonl(jsonl)
    summary = summarise(done)
    best = best_table(summary)
    tnames = [f"{k}:{n}" for k, n in targets]
    expected = {(t, m, lr, seed) for t in tnames for m in s.methods if not V2_METHODS[m].records_only for lr in grid_of(m, s)
                for seed in (s.seeds[:1] if m == "uce" else s.seeds)}
    have = {(r["target"], r["method"], r["lr"], r["seed"]) for r in done.values() if r.get("phase") == "grid"}
    missing = expected - have
    attacks = [r for r in done.values() if r.get("phase") == "attack"]
    partial = bool(missing) or (s.attacks and not attacks) or s.quick
    gate = done.get("gate||||", {})
    forms = done.get("paraphrase_forms||||", {}).get("forms", {})
    untouched = {r["target"]: r for r in done.values() if r.get("phase") == "untouched"}

    L = [f"# Toy canvas yardstick v2{' (quick mode)' if s.quick else ''}", ""]
    if partial:
        L += [f"**PARTIAL RESULTS**: {len(have & expected)} of {len(expected)} planned grid runs done "
              f"({len(missing)} missing), {len(attacks)} attack runs. Numbers below cover only what is done; "
              "rerun the same command to resume (finished runs are skipped).", ""]
    L += [f"Targets planned: {', '.join(tnames)}. Steps {s.steps} (compute-matched variants x4 / x2), lr grid {list(s.lrs)} "
          f"(UCE: preserve lambda {list(UCE_LAMBDAS)}), seeds {list(s.seeds)}, training samples per prompt {s.samples_per_prompt}. "
          f"SurgUn = the SurgUn Train node run by ComfyUI's executor (paired target lines, distractor names from SurgUn's "
          f"algorithm, `{{concept}}` retain lines). v1 results are kept in `toy_canvas.md`.",
          (f"Model gate: object {gate['object_accuracy']:.3f}, style {gate['style_accuracy']:.3f} ({gate['n_images']} images)." if gate else ""),
          "", "## Held out by construction", "",
          "The 8x8 table is split by the other attribute (style target: objects; object target: styles): even indices train, "
          f"odd indices evaluate (objects train {list(split.contexts('style', 'train'))}, eval {list(split.contexts('style', 'eval'))}; "
          f"styles train {list(split.contexts('object', 'train'))}, eval {list(split.contexts('object', 'eval'))}). Every method "
          "trains on train-half prompts only; UA, kept-on-target, mode spread and both attacks use the target in eval-half "
          "contexts; IRA/CRA use eval-half cells with neither the target nor a distractor/anchor; related retention uses "
          "eval-half cells of the 2 concepts nearest the target (untouched text encoder). Seeds: training samples "
          f"`seed + batch` (< {split.TRAIN_SEED_SPAN}), evaluation/attack ranges {split.SEED_BASES}. "
          "`tests/benchmarks/test_yardstick_split.py` intersects every method's training prompts (the harness's own "
          "functions, SurgUn's through `surgun_core.pairing`) with every evaluation set; the run asserts the same per target.", ""]
    if forms:
        L += ["## What the untouched text encoder generalises to (paraphrase forms)", "",
              "Classifier recognition of the concept on the untouched model, every concept of the kind, eval-half contexts. "
              f"Forms recognised >= {RECOGNISED_TXT} and trained on by no method form the paraphrase attack.", "",
              "| kind | form | template | recognised | images |", "| --- | --- | --- | --- | --- |"]
        for k, v in forms.items():
            L.append(f"| {v['kind']} | {v['form']} | `{v['template']}` | {v['recognised']:.3f} | {v['n_images']} |")
        L.append("")
    cols = METRICS
    table = standing(done, best, tnames) if best else []
    ptable = pixel_table(done, best, tnames) if best else []
    for title, text, rows in (
            ("Where SurgUn stands", "Each method at its best lr for the kind on the shared grid (UCE at its best lambda per target), "
             "on the held-out evaluation above; H as mean (sd over seeds), the other cells as means over the seeds in the last "
             "column (attack seeds in brackets). Soft prompt and paraphrase are the share of images brought back (lower is "
             "better). The README copies this table (`tests/benchmarks/test_report_v2.py` checks that it does).", table),
            ("Retain in pixels", "The rows of the table above, scored as the Erase/Retain Compare node scores retain with its "
             "pixel embedding: each image of the retain prompts (and of the related concepts' prompts) against the untouched "
             "model's image of the same prompt and seed, the mean of thumbnail cosine and SSIM (1 = the same image). Beside "
             "it, the classifier's view of the same runs: IRA x CRA relative to the untouched model's, and related kept. The "
             "floor row: the untouched model at other seeds (a fresh image of the same prompt). Runs made before the pixel "
             "score existed were rerun at the same lr and seed (phase `pixel`). The README copies this table.", ptable)):
        if len(rows) > 2:
            L += [f"## {title}", "", text, "", *rows, ""]
    if best:
        L += ["## Each method at its best lr (highest mean H), held-out prompts", "",
              "Cells: mean (sd) over targets x seeds (the mean alone for a single run). UA: eval-half target images not classified as the target; IRA/CRA: "
              "retain cells; related IRA: the 2 nearest concepts; kept on target: the other attribute on the target's eval "
              "images; mode spread: entropy (bits) of the classes the target prompts now produce. `edge`: the best lr is at "
              "the end of the grid (extend it). matched: `step` = the same steps as SurgUn, `compute` = as many training samples "
              "as SurgUn. SurgUn is the node at its defaults: the retain plan (each distractor's own line retained) and shared "
              "noise (target and distractor images from the same noises, trained at the same noise and level), with the guard's "
              "probe at noise levels spread over the schedule (stop 31); surgun_v2 is the node before that (its probe's levels "
              "drawn at random; records only, no input restores it), surgun_v1 before shared noise too (shared_noise off), "
              "surgun_v0 before the retain plan too (retain_distractors off). The ablations and variants named surgun_sp_* "
              "change SurgUn as it is now; every other one was measured before stop 31, so \"SurgUn v2\" is the newest SurgUn "
              "it can change (records only where it ran the old probe). "
              f"`ablation` = the node with one ingredient changed: {changes(ABLATIONS)}. `variant` = every ingredient kept "
              f"and one other input changed: {changes(VARIANTS)}.", "",
              "| kind | method | matched | lr | " + " | ".join(c.replace("_", " ") for c in cols) + " | n |",
              "|" + " --- |" * (5 + len(cols))]
        group = lambda m: ("ablation" if m in ABLATIONS else "variant" if m in VARIANTS
                           else "compute" if m in COMPUTE_MATCHED else "step")
        for (kind, m), (lr, d) in sorted(best.items(), key=lambda kv: (kv[0][0] != "style", ("step", "compute", "variant", "ablation").index(group(kv[0][1])),
                                                                        -kv[1][1]["H"]["mean"])):
            grid = grid_of(m, s)
            edge = " edge" if len(grid) > 1 and lr in (min(grid), max(grid)) else ""
            L.append(f"| {kind} | {m} | {group(m)} | {lr:.0e}{edge} | "
                     + " | ".join(f(d[c]) for c in cols) + f" | {d['H']['n']} |")
        L.append("")
    keys = attack_keys(s)
    strong = keys[-2] if len(keys) > 1 else "paraphrase"
    if attacks:
        L += ["## Attacks at each method's best lr", "",
              "soft@N: a soft prompt (cross-attention context) optimised N Adam steps toward fresh samples of each eval "
              "target prompt (new seeds, never trained on), one per prompt and attack seed; recovery = share of its images "
              "classified as the target. paraphrase: recovery on the paraphrase forms above. Lower is better. Cells: mean "
              "(sd over targets x seeds); `bin. sd`: binomial sd of one run's share at the observed mean.", "",
              f"| kind | method | lr | {' | '.join(keys)} | images per run (soft, para) | bin. sd {strong} | n |",
              "|" + " --- |" * (6 + len(keys))]
        by: dict = {}
        for r in attacks:
            by.setdefault((r["kind"], r["method"], r["lr"]), []).append(r)
        for (kind, m, lr), rows in sorted(by.items(), key=lambda kv: (kv[0][0] != "style", kv[0][1] != "untouched", kv[0][1])):
            d = {k: ms([r.get(k) for r in rows]) for k in keys}
            n_soft, n_para = rows[0].get("soft_n_images", 0), rows[0].get("paraphrase_n_images", 0)
            p = d[strong]["mean"] if d[strong] else float("nan")
            bsd = math.sqrt(p * (1 - p) / n_soft) if n_soft and not math.isnan(p) else float("nan")
            L.append(f"| {kind} | {m} | {'-' if lr is None else f'{lr:.0e}'} | " + " | ".join(f(d[k]) for k in keys)
                     + f" | {n_soft}, {n_para} | {bsd:.3f} | {len(rows)} |")
        L.append("")
    if untouched:
        L += ["## Untouched model on the held-out sets", "", "| target | UA | IRA | CRA | related IRA | kept on target | "
              "mode spread | distractors | related | paraphrase forms used |", "|" + " --- |" * 10]
        for t, u in untouched.items():
            L.append(f"| {t} | {u['UA']:.3f} | {u['IRA']:.3f} | {u['CRA']:.3f} | {u['related_IRA']:.3f} | {u['kept_on_target']:.3f} | "
                     f"{u['mode_spread_bits']:.2f} | {', '.join(u['distractors']['names'])} | {', '.join(u['related'])} | "
                     f"{', '.join(u['attack_forms']) or '-'} |")
        L.append("")
    if summary:
        L += ["## Every grid point", "", "| method | lr | kind | " + " | ".join(c.replace("_", " ") for c in cols) + " | targets |",
              "|" + " --- |" * (4 + len(cols))]
        for key in sorted(summary, key=lambda k: (list(V2_METHODS).index(k.split("|")[0]), k.split("|")[2], float(k.split("|")[1]))):
            m, lr, kind = key.split("|")
            d = summary[key]
            L.append(f"| {m} | {float(lr):.0e} | {kind} | " + " | ".join(f(d[c]) for c in cols) + f" | {', '.join(d['targets'])} |")
        L.append("")
    speed = out / stem / "speed.json"
    if speed.exists():
        sp = json.loads(speed.read_text())
        L += ["## Speed (CPU seconds per training step, median, same layers and loop, one thread)", "",
              ", ".join(f"{k} {v['median_cpu_s']:.3f} s (n={v['n_steps']})" for k, v in sp.items() if isinstance(v, dict))
              + f"; SurgUn / ESD-x = {sp['ratio_surgun_to_esd_x']:.2f}x (SurgUn: 4 samples per step, ESD-x 1 sample with 3 "
              "forward passes)"
              + (f"; with model_targets {sp['ratio_surgun_model_targets_to_esd_x']:.2f}x (one more forward pass)"
                 if "ratio_surgun_model_targets_to_esd_x" in sp else "")
              + (f"; with concept_levels {sp['ratio_surgun_concept_levels_to_esd_x']:.2f}x per step, after a profile "
                 f"measured once that costs {sp['concept_levels_profile_in_steps']:.1f} SurgUn steps"
                 if "concept_levels_profile_in_steps" in sp else "") + ".", ""]
    for fname, when in (("probe_cost_before.json", "before retain renders were limited to eligible blocks"), ("probe_cost.json", "now")):
        pc = out / stem / fname
        if pc.exists():
            c = json.loads(pc.read_text())
            lo = c["localizer"]
            L += [f"Block Localizer vs the SurgUn Train it steers ({when}; CPU s, each node alone in the executor, lr 3e-3, "
                  f"`--probe-cost`): localizer {lo['cpu_s']} s ({lo['blocks']} blocks probed, retain rendered for "
                  f"{lo['retain_rendered']}, chosen {', '.join(lo['chosen'])}), train {c['train']['cpu_s']} s: "
                  f"**{c['ratio_localizer_to_train']:.2f}x** (target <= 1x), with the Localizer's renders at the training "
                  f"samples' {c.get('train_sample_steps', 20)} steps."]
            for k, v in c.items():  # the same localiser at the node's default render_steps
                if k.startswith("localizer_render_steps_"):
                    L[-1] += (f" At the Localizer's default render_steps ({v['render_steps']}): {v['cpu_s']} s (chosen "
                              f"{', '.join(v['chosen']) or 'none'}), **{c['ratio_' + k + '_to_train']:.2f}x**.")
            L.append("")
    pngs = plots(summary, attacks, out, stem, keys)
    if best and (pixel_png := pixel_plot(done, best, tnames, out, stem)):
        pngs.append(pixel_png)
    for p in pngs:
        L += [f"![{p}]({p})", ""]
    if wall_s:
        L.append(f"Wall time of this invocation: {wall_s:.0f} s.")
    report = {"partial": partial, "missing_grid_runs": len(missing), "settings": {k: list(v) if isinstance(v, tuple) else v
                                                                                  for k, v in vars(s).items()},
              "gate": gate, "paraphrase_forms": forms, "untouched": untouched, "summary": summary, "standing": table, "pixel": ptable,
              "best": {f"{k}|{m}": {"lr": lr, **d} for (k, m), (lr, d) in best.items()},
              "attacks": attacks, "runs": [r for r in done.values() if r.get("phase") == "grid"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text("\n".join(L) + "\n")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    return report


RECOGNISED_TXT = "0.8"


def plots(summary: dict, attacks: list, out: Path, stem: str, keys: tuple = ("paraphrase",)) -> list[str]:
    """Pareto per kind (UA against retain = mean of IRA and CRA, over the lr grid, one curve per method) and attack bars."""
    from PIL import Image, ImageDraw

    names = []
    methods = list(V2_METHODS)
    for kind in ("style", "object"):
        pts: dict = {}
        for key, d in summary.items():
            m, lr, k = key.split("|")
            if k == kind and d["UA"] and d["IRA"] and d["CRA"]:
                pts.setdefault(m, []).append((float(lr), (d["IRA"]["mean"] + d["CRA"]["mean"]) / 2, d["UA"]["mean"]))
        if not pts:
            continue
        W, H, pad = 640, 480, 60
        img = Image.new("RGB", (W + 170, max(H, 40 + 16 * len(pts))), "white")  # the legend below the plot's height too
        dr = ImageDraw.Draw(img)
        X = lambda v: pad + v * (W - 2 * pad)
        Y = lambda v: H - pad - v * (H - 2 * pad)
        dr.rectangle([X(0), Y(1), X(1), Y(0)], outline="black")
        for t in range(6):
            v = t / 5
            dr.text((X(v) - 8, Y(0) + 5), f"{v:.1f}", fill="black")
            dr.text((X(0) - 30, Y(v) - 5), f"{v:.1f}", fill="black")
        dr.text((W // 2 - 80, H - 25), "retain = (IRA + CRA) / 2, held-out cells", fill="black")
        dr.text((5, 10), f"{kind} targets: UA (held-out target prompts) vs retain over the lr grid (means over targets x seeds)", fill="black")
        for i, m in enumerate(sorted(pts, key=methods.index)):
            c = COLOURS[methods.index(m) % len(COLOURS)]
            seq = sorted(pts[m])
            xy = [(X(a), Y(b)) for _, a, b in seq]
            thin = m in ABLATIONS + VARIANTS  # ablations and variants: thin lines, hollow points
            if len(xy) > 1:
                dr.line(xy, fill=c, width=1 if thin else 2)
            for (x, y), (lr, _, _) in zip(xy, seq):
                dr.ellipse([x - 3, y - 3, x + 3, y + 3], fill=None if thin else c, outline=c)
            dr.line([W + 5, 30 + 16 * i, W + 25, 30 + 16 * i], fill=c, width=1 if thin else 3)
            dr.text((W + 30, 24 + 16 * i), m, fill="black")
        name = f"{stem}_pareto_{kind}.png"
        img.save(out / name)
        names.append(name)
    rows = [r for r in attacks if any(r.get(k) is not None for k in keys)]
    if rows:
        by: dict = {}
        for r in rows:
            by.setdefault((r["kind"], r["method"]), []).append(r)
        keys_ = sorted(by, key=lambda k: (k[0] != "style", k[1] != "untouched", k[1]))
        gw = 20 * len(keys) + 24
        W, H, pad, bw = max(400, gw * len(keys_) + 80), 420, 60, 20
        img = Image.new("RGB", (W, H), "white")
        dr = ImageDraw.Draw(img)
        Y = lambda v: H - pad - v * (H - 2 * pad)
        dr.line([pad - 10, Y(0), W - 10, Y(0)], fill="black")
        dr.text((5, 8), f"attack recovery (share classified as the target; lower is better): {', '.join(keys)}", fill="black")
        for t in range(6):
            dr.text((5, Y(t / 5) - 5), f"{t / 5:.1f}", fill="black")
        for i, key in enumerate(keys_):
            x0 = pad + gw * i
            for j, (k, c) in enumerate(zip(keys, [(120, 160, 220), (31, 80, 180), (214, 39, 40), (44, 160, 44)])):
                d = ms([r.get(k) for r in by[key]])
                if d:
                    dr.rectangle([x0 + j * bw, Y(d["mean"]), x0 + (j + 1) * bw - 2, Y(0)], fill=c)
            dr.text((x0, Y(0) + 5), key[1][:11], fill="black")
            dr.text((x0, Y(0) + 18), key[0], fill="black")
        name = f"{stem}_attacks.png"
        img.save(out / name)
        names.append(name)
    return names


def pixel_plot(done: dict, best: dict, tnames: list[str], out: Path, stem: str) -> str | None:
    """Retain in pixels (x) against the soft prompt's recovery (y, lower is better) per row of ``STANDING`` and target,
    means over the seeds each has (both at the lr the row shows): the untouched model sits at (1, 1), and the goal is
    the lower right corner. Written as ``<stem>_pixel_vs_soft.png``; None when no row has both."""
    from PIL import Image, ImageDraw

    pts = []
    for m, label in STANDING:
        for t in tnames:
            lr = standing_lr(done, best, m, t)
            px, hits = ms([r["pixel_retain"] for r in pixel_records(done, t, m, lr)]), ms(
                [r.get("soft@150") for r in records_at(done, "attack", t, m, lr)])
            if px and hits:
                pts.append((m, label.strip("*"), t.split(":")[1], px["mean"], hits["mean"]))
    if not pts:
        return None
    W, H, pad, lo = 640, 480, 60, 0.6
    rows = list(dict.fromkeys((m, label) for m, label, *_ in pts))
    img = Image.new("RGB", (W + 260, max(H, 40 + 16 * len(rows))), "white")
    dr = ImageDraw.Draw(img)
    X = lambda v: pad + (max(v, lo) - lo) / (1 - lo) * (W - 2 * pad)  # noqa: E731
    Y = lambda v: H - pad - v * (H - 2 * pad)  # noqa: E731
    dr.rectangle([X(lo), Y(1), X(1), Y(0)], outline="black")
    for t in range(5):
        v = lo + t * (1 - lo) / 4
        dr.text((X(v) - 10, Y(0) + 5), f"{v:.1f}", fill="black")
        dr.text((X(lo) - 30, Y(t / 4) - 5), f"{t / 4:.2f}", fill="black")
    dr.text((W // 2 - 150, H - 25), "retain in pixels (retain prompts; 1 = the untouched model's images)", fill="black")
    dr.text((5, 10), "soft prompt @150 recovery (lower is better) against retain in pixels, per method and target", fill="black")
    for i, (m, label) in enumerate(rows):
        c = COLOURS[i]  # the table's rows in order: the first colours are the most distinct
        for mm, _, tn, x, y in pts:
            if mm == m:
                dr.ellipse([X(x) - 4, Y(y) - 4, X(x) + 4, Y(y) + 4], fill=c, outline=c)
                dr.text((X(x) + 5, Y(y) - 6), tn[:2], fill=c)
        dr.line([W + 5, 30 + 16 * i, W + 25, 30 + 16 * i], fill=c, width=3)
        dr.text((W + 30, 24 + 16 * i), label, fill="black")
    name = f"{stem}_pixel_vs_soft.png"
    img.save(out / name)
    return name


def check_quick_v2(report: dict) -> None:
    """CI bounds (each can fail): the gate; SurgUn (the node) erases the held-out target prompts well
    beyond the untouched model and keeps most held-out retain cells."""
    g = report["gate"]
    assert g and g["object_accuracy"] >= 0.8 and g["style_accuracy"] >= 0.8, f"model gate failed: {g}"
    assert report["untouched"], "no target was evaluated"
    for t, u in report["untouched"].items():
        su = [r for r in report["runs"] if r["target"] == t and r["method"] == "surgun"]
        assert su, f"SurgUn did not run on {t}"
        ua = max(r["UA"] for r in su)
        assert ua >= u["UA"] + 0.25, f"SurgUn did not erase the held-out prompts of {t}: UA {ua:.3f} vs untouched {u['UA']:.3f}"
        ira = max(r["IRA"] for r in su)
        assert ira >= 0.6 * u["IRA"], f"SurgUn broke the held-out retain cells of {t}: IRA {ira:.3f} vs untouched {u['IRA']:.3f}"
