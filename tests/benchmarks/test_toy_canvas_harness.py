"""Pieces of the toy canvas erasure benchmark that need no model: target lists, the harmonic
mean, the summary statistics, the quick-mode bounds and the PNG grid."""

import pytest
import torch

from surgun_pack.benchmarks.toy_canvas import report as rep
from surgun_pack.benchmarks.toy_canvas import run


def test_read_targets_from_list_and_default_file():
    assert run.read_targets("style:dots, object:star") == [("style", "dots"), ("object", "star")]
    default = run.read_targets(None)
    kinds = [k for k, _ in default]
    assert kinds.count("style") >= 4 and kinds.count("object") >= 4


def test_harmonic_mean_values():
    assert run.harmonic(1.0, 1.0, 1.0) == pytest.approx(1.0)
    assert run.harmonic(0.5, 1.0, 1.0) == pytest.approx(3 / (2 + 1 + 1))
    assert run.harmonic(0.0, 1.0, 1.0) == 0.0


def test_summarise_mean_and_spread():
    rows = [{"UA": 0.5, "IRA": 1.0}, {"UA": 1.0, "IRA": 0.8}]
    out = rep.summarise(rows)
    assert out["UA"] == {"mean": 0.75, "sd": 0.25, "n": 2}
    assert out["IRA"]["mean"] == pytest.approx(0.9)
    assert "CRA" not in out


def test_quick_bounds_reject_a_no_op():
    report = {"gate": {"object_accuracy": 0.97, "style_accuracy": 1.0},
              "untouched": {"style:dots": {"UA": 0.0}},
              "runs": [{"target": "style:dots", "method": "surgun", "UA": 0.0}]}
    with pytest.raises(AssertionError, match="did not erase"):
        rep.check_quick(report)
    report["runs"][0]["UA"] = 0.25
    rep.check_quick(report)
    report["gate"]["object_accuracy"] = 0.5
    with pytest.raises(AssertionError, match="gate"):
        rep.check_quick(report)


def test_grid_png_has_one_row_per_method(tmp_path):
    from PIL import Image

    rows = {"untouched": torch.zeros(12, 32, 32, 3), "surgun": torch.ones(12, 32, 32, 3)}
    path = tmp_path / "g.png"
    rep.save_grid(rows, path, "t", scale=2)
    img = Image.open(path)
    assert img.size[1] == 18 + 2 * (64 + 2)
    px = img.load()
    x = 150 + 5  # inside the first image cell
    assert px[x, 18 + 10] == (0, 0, 0) and px[x, 18 + 66 + 10] == (255, 255, 255)


def test_read_targets_ignores_comments_with_commas(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("# a note, with commas: and colons\nstyle:dots  # dots, first\nobject:star,object:ring\n")
    assert run.read_targets(str(f)) == [("style", "dots"), ("object", "star"), ("object", "ring")]
    with pytest.raises(SystemExit, match="kind:name"):
        run.read_targets("colour:red")


def test_first_per_kind_and_best_lr():
    targets = [("object", "star"), ("style", "dots"), ("object", "ring"), ("style", "neon")]
    assert run.first_per_kind(targets) == [("style", "dots"), ("object", "star")]
    assert run.first_per_kind([("object", "ring")]) == [("object", "ring")]
    h = lambda v: {"H": {"mean": v, "sd": 0.0, "n": 2}}  # noqa: E731
    report = {"summary": {"ga|0.0003|style": h(0.2), "ga|0.001|style": h(0.9), "ga|0.003|style": h(0.5),
                          "ca|0.001|object": h(0.4)}}
    best = rep.best_by_h(report)
    assert best[("style", "ga")][0] == 0.001 and best[("object", "ca")][0] == 0.001
    assert set(best) == {("style", "ga"), ("object", "ca")}


def test_markdown_without_surgun_in_the_methods():
    row = {"UA": 1.0, "IRA": 0.5, "CRA": 1.0, "H": 0.75, "n_target_images": 16, "n_other_images": 14,
           "target": "style:dots", "kind": "style", "method": "ga", "lr": 1e-3, "seed": 0}
    report = {"settings": {"quick": False, "steps": 2, "lrs": [1e-3], "seeds": [0], "attack_steps": []},
              "targets": ["style:dots"], "gate": {"object_accuracy": 0.97, "style_accuracy": 1.0, "n_images": 64},
              "trained_layers": ["a", "b"], "runs": [row], "summary": {"ga|0.001|style": rep.summarise([row])},
              "untouched": {"style:dots": {"UA": 0.0, "IRA": 1.0, "CRA": 1.0, "distractors": {"names": ["noise"]}}},
              "step_cost_s": {"ga": 0.25}, "step_cost_ratio_to_surgun": {"ga": None}, "wall_s": 1.0}
    md = rep.markdown(report)
    assert "| ga | 1e-03 | style | 1.000 (0.000) | 0.500 (0.000) |" in md
    assert "ga 0.250 s" in md and "x)" not in md.split("Time per training step")[1]
