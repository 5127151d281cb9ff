"""Progress lines on stderr for long runs, throttled by the injected clock."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Prints ``label: n/total (rate/s)`` at most once per ``every_s`` seconds."""

    def __init__(self, label: str, total: int | None, *, enabled: bool = True,
                 every_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled
        self.every_s = every_s
        self._clock = clock
        self._stream = stream or sys.stderr
        self._t0 = clock()
        self._next = self._t0 + every_s

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.every_s
        rate = done / max(now - self._t0, 1e-9)
        total = f"/{self.total:,}" if self.total else ""
        pct = f" {100 * done / self.total:5.1f}%" if self.total else ""
        print(f"  {self.label}: {done:,}{total}{pct} ({rate:,.0f}/s)", file=self._stream,
              flush=True)
