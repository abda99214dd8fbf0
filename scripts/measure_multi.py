"""Several concepts erased in one SurgUn Train run, against erasing them one after another and
against stacking single-concept files, on the bundled toy canvas model, through ComfyUI's real
executor (the nodes a user wires).

Concept sets: 1, 2 and 4 styles, and a style with an object. For each set: one joint run (SurgUn
Train with one target line per context for every concept, the concept in braces, 100 steps per
concept; a context that is itself erased is left out: "a star in neon style" is neither a neon
line nor a star line when both are erased, or it would be one concept's target and the other's
distractor); for sets of several, the single-concept runs chained (each SurgUn Train on the previous
one's MODEL: sequential) and stacked (each run on the original, applied one over the other with
SurgUn Apply Erased Weights). Each erased model is scored with the toy canvas classifier: per
erased concept UA (its images no longer in it, 16 images) and kept-on-target (the other attribute
on its own prompts); IRA (the styles not erased, kept) and CRA (the objects not erased, kept) on
every prompt that holds no erased concept (1 image each). Costs: the node's own log of its
sampling and training seconds (CPU, one thread).

Distractors: per concept by SurgUn's distractor algorithm among the concepts of its kind that are
not erased (k=2), typed per concept under a '{concept}' line. Retain: every style not erased, in
braces (the same contexts), for style-only sets; for the style-with-object set, the prompts that
hold neither concept on every 4th diagonal of the table. Evaluation uses the benchmark's
evaluation seed (777), not the training seed, but the same prompt table: a demo-level
measurement, not the held-out yardstick.

Recovery: on every erased model, for every erased concept, SurgUn Recovery Check runs in the same
graph (one target line, the concept's distractors, a concept-only paraphrase, defaults otherwise,
8 images per row). Its rows' images (read where the node hands them to labelled_grid) are also
classified by the toy classifier, and the classifier's recovery is set beside the node's (pixel
fallback: the toy model has no CLIP vision) to say whether the node's number can be trusted.

Resumable: each run is a line in benchmarks/results/multi/runs.jsonl; a rerun skips finished runs.
    source scripts/env.sh && OMP_NUM_THREADS=1 $SURGUN_PY scripts/measure_multi.py [--report-only]
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
OUT = REPO / "benchmarks" / "results" / "multi"
log = logging.getLogger("surgun.multi")
SETS = {
    "1 style": (("style", "neon"),),
    "2 styles": (("style", "neon"), ("style", "dots")),
    "4 styles": (("style", "neon"), ("style", "dots"), ("style", "checker"), ("style", "stripes")),
    "style + object": (("style", "neon"), ("object", "star")),
}
STEPS_PER_CONCEPT = 100
LR = 1e-3


class Timings(logging.Handler):
    """Reads the node's own log line: 'erased ... in T s (sampling S s)'."""

    def __init__(self):
        super().__init__()
        self.runs: list[tuple[float, float, str]] = []

    def emit(self, record):
        m = re.search(r"steps in ([\d.]+) s \(sampling ([\d.]+) s\)", record.getMessage())
        if m:
            self.runs.append((float(m.group(1)), float(m.group(2)), record.getMessage()))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import headless  # noqa: F401  (puts ComfyUI on the path)
    from demo import toy_nodes_dir

    import pack

    comfy = headless.start([toy_nodes_dir()])
    pack.load()
    from surgun_pack.benchmarks.toy_canvas import run, world

    timings = Timings()
    logging.getLogger("SurgUn").addHandler(timings)
    logging.getLogger("SurgUn").setLevel(logging.INFO)
    bench = run.Bench(run.Settings(k_distractors=2), None)
    OUT.mkdir(parents=True, exist_ok=True)
    runs_path = OUT / "runs.jsonl"
    done = {json.loads(line)["run"] for line in runs_path.read_text().splitlines()} if runs_path.exists() else set()

    names_of = {"style": list(world.STYLES), "object": list(world.OBJECTS)}
    other = {"style": "object", "object": "style"}

    def distractors_of(kind: str, name: str, erased: tuple) -> list[str]:
        from surgun_pack.surgun_core.distractors import DistractorParams, build_distractor_set
        import torch

        with torch.inference_mode():
            def embed(names):
                return torch.stack([torch.stack([bench.bank.conditioning(p)[0][1]["pooled_output"][0].float()
                                                 for p in bench.prompts_of(kind, n)]).mean(0) for n in names])
            keep = [n for n in names_of[kind] if (kind, n) not in erased]
            return build_distractor_set(name, "custom", embed, DistractorParams(k=2), candidates=keep, use_pool=False).names

    def braced(kind: str, name: str, context: str) -> str:
        return world.prompt_for(context, "{" + name + "}") if kind == "style" else world.prompt_for("{" + name + "}", context)

    def retain_of(concepts: tuple) -> list[str]:
        erased = {n for _, n in concepts}
        if all(k == "style" for k, _ in concepts):
            return ["{" + s + "}" for s in world.STYLES if s not in erased]
        return [world.prompt_for(o, s) for i, o in enumerate(world.OBJECTS) for j, s in enumerate(world.STYLES)
                if o not in erased and s not in erased and (i + j) % 4 == 0]

    def train(concepts: tuple, model_ref, all_erased: tuple) -> tuple[dict, dict]:
        """SurgUn Train for ``concepts``; distractors are chosen among the concepts ``all_erased`` leaves."""
        erased = {n for _, n in all_erased}
        # a line holding two erased concepts would be both a target and another concept's distractor or context
        targets = [braced(k, n, c) for k, n in concepts for c in names_of[other[k]] if c not in erased]
        chosen = {n: distractors_of(k, n, all_erased) for k, n in concepts}
        lines = [x for _, n in concepts for x in ("{" + n + "}", *chosen[n])]
        return {"class_type": "SurgUnTrain", "inputs": {
            "model": model_ref, "clip": ["ld", 1], "target": "\n".join(targets), "distractors": "\n".join(lines),
            "retain_prompts": "\n".join(retain_of(all_erased)), "blocks": "cross_attention", "block_pattern": "",
            "steps": STEPS_PER_CONCEPT * len(concepts), "learning_rate": LR, "ascent_weight": 1.0, "distractor_weight": 1.0,
            "retain_weight": 1.0, "ascent_cap": 2.0, "seed": 0, "sample_size": 32, "sample_steps": bench.constants.STEPS,
            "samples_per_prompt": 2, "sample_cfg": bench.constants.CFG, "filename_prefix": ""}}, chosen

    def evaluate(model, concepts: tuple) -> dict:
        import torch

        erased = {n for _, n in concepts}
        out = {}
        others = [world.prompt_for(o, s) for o in world.OBJECTS for s in world.STYLES if o not in erased and s not in erased]
        cls_o = bench.classify(bench.sample(model, others, bench.s.eval_seed + 10_000))
        truth = {"style": torch.tensor([names_of["style"].index(p.split(" in ")[1][:-len(" style")]) for p in others]),
                 "object": torch.tensor([names_of["object"].index(p[2:].split(" in ")[0]) for p in others])}
        out["IRA"] = float((cls_o["style"] == truth["style"]).float().mean())
        out["CRA"] = float((cls_o["object"] == truth["object"]).float().mean())
        for kind, name in concepts:
            prompts = bench.prompts_of(kind, name) * 2
            cls_t = bench.classify(bench.sample(model, prompts, bench.s.eval_seed))
            out[f"UA:{name}"] = float((cls_t[kind] != names_of[kind].index(name)).float().mean())
            ctx = [p.split(" in ")[1][:-len(" style")] if kind == "object" else p[2:].split(" in ")[0] for p in prompts]
            out[f"kept_on_target:{name}"] = float((cls_t[other[kind]] == torch.tensor([names_of[other[kind]].index(c) for c in ctx]))
                                                  .float().mean())
        return out

    from surgun_pack.surgun_comfy import recovery as recovery_mod

    captured: list = []
    real_grid = recovery_mod.labelled_grid

    def spy(rows, **kw):
        captured.append(rows)
        return real_grid(rows, **kw)

    recovery_mod.labelled_grid = spy
    score_re = re.compile(r"^(soft prompt|concept vector|paraphrase '.*'): recovery (\d\.\d{3}) \(", re.M)

    def check_target(kind: str, name: str, concepts: tuple) -> str:
        erased = {n for _, n in concepts}
        context = next(c for c in (["star", *names_of["object"]] if kind == "style" else ["dots", *names_of["style"]]) if c not in erased)
        return braced(kind, name, context)

    def recovery_nodes(graph: dict, model_ref, concepts: tuple, chosen: dict) -> None:
        for kind, name in concepts:
            graph[f"rc_{name}"] = {"class_type": "SurgUnRecoveryCheck", "inputs": {
                "original": ["ld", 0], "erased": model_ref, "clip": ["ld", 1], "vae": ["ld", 2],
                "target": check_target(kind, name, concepts), "distractors": "\n".join(chosen[name]),
                "paraphrases": f"{name} style" if kind == "style" else f"a {name}", "soft_tokens": 4, "attack_steps": 100,
                "attack_lr": 0.01, "vector_strength": 2.0, "recovered_above": 0.5, "images_per_prompt": 8,
                "steps": bench.constants.STEPS, "size": 32, "cfg": bench.constants.CFG, "seed": 0}}
            graph[f"rp_{name}"] = {"class_type": "PreviewAny", "inputs": {"source": [f"rc_{name}", 1]}}

    def recoveries(res, concepts: tuple) -> dict:
        """Per concept and attack: the node's recovery, and the classifier's share of each row in the concept."""
        import torch

        out = {}
        for kind, name in concepts:
            report = res.outputs[f"rc_{name}"][1][0]
            node = {m.group(1): float(m.group(2)) for m in score_re.finditer(report)}
            target = check_target(kind, name, concepts).replace("{", "").replace("}", "")
            rows = next(r for r in captured if r[0].prompt == target)
            idx = names_of[kind].index(name)
            with torch.inference_mode():
                share = {r.tag if r.tag != "erased + attack" else r.prompt: float(
                    (bench.cls_mod.classify(bench.classifier, r.images.float())[kind] == idx).float().mean()) for r in rows}
            gap, se = map(float, re.search(r"\(gap (-?[\d.]+), standard error ([\d.]+)\)", report).groups())
            out[name] = {"node": node, "classifier_share_in_style": share, "verdict": report.splitlines()[-1], "gap": gap,
                         "standard_error": se}
        captured.clear()
        return out

    def record(row: dict) -> None:
        with runs_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.add(row["run"])
        log.info("[SurgUn multi] %s", json.dumps(row))

    loader = {"ld": {"class_type": "SurgUnToyCanvasLoader", "inputs": {"weights_path": ""}}}
    if "untouched" not in done:
        record({"run": "untouched", **{n: evaluate(bench.model, c) for n, c in SETS.items()}})
    singles: dict[str, list] = {}  # concept -> its single-concept run's (node s, sampling s)

    def timed(before: int, names) -> dict:
        """The node's own timings of the Train runs since ``before`` (a cached run logs nothing)."""
        out = {}
        for total, sampling, message in timings.runs[before:]:
            name = next((n for n in names if re.search(rf"\b{n}\b", message)), message)
            out[name] = [round(total, 1), round(sampling, 1)]
        return out

    for set_name, concepts in SETS.items():
        n = len(concepts)
        name = f"joint: {set_name}"
        if name not in done:
            node, chosen = train(concepts, ["ld", 0], concepts)
            graph = {**loader, "tr": node}
            recovery_nodes(graph, ["tr", 0], concepts, chosen)
            res = comfy.run(graph)
            assert res.success, res.error_text()
            total, sampling, _ = timings.runs[-1]
            meta = res.outputs["tr"][1][0].metadata
            record({"run": name, "set": set_name, "concepts": [c for _, c in concepts], "distractors": chosen,
                    "steps": STEPS_PER_CONCEPT * n, "node_s": round(total, 1), "sampling_s": round(sampling, 1),
                    "training_s": round(total - sampling, 1),
                    "guard_stops": {c: v["stops"] for c, v in meta.get("guard_per_concept", {}).items()},
                    "readout": meta["readout"], **evaluate(res.outputs["tr"][0][0], concepts),
                    "recovery": recoveries(res, concepts)})
        if n == 1:
            continue
        for mode in ("stacked", "sequential"):
            name = f"{mode}: {set_name}"
            if name in done:
                continue
            # stacked: each single-concept run on the original, applied one over the other by Apply nodes (the executor
            # caches a Train node it already ran with the same inputs, as ComfyUI does); sequential: each Train on the
            # previous one's MODEL
            graph, ref, chosen = dict(loader), ["ld", 0], {}
            for i, concept in enumerate(concepts):
                source = ["ld", 0] if mode == "stacked" else ref
                graph[f"tr{i}"], one = train((concept,), source, concepts)
                chosen.update(one)
                if mode == "stacked":
                    graph[f"ap{i}"] = {"class_type": "SurgUnApplyErasedWeights", "inputs": {
                        "model": ref, "weights_file": "(none: use the erased_weights input)", "strength": 1.0,
                        "erased_weights": [f"tr{i}", 1]}}
                    ref = [f"ap{i}", 0]
                else:
                    ref = [f"tr{i}", 0]
            recovery_nodes(graph, ref, concepts, chosen)
            before = len(timings.runs)
            res = comfy.run(graph)
            assert res.success, res.error_text()
            runs = timed(before, [c for _, c in concepts])
            if mode == "stacked":
                singles.update(runs)
            record({"run": name, "set": set_name, "concepts": [c for _, c in concepts], "distractors": chosen,
                    "steps_each": STEPS_PER_CONCEPT,
                    "runs_node_s_sampling_s": {c: (runs.get(c) or singles.get(c)) for _, c in concepts},
                    **evaluate(res.outputs[ref[0]][0][0], concepts), "recovery": recoveries(res, concepts)})

    # the agreement series: the one-style erasure at several strengths, each checked with several attack settings
    concepts = SETS["1 style"]
    (kind, style), = concepts
    for strength in STRENGTHS:
        name = f"series: 1 style at strength {strength:g}"
        if name in done:
            continue
        node, chosen = train(concepts, ["ld", 0], concepts)
        graph = {**loader, "tr": node, "ap": {"class_type": "SurgUnApplyErasedWeights", "inputs": {
            "model": ["ld", 0], "weights_file": "(none: use the erased_weights input)", "strength": strength,
            "erased_weights": ["tr", 1]}}}
        out = {}
        for label, over in ATTACKS.items():
            recovery_nodes(graph, ["ap", 0], concepts, chosen)
            graph[f"rc_{style}"]["inputs"].update(over)
            res = comfy.run(graph)
            assert res.success, res.error_text()
            out[f"{style} ({label})"] = recoveries(res, concepts)[style]
        record({"run": name, "set": "1 style", "concepts": [style], "strength": strength, "attacks": ATTACKS,
                **evaluate(res.outputs["ap"][0][0], concepts), "recovery": out})


ATTACKS = {  # Recovery Check settings for the agreement series. "defaults": the node's defaults when this was measured
    # (4 token rows, lr 0.01, 100 steps, vector x2), found too weak here; the node's defaults are now "strong soft prompt"
    "defaults": {},
    "strong soft prompt": {"soft_tokens": 75, "attack_lr": 0.05, "attack_steps": 200, "vector_strength": 5.0},
    "strong vector": {"attack_steps": 0, "vector_strength": 10.0},
}
STRENGTHS = (1.0, 0.5, 0.25)
"""The agreement series applies the one-style erasure at these strengths (weaker erasures leave more to recover)."""


def _rank(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _pearson(a: list[float], b: list[float]) -> float:
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va, vb = sum((x - ma) ** 2 for x in a) ** 0.5, sum((y - mb) ** 2 for y in b) ** 0.5
    return cov / (va * vb) if va > 0 and vb > 0 else float("nan")


def agreement(rows: list[dict]) -> tuple[list[dict], dict]:
    """Every (run, style, attack): the node's recovery beside the classifier's, normalised the same way
    ((share(attack) - share(erased)) / (share(original) - share(erased)), clamped to [0, 1])."""
    points = []
    for row in rows:
        for style, rec in row.get("recovery", {}).items():
            share = rec["classifier_share_in_style"]
            orig, erased = share["original model"], share["erased model"]
            attacks = [k for k in share if k not in ("original model", "erased model")]
            for (name, node), label in zip(rec["node"].items(), attacks):
                gap = orig - erased
                cls = min(1.0, max(0.0, (share[label] - erased) / gap)) if gap > 0 else float("nan")
                points.append({"run": row["run"], "style": style, "attack": name, "node": node, "classifier": cls,
                               "classifier_share": share[label], "uncertain": rec["verdict"].startswith("verdict: UNCERTAIN")})
    def stats_of(ps: list[dict]) -> dict:
        a, b = [p["node"] for p in ps], [p["classifier"] for p in ps]
        return {"n": len(ps), "pearson": _pearson(a, b) if len(ps) > 2 else float("nan"),
                "spearman": _pearson(_rank(a), _rank(b)) if len(ps) > 2 else float("nan"),
                "verdicts_agree": sum((x > 0.5) == (y > 0.5) for x, y in zip(a, b))}

    ok = [p for p in points if p["classifier"] == p["classifier"]]
    return points, {"all": stats_of(ok), "certain": stats_of([p for p in ok if not p["uncertain"]])}


def per_style(row: dict, key: str, styles) -> str:
    return " / ".join(f"{row[key + ':' + s]:.2f}" for s in styles)


def report() -> None:
    """benchmarks/results/multi/multi.{md,json} from runs.jsonl."""
    rows = [json.loads(line) for line in (OUT / "runs.jsonl").read_text().splitlines()]
    by = {r["run"]: r for r in rows}
    lines = ["# Several concepts in one run vs one after another vs stacked files (toy canvas, through the nodes)", "",
             "Generated by `scripts/measure_multi.py` (see its docstring). Per erased style: UA = its images no longer in it "
             "(16 images), kept = the other attribute kept on its own prompts; IRA = the styles not erased, kept; CRA = the "
             "objects not erased, kept (every prompt without an erased concept, 1 image each). Costs: CPU seconds of SurgUn Train "
             f"(one thread), {STEPS_PER_CONCEPT} steps per concept, lr {LR:g}.", "",
             "| concepts | run | UA per concept | kept on target per concept | IRA | CRA | node s (sampling + training) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for set_name, concepts in SETS.items():
        names = [c for _, c in concepts]
        base = by.get("untouched", {}).get(set_name, {})
        if base:
            lines.append(f"| {set_name} ({', '.join(names)}) | untouched | {per_style(base, 'UA', names)} | "
                         f"{per_style(base, 'kept_on_target', names)} | {base['IRA']:.2f} | {base['CRA']:.2f} | - |")
        for mode in ("joint", "sequential", "stacked"):
            r = by.get(f"{mode}: {set_name}")
            if not r:
                continue
            if mode == "joint":
                cost = f"{r['node_s']} ({r['sampling_s']} + {r['training_s']})"
            else:
                each = [v for v in r["runs_node_s_sampling_s"].values() if v]
                cost = f"{sum(v[0] for v in each):.1f} ({sum(v[1] for v in each):.1f} + {sum(v[0] - v[1] for v in each):.1f}), {len(each)} runs"
            lines.append(f"| {set_name} | {mode} | {per_style(r, 'UA', names)} | {per_style(r, 'kept_on_target', names)} | "
                         f"{r['IRA']:.2f} | {r['CRA']:.2f} | {cost} |")
    series = [r for r in rows if r["run"].startswith("series: ")]
    if series:
        lines += ["", "The one-style erasure applied at lower strengths (SurgUn Apply Erased Weights), for the agreement series below:", "",
                  "| strength | UA (neon) | kept on target | IRA | CRA |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['strength']:g} | {r['UA:neon']:.2f} | {r['kept_on_target:neon']:.2f} | {r['IRA']:.2f} | {r['CRA']:.2f} |"
                  for r in series]
    points, stats = agreement([r for r in rows if "recovery" in r])
    lines += ["", "## SurgUn Recovery Check against the classifier", "",
              "Every erased model above (checked with the node's defaults when this was measured: soft prompt on 4 token "
              "rows, lr 0.01, 100 steps; vector x2), every erased concept, and the series (one style at strengths 1, 0.5, "
              "0.25, each checked with those settings, a stronger soft prompt (75 token rows, lr 0.05, 200 steps; vector x5) and a stronger "
              "vector (x10)): the node's recovery per attack (pixel fallback) beside the classifier's, normalised the same "
              "way (share of the attack's 8 images classified in the erased concept, 0 = as the erased row, 1 = as the original "
              "row). The stronger soft prompt's settings are the node's defaults since.", "",
              *(f"Agreement over {st['n']} points ({which}): Pearson {st['pearson']:.2f}, Spearman {st['spearman']:.2f}; "
                f"recovered-or-not at 0.5 agrees on {st['verdicts_agree']} of {st['n']}." for which, st in
                (("every point", stats["all"]), ("where the node's verdict is not UNCERTAIN", stats["certain"]))), "",
              "| run | concept (check) | attack | node | node verdict UNCERTAIN | classifier (share in concept) |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {p['run']} | {p['style']} | {p['attack']} | {p['node']:.3f} | {'yes' if p['uncertain'] else 'no'} | "
              f"{p['classifier']:.2f} ({p['classifier_share']:.3f}) |" for p in points]
    (OUT / "multi.md").write_text("\n".join(lines) + "\n")
    (OUT / "multi.json").write_text(json.dumps({"runs": rows, "agreement": stats, "points": points}, indent=1))
    log.info("[SurgUn multi] wrote %s", OUT / "multi.md")


if __name__ == "__main__":
    if "--report-only" in sys.argv:
        report()
    else:
        main()
        report()
