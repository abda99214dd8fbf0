"""Make the template thumbnails (workflows/<name>.jpg) from the browser layer's screenshots.

Each thumbnail is the browser layer's close-up of the workflow's main node (SurgUn Train with its
loss chart, or Apply Erased Weights) after a real run in ComfyUI's frontend (tests/browser, with
the tiny test checkpoint: its images are noise, so the picture is the node and its chart, not an
image the model made). Regenerate with:

    SURGUN_SCREENSHOTS=docs/screenshots scripts/test.sh tests/browser
    source scripts/env.sh && $SURGUN_PY scripts/make_thumbnails.py
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("SurgUn")


def thumbnail(screenshot: Path, out: Path, side: int = 512) -> None:
    from PIL import Image

    img = Image.open(screenshot).convert("RGB")
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    img.crop((left, top, left + s, top + s)).resize((side, side), Image.LANCZOS).save(out, "JPEG", quality=85, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screenshots", type=Path, default=REPO / "docs" / "screenshots")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for wf in sorted((REPO / "workflows").glob("*.json")):
        shot = args.screenshots / f"{wf.stem.replace(' ', '_')}_closeup.png"
        if not shot.exists():
            raise SystemExit(f"[SurgUn] no screenshot {shot}; run the browser tests with SURGUN_SCREENSHOTS={args.screenshots} first")
        out = wf.with_suffix(".jpg")
        thumbnail(shot, out)
        log.info("[SurgUn] wrote %s (%d KB)", out.relative_to(REPO), out.stat().st_size // 1024)


if __name__ == "__main__":
    main()
