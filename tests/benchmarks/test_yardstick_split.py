"""Yardstick v2: evaluation prompts, evaluation seeds and attack references are disjoint from
everything any method trains on, computed by the harness's own functions (a change that leaks
fails here); plus the report's PARTIAL marker and the quick bounds."""

import itertools
import json

import pytest
from surgun_pack.benchmarks.toy_canvas import methods_v2 as mv
from surgun_pack.benchmarks.toy_canvas import split, world
from surgun_pack.benchmarks.toy_canvas.report_v2 import check_quick_v2, write_report
from surgun_pack.surgun_core.pairing import plan_groups

TARGETS = [("style", s) for s in world.STYLES] + [("object", o) for o in world.OBJECTS]


def choices(kind, name):
    """Distractor sets to check: every 3-subset of the other concepts (the algorithm picks one of them)."""
    others = [n for n in split.names_of(kind) if n != name]
    return list(itertools.combinations(others, 3))


def trained_by_anyone(kind, name, chosen, related=()):
    """Every method's training prompts with distractors ``chosen``; a ``protect_related`` variant trains
    with any 3 concepts outside ``related`` (every such set is included)."""
    out = set()
    for m in mv.V2_METHODS:
        if mv.V2_METHODS[m].protect_related:
            spared = [n for n in split.names_of(kind) if n != name and n not in related]
            for own in itertools.combinations(spared, 3):
                out |= mv.training_prompts(m, kind, name, own)
        else:
            out |= mv.training_prompts(m, kind, name, chosen)
    return out


@pytest.mark.parametrize("kind,name", TARGETS)
def test_no_evaluated_prompt_is_trained_on(kind, name):
    for chosen in choices(kind, name):
        others = [n for n in split.names_of(kind) if n != name]
        for related in itertools.combinations(others, 2):
            trained = trained_by_anyone(kind, name, chosen, related)
            sets = split.eval_prompt_sets(kind, name, chosen, related,
                                          [f for f in split.PARAPHRASE_FORMS[kind] if f != "concept_only"])
            for role, prompts in sets.items():
                assert prompts, role
                leak = {p.lower() for p in prompts} & trained
                assert not leak, (role, chosen, leak)


def test_concept_only_paraphrase_is_trained_by_esd_x_and_so_never_an_attack():
    """The check is not vacuous: ESD-x trains on "neon style", the concept-only paraphrase."""
    trained = mv.training_prompts("esd_x", "style", "neon", ("pastel", "dots", "noise"))
    assert "neon style" in trained
    assert set(split.paraphrase_prompts("style", "neon", "concept_only")) <= trained


@pytest.mark.parametrize("kind,name", [("style", "neon"), ("object", "star")])
def test_surgun_trains_what_the_node_plans(kind, name):
    """SurgUn's training prompts are exactly EraseRequest's groups from the node's text inputs, and
    they use train-half contexts only; every method trains on train-half contexts only."""
    chosen = tuple(n for n in split.names_of(kind) if n != name)[:3]
    text = split.surgun_node_text(kind, name, chosen)
    lines = lambda t: tuple(x for x in t.splitlines() if x)
    groups = plan_groups(lines(text["target"]), lines(text["distractors"]), lines(text["retain_prompts"]))
    assert [g.target for g in groups] == [split.cell(kind, name, c) for c in split.contexts(kind, "train")]
    assert all(g.paired and len(g.distractors) == 3 and len(g.retain) == 4 for g in groups)
    eval_ctx = set(split.contexts(kind, "eval"))
    for m in mv.V2_METHODS:
        for p in mv.training_prompts(m, kind, name, chosen):
            words = set(p.replace(",", " ").split())
            assert not words & eval_ctx, (m, p)


@pytest.mark.parametrize("kind,name", [("style", "neon"), ("object", "star")])
def test_each_ablation_removes_one_ingredient_and_keeps_the_retain_lines(kind, name):
    """The ablations are SurgUn's node inputs with one thing changed: the distractor count, a weight at
    0 (the tooltip's 'off' value), or a Block Localizer in front; target and retain lines are the same."""
    chosen = tuple(n for n in split.names_of(kind) if n != name)[:3]
    full = split.surgun_node_text(kind, name, chosen)
    lines = lambda t: [x for x in t.splitlines() if x]
    seen = {}
    v0, v1 = dict(mv.V0), dict(mv.V1)
    for a in mv.ABLATIONS:
        m = mv.V2_METHODS[a]
        text = split.surgun_node_text(kind, name, chosen, m.n_distractors)
        assert m.is_surgun and text["target"] == full["target"] and text["retain_prompts"] == full["retain_prompts"], a
        node = dict(m.node)
        base = {k: node.pop(k) for k in v0 if k in node}  # the SurgUn it ablates: v0, v1 (before shared noise) or today's
        assert base in ({}, v1, v0), a
        seen[a] = (len(lines(text["distractors"])), node, m.localized, "v0" if base == v0 else "v1" if base else "now")
        groups = split.surgun_groups(kind, name, chosen, m.n_distractors)
        assert all(len(g.distractors) == seen[a][0] for g in groups), a
    assert seen == {"surgun_loc": (3, {}, True, "v0"), "surgun_1d": (1, {}, False, "v0"),
                    "surgun_no_distractors": (0, {"distractor_weight": 0.0}, False, "v0"),
                    "surgun_no_ascent": (3, {"ascent_weight": 0.0}, False, "v0"),
                    "surgun_rp_1d": (1, {}, False, "v1"),
                    "surgun_rp_no_ascent": (3, {"ascent_weight": 0.0}, False, "v1"),
                    "surgun_sn_1d": (1, {}, False, "now"), "surgun_sn_loc": (3, {}, True, "now"),
                    "surgun_sn_no_ascent": (3, {"ascent_weight": 0.0}, False, "now"),
                    "surgun_sp_1d": (1, {}, False, "now"), "surgun_sp_2d": (2, {}, False, "now"), "surgun_sp_loc": (3, {}, True, "now"),
                    "surgun_sp_no_distractors": (0, {"distractor_weight": 0.0}, False, "now")}
    assert len(lines(full["distractors"])) == 3 and not mv.V2_METHODS["surgun"].node
    assert v0 == {"retain_distractors": False, "shared_noise": False} and v1 == {"shared_noise": False}


def test_each_variant_keeps_every_ingredient_and_changes_one_other_input():
    """A variant is the full method (all distractors, weights on, same lines) with one other node input set."""
    kind, name = "style", "neon"
    chosen = tuple(n for n in split.names_of(kind) if n != name)[:3]
    full = split.surgun_node_text(kind, name, chosen)
    seen = {}
    for v in mv.VARIANTS:
        m = mv.V2_METHODS[v]
        assert m.is_surgun and not m.localized and split.surgun_node_text(kind, name, chosen, m.n_distractors) == full, v
        node = dict(m.node)
        # every ingredient stays on: no weight is set to 0 (a variant may weigh one differently, as stop 47's retain does)
        assert all(node.get(w, 1.0) > 0 for w in ("distractor_weight", "ascent_weight", "retain_weight")), v
        base = next(b for b, inputs in (("v0", mv.V0), ("v1", mv.V1), ("now", ())) if dict(inputs).items() <= node.items())
        seen[v] = (base, {k: x for k, x in node.items() if k not in dict(mv.V0 if base == "v0" else mv.V1 if base == "v1" else ())})
    # (the SurgUn it is based on, the one input changed); v1 is SurgUn with shared noise off, v0 also its retain plan
    # surgun_v2 is the node at today's inputs; only its guard's probe differed (records only, see the next test)
    assert seen == {"surgun_v2": ("now", {}), "surgun_v1": ("v1", {}), "surgun_v0": ("v0", {}), "surgun_dps1": ("v0", {"distractors_per_step": 1}),
                    "surgun_cap15": ("v0", {"ascent_cap": 1.5}), "surgun_cap3": ("v0", {"ascent_cap": 3.0}),
                    "surgun_protect": ("v0", {}), "surgun_nearest": ("v1", {"retain_nearest_first": True}),
                    "surgun_mt": ("v1", {"model_targets": True}),
                    "surgun_kv": ("v1", {"block_pattern": "attn2.to_k, attn2.to_v"}),
                    "surgun_levels": ("v1", {"concept_levels": True}),
                    "surgun_sn_levels": ("now", {"concept_levels": True}),
                    "surgun_tie": ("now", {"ascent_until_tie": True}),
                    "surgun_sn_kv": ("now", {"block_pattern": "attn2.to_k, attn2.to_v"}),
                    "surgun_subspace": ("now", {"text_subspace": True, "block_pattern": "attn2.to_k, attn2.to_v"}),
                    "surgun_subspace_all": ("now", {"text_subspace": True}),
                    "surgun_adversary": ("now", {"adversary_steps": 3}),
                    "surgun_sp_cap15": ("now", {"ascent_cap": 1.5}), "surgun_sp_cap3": ("now", {"ascent_cap": 3.0}),
                    "surgun_sp_mt": ("now", {"model_targets": True}), "surgun_sp_tie": ("now", {"ascent_until_tie": True}),
                    "surgun_sp_subspace_all": ("now", {"text_subspace": True}), "surgun_sp_dps1": ("now", {"distractors_per_step": 1}),
                    "surgun_sp_adversary": ("now", {"adversary_steps": 3}),
                    "surgun_sp_subspace_adv": ("now", {"text_subspace": True, "adversary_steps": 3}),
                    "surgun_sp_until_erased": ("now", {"ascent_until_erased": True}),
                    "surgun_sp_all_attn": ("now", {"blocks": "all_attention"}),
                    "surgun_sp_noxattn": ("now", {"block_pattern": "re:" + mv.NOXATTN}),
                    "surgun_sp_all_attn_mt": ("now", {"blocks": "all_attention", "model_targets": True}),
                    "surgun_sp_all_attn_mt_ue": ("now", {"blocks": "all_attention", "model_targets": True,
                                                         "ascent_until_erased": True}),
                    "surgun_sp_all_attn_mt_ue3": ("now", {"blocks": "all_attention", "model_targets": True,
                                                          "ascent_until_erased": True, "ascent_cap": 3.0}),
                    "surgun_sp_all_attn_mt_cap3": ("now", {"blocks": "all_attention", "model_targets": True, "ascent_cap": 3.0}),
                    "surgun_sp_all_attn_mt_cap3_rw3": ("now", {"blocks": "all_attention", "model_targets": True, "ascent_cap": 3.0,
                                                               "retain_weight": 3.0}),
                    "surgun_sp_noxattn_mt_rw3": ("now", {"block_pattern": "re:" + mv.NOXATTN, "model_targets": True,
                                                         "retain_weight": 3.0}),
                    "surgun_sp_noxattn_mt": ("now", {"block_pattern": "re:" + mv.NOXATTN, "model_targets": True})}
    assert [v for v in mv.VARIANTS if mv.V2_METHODS[v].protect_related] == ["surgun_protect"]  # its one change: the distractor set


def test_train_and_eval_halves_partition_the_table():
    for kind in ("style", "object"):
        tr, ev = set(split.contexts(kind, "train")), set(split.contexts(kind, "eval"))
        assert not tr & ev and len(tr) == len(ev) == 4
        assert tr | ev == set(world.OBJECTS if kind == "style" else world.STYLES)


def test_seed_ranges_are_disjoint():
    ranges = {f"train{s}": split.train_seed_range(s) for s in (0, 1, 2)}
    ranges |= {r: split.eval_seed_range(r) for r in split.SEED_BASES}
    eval_like = [k for k in ranges if not k.startswith("train")]
    for a, b in itertools.combinations(eval_like, 2):
        assert set(ranges[a]).isdisjoint(ranges[b]), (a, b)
    for t in ("train0", "train1", "train2"):
        for e in eval_like:
            assert set(ranges[t]).isdisjoint(ranges[e]), (t, e)
    for a in (0, 1):
        assert split.attack_reference_seed(a) in ranges["attack_reference"]
        assert split.attack_eval_seed(a) in ranges["attack_eval"]
    # what SurgUn Train renders from while it trains (the render stop's probe sets) and at its end (the readout)
    # is in its own training range, so no evaluation image shares a noise with it
    from surgun_pack.surgun_comfy import drawn, readout

    for s in (0, 1, 2):
        used = [s + readout.SEED_OFFSET, *(s + drawn.SEED_OFFSET + i for i in range(drawn.SETS))]
        assert all(u in ranges[f"train{s}"] for u in used), (s, used)


def test_compute_matched_variants_see_as_many_samples_as_surgun():
    for m in mv.COMPUTE_MATCHED:
        v = mv.V2_METHODS[m]
        assert v.samples_per_step * v.steps_mult == mv.V2_METHODS["surgun"].samples_per_step == 4, m


def _settings(**kw):
    from surgun_pack.benchmarks.toy_canvas.yardstick import V2Settings

    return V2Settings(**kw)


def test_report_marks_partial_and_quick_bounds_fail(tmp_path):
    s = _settings(lrs=(1e-3,), seeds=(0,), methods=("surgun", "ga"), attacks=False, steps=3)
    d = tmp_path / "v2"
    d.mkdir()
    u = {"phase": "untouched", "target": "style:neon", "kind": "style", "UA": 0.0, "IRA": 1.0, "CRA": 1.0, "H": 0.0,
         "related_IRA": 1.0, "kept_on_target": 1.0, "mode_spread_bits": 0.0, "distractors": {"names": ["a", "b", "c"]},
         "related": ["a", "b"], "attack_forms": []}
    row = {"phase": "grid", "target": "style:neon", "kind": "style", "method": "surgun", "lr": 1e-3, "seed": 0,
           "UA": 0.1, "IRA": 1.0, "CRA": 1.0, "H": 0.25, "related_IRA": 1.0, "kept_on_target": 1.0, "mode_spread_bits": 0.5}
    gate = {"phase": "gate", "object_accuracy": 0.97, "style_accuracy": 1.0, "n_images": 64, "passed": True}
    (d / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in (gate, u, row)) + "\n")
    rep = write_report(d / "runs.jsonl", tmp_path, "v2", s, [("style", "neon")])
    md = (tmp_path / "v2.md").read_text()
    assert rep["partial"] and "PARTIAL" in md and "1 of 2 planned grid runs" in md  # ga missing
    with pytest.raises(AssertionError, match="did not erase"):
        check_quick_v2(rep)
    row["UA"] = 0.9
    (d / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in (gate, u, row)) + "\n")
    check_quick_v2(write_report(d / "runs.jsonl", tmp_path, "v2", s, [("style", "neon")]))
    assert (tmp_path / "v2_pareto_style.png").exists()


def test_every_method_has_its_own_plot_colour():
    from surgun_pack.benchmarks.toy_canvas.report_v2 import COLOURS

    assert len(set(COLOURS)) == len(COLOURS) >= len(mv.V2_METHODS)


def test_every_method_appears_in_the_plot_legend(tmp_path):
    """With every method plotted, each one's legend swatch is drawn inside the image, in its colour."""
    from PIL import Image

    from surgun_pack.benchmarks.toy_canvas.report_v2 import COLOURS, plots

    at = lambda v: {"mean": v}  # noqa: E731
    summary = {f"{m}|0.003|style": {"UA": at(0.5), "IRA": at(0.9), "CRA": at(0.9)} for m in mv.V2_METHODS}
    plots(summary, [], tmp_path, "t")
    img = Image.open(tmp_path / "t_pareto_style.png").convert("RGB")
    for i, m in enumerate(mv.V2_METHODS):
        assert img.getpixel((640 + 15, 30 + 16 * i)) == COLOURS[i], m


def test_a_records_only_method_is_refused_before_any_work(tmp_path):
    """surgun_v2 ran a guard probe no input restores: asking to run it stops at once with the reason and the fix,
    and writes nothing; every method that can run has no such reason."""
    from surgun_pack.benchmarks.toy_canvas import yardstick

    with pytest.raises(SystemExit, match=r"surgun_v2 cannot be run again \(.*drew its 8 points.*run 'surgun'"):
        yardstick.main(["--methods", "surgun,surgun_v2", "--targets", "style:neon", "--out", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []
    # every method that ran with that guard and runs "now" in the node: new runs would mix the two probes
    assert [m for m, v in mv.V2_METHODS.items() if v.records_only] == [
        "surgun_v2", "surgun_sn_1d", "surgun_sn_loc", "surgun_sn_levels", "surgun_tie", "surgun_sn_kv", "surgun_subspace",
        "surgun_subspace_all", "surgun_adversary"]
    with pytest.raises(SystemExit, match=r"surgun_tie cannot be run again \(it ran with SurgUn v2's guard.*surgun_sp_"):
        yardstick.main(["--methods", "surgun_tie", "--targets", "style:neon", "--out", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


def test_surgun_variants_draw_the_samples_their_node_inputs_draw():
    """Compute matching reads these: the target row (while the ascent is on), the distractors drawn per step, one retain line."""
    draws = {n: mv.V2_METHODS[n].samples_per_step for n in ("surgun", "surgun_sp_1d", "surgun_sp_2d", "surgun_sp_no_distractors",
                                                            "surgun_sn_no_ascent", "surgun_sp_dps1", "ca", "esd_x")}
    assert draws == {"surgun": 4, "surgun_sp_1d": 3, "surgun_sp_2d": 4, "surgun_sp_no_distractors": 2,
                     "surgun_sn_no_ascent": 3, "surgun_sp_dps1": 3, "ca": 2, "esd_x": 1}


def test_report_legend_names_each_ablation_and_variant_with_the_surgun_it_changes_and_its_change():
    from surgun_pack.benchmarks.toy_canvas.report_v2 import changes

    legend = changes(mv.ABLATIONS) + "; " + changes(mv.VARIANTS)
    for n in mv.ABLATIONS + mv.VARIANTS:
        assert legend.count(f"{n} (") == (0 if n in ("surgun_v0", "surgun_v1", "surgun_v2") else 1), n
    got = {n: mv.V2_METHODS[n].changes for n in ("surgun_sp_2d", "surgun_rp_1d", "surgun_tie", "surgun_cap3", "surgun_sp_loc")}
    assert got["surgun_sp_2d"] == ("now", "the first 2 distractors") and got["surgun_rp_1d"] == ("v1", "one distractor")
    assert got["surgun_tie"][0] == "v2" and got["surgun_tie"][1].startswith("ascent_until_tie True: the ascent only while")
    assert got["surgun_cap3"] == ("v0", "ascent_cap 3") and got["surgun_sp_loc"] == ("now", "blocks from the Block Localizer")
