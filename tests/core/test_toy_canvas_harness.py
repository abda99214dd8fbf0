"""Pieces of the toy canvas erasure benchmark that need no model: target lists, the harmonic
mean, the summary statistics, the quick-mode bounds and the PNG grid."""

import pytest
import torch

from benchmarks.toy_canvas import erasure


def test_read_targets_from_list_and_default_file():
    assert erasure.read_targets("style:dots, object:star") == [("style", "dots"), ("object", "star")]
    default = erasure.read_targets(None)
    kinds = [k for k, _ in default]
    assert kinds.count("style") >= 4 and kinds.count("object") >= 4


def test_harmonic_mean_values():
    assert erasure.harmonic(1.0, 1.0, 1.0) == pytest.approx(1.0)
    assert erasure.harmonic(0.5, 1.0, 1.0) == pytest.approx(3 / (2 + 1 + 1))
    assert erasure.harmonic(0.0, 1.0, 1.0) == 0.0


def test_summarise_mean_and_spread():
    rows = [{"UA": 0.5, "IRA": 1.0}, {"UA": 1.0, "IRA": 0.8}]
    out = erasure.summarise(rows)
    assert out["UA"] == {"mean": 0.75, "sd": 0.25, "n": 2}
    assert out["IRA"]["mean"] == pytest.approx(0.9)
    assert "CRA" not in out


def test_quick_bounds_reject_a_no_op():
    report = {"gate": {"object_accuracy": 0.97, "style_accuracy": 1.0},
              "untouched": {"style:dots": {"UA": 0.0}},
              "runs": [{"target": "style:dots", "method": "surgun", "UA": 0.0}]}
    with pytest.raises(AssertionError, match="did not erase"):
        erasure.check_quick(report)
    report["runs"][0]["UA"] = 0.25
    erasure.check_quick(report)
    report["gate"]["object_accuracy"] = 0.5
    with pytest.raises(AssertionError, match="gate"):
        erasure.check_quick(report)


def test_grid_png_has_one_row_per_method(tmp_path):
    from PIL import Image

    rows = {"untouched": torch.zeros(12, 32, 32, 3), "surgun": torch.ones(12, 32, 32, 3)}
    path = tmp_path / "g.png"
    erasure.save_grid(rows, path, "t", scale=2)
    img = Image.open(path)
    assert img.size[1] == 18 + 2 * (64 + 2)
    px = img.load()
    x = 150 + 5  # inside the first image cell
    assert px[x, 18 + 10] == (0, 0, 0) and px[x, 18 + 66 + 10] == (255, 255, 255)


def test_read_targets_ignores_comments_with_commas(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("# a note, with commas: and colons\nstyle:dots  # dots, first\nobject:star,object:ring\n")
    assert erasure.read_targets(str(f)) == [("style", "dots"), ("object", "star"), ("object", "ring")]
    with pytest.raises(SystemExit, match="kind:name"):
        erasure.read_targets("colour:red")
