"""Progress lines on stderr for long runs, throttled by the injected clock.

Where the input's size is known (an uncompressed file's data lines, counted up front) a line
shows the total, the percentage and the time left at the rate so far; otherwise the count and
the rate.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO


def data_lines(path: Path, header: bool = True) -> int | None:
    """The number of lines of a text file (less its header): a progress total. None for
    compressed files, whose size is not known without decompressing them."""
    try:
        with path.open("rb") as f:
            if f.read(2) == b"\x1f\x8b":
                return None
            f.seek(0)
            n, last = 0, b"\n"
            for chunk in iter(lambda: f.read(1 << 22), b""):
                n += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError:
        return None
    if last != b"\n":
        n += 1  # a last line without its terminator
    return max(0, n - 1) if header else n


def format_seconds(s: float) -> str:
    s = max(0, round(s))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class Progress:
    """Prints ``label: n/total pct (rate/s, time left)`` at most once per ``every_s``."""

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

    def line(self, done: int, now: float) -> str:
        """The progress text for ``done`` items at clock time ``now``."""
        elapsed = max(now - self._t0, 1e-9)
        rate = done / elapsed
        if self.total:
            frac = min(done / self.total, 1.0)
            left = (self.total - min(done, self.total)) / rate if rate > 0 else float("inf")
            eta = format_seconds(left) if left != float("inf") else "?"
            return (f"  {self.label}: {done:,}/{self.total:,} {100 * frac:5.1f}% "
                    f"({rate:,.0f}/s, {eta} left)")
        return f"  {self.label}: {done:,} ({rate:,.0f}/s)"

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.every_s
        print(self.line(done, now), file=self._stream, flush=True)

    def step(self, message: str) -> None:
        """A phase of a long job (e.g. "fitting the regime HMM"), with the time so far."""
        if self.enabled:
            took = format_seconds(self._clock() - self._t0)
            print(f"  {self.label}: {message} ({took} in)", file=self._stream, flush=True)

