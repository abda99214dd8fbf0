"""Procedural "toy canvas" world: 8 objects x 8 styles rendered at 32x32 RGB.

Every image is a single object (a filled silhouette) drawn in one style (a
palette plus a texture for the fill and a background colour), with a narrow
random pose (rotation +-20 deg, shift +-4 px, scale x0.85..1.10) drawn from a
seed. Rendering is 4x supersampled and box-filtered down, so edges are
anti-aliased. Everything is deterministic given the seed(s).

Images are float tensors in [0, 1], layout (B, 3, H, W) (torch) unless noted.
The ComfyUI IMAGE layout is (B, H, W, 3); use ``to_comfy_image``.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

OBJECTS: Tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "heart", "diamond",
)
STYLES: Tuple[str, ...] = (
    "stripes", "dots", "checker", "gradient", "outline", "noise", "neon", "pastel",
)

RESOLUTION = 32
SUPERSAMPLE = 4

MAX_ROTATION_DEG = 20.0
MAX_SHIFT_PX = 4.0
SCALE_RANGE = (0.85, 1.10)
BASE_RADIUS = 0.70  # shape "radius" in image units, the image spans [-1, 1]
COLOR_JITTER = 0.04

PROMPT_TEMPLATE = "a {object} in {style} style"


def prompt_for(obj: str, style: str) -> str:
    """The canonical prompt for an (object, style) pair."""
    return PROMPT_TEMPLATE.format(object=obj, style=style)


def parse_prompt(prompt: str) -> Tuple[str, str]:
    """``(object, style)`` of a canonical prompt (the inverse of :func:`prompt_for`)."""
    obj, style = prompt[len("a "):].split(" in ")
    return obj, style[: -len(" style")]


def class_indices(prompts, attr: str) -> torch.Tensor:
    """The true class index of ``attr`` ("object" or "style") for each canonical prompt."""
    names = OBJECTS if attr == "object" else STYLES
    return torch.tensor([names.index(parse_prompt(p)[0 if attr == "object" else 1]) for p in prompts])


def all_pairs() -> List[Tuple[int, int]]:
    """All (object index, style index) pairs, object-major (64 of them)."""
    return [(o, s) for o in range(len(OBJECTS)) for s in range(len(STYLES))]


def all_prompts() -> List[str]:
    """The 64 canonical prompts, in ``all_pairs`` order."""
    return [prompt_for(OBJECTS[o], STYLES[s]) for o, s in all_pairs()]


# ---------------------------------------------------------------------------
# shapes: inside tests in the object's local frame (x right, y up), |.| <~ 1
# ---------------------------------------------------------------------------

def _polygon_inside(x: torch.Tensor, y: torch.Tensor, verts: Sequence[Tuple[float, float]]) -> torch.Tensor:
    """Even-odd point-in-polygon test, vectorised over x, y."""
    inside = torch.zeros_like(x, dtype=torch.bool)
    n = len(verts)
    for i in range(n):
        x1, y1 = verts[i]
        x2, y2 = verts[(i + 1) % n]
        if y1 == y2:
            continue
        cond = (y1 > y) != (y2 > y)
        xint = (x2 - x1) * (y - y1) / (y2 - y1) + x1
        inside ^= cond & (x < xint)
    return inside


def _star_verts(points: int = 5, outer: float = 1.05, inner: float = 0.45) -> List[Tuple[float, float]]:
    verts = []
    for k in range(points * 2):
        r = outer if k % 2 == 0 else inner
        a = math.pi / 2 + k * math.pi / points
        verts.append((r * math.cos(a), r * math.sin(a)))
    return verts


_STAR = _star_verts()
# equilateral triangle pointing up, centroid at the origin
_TRIANGLE = [(0.0, 1.0), (-0.95, -0.65), (0.95, -0.65)]


def _shape_mask(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r2 = x * x + y * y
    if name == "circle":
        return r2 < 0.82 ** 2
    if name == "square":
        return (x.abs() < 0.70) & (y.abs() < 0.70)
    if name == "triangle":
        return _polygon_inside(x, y, _TRIANGLE)
    if name == "star":
        return _polygon_inside(x, y, _STAR)
    if name == "cross":
        arm, length = 0.30, 0.92
        return ((x.abs() < arm) & (y.abs() < length)) | ((y.abs() < arm) & (x.abs() < length))
    if name == "ring":
        return (r2 < 0.92 ** 2) & (r2 > 0.50 ** 2)
    if name == "heart":
        # classic implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 < 0, centred and scaled
        hx = x / 0.78
        hy = (y - 0.10) / 0.78
        return (hx * hx + hy * hy - 1.0) ** 3 - hx * hx * hy ** 3 < 0
    if name == "diamond":
        return (x.abs() / 0.62 + y.abs() / 1.05) < 1.0
    raise ValueError(f"unknown object {name!r}")


# ---------------------------------------------------------------------------
# styles
# ---------------------------------------------------------------------------

# background colour, and the two fill colours of each style (RGB in 0..1)
_PALETTES = {
    "stripes": ((0.78, 0.84, 0.93), (0.86, 0.12, 0.14), (0.98, 0.98, 0.96)),
    "dots": ((0.97, 0.92, 0.76), (0.12, 0.25, 0.75), (1.00, 0.85, 0.10)),
    "checker": ((0.32, 0.68, 0.38), (0.05, 0.05, 0.05), (0.97, 0.97, 0.97)),
    "gradient": ((0.07, 0.09, 0.24), (1.00, 0.62, 0.08), (0.75, 0.08, 0.62)),
    "outline": ((0.99, 0.99, 0.99), (0.02, 0.02, 0.02), (0.99, 0.99, 0.99)),
    "noise": ((0.90, 0.84, 0.70), (0.10, 0.42, 0.15), (0.45, 0.80, 0.30)),
    "neon": ((0.04, 0.02, 0.08), (0.10, 1.00, 0.95), (1.00, 0.15, 0.85)),
    "pastel": ((0.98, 0.82, 0.88), (0.62, 0.90, 0.78), (0.62, 0.90, 0.78)),
}


def _blur(img: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of a (B, 1, H, W) tensor."""
    radius = max(1, int(math.ceil(3 * sigma_px)))
    t = torch.arange(-radius, radius + 1, dtype=img.dtype)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    k = k / k.sum()
    img = F.conv2d(F.pad(img, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    img = F.conv2d(F.pad(img, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return img


def _erode(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Binary erosion of a float (B, 1, H, W) mask by a (2px+1) square."""
    return -F.max_pool2d(-mask, kernel_size=2 * px + 1, stride=1, padding=px)


def _render_fill(style: str, mask: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor,
                 colors: torch.Tensor, gen: torch.Generator, ss: int) -> torch.Tensor:
    """Composite one style. mask: (B,1,H,W) float at supersampled res; gx, gy:
    image coordinates (H, W) in pixels of the final image; colors: (B, 3, 3)
    background / colour A / colour B. Returns (B, 3, H, W) supersampled."""
    b = mask.shape[0]
    bg = colors[:, 0].view(b, 3, 1, 1)
    ca = colors[:, 1].view(b, 3, 1, 1)
    cb = colors[:, 2].view(b, 3, 1, 1)
    h, w = mask.shape[-2:]
    phase = torch.rand(b, 2, generator=gen).view(b, 2, 1, 1)
    x = gx.view(1, 1, h, w)
    y = gy.view(1, 1, h, w)

    if style == "stripes":
        period = 6.0
        t = ((x + y) / period + phase[:, :1]) % 1.0
        sel = (t < 0.5).float()
        fill = ca * sel + cb * (1 - sel)
        out = bg * (1 - mask) + fill * mask
    elif style == "dots":
        period = 5.0
        fx = ((x / period + phase[:, :1]) % 1.0) - 0.5
        fy = ((y / period + phase[:, 1:]) % 1.0) - 0.5
        sel = ((fx * fx + fy * fy) < 0.30 ** 2).float()
        fill = cb * sel + ca * (1 - sel)
        out = bg * (1 - mask) + fill * mask
    elif style == "checker":
        cell = 4.0
        ix = torch.floor(x / cell + phase[:, :1] * 2)
        iy = torch.floor(y / cell + phase[:, 1:] * 2)
        sel = ((ix + iy) % 2 == 0).float()
        fill = ca * sel + cb * (1 - sel)
        out = bg * (1 - mask) + fill * mask
    elif style == "gradient":
        t = (y / (h / ss)).clamp(0, 1)  # top -> bottom
        fill = ca * (1 - t) + cb * t
        out = bg * (1 - mask) + fill * mask
    elif style == "outline":
        inner = _erode(mask, int(round(1.6 * ss)))
        ring = (mask - inner).clamp(0, 1)
        out = bg * (1 - mask) + cb * inner + ca * ring
    elif style == "noise":
        # blocky per-pixel noise mixing the two greens
        lo = torch.rand(b, 1, h // ss, w // ss, generator=gen)
        lo = F.interpolate(lo, scale_factor=ss, mode="nearest")
        fill = ca * (1 - lo) + cb * lo
        out = bg * (1 - mask) + fill * mask
    elif style == "neon":
        glow = _blur(mask, 1.5 * ss).clamp(0, 1)
        halo = (glow * 0.85).clamp(0, 1)
        base = bg * (1 - halo) + cb * halo
        out = base * (1 - mask) + ca * mask
    elif style == "pastel":
        out = bg * (1 - mask) + ca * mask
    else:
        raise ValueError(f"unknown style {style!r}")
    return out


# ---------------------------------------------------------------------------
# public rendering API
# ---------------------------------------------------------------------------

def sample_poses(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 4) poses: rotation (rad), shift x (px), shift y (px), scale."""
    u = torch.rand(n, 4, generator=gen)
    rot = (u[:, 0] * 2 - 1) * math.radians(MAX_ROTATION_DEG)
    sx = (u[:, 1] * 2 - 1) * MAX_SHIFT_PX
    sy = (u[:, 2] * 2 - 1) * MAX_SHIFT_PX
    sc = SCALE_RANGE[0] + u[:, 3] * (SCALE_RANGE[1] - SCALE_RANGE[0])
    return torch.stack([rot, sx, sy, sc], dim=1)


def render_batch(objects: Sequence[int], styles: Sequence[int], seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, resolution: int = RESOLUTION) -> torch.Tensor:
    """Render images for parallel lists of object / style indices.

    Deterministic for a given ``seed`` (or ``generator`` state). Returns a
    float32 tensor (B, 3, resolution, resolution) in [0, 1].
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    objects = torch.as_tensor(list(objects), dtype=torch.long)
    styles = torch.as_tensor(list(styles), dtype=torch.long)
    n = objects.shape[0]
    if styles.shape[0] != n:
        raise ValueError("objects and styles must have the same length")
    ss = SUPERSAMPLE
    hs = resolution * ss
    poses = sample_poses(n, generator)
    jitter = (torch.rand(n, 3, 3, generator=generator) * 2 - 1) * COLOR_JITTER

    # pixel-centre coordinates of the supersampled grid, in final-image pixels
    coords = (torch.arange(hs, dtype=torch.float32) + 0.5) / ss  # 0..resolution
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    half = resolution / 2.0
    out = torch.empty(n, 3, hs, hs)
    # object local frame: image units ([-1, 1] across the image), y up
    for i_obj in range(len(OBJECTS)):
        idx = (objects == i_obj).nonzero().flatten()
        if idx.numel() == 0:
            continue
        p = poses[idx]
        rot, sx, sy, sc = p[:, 0].view(-1, 1, 1), p[:, 1].view(-1, 1, 1), p[:, 2].view(-1, 1, 1), p[:, 3].view(-1, 1, 1)
        ix = (gx.unsqueeze(0) - half - sx) / half
        iy = -(gy.unsqueeze(0) - half - sy) / half
        c, s = torch.cos(rot), torch.sin(rot)
        lx = (c * ix + s * iy) / (sc * BASE_RADIUS)
        ly = (-s * ix + c * iy) / (sc * BASE_RADIUS)
        m = _shape_mask(OBJECTS[i_obj], lx, ly).float().unsqueeze(1)
        out[idx] = m.expand(-1, 3, -1, -1)  # stash masks, composited below
    masks = out[:, :1].clone()
    for i_sty in range(len(STYLES)):
        idx = (styles == i_sty).nonzero().flatten()
        if idx.numel() == 0:
            continue
        base = torch.tensor(_PALETTES[STYLES[i_sty]], dtype=torch.float32)
        colors = (base.unsqueeze(0) + jitter[idx]).clamp(0, 1)
        out[idx] = _render_fill(STYLES[i_sty], masks[idx], gx, gy, colors, generator, ss)
    img = F.avg_pool2d(out, ss)
    return img.clamp(0, 1)


def render_pairs(pairs: Iterable[Tuple[int, int]], seed: int) -> torch.Tensor:
    """Render (object, style) index pairs with one seed."""
    pairs = list(pairs)
    return render_batch([p[0] for p in pairs], [p[1] for p in pairs], seed=seed)


def random_labels(n: int, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Uniform random (object, style) labels."""
    o = torch.randint(0, len(OBJECTS), (n,), generator=generator)
    s = torch.randint(0, len(STYLES), (n,), generator=generator)
    return o, s


def to_comfy_image(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> ComfyUI IMAGE layout (B, H, W, 3)."""
    return images.permute(0, 2, 3, 1).contiguous()


def from_comfy_image(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, 3) -> (B, 3, H, W)."""
    return images[..., :3].permute(0, 3, 1, 2).contiguous()


def contact_sheet(seed: int = 0) -> torch.Tensor:
    """An 8x8 grid (objects down, styles across) as a (3, 8*R, 8*R) tensor."""
    imgs = render_pairs(all_pairs(), seed=seed)
    r = imgs.shape[-1]
    grid = imgs.view(len(OBJECTS), len(STYLES), 3, r, r).permute(2, 0, 3, 1, 4)
    return grid.reshape(3, len(OBJECTS) * r, len(STYLES) * r)
