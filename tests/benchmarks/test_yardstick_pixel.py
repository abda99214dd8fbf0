"""The yardstick's retain in pixels (benchmarks/toy_canvas/yardstick.py): what the Erase/Retain Compare node reads,
scored against the untouched model's images of the same prompts and seeds, and the phase that reruns old runs for it."""

import math

import torch


def test_pixel_retain_is_one_untouched_and_drops_where_an_edit_redraws_the_retain_images(comfy):
    """The untouched model scores exactly 1 against itself; a fresh draw of the same prompts (the floor) scores well
    below; an edit that perturbs every self-attention output layer scores between, and its classifier metrics come
    from the same images."""
    import comfy.sd
    from surgun_pack.benchmarks.toy_canvas.yardstick import V2Settings, Yardstick
    from surgun_pack.surgun_core.weights import delta_key

    y = Yardstick(V2Settings(eval_target_per_prompt=1, eval_other_per_prompt=1, eval_related_per_prompt=1), None)
    chosen, related = ("pastel", "gradient", "checker"), y.related("style", "neon")
    m0 = y.evaluate2(y.model, "style", "neon", chosen, related)
    assert m0["pixel_retain"] == 1.0 and m0["pixel_related"] == 1.0
    floor = y.pixel_floor("style", "neon", chosen, related)
    assert floor["pixel_retain"] < 0.9 and floor["pixel_related"] < 0.9

    net = y.model.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    noise = {delta_key(n): 0.3 * torch.randn(m.weight.shape, generator=g) for n, m in net.named_modules()
             if n.endswith("attn1.to_out.0")}
    assert noise
    edited, _ = comfy.sd.load_lora_for_models(y.model, None, noise, 1.0, 0)
    m1 = y.evaluate2(edited, "style", "neon", chosen, related)
    assert floor["pixel_retain"] < m1["pixel_retain"] < 0.99
    assert m1["pixel_related"] < 0.99
    again = y.evaluate2(y.model, "style", "neon", chosen, related)  # the edit left the base weights as they were
    assert again["pixel_retain"] == 1.0 and again["UA"] == m0["UA"]


class _Stub:
    """A Yardstick with the untouched records of two targets and a training that returns what it was asked for."""

    def __init__(self, done):
        self.done = dict(done)
        self.trained = []

    def record(self, rec):
        from surgun_pack.benchmarks.toy_canvas.yardstick import run_key

        self.done[run_key(rec)] = rec
        return rec

    def pixel_floor(self, kind, name, chosen, related):
        return {"pixel_retain": 0.4, "pixel_related": 0.6}

    def distractors_of(self, mname, kind, name, u):
        return u["distractors"]["names"]

    def train(self, mname, kind, name, chosen, lr, seed):
        self.trained.append((f"{kind}:{name}", mname, lr, seed))
        return (mname, seed), {}

    def evaluate2(self, model, kind, name, chosen, related):
        mname, seed = model
        ua = 0.5 if (mname, seed) == ("esd_x", 1) else 1.0  # esd_x seed 1 does not reproduce its grid run
        return {"UA": ua, "IRA": 1.0, "CRA": 1.0, "H": 1.0, "related_IRA": 1.0, "kept_on_target": 1.0,
                "pixel_retain": 0.9, "pixel_related": 0.8}


def _grid(method, target, lr, seed, h=1.0, **kw):
    return {"phase": "grid", "method": method, "target": target, "kind": target.split(":")[0], "lr": lr, "seed": seed,
            "H": h, "UA": 1.0, "IRA": 1.0, "CRA": 1.0, "related_IRA": 1.0, "kept_on_target": 1.0, "mode_spread_bits": 0.0,
            "IRA_rel": 1.0, "CRA_rel": 1.0, **kw}


def test_the_pixel_phase_reruns_each_standing_run_without_the_score_seed_by_seed_and_checks_it_against_its_grid_run():
    from surgun_pack.benchmarks.toy_canvas.yardstick import V2Settings, pixel_backfill, run_key

    untouched = {"phase": "untouched", "target": "style:neon", "kind": "style", "distractors": {"names": ["a", "b", "c"]},
                 "related": ["r"], "IRA": 1.0, "CRA": 1.0, "related_IRA": 1.0, "kept_on_target": 1.0}
    recs = [untouched, _grid("esd_x", "style:neon", 1e-3, 0), _grid("esd_x", "style:neon", 1e-3, 1),
            _grid("esd_x", "style:neon", 3e-3, 0, h=0.5),  # not the best lr: never rerun
            _grid("surgun", "style:neon", 1e-3, 0, pixel_retain=0.95, pixel_related=0.9),  # scored already
            _grid("surgun", "style:neon", 1e-3, 1), _grid("ga", "style:neon", 1e-3, 0),
            _grid("uce", "style:neon", 1.0, 0)]  # uce: not asked for
    y = _Stub({run_key(r): r for r in recs})
    pixel_backfill(y, [("style", "neon")], V2Settings(methods=("esd_x", "surgun", "ga")))
    # seed-major: every method's seed 0, then seed 1; surgun's seed 0 has the score, uce was not asked for
    assert y.trained == [("style:neon", "esd_x", 1e-3, 0), ("style:neon", "ga", 1e-3, 0), ("style:neon", "esd_x", 1e-3, 1),
                         ("style:neon", "surgun", 1e-3, 1)]
    px = {(r["method"], r.get("seed")): r for r in y.done.values() if r["phase"] == "pixel"}
    assert px[("untouched", None)]["pixel_retain"] == 0.4
    assert px[("esd_x", 0)]["same_as_grid"] is True and px[("esd_x", 1)]["same_as_grid"] is False
    assert math.isclose(px[("surgun", 1)]["pixel_retain"], 0.9)

    y.trained.clear()  # resumed: nothing left to do
    pixel_backfill(y, [("style", "neon")], V2Settings(methods=("esd_x", "surgun", "ga")))
    assert y.trained == []


def test_the_pixel_table_prefers_the_grid_runs_own_score_and_shows_the_floor():
    from surgun_pack.benchmarks.toy_canvas.report_v2 import best_table, pixel_table, summarise

    recs = [_grid("surgun", "style:neon", 1e-3, 0, pixel_retain=0.9, pixel_related=0.8),
            _grid("surgun", "style:neon", 1e-3, 1, pixel_retain=0.7, pixel_related=0.6),
            _grid("esd_x", "style:neon", 1e-3, 0, IRA_rel=0.5),
            {"phase": "pixel", "method": "esd_x", "target": "style:neon", "kind": "style", "lr": 1e-3, "seed": 0,
             "pixel_retain": 0.6, "pixel_related": 0.5, "IRA_rel": 0.5, "CRA_rel": 1.0, "related_IRA": 1.0},
            {"phase": "pixel", "method": "surgun", "target": "style:neon", "kind": "style", "lr": 1e-3, "seed": 0,
             "pixel_retain": 0.1, "pixel_related": 0.1, "IRA_rel": 1.0, "CRA_rel": 1.0, "related_IRA": 1.0},
            {"phase": "pixel", "method": "untouched", "target": "style:neon", "kind": "style",
             "pixel_retain": 0.43, "pixel_related": 0.61}]
    done = dict(enumerate(recs))
    rows = {r.split(" | ")[0].strip("| *"): r.split(" | ") for r in pixel_table(done, best_table(summarise(done)), ["style:neon"])[2:]}
    assert rows["untouched, other seeds (floor)"][1:3] == ["0.43", "0.61"]
    assert rows["SurgUn (defaults)"][1:] == ["0.80 (0.14)", "0.70", "1.00", "1.00", "2 |"]
    assert rows["ESD-x concept-only"][1:] == ["0.60", "0.50", "0.50", "1.00", "1 |"]

    # a row whose seed 1 was scored by its grid run and seed 0 by a rerun takes one of each
    done[9] = _grid("esd_x", "style:neon", 1e-3, 1, IRA_rel=1.0, pixel_retain=0.8, pixel_related=0.7)
    rows = {r.split(" | ")[0].strip("| *"): r.split(" | ") for r in pixel_table(done, best_table(summarise(done)), ["style:neon"])[2:]}
    assert rows["ESD-x concept-only"][1:] == ["0.70 (0.14)", "0.60", "0.75", "1.00", "2 |"]


def test_the_pixel_plot_needs_both_the_pixel_score_and_the_attack_at_the_rows_lr(tmp_path):
    from PIL import Image
    from surgun_pack.benchmarks.toy_canvas.report_v2 import best_table, pixel_plot, summarise

    recs = [_grid("surgun", "style:neon", 1e-3, 0, pixel_retain=0.9, pixel_related=0.8)]
    done = dict(enumerate(recs))
    assert pixel_plot(done, best_table(summarise(done)), ["style:neon"], tmp_path, "t") is None  # no attack yet
    done[9] = {"phase": "attack", "method": "surgun", "target": "style:neon", "kind": "style", "lr": 3e-3, "seed": 0,
               "soft@150": 0.5}
    assert pixel_plot(done, best_table(summarise(done)), ["style:neon"], tmp_path, "t") is None  # at another lr
    done[10] = {**done[9], "lr": 1e-3}
    name = pixel_plot(done, best_table(summarise(done)), ["style:neon"], tmp_path, "t")
    assert name == "t_pixel_vs_soft.png" and Image.open(tmp_path / name).size[0] > 640
