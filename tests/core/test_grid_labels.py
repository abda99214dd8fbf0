"""The labelled grid (surgun_core/grid_labels.py): tiles where the layout puts them, a label beside
every row, numbers only where a row has them."""

import pytest
import torch

from surgun_pack.surgun_core.grid_labels import GridRow, append_notes, labelled_grid


def solid(color, n=2, side=16):
    return torch.tensor(color, dtype=torch.float32).view(1, 1, 1, 3).expand(n, side, side, 3).clone()


def test_tiles_are_enlarged_and_placed_after_the_label_column():
    red, blue = solid([1.0, 0.0, 0.0]), solid([0.0, 0.0, 1.0])
    rows = [GridRow("a photo of a dog", "before", red, ""), GridRow("a photo of a dog", "after", blue, "retain 0.912")]
    img = labelled_grid(rows, min_tile=64)[0]
    # 16 px tiles enlarged 4x; two tiles per row; the image columns end where the numbers begin
    red_cols = (img[..., 0] > 0.99) & (img[..., 1] < 0.01) & (img[..., 2] < 0.01)
    ys, xs = torch.nonzero(red_cols, as_tuple=True)
    assert int(ys.max() - ys.min() + 1) == 64 and int(xs.max() - xs.min() + 1) == 128
    label_w = int(xs.min())
    blue_px = (img[..., 2] > 0.99) & (img[..., 0] < 0.01) & (img[..., 1] < 0.01)
    bys, bxs = torch.nonzero(blue_px, as_tuple=True)
    assert int(bxs.min()) == label_w and int(bys.min()) > int(ys.max())  # the after row sits below the before row
    ink = img.min(dim=-1).values < 0.5
    row1, row2 = slice(int(ys.min()), int(ys.max()) + 1), slice(int(bys.min()), int(bys.max()) + 1)
    assert ink[row1, :label_w].any() and ink[row2, :label_w].any()  # prompt / tag text beside both rows
    numbers_x = label_w + 128
    assert img.shape[1] > numbers_x
    assert ink[row2, numbers_x:].any() and not ink[row1, numbers_x:].any()  # numbers only where given


def test_rows_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="16x16"):
        labelled_grid([GridRow("a", "before", solid([1, 1, 1])), GridRow("b", "after", solid([1, 1, 1], side=8))])


def test_notes_add_a_band_below():
    base = labelled_grid([GridRow("a", "before", solid([0.5, 0.5, 0.5]))], min_tile=16)
    out = append_notes(base, ["UA 0.00 -> 0.78"])
    assert out.shape[1] > base.shape[1] and torch.equal(out[0, : base.shape[1], : base.shape[2]], base[0])
    assert (out[0, base.shape[1]:].min(dim=-1).values < 0.5).any()
