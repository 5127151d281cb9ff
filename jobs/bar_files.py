"""Bar files (``--bars``): CSV ``ts,symbol,open,high,low,close,volume``, daily or intraday.

Such files carry no VWAP; the bar's typical price ``(high + low + close) / 3`` stands in for it
(it only feeds ``vwap_dist``). The trade count is unknown and written as 0.

Rows become ``Bar`` messages; a row that is not a valid bar becomes a dead letter with a
reason and its line, like a bad tick, and the replay goes on (no file is refused for rows that
can be dead-lettered):

- ``BAD_BAR``: wrong number of cells, bad timestamp or number, non-positive price, negative
  volume, or OHLC inconsistent beyond the tolerance;
- ``DUPLICATE_BAR``: the same symbol and start as an earlier row (the first one is kept);
- ``UNSORTED_BAR``: a start before an earlier row's bar of the same symbol.

OHLC consistency (``low <= open, close <= high``) is checked with a relative tolerance,
``ohlc_tolerance`` (``--ohlc-tolerance``, default 1e-6): adjusted daily files derive OHLC by
scaling with ``adj_close / close`` and carry closes a few ulps outside the range. Such a bar is
accepted with ``low``/``high`` widened to include ``open`` and ``close``; anything further out
is dead-lettered.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jobs.errors import UsageError
from jobs.text_files import check_columns, check_gzip, head_lines, iter_data_lines
from operators.domain.bars import format_duration
from operators.domain.tick_fields import BAD_BYTE, parse_number
from operators.domain.timeparse import TimestampError, TimestampParser, format_ns
from topics.dlq import DlqReason
from topics.messages import Bar, DeadLetter, SourceRef

BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")
OHLC_TOLERANCE = 1e-6
"""Default relative tolerance of the OHLC consistency check (far below any tick size)."""


def inspect_bar_file(path: Path, *, has_default_symbol: bool = False) -> tuple[str, ...]:
    """Check a bar CSV's columns; returns them in file order."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    head = head_lines(path, 2)
    if not head:
        raise UsageError(f"{path}: empty file")
    first = head[0][1]
    if BAD_BYTE in first:
        raise UsageError(f"{path}:{head[0][0]}: the header holds bytes that are not UTF-8")
    if len(head) < 2:
        raise UsageError(f"{path}: a header but no data rows")
    header = tuple(h.strip() for h in first.split(","))
    required = tuple(c for c in BAR_COLUMNS if not (c == "symbol" and has_default_symbol))
    check_columns(path, header, BAR_COLUMNS, required)
    check_gzip(path)  # streamed later: find damage now, before anything is replayed
    return header


def infer_bar_ns(starts: list[int]) -> int:
    """The bar length of a file without ``--bar``: the most common gap between bars.

    Daily files have weekend gaps, intraday ones lunch breaks: the mode of the gaps is the
    bar length; one day is assumed when it is at least 20 hours (daylight-saving days).
    """
    gaps = np.diff(np.asarray(sorted(set(starts)), dtype=np.int64))
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        raise UsageError("cannot infer the bar length from fewer than two bars; pass --bar")
    values, counts = np.unique(gaps, return_counts=True)
    mode = int(values[np.argmax(counts)])
    day = 86_400_000_000_000
    return day if mode >= 20 * 3_600_000_000_000 and mode <= 28 * 3_600_000_000_000 else mode


def check_tolerance(tolerance: float) -> float:
    """A valid relative OHLC tolerance, or a usage error."""
    if not (math.isfinite(tolerance) and 0.0 <= tolerance < 0.01):
        raise UsageError(f"--ohlc-tolerance must be a relative tolerance in [0, 0.01), got "
                         f"{tolerance!r}")
    return tolerance


def load_bars(
    path: Path,
    *,
    bar_ns: int | None,
    tz: str | None,
    default_symbol: str | None,
    ohlc_tolerance: float = OHLC_TOLERANCE,
) -> tuple[list[tuple[Bar | DeadLetter, str]], int]:
    """Bars and dead letters in file order with each row's ts text, and the bar length."""
    items, bar_ns = iter_bars(path, bar_ns=bar_ns, tz=tz, default_symbol=default_symbol,
                              ohlc_tolerance=ohlc_tolerance)
    return list(items), bar_ns


def iter_bars(
    path: Path,
    *,
    bar_ns: int | None,
    tz: str | None,
    default_symbol: str | None,
    ohlc_tolerance: float = OHLC_TOLERANCE,
) -> tuple[Iterator[tuple[Bar | DeadLetter, str]], int]:
    """``load_bars`` streamed: the file is checked and (without ``bar_ns``) its bar length
    inferred up front, then the rows are read as the iterator is consumed.

    Inferring the bar length reads the file once more, keeping only the distinct bar starts
    (bounded by the calendar, not by the number of rows or symbols).
    """
    check_tolerance(ohlc_tolerance)
    header = inspect_bar_file(path, has_default_symbol=default_symbol is not None)
    idx = {name: header.index(name) for name in header}
    if bar_ns is None:
        parser = TimestampParser(tz)
        starts = {r.ts for n, line in iter_data_lines(path, header=True)
                  if (r := _parse_row(n, line, header, idx, parser)).ts is not None}
        bar_ns = infer_bar_ns(list(starts))
    return _bars(path, header, idx, bar_ns, tz, default_symbol, ohlc_tolerance), bar_ns


def _bars(path: Path, header: tuple[str, ...], idx: dict[str, int], bar_ns: int,
          tz: str | None, default_symbol: str | None, ohlc_tolerance: float
          ) -> Iterator[tuple[Bar | DeadLetter, str]]:
    parser = TimestampParser(tz)
    timeframe = format_duration(bar_ns)
    name = path.name
    last: dict[str, tuple[int, int]] = {}  # symbol -> (start, line) of its latest good bar
    for n, line in iter_data_lines(path, header=True):
        r = _parse_row(n, line, header, idx, parser)
        src = SourceRef(file=name, line=r.line)
        reason, problem = DlqReason.BAD_BAR, r.problem
        symbol = ""
        bar: Bar | None = None
        if not problem:
            assert r.ts is not None and r.cells is not None
            symbol = r.cells[idx["symbol"]] if "symbol" in idx else (default_symbol or "")
            bar_or_problem = _bar(r.ts, symbol, r.cells, idx, timeframe, bar_ns, ohlc_tolerance)
            if isinstance(bar_or_problem, str):
                problem = bar_or_problem
            else:
                bar = bar_or_problem
        if bar is not None and symbol in last:
            prev_ts, prev_line = last[symbol]
            if r.ts == prev_ts:
                reason, problem = DlqReason.DUPLICATE_BAR, (
                    f"{symbol}: a bar starting {format_ns(prev_ts)} is already on line "
                    f"{prev_line}")
            elif r.ts is not None and r.ts < prev_ts:
                reason, problem = DlqReason.UNSORTED_BAR, (
                    f"{symbol}: starts {format_ns(r.ts)}, before the bar on line {prev_line} "
                    f"({format_ns(prev_ts)}); bar files must ascend in time per symbol")
        if bar is None or problem:
            yield (DeadLetter(ts_event=r.ts, reason=reason.value, detail=problem,
                              payload=r.text, source=src), r.ts_text)
            continue
        last[symbol] = (bar.ts_event, r.line)
        yield bar, r.ts_text


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    text: str
    ts_text: str
    ts: int | None = None
    cells: list[str] | None = None
    problem: str = ""


def _parse_row(n: int, line: str, header: tuple[str, ...], idx: dict[str, int],
               parser: TimestampParser) -> _Row:
    cells = [c.strip() for c in line.split(",")]
    ts_text = cells[idx["ts"]] if len(cells) > idx["ts"] else ""
    if len(cells) != len(header):
        return _Row(n, line, ts_text, problem=f"expected {len(header)} cells, got {len(cells)}")
    if BAD_BYTE in line:
        return _Row(n, line, ts_text, problem="the row holds bytes that are not UTF-8")
    try:
        ts = parser.parse(cells[idx["ts"]])
    except TimestampError as exc:
        return _Row(n, line, ts_text, problem=f"ts: {exc}")
    return _Row(n, line, ts_text, ts, cells)


def _bar(ts: int, symbol: str, cells: list[str], idx: dict[str, int], timeframe: str,
         bar_ns: int, tolerance: float) -> Bar | str:
    """The row's bar, or why it is not one."""
    if not symbol:
        return "empty symbol"
    vals: dict[str, float] = {}
    for col in BAR_COLUMNS[2:]:
        try:
            v = parse_number(cells[idx[col]])
        except ValueError:
            return f"{col} {cells[idx[col]]!r} is not a number"
        if v is None or not math.isfinite(v):
            return f"{col} is not a finite number"
        vals[col] = v
    o, h, lo, c, v = (vals[k] for k in ("open", "high", "low", "close", "volume"))
    if min(o, h, lo, c) <= 0:
        return "prices must be > 0"
    if v < 0:
        return "volume must be >= 0"
    if not (lo <= min(o, c) and max(o, c) <= h):
        slack = tolerance * max(o, h, lo, c)
        if not (lo - slack <= min(o, c) and max(o, c) <= h + slack):
            return (f"inconsistent OHLC (open {o}, high {h}, low {lo}, close {c}) beyond the "
                    f"relative tolerance {tolerance:g}")
        lo, h = min(lo, o, c), max(h, o, c)  # within tolerance: rounding, made consistent
    # A bar file has no VWAP: the typical price stands in for it (vwap_dist's reference).
    return Bar(ts_event=ts, symbol=symbol, timeframe=timeframe, ts_end=ts + bar_ns, open=o,
               high=h, low=lo, close=c, volume=v, vwap=(h + lo + c) / 3.0, trade_count=0)
