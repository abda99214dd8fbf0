"""Labelled image grids a person can read: each row of images gets its prompt and before/after on
the left and its numbers on the right, with an optional title above and notes below.

Used by SurgUn Erase/Retain Compare (its ``grid`` output) and by scripts/demo.py. Pure PIL/torch.
Images are ComfyUI IMAGE tensors ``[B, H, W, 3]`` in 0..1; the result is ``[1, H, W, 3]``.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GridRow:
    prompt: str
    """What the row shows, e.g. the prompt; wrapped over several lines when long."""
    tag: str
    """A short second label, e.g. ``before`` or ``after``."""
    images: torch.Tensor
    """``[B, H, W, 3]`` in 0..1; every row of a grid has the same H and W."""
    numbers: str = ""
    """Printed beside the row, one item per line (e.g. ``erase 0.412``)."""


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable default font (Pillow >= 10.1 with FreeType)
    except TypeError:  # older Pillow: fixed bitmap font
        return ImageFont.load_default()


def _text_w(draw, text: str, font) -> int:
    if not text:
        return 0
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0]


def _wrap(text: str, width_chars: int, max_lines: int) -> list[str]:
    lines = textwrap.wrap(text, width=width_chars) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, width_chars - 3)] + "..."
    return lines


def labelled_grid(rows: list[GridRow], title: str = "", notes: list[str] | tuple[str, ...] = (),
                  min_tile: int = 96, font_size: int = 13) -> torch.Tensor:
    """One image: a title band, then per row ``[prompt / tag | images | numbers]``, then notes.

    Tiles smaller than ``min_tile`` pixels are enlarged (nearest neighbour, whole multiples) so the
    labels stay readable next to them."""
    import numpy as np
    from PIL import Image, ImageDraw

    if not rows:
        raise ValueError("[SurgUn] labelled_grid needs at least one row of images (got 0).")
    h, w = int(rows[0].images.shape[1]), int(rows[0].images.shape[2])
    for r in rows:
        if tuple(r.images.shape[1:3]) != (h, w):
            raise ValueError(f"[SurgUn] every grid row needs {h}x{w} images; row {r.prompt!r} has "
                             f"{tuple(r.images.shape[1:3])}. Render all rows at one size.")
    scale = max(1, -(-min_tile // max(1, min(h, w))))  # ceil(min_tile / side)
    th, tw = h * scale, w * scale
    cols = max(int(r.images.shape[0]) for r in rows)
    font = _font(font_size)
    bold = _font(font_size + 1)
    line_h = font_size + 4
    pad = 8

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    char_w = max(6, _text_w(probe, "abcdefghijklmnopqrstuvwxyz", font) // 26)
    label_w = 30 * char_w + 2 * pad
    max_label_lines = max(1, (th - line_h) // line_h)
    num_w = max([_text_w(probe, line, font) for r in rows for line in r.numbers.splitlines()] + [0])
    num_w = num_w + 2 * pad if num_w else 0
    title_lines = _wrap(title, (label_w + cols * tw + num_w) // char_w, 3) if title else []
    title_h = len(title_lines) * (line_h + 2) + pad if title_lines else 0
    notes_h = len(notes) * line_h + pad if notes else 0

    width = label_w + cols * tw + num_w
    height = title_h + len(rows) * (th + 2) + notes_h
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    y = pad // 2
    for line in title_lines:
        d.text((pad, y), line, fill="black", font=bold)
        y += line_h + 2
    y = title_h
    for i, r in enumerate(rows):
        if i and r.prompt != rows[i - 1].prompt:  # a rule between prompts
            d.line([0, y - 1, width, y - 1], fill=(200, 200, 200))
        same_as_above = i and r.prompt == rows[i - 1].prompt
        text_y = y + 4
        if not same_as_above:
            for line in _wrap(r.prompt, 30, max_label_lines):
                d.text((pad, text_y), line, fill="black", font=font)
                text_y += line_h
        d.text((pad, text_y), r.tag, fill=(160, 30, 30) if r.tag == "after" else (30, 70, 160), font=bold)
        batch = (r.images.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype("uint8")
        for j in range(batch.shape[0]):
            tile = Image.fromarray(batch[j][..., :3])
            if scale > 1:
                tile = tile.resize((tw, th), Image.NEAREST)
            img.paste(tile, (label_w + j * tw, y))
        ny = y + 4
        for line in r.numbers.splitlines():
            d.text((label_w + cols * tw + pad, ny), line, fill="black", font=font)
            ny += line_h
        y += th + 2
    y += pad // 2
    for line in notes:
        d.text((pad, y), line, fill=(70, 70, 70), font=font)
        y += line_h
    return torch.from_numpy(np.asarray(img, dtype="float32") / 255.0).unsqueeze(0)


def append_notes(image: torch.Tensor, notes: list[str] | tuple[str, ...], font_size: int = 13) -> torch.Tensor:
    """``image`` (``[1, H, W, 3]``) with lines of text added in a band below it."""
    import numpy as np
    from PIL import Image, ImageDraw

    if not notes:
        return image
    base = Image.fromarray((image[0].clamp(0, 1).cpu().numpy() * 255).round().astype("uint8"))
    font = _font(font_size)
    line_h, pad = font_size + 4, 8
    probe = ImageDraw.Draw(base)
    width = max([base.width] + [_text_w(probe, n, font) + 2 * pad for n in notes])
    out = Image.new("RGB", (width, base.height + len(notes) * line_h + pad), "white")
    out.paste(base, (0, 0))
    d = ImageDraw.Draw(out)
    y = base.height + pad // 2
    for n in notes:
        d.text((pad, y), n, fill="black", font=font)
        y += line_h
    return torch.from_numpy(np.asarray(out, dtype="float32") / 255.0).unsqueeze(0)
