"""Chart events for the pack's web extension (web/js/surgun.js).

While a node runs, the server sends one websocket message of type ``surgun.chart`` per data point
(a training step, a probed block, the compare scores) to the client that queued the prompt. The
extension draws them on the node and keeps them in the node's properties, so they show whether
the node is collapsed or not and survive a reload of the page.

Message ``data``: ``{"node": <unique id>, "prompt_id": ..., "kind": ..., "point": {...}}`` where
``kind`` is one of

* ``train_start`` ``{"total": steps}`` and ``train_step`` ``{"step", "loss", "target",
  "distractor", "retain", "ascent_active", "grad_norm"}`` (SurgUn Train);
* ``localize_start`` ``{"total": blocks}``, ``localize_block`` ``{"i", "n", "block", "erase",
  "retain"}`` and ``localize_done`` ``{"erase_threshold", "retain_cutoff", "chosen"}`` (Block
  Localizer);
* ``compare`` ``{"erase", "away", "toward", "retain", "retain_prompts": {prompt: retain}}``
  (Erase/Retain Compare).

Without a server (headless runs, tests through the executor) nothing is sent.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger("SurgUn")

EVENT = "surgun.chart"
KINDS = ("train_start", "train_step", "localize_start", "localize_block", "localize_done", "compare")


def _clean(value):
    """JSON-safe: non-finite floats become None (JSON has no NaN), containers recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def send_chart(kind: str, node_id: str | None, point: dict) -> bool:
    """Send one chart point for ``node_id`` to the client running the prompt. True when sent."""
    if kind not in KINDS:
        raise ValueError(f"[SurgUn] unknown chart event kind {kind!r}; expected one of {', '.join(KINDS)}")
    if node_id is None:
        return False
    try:
        from server import PromptServer
    except ImportError:  # not inside a ComfyUI server
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None or getattr(server, "client_id", None) is None:
        return False
    prompt_id = None
    try:
        from comfy_execution.utils import get_executing_context

        ctx = get_executing_context()
        prompt_id = getattr(ctx, "prompt_id", None) if ctx is not None else None
    except ImportError:
        pass
    try:
        server.send_sync(EVENT, {"node": str(node_id), "prompt_id": prompt_id, "kind": kind, "point": _clean(point)},
                         server.client_id)
    except Exception as e:  # a chart must never break a run
        log.debug("[SurgUn] chart event %s not sent: %s", kind, e)
        return False
    return True
