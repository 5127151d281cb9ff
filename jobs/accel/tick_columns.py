"""Valid ticks as columns (the window-features accelerator's input) and their watermarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from operators.contract import MIN_WATERMARK
from topics.messages import SourceRef, Tick

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class TickColumns:
    """A batch of ticks as columns, in arrival order (the order the per-event path sees).

    ``symbol`` holds integer codes into ``symbols``. A late tick is reported as a ``Tick``
    rebuilt from the columns (``venue``, and ``source_file``/``line`` for its ``SourceRef``)
    unless the original messages are attached as ``ticks``.
    """

    ts: I64
    price: F64
    size: F64
    symbol: npt.NDArray[np.integer[Any]]
    symbols: tuple[str, ...]
    venue: str = ""
    line: I64 | None = None
    source_file: str | None = None
    ticks: Sequence[Tick] | None = None

    def __post_init__(self) -> None:
        n = self.ts.shape[0] if self.ts.ndim == 1 else -1
        if n < 0 or self.ts.dtype != np.int64:
            raise ValueError("ts must be a 1-D int64 array of nanoseconds")
        for name in ("price", "size"):
            col = getattr(self, name)
            if col.dtype != np.float64 or col.shape != (n,):
                raise ValueError(f"{name} must be a float64 array of length {n}")
        if self.symbol.shape != (n,) or not np.issubdtype(self.symbol.dtype, np.integer):
            raise ValueError(f"symbol must be an integer code array of length {n}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols must be unique")
        if n and (int(self.symbol.min()) < 0 or int(self.symbol.max()) >= len(self.symbols)):
            raise ValueError(f"symbol codes must lie in [0, {len(self.symbols)})")
        if self.line is not None and self.line.shape != (n,):
            raise ValueError(f"line must have length {n}")
        if self.ticks is not None and len(self.ticks) != n:
            raise ValueError(f"ticks must have length {n}")

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def slice(self, start: int, stop: int) -> TickColumns:
        """Rows ``[start, stop)`` as views (chunking a file into batches copies nothing)."""
        return TickColumns(
            ts=self.ts[start:stop],
            price=self.price[start:stop],
            size=self.size[start:stop],
            symbol=self.symbol[start:stop],
            symbols=self.symbols,
            venue=self.venue,
            line=None if self.line is None else self.line[start:stop],
            source_file=self.source_file,
            ticks=None if self.ticks is None else self.ticks[start:stop],
        )

    def tick(self, i: int) -> Tick:
        """Row ``i`` as a ``Tick`` message (the original one when attached)."""
        if self.ticks is not None:
            return self.ticks[i]
        source = None
        if self.line is not None:
            source = SourceRef(file=self.source_file, line=int(self.line[i]))
        return Tick(
            ts_event=int(self.ts[i]),
            symbol=self.symbols[int(self.symbol[i])],
            venue=self.venue,
            price=float(self.price[i]),
            size=float(self.size[i]),
            source=source,
        )

    @classmethod
    def from_ticks(cls, ticks: Sequence[Tick]) -> TickColumns:
        """Columns of decoded ``Tick`` messages; the messages stay attached for late reports."""
        codes: dict[str, int] = {}
        symbol = np.fromiter(
            (codes.setdefault(t.symbol, len(codes)) for t in ticks), np.int32, len(ticks)
        )
        lines = np.fromiter(
            (t.source.line if t.source is not None and t.source.line is not None else -1
             for t in ticks), np.int64, len(ticks))
        files = {t.source.file for t in ticks if t.source is not None}
        return cls(
            ts=np.fromiter((t.ts_event for t in ticks), np.int64, len(ticks)),
            price=np.fromiter((t.price for t in ticks), np.float64, len(ticks)),
            size=np.fromiter((t.size for t in ticks), np.float64, len(ticks)),
            symbol=symbol,
            symbols=tuple(codes),
            line=lines,
            source_file=files.pop() if len(files) == 1 else None,
            ticks=ticks,
        )


def bounded_watermarks(
    ts: I64, lateness: int, max_seen: int | None = None
) -> tuple[I64, int, int | None]:
    """Watermarks for "max event time seen - lateness", computed from the data alone.

    Returns ``(before, after, max_seen)``: ``before[i]`` is the watermark before row ``i``
    (what the per-event path puts in ``ctx.watermark``), ``after`` the watermark after the
    last row, and the new maximum to carry into the next batch (``None``: nothing seen yet,
    watermark ``MIN_WATERMARK``).
    """
    if lateness < 0:
        raise ValueError(f"lateness must be >= 0, got {lateness}")
    n = ts.shape[0]
    before = np.empty(n, dtype=np.int64)
    prev = MIN_WATERMARK if max_seen is None else max_seen - lateness
    if n == 0:
        return before, prev, max_seen
    running = np.maximum.accumulate(ts)
    if max_seen is not None:
        np.maximum(running, max_seen, out=running)
    before[0] = prev
    np.subtract(running[:-1], lateness, out=before[1:])
    last = int(running[-1])
    return before, last - lateness, last


