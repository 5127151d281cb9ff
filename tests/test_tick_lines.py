"""``NormalizeColumns.tick_lines`` writes the bytes msgspec writes for the ``Tick`` messages.

The batched replay writes ``md.ticks`` from the columns with it, so every field shape a source
can give must come out as the encoder's text: trade ids, quotes with gaps, venues, default
symbol and venue, names needing escapes, -0.0, floats in exponent form, no source file.
"""

from __future__ import annotations

import msgspec
import numpy as np

from jobs.accel.normalize_columns import NormalizeColumns, RawTickColumns
from operators.normalize import Normalize, NormalizeConfig


def _encoded(ncols: NormalizeColumns, cols: RawTickColumns) -> bytes:
    enc = msgspec.json.Encoder()
    return b"".join(enc.encode(t) + b"\n"
                    for t in ncols.ticks(cols, np.ones(len(cols), dtype=bool)))


def test_tick_lines_match_msgspec_for_every_field_shape() -> None:
    ncols = NormalizeColumns(Normalize(NormalizeConfig(default_symbol="DEF",
                                                       default_venue="XV")))
    n = 7
    cols = RawTickColumns(
        ts=np.array([1, 2, 10**18, 3, 4, 5, 6], dtype=np.int64),
        price=np.array([1640.25, 1e-7, 1.5e16, 0.1, 3.0, 123456.789, 2.0]),
        size=np.array([1.0, -0.0, 2e20, 0.5, 7.0, 1e-5, 3.0]),
        symbol_codes=np.array([0, 1, -1, 2, 0, 1, 2], dtype=np.int32),
        symbol_names=(" ES ", 'q"ote\\', "é€"),
        line=np.arange(2, 2 + n, dtype=np.int64),
        payload=[""] * n,
        file='dir/a "b".csv',
        venue_codes=np.array([0, -1, 1, 0, 1, -1, 0], dtype=np.int32),
        venue_names=(" CME ", "ice"),
        trade_id=["T1", None, " 42 ", "", "x,y", "ü", None],
        bid=np.array([1.0, np.nan, 2.5, np.nan, 1e-9, 3.0, np.nan]),
        ask=np.array([np.nan, 1.25, 3.5, np.nan, 2.0, 4.0, 5.0]),
    )
    lines = ncols.tick_lines(cols)
    assert lines == _encoded(ncols, cols)
    assert lines.count(b"\n") == n


def test_tick_lines_without_optional_columns_or_file() -> None:
    ncols = NormalizeColumns(Normalize(NormalizeConfig()))
    cols = RawTickColumns(
        ts=np.array([5, 6, 7], dtype=np.int64), price=np.array([1.0, 2.0, 3.0]),
        size=np.array([1.0, 2.0, 3.0]), symbol_codes=np.array([0, 0, -1], dtype=np.int32),
        symbol_names=("NQ",), line=np.array([1, 2, 3], dtype=np.int64), payload=[""] * 3)
    lines = ncols.tick_lines(cols)
    assert lines == _encoded(ncols, cols)
    assert b'"source":{"line":1}' in lines
    assert ncols.tick_lines(cols.select(np.zeros(3, dtype=bool))) == b""
