"""Pixel-grounded erase and retain scores, on decoded images.

Images are float tensors ``[N, H, W, 3]`` in ``0..1`` (ComfyUI's IMAGE layout). Scores compare
images made *with the same seeds* by the original model and by a modified one.

* **erase** (higher = the target moved further away): the mean of

  - *away*: ``1 - cos(E(new_target_i), E(orig_target_i))``, and
  - *toward*: ``cos(E(new_target_i), d) - cos(E(orig_target_i), d)``, where ``d`` is the mean
    embedding of the original model's distractor images (how much the target's images moved
    toward the distractors);

  identical images give 0.
* **competition** (per image, for the Block Localizer): ``cos(E(x), d) - cos(E(x), t)`` with ``d``
  and ``t`` the mean (normalised) embeddings of the original model's distractor and target images:
  positive when an image looks more like the distractors than like the target. A block's erase is
  how much it raises the mean of this over the target's images (same seeds before and after).
* **retain** (1 = unchanged): the mean of the embedding cosine
  ``cos(E(new_retain_i), E(orig_retain_i))`` and the SSIM of the decoded pixels.

``E`` is an image embedding: a CLIP vision model's image embedding when one is available, else
:func:`pixel_embed`, a documented pixel-level fallback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PIXEL_FALLBACK = "pixel fallback: 24x24 area-downsampled RGB, per-image mean removed (a correlation of thumbnails)"


def pixel_embed(images: torch.Tensor, side: int = 24) -> torch.Tensor:
    """Fallback image embedding: small area-downsampled RGB thumbnails, centred per image."""
    x = images.float().permute(0, 3, 1, 2)
    x = F.adaptive_avg_pool2d(x, (side, side)).flatten(1)
    return x - x.mean(dim=1, keepdim=True)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8)


def centred_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row of ``[N, ...]`` latents or images: the cosine of the two rows with each row's mean removed (a
    correlation; brightness and contrast do not move it), ``[N]``."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    return _cos(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean structural similarity per image pair (grey level, uniform window), ``[N]``."""
    def grey(x):
        return (x.float() @ torch.tensor([0.299, 0.587, 0.114])).unsqueeze(1)

    x, y = grey(a), grey(b)
    window = max(1, min(window, x.shape[-1], x.shape[-2]))
    pool = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx, vy = pool(x * x) - mx**2, pool(y * y) - my**2
    cxy = pool(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def erase_score(new_target: torch.Tensor, orig_target: torch.Tensor, orig_distractors: torch.Tensor | None) -> dict:
    """Embeddings in, ``{"erase", "away", "toward"}`` out (see module docstring)."""
    away = (1 - _cos(new_target, orig_target)).mean()
    if orig_distractors is not None and orig_distractors.numel():
        d = F.normalize(orig_distractors.float(), dim=-1).mean(0, keepdim=True)
        toward = (_cos(new_target, d) - _cos(orig_target, d)).mean()
    else:
        toward = torch.zeros(())
    return {"erase": float((away + toward) / 2), "away": float(away), "toward": float(toward)}


def retain_score(new_emb: torch.Tensor, orig_emb: torch.Tensor, new_img: torch.Tensor, orig_img: torch.Tensor) -> dict:
    """``{"retain", "retain_embed", "retain_ssim"}`` for retain images made with the same seeds."""
    emb = _cos(new_emb, orig_emb).mean()
    st = ssim(new_img, orig_img).mean()
    return {"retain": float((emb + st) / 2), "retain_embed": float(emb), "retain_ssim": float(st)}


def unit_mean(emb: torch.Tensor) -> torch.Tensor:
    """The mean of the normalised embeddings, ``[1, D]`` (the reference ``t`` or ``d`` of competition)."""
    return F.normalize(emb.float(), dim=-1).mean(0, keepdim=True)


def competition_to(emb: torch.Tensor, t: torch.Tensor, d: torch.Tensor) -> dict:
    """:func:`competition` against given references ``t`` and ``d`` (``[1, D]``, or one row per image)."""
    toward, away = _cos(emb, d), -_cos(emb, t)
    return {"toward": toward, "away": away, "score": toward + away}


def competition(emb: torch.Tensor, target_ref: torch.Tensor, distractor_ref: torch.Tensor) -> dict:
    """Per-image ``toward`` (cosine to the distractors' mean), ``away`` (minus cosine to the target's
    mean) and ``score`` (their sum), as tensors ``[N]`` (see the module docstring)."""
    return competition_to(emb, unit_mean(target_ref), unit_mean(distractor_ref))
