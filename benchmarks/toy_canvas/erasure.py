"""Toy canvas erasure benchmark: SurgUn against its ablations, ESD-x, GA and CA, in one run.

See ``run.py`` for what is measured and ``report.py`` for the tables. Run:

    scripts/bench.sh toy_canvas.erasure [--quick] [--targets style:dots,object:star] [--seeds 0,1] [--jobs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from .report import best_by_h, check_quick, markdown, summarise  # noqa: F401  (best_by_h: used by readers of this module)
from .run import RESULTS, Bench, Settings, first_per_kind, grid_name, quick_settings, read_targets, run_targets

log = logging.getLogger("surgun.bench.toy_canvas")
BENCH_RUNNER = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI sanity mode: gate + SurgUn on two targets, loose bounds")
    ap.add_argument("--targets", default=None, help="file or comma list of kind:name (default: targets.txt; quick: 2 targets)")
    ap.add_argument("--seeds", default=None, help="comma list (default 0,1)")
    ap.add_argument("--methods", default=None, help="comma list (default: all)")
    ap.add_argument("--lrs", default=None, help="comma list of learning rates (the same grid for every method)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, each taking a share of the targets (one torch thread each)")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results (quick mode: benchmarks/results/quick, not committed)")
    ap.add_argument("--gate-images-per-prompt", type=int, default=None, help="images per prompt for the model gate (default 4; quick 1)")
    ap.add_argument("--weights", default=None, help="another toy canvas weights file (default: the shipped one)")
    ap.add_argument("--remake-md", type=Path, default=None, help="rewrite the markdown table from a results JSON and exit")
    ap.add_argument("--part", type=Path, default=None, help=argparse.SUPPRESS)  # internal: a worker writes its share here
    ap.add_argument("--all-targets", default=None, help=argparse.SUPPRESS)  # internal: the whole run's targets (grid choice)
    return ap.parse_args(argv)


def settings_from(args) -> Settings:
    s = quick_settings() if args.quick else Settings()
    if args.seeds:
        s.seeds = tuple(int(x) for x in args.seeds.split(","))
    if args.methods:
        s.methods = tuple(args.methods.split(","))
    if args.lrs:
        s.lrs = tuple(float(x) for x in args.lrs.split(","))
    if args.steps:
        s.steps = args.steps
    return s


def forwarded(argv: list[str]) -> list[str]:
    """The command-line options a worker inherits (everything but --jobs, --targets and --out)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--jobs", "--targets", "--out", "--part", "--all-targets"):
            skip = True
            continue
        if a.startswith(("--jobs=", "--targets=", "--out=", "--part=", "--all-targets=")):
            continue
        out.append(a)
    return out


def setup_logging() -> None:
    """Progress to stdout, whatever level ComfyUI's headless start sets on the root logger."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    args = parse_args(argv)
    if args.remake_md:
        report = json.loads(args.remake_md.read_text())
        args.remake_md.with_suffix(".md").write_text(markdown(report))
        return
    s = settings_from(args)
    args.out = args.out or (RESULTS / "quick" if s.quick else RESULTS)
    targets = read_targets(args.targets)
    if s.quick and not args.targets:  # the first style and the first object of the list
        targets = first_per_kind(targets)
    grid_targets = set(first_per_kind(read_targets(args.all_targets) if args.all_targets else targets)) if s.grids else set()
    if args.part:  # a worker: its share of the targets, no gate, no report
        bench = Bench(s, args.weights)
        bench.grid_targets, bench.grid_dir = grid_targets, args.out
        bench.progress_path = args.part.with_suffix(".jsonl")
        args.part.write_text(json.dumps(run_targets(bench, targets)))
        return
    t_start = time.perf_counter()
    bench = Bench(s, args.weights)
    bench.grid_targets, bench.grid_dir = grid_targets, args.out
    from . import gate

    t0 = time.perf_counter()
    gate_metrics = gate.run_gate(bench.model, bench.clip, bench.vae, bench.classifier,
                                 images_per_prompt=args.gate_images_per_prompt or (1 if s.quick else bench.constants.GATE_IMAGES_PER_PROMPT))
    gate_metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    log.info(f"[SurgUn] [gate] object {gate_metrics['object_accuracy']:.3f} style {gate_metrics['style_accuracy']:.3f} "
          f"({gate_metrics['n_images']} images)")
    if not gate_metrics["passed"] and not s.quick:
        raise SystemExit("the toy model fails its quality gate; results would be meaningless")

    if args.jobs > 1 and len(targets) > 1:
        import subprocess
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="toy-canvas-parts-"))
        log.info(f"[SurgUn] {len(targets)} targets on {args.jobs} workers; per-run results stream to {tmp}/*.jsonl")
        shares = [targets[i::args.jobs] for i in range(args.jobs) if targets[i::args.jobs]]
        procs = []
        for i, share in enumerate(shares):
            cmd = [sys.executable, str(BENCH_RUNNER), "toy_canvas.erasure", *forwarded(argv), "--part", str(tmp / f"{i}.json"),
                   "--targets", ",".join(f"{k}:{n}" for k, n in share), "--out", str(args.out),
                   "--all-targets", ",".join(f"{k}:{n}" for k, n in targets)]
            procs.append(subprocess.Popen(cmd, cwd=str(BENCH_RUNNER.parents[1])))
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("a benchmark worker failed (see its output above)")
        parts = [json.loads((tmp / f"{i}.json").read_text()) for i in range(len(shares))]
    else:
        parts = [run_targets(bench, targets)]
    runs = [r for p in parts for r in p["runs"]]
    baselines = {k: v for p in parts for k, v in p["untouched"].items()}
    step_times: dict[str, list[float]] = {}
    for p in parts:
        for m, v in p["step_times"].items():
            step_times.setdefault(m, []).extend(v)

    table = {}
    for mname in [*s.methods, *(["surgun_localized"] if s.localize else [])]:
        for lr in s.lrs:
            for kind in ("style", "object"):
                rows = [r for r in runs if r["method"] == mname and r["lr"] == lr and r["kind"] == kind]
                if rows:
                    table[f"{mname}|{lr}|{kind}"] = summarise(rows)
    step_cost = {m: statistics.mean(v) for m, v in step_times.items()}
    ref = step_cost.get("surgun")
    report = {
        "settings": dataclasses.asdict(s), "targets": [f"{k}:{n}" for k, n in targets], "gate": gate_metrics,
        "trained_layers": bench.modules, "training_samples_s": max(p["training_samples_s"] for p in parts),
        "untouched": baselines, "runs": runs, "summary": table, "jobs": args.jobs,
        "step_cost_s": step_cost, "step_cost_ratio_to_surgun": {m: (v / ref if ref else None) for m, v in step_cost.items()},
        "grids": [grid_name(k, n) for k, n in first_per_kind(targets) if (k, n) in grid_targets and (args.out / grid_name(k, n)).exists()],
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "toy_canvas_quick" if s.quick else "toy_canvas"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(report))
    log.info(markdown(report))
    if s.quick:
        check_quick(report)


if __name__ == "__main__":
    main()
