"""Event-time tumbling bars: durations, the open-bar accumulator and columnar tick batches.

A bar covers the half-open interval ``[start, start + bar_ns)`` with
``start = ts - ts % bar_ns``, aligned to the Unix epoch in UTC (so daily bars run midnight to
midnight UTC). Prices fold in arrival order: ``open`` is the first tick to arrive, ``close`` the
last, and ``volume`` / ``sum(price * size)`` are summed left to right, so the per-event path
and the batched path produce the same floating-point bits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from operators.contract import MIN_WATERMARK
from topics.messages import SourceRef, Tick

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

NS_PER_UNIT: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_LABEL_UNITS: tuple[tuple[str, int], ...] = (
    ("d", NS_PER_UNIT["d"]),
    ("h", NS_PER_UNIT["h"]),
    ("m", NS_PER_UNIT["m"]),
    ("s", NS_PER_UNIT["s"]),
    ("ms", NS_PER_UNIT["ms"]),
    ("us", NS_PER_UNIT["us"]),
    ("ns", 1),
)
_DURATION = re.compile(r"^\s*(\d+)\s*([a-zµ]+)\s*$")
_UNITS_HELP = "ns, us, ms, s, m (or min), h, d"


def parse_duration(value: str | int) -> int:
    """A bar length in integer nanoseconds from ``"1m"``, ``"5m"``, ``"1h"``, ``"1d"``... or ns.

    A bare number without a unit is rejected rather than guessed (seconds? nanoseconds?).
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"duration must be a string like '1m' or an int of ns, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"duration must be a positive number of nanoseconds, got {value}")
        return value
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(
            f"bad duration {value!r}: expected <positive integer><unit> such as '1m', '5m', "
            f"'1h' or '1d', with unit one of {_UNITS_HELP}"
        )
    amount, unit = int(m.group(1)), m.group(2)
    if unit not in NS_PER_UNIT:
        raise ValueError(f"bad duration {value!r}: unknown unit {unit!r} (use {_UNITS_HELP})")
    if amount <= 0:
        raise ValueError(f"bad duration {value!r}: must be positive")
    return amount * NS_PER_UNIT[unit]


def format_duration(ns: int) -> str:
    """The shortest label for a duration: 60e9 ns -> ``"1m"``, 90e9 -> ``"90s"``."""
    if ns <= 0:
        raise ValueError(f"duration must be positive, got {ns}")
    for unit, size in _LABEL_UNITS:
        if ns % size == 0:
            return f"{ns // size}{unit}"
    raise AssertionError("unreachable: every integer is a multiple of 1 ns")


def bar_start(ts: int, bar_ns: int) -> int:
    """Start of the bar holding ``ts`` (floor alignment, also for times before 1970)."""
    return ts - ts % bar_ns


class OpenBar(msgspec.Struct, array_like=True):
    """A bar still collecting ticks; ``pv`` is ``sum(price * size)`` for the VWAP."""

    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    pv: float
    count: int
    first_line: int = -1  # source line (or offset) of the bar's first and last tick; -1: none
    last_line: int = -1

    @classmethod
    def first(cls, start: int, price: float, size: float, line: int = -1) -> OpenBar:
        return cls(start, price, price, price, price, size, price * size, 1, line, line)

    def add(self, price: float, size: float, line: int = -1) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        self.close = price
        self.volume += size
        self.pv += price * size
        self.count += 1
        self.last_line = line


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


@dataclass(frozen=True, slots=True, eq=False)
class BarSegments:
    """Aggregates per (symbol code, bar start), sorted by code then start."""

    code: I64
    start: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    pv: F64
    count: I64
    first_line: I64
    last_line: I64

    def __len__(self) -> int:
        return int(self.code.shape[0])


def fold_bars(
    code: I64,
    ts: I64,
    price: F64,
    size: F64,
    *,
    bar_ns: int,
    carried: Sequence[tuple[int, OpenBar]] = (),
    line: I64 | None = None,
) -> BarSegments:
    """Fold on-time ticks (arrival order) into bars, continuing ``carried`` (code, open bar)s.

    Each carried bar enters as one pseudo-row placed before the ticks, so the stable sort
    keeps it at the head of its group and the fold continues from its values exactly as the
    per-event path would. Highs and lows use ``reduceat``; volume and ``price * size`` are
    summed left to right per bar because ``np.add.reduceat`` sums pairwise and would differ
    from the per-event fold in the last bits. That loop runs per bar, not per tick.
    """
    if line is None:
        line = np.full(code.shape[0], -1, dtype=np.int64)
    if carried:
        first_line_all = np.concatenate(
            (np.array([ob.first_line for _, ob in carried], dtype=np.int64), line))
        last_line_all = np.concatenate(
            (np.array([ob.last_line for _, ob in carried], dtype=np.int64), line))

        def col(attr: str, values: F64) -> F64:
            head = np.array([getattr(ob, attr) for _, ob in carried], dtype=np.float64)
            return np.concatenate((head, values))

        code_all = np.concatenate((np.array([c for c, _ in carried], dtype=np.int64), code))
        start_all = np.concatenate(
            (np.array([ob.start for _, ob in carried], dtype=np.int64), ts - ts % bar_ns)
        )
        open_all, high_all = col("open", price), col("high", price)
        low_all, close_all = col("low", price), col("close", price)
        vol_all, pv_all = col("volume", size), col("pv", price * size)
        cnt_all = np.concatenate(
            (
                np.array([ob.count for _, ob in carried], dtype=np.int64),
                np.ones(code.shape[0], dtype=np.int64),
            )
        )
    else:
        first_line_all = last_line_all = line
        code_all, start_all = code, ts - ts % bar_ns
        open_all = high_all = low_all = close_all = price
        vol_all, pv_all = size, price * size
        cnt_all = np.ones(code.shape[0], dtype=np.int64)

    m = code_all.shape[0]
    if m == 0:
        e_i, e_f = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return BarSegments(e_i, e_i, e_f, e_f, e_f, e_f, e_f, e_f, e_i, e_i, e_i)

    # Group by (symbol, bar) keeping arrival order; replays are usually sorted already.
    bucket = start_all // bar_ns
    bmin = int(bucket.min())
    span = int(bucket.max()) - bmin + 1
    order: I64 | None
    if span * (int(code_all.max()) + 1) < 2**62:
        key = code_all * span + (bucket - bmin)
        if m > 1 and bool(np.any(key[1:] < key[:-1])):
            order = np.argsort(key, kind="stable")
            key = key[order]
        else:
            order = None
        boundary = key[1:] != key[:-1]
    else:
        order = np.lexsort((bucket, code_all))
        bs, cs = bucket[order], code_all[order]
        boundary = (cs[1:] != cs[:-1]) | (bs[1:] != bs[:-1])
    if order is not None:
        code_all, start_all = code_all[order], start_all[order]
        open_all, close_all = open_all[order], close_all[order]
        high_all, low_all = high_all[order], low_all[order]
        vol_all, pv_all, cnt_all = vol_all[order], pv_all[order], cnt_all[order]
        first_line_all, last_line_all = first_line_all[order], last_line_all[order]

    first = np.concatenate(([0], np.flatnonzero(boundary) + 1)).astype(np.int64)
    stop = np.append(first[1:], m)
    volume = vol_all[first]
    pv = pv_all[first]
    for i in np.flatnonzero(stop - first > 1).tolist():
        a, b = int(first[i]), int(stop[i])
        volume[i] = np.cumsum(vol_all[a:b])[-1]
        pv[i] = np.cumsum(pv_all[a:b])[-1]
    return BarSegments(
        code=code_all[first],
        start=start_all[first],
        open=open_all[first],
        high=np.maximum.reduceat(high_all, first),
        low=np.minimum.reduceat(low_all, first),
        close=close_all[stop - 1],
        volume=volume,
        pv=pv,
        count=np.add.reduceat(cnt_all, first),
        first_line=first_line_all[first],
        last_line=last_line_all[stop - 1],
    )
