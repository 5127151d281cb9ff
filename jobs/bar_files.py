"""Bar files (``--bars``): CSV ``ts,symbol,open,high,low,close,volume``, daily or intraday.

Such files carry no VWAP; the bar's typical price ``(high + low + close) / 3`` stands in for it
(it only feeds ``vwap_dist``). The trade count is unknown and written as 0.

Rows become ``Bar`` messages; a row that is not a valid bar becomes a dead letter with a
reason, like a bad tick, and the replay goes on.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jobs.errors import UsageError
from jobs.sources import check_columns
from jobs.text_files import first_line, read_lines
from operators.domain.bars import format_duration
from operators.domain.tick_fields import parse_number
from operators.domain.timeparse import TimestampError, TimestampParser
from topics.dlq import DlqReason
from topics.messages import Bar, DeadLetter, SourceRef

BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")


def inspect_bar_file(path: Path, *, has_default_symbol: bool = False) -> tuple[str, ...]:
    """Check a bar CSV's columns; returns them in file order."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    _, first = first_line(path)
    header = tuple(h.strip() for h in first.split(","))
    required = tuple(c for c in BAR_COLUMNS if not (c == "symbol" and has_default_symbol))
    check_columns(path, header, BAR_COLUMNS, required)
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


def load_bars(
    path: Path,
    *,
    bar_ns: int | None,
    tz: str | None,
    default_symbol: str | None,
) -> tuple[list[tuple[Bar | DeadLetter, str]], int]:
    """Bars and dead letters in file order with each row's ts text, and the bar length."""
    header = inspect_bar_file(path, has_default_symbol=default_symbol is not None)
    idx = {name: header.index(name) for name in header}
    parser = TimestampParser(tz)
    lines = read_lines(path)
    parsed: list[tuple[int, str, int | None, list[str] | None, str]] = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(header):
            parsed.append((n, line, None, None, f"expected {len(header)} cells, got {len(cells)}"))
            continue
        try:
            ts = parser.parse(cells[idx["ts"]])
        except TimestampError as exc:
            parsed.append((n, line, None, None, f"ts: {exc}"))
            continue
        parsed.append((n, line, ts, cells, ""))
    starts = [p[2] for p in parsed if p[2] is not None]
    if bar_ns is None:
        bar_ns = infer_bar_ns(starts)
    timeframe = format_duration(bar_ns)
    out: list[tuple[Bar | DeadLetter, str]] = []
    name = path.name
    for n, line, row_ts, row, problem in parsed:
        src = SourceRef(file=name, line=n)
        ts_text = line.split(",")[idx["ts"]].strip() if line.count(",") >= idx["ts"] else ""
        if row_ts is None or row is None:
            out.append((DeadLetter(ts_event=row_ts, reason=DlqReason.BAD_BAR.value, detail=problem,
                                   payload=line, source=src), ts_text))
            continue
        ts, cells = row_ts, row
        symbol = cells[idx["symbol"]] if "symbol" in idx else (default_symbol or "")
        vals: dict[str, float | None] = {}
        bad = ""
        for col in BAR_COLUMNS[2:]:
            try:
                vals[col] = parse_number(cells[idx[col]])
            except ValueError:
                bad = bad or f"{col} {cells[idx[col]]!r} is not a number"
        bad = bad or _bar_problem(symbol, vals)
        if bad:
            out.append((DeadLetter(ts_event=ts, reason=DlqReason.BAD_BAR.value, detail=bad,
                                   payload=line, source=src), ts_text))
            continue
        o, h, lo, c, v = (float(vals[k] or 0.0) for k in ("open", "high", "low", "close",
                                                            "volume"))
        # A bar file has no VWAP: the typical price stands in for it (vwap_dist's reference).
        out.append((Bar(ts_event=ts, symbol=symbol, timeframe=timeframe, ts_end=ts + bar_ns,
                        open=o, high=h, low=lo, close=c, volume=v, vwap=(h + lo + c) / 3.0,
                        trade_count=0),
                    ts_text))
    return out, bar_ns


def _bar_problem(symbol: str, vals: dict[str, float | None]) -> str:
    if not symbol:
        return "empty symbol"
    for k, v in vals.items():
        if v is None or not math.isfinite(v):
            return f"{k} is not a finite number"
    o, h, lo, c, v = (vals[k] for k in ("open", "high", "low", "close", "volume"))
    assert o is not None and h is not None and lo is not None and c is not None and v is not None
    if min(o, h, lo, c) <= 0:
        return "prices must be > 0"
    if v < 0:
        return "volume must be >= 0"
    if not (lo <= min(o, c) and max(o, c) <= h):
        return f"inconsistent OHLC (open {o}, high {h}, low {lo}, close {c})"
    return ""
