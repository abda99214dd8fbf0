"""Progress for long-running nodes: ComfyUI's progress bar, Cancel, a text line on the node, and the
chart points the web extension draws (``chart``, sent by surgun_comfy/events.py)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("SurgUn")


class NodeProgress:
    """One progress bar over all phases of a node.

    ``tick()`` advances the bar and raises ComfyUI's InterruptProcessingException when the user
    pressed Cancel, so every loop that ticks is cancellable. ``say()`` shows a line of text on
    the node (loss, phase) at most every ``text_interval`` seconds.
    """

    def __init__(self, total: int, node_id: str | None = None, text_interval: float = 0.5):
        import comfy.utils

        self.total = max(1, int(total))
        self.node_id = node_id
        self.done = 0
        self.bar = comfy.utils.ProgressBar(self.total, node_id=node_id)
        self.text_interval = text_interval
        self._last_text = 0.0

    def tick(self, n: int = 1) -> None:
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()
        self.done = min(self.total, self.done + n)
        self.bar.update_absolute(self.done, self.total)
        comfy.model_management.throw_exception_if_processing_interrupted()

    def extend(self, n: int) -> None:
        """Work found while running (e.g. a measurement whose size is known once it starts): the bar's end moves out by ``n``."""
        self.total += max(0, int(n))
        self.bar.update_absolute(self.done, self.total)

    def skip(self, n: int) -> None:
        """Work planned in ``total`` that will not run: the bar's end moves in by ``n``."""
        self.total = max(self.done, 1, self.total - int(n))
        self.bar.update_absolute(self.done, self.total)

    def say(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_text < self.text_interval:
            return
        self._last_text = now
        log.debug("[SurgUn] %s", text)
        if self.node_id is None:
            return
        try:
            from server import PromptServer

            server = getattr(PromptServer, "instance", None)
            if server is not None:
                server.send_progress_text(text, self.node_id)
        except Exception:  # no server (headless use): the log line above is enough
            pass

    def chart(self, kind: str, point: dict) -> None:
        """Send one chart point for this node to the page (see surgun_comfy/events.py)."""
        from .events import send_chart

        send_chart(kind, self.node_id, point)
