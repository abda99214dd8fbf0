"""A progress bar over sampling and training steps (tqdm), and the package's logger."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("SurgUn")


class Progress:
    """One bar per erasure: ``grow(n)`` adds planned work, ``tick()`` marks one unit done,
    ``say(text)`` shows the latest loss or phase next to the bar."""

    def __init__(self, desc: str = "", enabled: bool = True, position: int = 0):
        self.enabled = enabled
        self._bar = None
        self._desc = desc
        self._position = position
        self.total = 0
        self.done = 0

    def _ensure(self):
        if self._bar is None and self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self._desc, position=self._position, file=sys.stderr,
                             dynamic_ncols=True, leave=True)
        return self._bar

    def grow(self, n: int) -> None:
        self.total += int(n)
        bar = self._ensure()
        if bar is not None:
            bar.total = self.total
            bar.refresh()

    def tick(self, n: int = 1) -> None:
        self.done += n
        bar = self._ensure()
        if bar is not None:
            bar.update(n)

    def say(self, text: str) -> None:
        bar = self._ensure()
        if bar is not None:
            bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
