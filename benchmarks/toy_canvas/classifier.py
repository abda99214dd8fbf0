"""Two-head CNN classifier for toy canvas images: object head and style head.

Library API (no work at import time):

- ``ToyCanvasClassifier``: the network, ``forward(x) -> (object_logits, style_logits)``
  with ``x`` in [0, 1], layout (B, 3, 32, 32).
- ``load_classifier(path=DEFAULT_WEIGHTS)``: the shipped classifier, in eval mode.
- ``classify(model, images)``: predicted object / style indices and probabilities.
- ``train_classifier(...)`` / ``evaluate(...)``: used by ``train_classifier.py``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import world

log = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WEIGHTS = os.path.join(HERE, "weights", "classifier.safetensors")

# held-out evaluation renders use seeds from here on; training never does
EVAL_SEED_BASE = 1_000_000_000


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class ToyCanvasClassifier(nn.Module):
    def __init__(self, width: int = 32, n_objects: int = len(world.OBJECTS), n_styles: int = len(world.STYLES)):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w), nn.MaxPool2d(2),          # 16x16
            _block(w, 2 * w), nn.MaxPool2d(2),      # 8x8
            _block(2 * w, 4 * w), nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
        )
        self.object_head = nn.Linear(4 * w * 2, n_objects)
        self.style_head = nn.Linear(4 * w * 2, n_styles)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x * 2.0 - 1.0)
        h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.object_head(h), self.style_head(h)


def load_classifier(path: str = DEFAULT_WEIGHTS) -> ToyCanvasClassifier:
    from safetensors.torch import load_file

    model = ToyCanvasClassifier()
    model.load_state_dict(load_file(path))
    model.eval()
    return model


@torch.no_grad()
def classify(model: ToyCanvasClassifier, images: torch.Tensor, batch_size: int = 256) -> Dict[str, torch.Tensor]:
    """Classify (B, 3, H, W) images in [0, 1] (ComfyUI (B, H, W, 3) IMAGEs are
    accepted too). Returns dict with ``object``/``style`` indices (B,) and
    ``object_probs``/``style_probs`` (B, 8)."""
    if images.ndim == 4 and images.shape[1] != 3 and images.shape[-1] in (3, 4):
        images = world.from_comfy_image(images)
    images = images.float().clamp(0, 1)
    if images.shape[-1] != world.RESOLUTION or images.shape[-2] != world.RESOLUTION:
        images = F.interpolate(images, size=(world.RESOLUTION, world.RESOLUTION), mode="area")
    po, ps = [], []
    for i in range(0, images.shape[0], batch_size):
        lo, ls = model(images[i:i + batch_size])
        po.append(lo.softmax(-1))
        ps.append(ls.softmax(-1))
    object_probs = torch.cat(po)
    style_probs = torch.cat(ps)
    return {
        "object": object_probs.argmax(-1), "style": style_probs.argmax(-1),
        "object_probs": object_probs, "style_probs": style_probs,
    }


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild corruptions so the classifier tolerates generated images:
    Gaussian noise, occasional blur, small contrast/brightness changes."""
    b = x.shape[0]
    u = torch.rand(b, 4, generator=gen)
    # blur a third of the images with a 3x3 box/gaussian-ish kernel
    k = torch.tensor([0.25, 0.5, 0.25])
    k2 = (k[:, None] * k[None, :]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, groups=3)
    sel = (u[:, 0] < 0.33).float().view(b, 1, 1, 1)
    x = x * (1 - sel) + blurred * sel
    contrast = (0.85 + 0.3 * u[:, 1]).view(b, 1, 1, 1)
    bright = (u[:, 2] - 0.5).view(b, 1, 1, 1) * 0.1
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + bright
    sigma = (u[:, 3] * 0.06).view(b, 1, 1, 1)
    x = x + torch.randn(x.shape, generator=gen) * sigma
    return x.clamp(0, 1)


@torch.no_grad()
def evaluate(model: ToyCanvasClassifier, per_pair: int = 50, seed: int = EVAL_SEED_BASE) -> Dict[str, float]:
    """Accuracy on held-out renders: ``per_pair`` images for each of the 64
    (object, style) pairs, rendered with seeds that training never uses."""
    model.eval()
    pairs = world.all_pairs()
    correct_o = correct_s = total = 0
    for r in range(per_pair):
        imgs = world.render_pairs(pairs, seed=seed + r)
        out = classify(model, imgs)
        correct_o += (out["object"] == torch.tensor([p[0] for p in pairs])).sum().item()
        correct_s += (out["style"] == torch.tensor([p[1] for p in pairs])).sum().item()
        total += len(pairs)
    return {"object_accuracy": correct_o / total, "style_accuracy": correct_s / total, "n_images": total}


def train_classifier(steps: int = 3000, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     log_every: int = 100, model: Optional[ToyCanvasClassifier] = None) -> ToyCanvasClassifier:
    """Train on fresh renders (seeds 0..steps-1 offset by ``seed``), with
    ``augment`` applied; AdamW with a one-cycle schedule."""
    torch.manual_seed(seed)
    model = model or ToyCanvasClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.time()
    for step in range(steps):
        o, s = world.random_labels(batch_size, gen)
        x = world.render_batch(o, s, generator=gen)
        x = augment(x, gen)
        lo, ls = model(x)
        loss = F.cross_entropy(lo, o) + F.cross_entropy(ls, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            acc_o = (lo.argmax(-1) == o).float().mean().item()
            acc_s = (ls.argmax(-1) == s).float().mean().item()
            log.info("classifier step %d/%d loss %.4f train acc obj %.3f style %.3f (%.0fs)",
                     step, steps, loss.item(), acc_o, acc_s, time.time() - t0)
    model.eval()
    return model
