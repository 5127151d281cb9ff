"""Tick files (CSV, optionally gzip-compressed) as normalize input: per record or as columns.

Two readers of the same file that agree line for line:

- ``iter_raw_records`` yields one ``RawRecord`` per data line for the per-event path;
- ``load_tick_columns`` reads the whole file into ``RawTickColumns`` for the columnar
  accelerator (``jobs.accel.normalize_columns``; the E-mini file's 500k rows in a fraction of
  a second).

File conventions are ``jobs.text_files``'s (gzip, UTF-8, line endings); the first non-blank
line is the header; blank (empty or whitespace-only) lines are skipped (they are not records)
but keep their line numbers, so ``SourceRef.line`` is the 1-based physical line a text editor
shows. The header is mapped to canonical field names
with ``column_map`` (e.g. ``{"DateTime": "ts", "Price": "price", "Volume": "size"}``); a header
that already is a canonical name maps to itself; any other column is ignored.

Speed comes from parsing each *distinct* cell text once with the scalar parsers normalize
itself uses (``TimestampParser.parse``, ``parse_number``) and broadcasting the results: a tick
file repeats prices, sizes and timestamps heavily, and sharing the scalar parsers makes the
two paths agree by construction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from pathlib import Path

import numpy as np
import numpy.typing as npt

from jobs.accel.normalize_columns import RawTickColumns
from jobs.text_files import read_lines, read_text, split_lines
from operators.domain.tick_fields import BAD_BYTE, TICK_FIELDS, parse_number, split_csv_line
from operators.domain.timeparse import TimestampParser
from operators.normalize import NormalizeConfig, RawRecord
from topics.messages import SourceRef


def _header_index(lines: Sequence[str]) -> int:
    """The header is the first non-blank line."""
    for i, line in enumerate(lines):
        if line.strip():
            return i
    raise ValueError("the file has no header line")


def csv_columns_from_header(
    header: Sequence[str], column_map: Mapping[str, str] | None = None, *,
    require_ts: bool = True,
) -> tuple[str, ...]:
    """Canonical name per header column (``""`` for ignored columns), for ``csv_columns``."""
    cmap = dict(column_map or {})
    bad = sorted(set(cmap.values()) - set(TICK_FIELDS) - {""})
    if bad:
        raise ValueError(f"column_map targets {bad} are not canonical fields {TICK_FIELDS}")
    out = []
    for h in header:
        name = h.strip()
        out.append(cmap.get(name, name if name in TICK_FIELDS else ""))
    named = [c for c in out if c]
    if len(set(named)) != len(named):
        raise ValueError(f"header {list(header)} maps two columns to one field: {out}")
    if require_ts and "ts" not in named:
        raise ValueError(f"header {list(header)} has no column mapped to 'ts'")
    return tuple(out)


def read_csv_columns(
    path: str | Path, column_map: Mapping[str, str] | None = None, delimiter: str = ","
) -> tuple[str, ...]:
    """``csv_columns`` for a file, from its header line."""
    lines = read_lines(path)
    header = split_csv_line(lines[_header_index(lines)], delimiter)
    return csv_columns_from_header(header, column_map)


def normalize_config_for(
    path: str | Path,
    column_map: Mapping[str, str] | None = None,
    *,
    tz: str | None = None,
    default_symbol: str | None = None,
    default_venue: str = "UNKNOWN",
    delimiter: str = ",",
    instruments: tuple[str, ...] | None = None,
) -> NormalizeConfig:
    """A ``NormalizeConfig`` whose ``csv_columns`` match the file's header."""
    return NormalizeConfig(
        tz=tz,
        csv_columns=read_csv_columns(path, column_map, delimiter),
        csv_delimiter=delimiter,
        default_symbol=default_symbol,
        default_venue=default_venue,
        instruments=instruments,
    )


def iter_raw_records(path: str | Path, *, label: str | None = None, header: bool = True
                     ) -> Iterator[RawRecord]:
    """One ``RawRecord`` per non-blank line after the header (``header=False``: from the
    start, e.g. JSON lines), with file (``label``, default the path) and line number."""
    lines = read_lines(path)
    start = _header_index(lines) + 1 if header else 0
    file = str(path) if label is None else label
    for i in range(start, len(lines)):
        line = lines[i]
        if line.strip():
            yield RawRecord(payload=line, source=SourceRef(file=file, line=i + 1))


def _float_cell(text: str) -> float:
    """NaN for an absent (blank) cell, -inf for text that is not a number or is "nan"."""
    try:
        v = parse_number(text)
    except ValueError:
        return -np.inf
    if v is None:
        return np.nan
    return -np.inf if math.isnan(v) else v


def _float_column(col: Sequence[str]) -> npt.NDArray[np.float64]:
    memo = {text: _float_cell(text) for text in dict.fromkeys(col)}
    return np.fromiter(map(memo.__getitem__, col), dtype=np.float64, count=len(col))


def _codes(col: Sequence[str]) -> tuple[npt.NDArray[np.int32], tuple[str, ...]]:
    index: dict[str, int] = {}
    for text in dict.fromkeys(col):
        index[text] = len(index)
    codes = np.fromiter(map(index.__getitem__, col), dtype=np.int32, count=len(col))
    return codes, tuple(index)


def load_tick_columns(
    path: str | Path,
    column_map: Mapping[str, str] | None = None,
    tz: str | None = None,
    default_symbol: str | None = None,
    default_venue: str = "UNKNOWN",
    *,
    delimiter: str = ",",
) -> RawTickColumns:
    """Read a tick CSV into ``RawTickColumns``; bad cells become sentinels, never exceptions.

    ``tz``, ``default_symbol`` and ``default_venue`` must match the ``NormalizeConfig`` that
    validates the columns. Rows with the wrong number of cells are flagged ``malformed``.
    The raw line text of every row is kept (``RawTickColumns.payload``) for dead letters.
    """
    text = read_text(path)
    lines = split_lines(text)
    h = _header_index(lines)
    columns = csv_columns_from_header(split_csv_line(lines[h], delimiter), column_map)
    k = len(columns)
    body = lines[h + 1 :]
    line_no = np.arange(h + 2, h + 2 + len(body), dtype=np.int64)
    if _has_blank(body):  # drop blank lines, keep numbering
        keep = [i for i, t in enumerate(body) if t.strip()]
        body = [body[i] for i in keep]
        line_no = line_no[np.asarray(keep, dtype=np.int64)]
    n = len(body)

    cells_by_col, malformed = _split(body, k, delimiter)
    field_col = {f: cells_by_col[j] for j, f in enumerate(columns) if f}
    blank = [""] * n

    ts = TimestampParser(tz).parse_many(field_col.get("ts", blank))
    price = _float_column(field_col.get("price", blank))
    size = _float_column(field_col.get("size", blank))

    if "symbol" in field_col:
        sym_codes, sym_names = _codes([c.strip() for c in field_col["symbol"]])
        if malformed is not None:
            sym_codes[malformed] = -1
    elif default_symbol is not None:
        sym_codes, sym_names = np.zeros(n, np.int32), (default_symbol,)
    else:
        sym_codes, sym_names = np.full(n, -1, np.int32), ()

    if "venue" in field_col:
        venue_codes, venue_names = _codes([c.strip() for c in field_col["venue"]])
    else:
        venue_codes, venue_names = np.zeros(n, np.int32), (default_venue,)

    trade_id: list[str | None] | None = None
    if "trade_id" in field_col:
        trade_id = [c.strip() or None for c in field_col["trade_id"]]

    return RawTickColumns(
        ts=ts,
        price=price,
        size=size,
        symbol_codes=sym_codes,
        symbol_names=sym_names,
        line=line_no,
        payload=body,
        file=str(path),
        venue_codes=venue_codes,
        venue_names=venue_names,
        trade_id=trade_id,
        bid=_float_column(field_col["bid"]) if "bid" in field_col else None,
        ask=_float_column(field_col["ask"]) if "ask" in field_col else None,
        malformed=malformed,
        bad_encoding=np.fromiter(map(str.__contains__, body, repeat(BAD_BYTE)), np.bool_, n)
        if BAD_BYTE in text else None,
    )


def _has_blank(body: list[str]) -> bool:
    """Whether any line is empty or whitespace only (a C-speed scan for the common case)."""
    return "" in body or any(map(str.isspace, body))


def _split(
    body: list[str], k: int, delimiter: str
) -> tuple[list[Sequence[str]], npt.NDArray[np.bool_] | None]:
    """Cells per column; rows without exactly ``k`` cells are flagged and get blank cells."""
    n = len(body)
    if not any(map(str.__contains__, body, repeat('"'))):  # C-speed scan
        # No quoting anywhere: a row's cell count is its delimiter count + 1, and the good
        # rows split as one string.
        counts = np.fromiter(map(str.count, body, repeat(delimiter)), np.int64, count=n)
        ok = counts == k - 1
        if ok.all():
            flat = delimiter.join(body).split(delimiter)
            return [flat[j::k] for j in range(k)], None
        good = np.flatnonzero(ok)
        flat = delimiter.join([body[i] for i in good.tolist()]).split(delimiter)
        cols: list[Sequence[str]] = []
        for j in range(k):
            col = np.full(n, "", dtype=object)
            col[good] = flat[j::k]
            cols.append(col.tolist())
        return cols, ~ok
    rows: list[list[str]] = []
    bad = np.zeros(n, dtype=np.bool_)
    filler = [""] * k
    for i, t in enumerate(body):
        try:
            cells = split_csv_line(t, delimiter)
        except Exception:
            cells = []
        if len(cells) != k:
            bad[i] = True
            cells = filler
        rows.append(cells)
    if not rows:
        return [[] for _ in range(k)], bad
    return [list(c) for c in zip(*rows, strict=True)], bad
