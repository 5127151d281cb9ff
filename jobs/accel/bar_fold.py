"""Ticks folded into per-(symbol, bar) aggregates over columns, bit-equal to ``OpenBar.add``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from operators.domain.bars import OpenBar

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


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
