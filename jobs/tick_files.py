"""Tick files (CSV, optionally gzip-compressed) as normalize input: per record or as columns.

Two readers of the same file that agree line for line, both streaming (memory does not grow
with the file):

- ``iter_raw_records`` yields one ``RawRecord`` per data line for the per-event path;
- ``iter_tick_columns`` yields ``RawTickColumns`` chunk by chunk for the columnar
  accelerator (``jobs.accel.normalize_columns``); ``load_tick_columns`` is the whole file as
  one chunk.

File conventions are ``jobs.text_files``'s (gzip, UTF-8, line endings); the first non-blank
line is the header; blank (empty or whitespace-only) lines are skipped (they are not records)
but keep their line numbers, so ``SourceRef.line`` is the 1-based physical line a text editor
shows. The header is mapped to canonical field names
with ``column_map`` (e.g. ``{"DateTime": "ts", "Price": "price", "Volume": "size"}``); a header
that already is a canonical name maps to itself; any other column is ignored.

Speed comes from parsing each *distinct* cell text once with the scalar parsers normalize
itself uses (``TimestampParser.parse``, ``parse_number``) and broadcasting the results: a tick
file repeats prices, sizes and timestamps heavily, and sharing the scalar parsers makes the
two paths agree by construction. A clean chunk (ASCII, no quotes, no blank lines, every row
the header's width: a normal vendor file) is split into cells by pyarrow's CSV reader, every
column typed as text so that our own parsing rules apply, and never becomes a Python string
per row; any other chunk takes the line-by-line path, which reproduces every rule exactly.
"""

from __future__ import annotations

import importlib
import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from jobs.accel.normalize_columns import RawTickColumns
from jobs.text_files import (
    BLOCK_BYTES,
    LineBlock,
    head_lines,
    iter_data_lines,
    iter_line_blocks,
    split_lines,
)
from operators.domain.tick_fields import BAD_BYTE, TICK_FIELDS, parse_number, split_csv_line
from operators.domain.timeparse import NAT, TimestampParser
from operators.normalize import NormalizeConfig, RawRecord
from topics.messages import SourceRef


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
    found = head_lines(path, 1)
    if not found:
        raise ValueError("the file has no header line")
    return csv_columns_from_header(split_csv_line(found[0][1], delimiter), column_map)


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


def iter_raw_records(path: str | Path, *, label: str | None = None, header: bool = True,
                     block_bytes: int | None = BLOCK_BYTES, max_lines: int | None = None
                     ) -> Iterator[RawRecord]:
    """One ``RawRecord`` per non-blank line after the header (``header=False``: from the
    start, e.g. JSON lines), with file (``label``, default the path) and line number.

    The file is read in blocks (``jobs.text_files.iter_line_blocks``; ``block_bytes`` and
    ``max_lines`` size them), so memory does not grow with it.
    """
    file = str(path) if label is None else label
    for n, line in iter_data_lines(path, header=header, block_bytes=block_bytes,
                                   max_lines=max_lines):
        yield RawRecord(payload=line, source=SourceRef(file=file, line=n))


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
    """Read a whole tick CSV into ``RawTickColumns`` (one chunk of ``iter_tick_columns``).

    For tests and benchmarks that want every row at once; a replay streams the chunks.
    """
    reader = TickCsvReader(path, column_map, tz, default_symbol, default_venue,
                           delimiter=delimiter)
    chunks = list(reader.chunks(block_bytes=None))
    if not chunks:
        return reader.parse(LineBlock(reader.data_line, b""))
    assert len(chunks) == 1, "one block holds the whole file"
    return chunks[0]


def iter_tick_columns(
    path: str | Path,
    column_map: Mapping[str, str] | None = None,
    tz: str | None = None,
    default_symbol: str | None = None,
    default_venue: str = "UNKNOWN",
    *,
    delimiter: str = ",",
    label: str | None = None,
    block_bytes: int | None = BLOCK_BYTES,
    max_lines: int | None = None,
) -> Iterator[RawTickColumns]:
    """A tick CSV as ``RawTickColumns`` chunks of about ``block_bytes`` of text (at most
    ``max_lines`` lines), in file order; chunks without data rows are skipped.

    Each chunk is independent: rows, line numbers and payloads are the file's, and
    ``SourceRef.file`` is ``label`` (default: the path). Validation state that spans chunks
    (dedupe, the watermark) is the caller's (``NormalizeColumns.validate`` carries it).
    """
    reader = TickCsvReader(path, column_map, tz, default_symbol, default_venue,
                           delimiter=delimiter, label=label)
    return reader.chunks(block_bytes=block_bytes, max_lines=max_lines)


_ASCII_SPACE = b" \t\x0b\x0c\x1c\x1d\x1e\x1f"
"""ASCII whitespace as ``str.isspace`` sees it, line terminators aside (``\\r`` is gone)."""
_ASCII_BLANK_LINE = re.compile(rb"^[ \t\x0b\x0c\x1c-\x1f]*\n", re.MULTILINE)

_FIXED_TS = (19, *range(21, 30))
"""The lengths ``TimestampParser.parse_fixed_bytes`` decodes as a byte matrix."""


class TickCsvReader:
    """One tick CSV's header and chunks; keeps the timestamp parser's caches across chunks.

    ``tz``, ``default_symbol`` and ``default_venue`` must match the ``NormalizeConfig`` that
    validates the columns. Rows with the wrong number of cells are flagged ``malformed``;
    each row's raw line is kept (``RawTickColumns.payload``) for dead letters.
    """

    def __init__(
        self,
        path: str | Path,
        column_map: Mapping[str, str] | None = None,
        tz: str | None = None,
        default_symbol: str | None = None,
        default_venue: str = "UNKNOWN",
        *,
        delimiter: str = ",",
        label: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.file = str(path) if label is None else label
        self.delimiter = delimiter
        self.default_symbol = default_symbol
        self.default_venue = default_venue
        self.timestamps = TimestampParser(tz)
        found = head_lines(self.path, 1)
        if not found:
            raise ValueError("the file has no header line")
        self.header_line, header = found[0]
        self.data_line = self.header_line + 1
        """The line number the data starts after (the line after the header)."""
        self.columns = csv_columns_from_header(split_csv_line(header, delimiter), column_map)
        self._k = len(self.columns)
        self._fields = {f: j for j, f in enumerate(self.columns) if f}
        # pyarrow splits the cells of clean chunks: one text column per mapped field
        self._names = [f"c{j}" for j in range(self._k)]
        self._arrow: Any = None

    def chunks(self, *, block_bytes: int | None = BLOCK_BYTES, max_lines: int | None = None
               ) -> Iterator[RawTickColumns]:
        """The data rows after the header, chunk by chunk (chunks without rows skipped)."""
        for block in self._data_blocks(block_bytes, max_lines):
            cols = self.parse(block)
            if len(cols):
                yield cols

    def _data_blocks(self, block_bytes: int | None, max_lines: int | None
                     ) -> Iterator[LineBlock]:
        """The file's blocks with the header line and everything before it cut off."""
        blocks = iter_line_blocks(self.path, block_bytes=block_bytes, max_lines=max_lines)
        for block in blocks:
            last = block.first_line + block.data.count(b"\n")
            if last < self.data_line and block.data.endswith(b"\n"):
                continue  # the header is on a later block
            data, line = block.data, block.first_line
            pos = 0
            while line < self.data_line:  # skip up to the end of the header line
                nl = data.find(b"\n", pos)
                pos = len(data) if nl < 0 else nl + 1
                line += 1
            rest = LineBlock(self.data_line, data[pos:])
            yield from itertools.chain((rest,) if rest.data else (), blocks)
            return

    def parse(self, block: LineBlock) -> RawTickColumns:
        """One block of data lines as columns: the columnar reader for a clean block, else
        the line-by-line path."""
        cols = self._clean(block)
        return cols if cols is not None else self._lines(block)

    # -- the columnar reader, for clean blocks ---------------------------------------------
    def _clean(self, block: LineBlock) -> RawTickColumns | None:
        """The block through pyarrow's CSV reader, or None when it is not clean.

        pyarrow cannot reproduce these cases exactly, so such a block falls back to the
        line-by-line path: non-ASCII text (undecodable bytes, Unicode whitespace in
        ``strip``), quotes (pyarrow's quoting rules are not ``csv``'s strict ones), blank
        lines (pyarrow makes a row of empty cells of an empty line), a row of the wrong
        width (pyarrow stops at it) and a single-column file (a blank line would be a row).
        """
        data = block.data
        if (self._k < 2 or not self.delimiter.isascii() or not data or not data.isascii()
                or b'"' in data
                or data.startswith(b"\n") or b"\n\n" in data):
            return None
        if self.delimiter.isspace() and _has_blank_ascii(data):
            return None  # a whitespace-only line would split into blank cells
        pa, pcsv, parse_options, convert_options = self._pyarrow()
        try:
            table = pcsv.read_csv(
                pa.py_buffer(data),
                read_options=pcsv.ReadOptions(column_names=self._names, use_threads=False,
                                              block_size=min(len(data) + 1, 1 << 30)),
                parse_options=parse_options, convert_options=convert_options)
        except pa.ArrowInvalid:
            return None
        n = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        if table.num_rows != n:
            return None
        col = {f: table.column(f"c{j}").combine_chunks() for f, j in self._fields.items()}

        ts = self._ts_arrow(col["ts"]) if "ts" in col else np.full(n, NAT, np.int64)
        price = _float_arrow(col["price"]) if "price" in col else np.full(n, np.nan)
        size = _float_arrow(col["size"]) if "size" in col else np.full(n, np.nan)
        if "symbol" in col:
            sym_codes, sym_names = _codes_arrow(col["symbol"])
        elif self.default_symbol is not None:
            sym_codes, sym_names = np.zeros(n, np.int32), (self.default_symbol,)
        else:
            sym_codes, sym_names = np.full(n, -1, np.int32), ()
        if "venue" in col:
            venue_codes, venue_names = _codes_arrow(col["venue"])
        else:
            venue_codes, venue_names = np.zeros(n, np.int32), (self.default_venue,)
        trade_id: list[str | None] | None = None
        if "trade_id" in col:
            enc = col["trade_id"].dictionary_encode()
            table_ids = np.array([t.strip() or None for t in enc.dictionary.to_pylist()],
                                 dtype=object)
            trade_id = table_ids[_indices(enc)].tolist()
        return RawTickColumns(
            ts=ts, price=price, size=size, symbol_codes=sym_codes, symbol_names=sym_names,
            line=np.arange(block.first_line, block.first_line + n, dtype=np.int64),
            payload=_lazy_lines(data), file=self.file,
            venue_codes=venue_codes, venue_names=venue_names, trade_id=trade_id,
            bid=_float_arrow(col["bid"]) if "bid" in col else None,
            ask=_float_arrow(col["ask"]) if "ask" in col else None,
        )

    def _pyarrow(self) -> tuple[Any, Any, Any, Any]:
        """pyarrow, its CSV module and this file's parse and convert options, made on first
        use (a per-event replay never imports pyarrow)."""
        if self._arrow is None:
            pa = importlib.import_module("pyarrow")
            pcsv = importlib.import_module("pyarrow.csv")
            parse = pcsv.ParseOptions(delimiter=self.delimiter, quote_char=False,
                                      double_quote=False, escape_char=False,
                                      newlines_in_values=False, ignore_empty_lines=False)
            convert = pcsv.ConvertOptions(
                column_types={name: pa.string() for name in self._names},
                include_columns=[f"c{j}" for j in self._fields.values()],
                strings_can_be_null=False, quoted_strings_can_be_null=False)
            self._arrow = (pa, pcsv, parse, convert)
        return self._arrow  # type: ignore[no-any-return]

    def _ts_arrow(self, arr: Any) -> npt.NDArray[np.int64]:
        """Timestamps of a text column, each distinct cell parsed once: fixed-width cells
        straight from pyarrow's bytes, other spellings through ``parse``."""
        enc = arr.dictionary_encode()
        return self._ts_distinct(enc.dictionary)[_indices(enc)]

    def _ts_distinct(self, arr: Any) -> npt.NDArray[np.int64]:
        n = len(arr)
        out = np.full(n, NAT, dtype=np.int64)
        todo = np.ones(n, dtype=np.bool_)
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + n + 1]
        buf = arr.buffers()[2]
        raw = (np.frombuffer(buf, dtype=np.uint8) if buf is not None and buf.size
               else np.empty(0, np.uint8))
        lens = np.diff(offsets)
        for length in np.unique(lens).tolist():
            if length not in _FIXED_TS:
                continue
            idx = np.flatnonzero(lens == length)
            if len(idx) == n:  # one width: the cells are a contiguous byte matrix
                matrix = raw[int(offsets[0]):int(offsets[-1])].reshape(n, length)
            else:
                matrix = raw[offsets[:-1][idx][:, None] + np.arange(length)]
            values, ok = self.timestamps.parse_fixed_bytes(matrix)
            out[idx[ok]] = values[ok]
            todo[idx[ok]] = False
        rest = np.flatnonzero(todo)
        if rest.size:
            out[rest] = self.timestamps.parse_many(arr.take(rest).to_pylist())
        return out

    # -- the line-by-line path, for every other block ---------------------------------------
    def _lines(self, block: LineBlock) -> RawTickColumns:
        text = block.data.decode("utf-8", errors="replace")
        body = split_lines(text)
        k, delimiter = self._k, self.delimiter
        line_no = np.arange(block.first_line, block.first_line + len(body), dtype=np.int64)
        if _has_blank(body):  # drop blank lines, keep numbering
            keep = [i for i, t in enumerate(body) if t.strip()]
            body = [body[i] for i in keep]
            line_no = line_no[np.asarray(keep, dtype=np.int64)]
        n = len(body)

        cells_by_col, malformed = _split(body, k, delimiter)
        field_col = {f: cells_by_col[j] for f, j in self._fields.items()}
        blank = [""] * n

        ts = self.timestamps.parse_many(field_col.get("ts", blank))
        price = _float_column(field_col.get("price", blank))
        size = _float_column(field_col.get("size", blank))

        if "symbol" in field_col:
            sym_codes, sym_names = _codes([c.strip() for c in field_col["symbol"]])
            if malformed is not None:
                sym_codes[malformed] = -1
        elif self.default_symbol is not None:
            sym_codes, sym_names = np.zeros(n, np.int32), (self.default_symbol,)
        else:
            sym_codes, sym_names = np.full(n, -1, np.int32), ()

        if "venue" in field_col:
            venue_codes, venue_names = _codes([c.strip() for c in field_col["venue"]])
        else:
            venue_codes, venue_names = np.zeros(n, np.int32), (self.default_venue,)

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
            file=self.file,
            venue_codes=venue_codes,
            venue_names=venue_names,
            trade_id=trade_id,
            bid=_float_column(field_col["bid"]) if "bid" in field_col else None,
            ask=_float_column(field_col["ask"]) if "ask" in field_col else None,
            malformed=malformed,
            bad_encoding=np.fromiter(map(str.__contains__, body, repeat(BAD_BYTE)), np.bool_, n)
            if BAD_BYTE in text else None,
        )


def _has_blank_ascii(data: bytes) -> bool:
    """Whether an ASCII block holds a whitespace-only line (empty ones are checked apart)."""
    if _ASCII_BLANK_LINE.search(data) is not None:
        return True
    last = data[data.rfind(b"\n") + 1:]  # a final line without its terminator
    return bool(last) and not last.strip(_ASCII_SPACE)


def _indices(enc: Any) -> npt.NDArray[np.int32]:
    """The int32 indices of a dictionary-encoded pyarrow array (no nulls: text columns),
    read from its buffer (``to_numpy`` would import pandas on first use)."""
    ind = enc.indices
    if str(ind.type) != "int32":
        raise TypeError(f"dictionary indices of type {ind.type}, expected int32")
    return np.frombuffer(ind.buffers()[1], dtype=np.int32)[ind.offset:ind.offset + len(ind)]


def _float_arrow(arr: Any) -> npt.NDArray[np.float64]:
    """A numeric text column: each distinct cell parsed once (``_float_cell``)."""
    enc = arr.dictionary_encode()
    values = np.array([_float_cell(t) for t in enc.dictionary.to_pylist()], dtype=np.float64)
    return values[_indices(enc)] if len(values) else np.full(len(arr), np.nan)


def _codes_arrow(arr: Any) -> tuple[npt.NDArray[np.int32], tuple[str, ...]]:
    """Codes of the trimmed texts, numbered by first appearance (as ``_codes``)."""
    enc = arr.dictionary_encode()
    index: dict[str, int] = {}
    remap = [index.setdefault(t.strip(), len(index)) for t in enc.dictionary.to_pylist()]
    table = np.asarray(remap, dtype=np.int32) if remap else np.zeros(1, np.int32)
    return table[_indices(enc)], tuple(index)


def _lazy_lines(data: bytes) -> Callable[[int], str]:
    """Line ``i`` of a clean block's text, found only when asked (for dead letters)."""
    ends: list[npt.NDArray[np.intp]] = []

    def line(i: int) -> str:
        if not ends:
            ends.append(np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10))
        nl = ends[0]
        start = int(nl[i - 1]) + 1 if i else 0
        stop = int(nl[i]) if i < len(nl) else len(data)
        return data[start:stop].decode("ascii")

    return line


def _has_blank(body: list[str]) -> bool:
    """Whether any line is empty or whitespace only (a C-speed scan for the common case)."""
    return "" in body or any(map(str.isspace, body))


def _split(
    body: list[str], k: int, delimiter: str
) -> tuple[list[Sequence[str]], npt.NDArray[np.bool_] | None]:
    """Cells per column; rows without exactly ``k`` cells are flagged and get blank cells."""
    n = len(body)
    if n == 0:
        return [[] for _ in range(k)], None
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
