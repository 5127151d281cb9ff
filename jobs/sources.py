"""Replay sources: tick files (CSV/JSONL, optionally gzipped) and bar files, as source records.

A source only frames records (one per line, with its file and line number) and checks the
file's shape up front: a file with wrong or missing columns is a usage error naming them, not
500,000 dead letters. Parsing and validation of each record is normalize's job, so the
per-event path and Kafka input share one code path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from jobs import data
from jobs.errors import UsageError
from jobs.loaders.instruments import known_symbols, load_instruments
from jobs.options import ReplayOptions
from jobs.text_files import BLOCK_BYTES, check_columns, check_gzip, head_lines, read_lines
from jobs.tick_files import csv_columns_from_header, iter_raw_records
from operators.domain.tick_fields import (
    BAD_BYTE,
    REQUIRED_TICK_FIELDS,
    TICK_FIELDS,
    split_csv_line,
)
from operators.normalize import (
    DEDUPE_WINDOW_NS,
    MAX_FORWARD_JUMP_NS,
    NormalizeConfig,
    RawRecord,
)
from topics.messages import Bar, Control, Tick

# The bundled E-mini sample's header, mapped onto canonical names.
EMINI_COLUMN_MAP = {"DateTime": "ts", "Price": "price", "Volume": "size"}


def file_format(path: Path) -> Literal["csv", "jsonl"]:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".txt")):
        return "csv"
    raise UsageError(f"{path}: unknown tick file type (expected .csv, .jsonl, optionally .gz)")


@dataclass(frozen=True, slots=True)
class TickFileSpec:
    """A checked tick file: its format and, for CSV, canonical column names in file order."""

    path: Path
    fmt: Literal["csv", "jsonl"]
    columns: tuple[str, ...] | None


def inspect_tick_file(
    path: Path,
    *,
    column_map: dict[str, str] | None = None,
    has_default_symbol: bool = False,
    delimiter: str = ",",
) -> TickFileSpec:
    """Check a tick file's existence and columns; raise :class:`UsageError` naming problems.

    ``column_map`` (vendor header → canonical field, from ``--columns``) names the columns
    to use; the file's other columns are then ignored. Without it every column must be a
    canonical name.
    """
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    fmt = file_format(path)
    required = tuple(c for c in REQUIRED_TICK_FIELDS if not (c == "symbol" and has_default_symbol))
    head = head_lines(path, 2)
    if not head:
        raise UsageError(f"{path}: empty file")
    first = head[0][1]
    if fmt == "csv":
        if BAD_BYTE in first:
            raise UsageError(f"{path}:{head[0][0]}: the header holds bytes that are not UTF-8")
        if len(head) < 2:
            raise UsageError(f"{path}: a header but no data rows")
        header = tuple(h.strip() for h in split_csv_line(first, delimiter))
        columns = map_header(path, header, column_map, required, delimiter)
        check_gzip(path)  # streamed later: find damage now, before anything is replayed
        return TickFileSpec(path, "csv", columns)
    if column_map:
        raise UsageError("--columns maps CSV headers; JSON lines must use the canonical names "
                         f"{', '.join(TICK_FIELDS)}")
    try:
        obj = msgspec.json.decode(first)
    except msgspec.DecodeError as exc:
        raise UsageError(f"{path}: line 1 is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: line 1 is not a JSON object")
    check_columns(path, tuple(obj), TICK_FIELDS, required)
    check_gzip(path)
    return TickFileSpec(path, "jsonl", None)


def map_header(path: Path, header: tuple[str, ...], column_map: dict[str, str] | None,
               required: tuple[str, ...], delimiter: str) -> tuple[str, ...]:
    """The canonical field of each header column (``""``: ignored), or an error that says
    what to do: which flag to pass, which name to fix."""
    cmap = column_map or {}
    where = f"{path}: header {','.join(header)!r}"
    if len(header) == 1:
        for sep in (";", "\t", "|"):
            if sep != delimiter and sep in header[0]:
                raise UsageError(f"{where} is one column: the file looks {sep!r}-separated; "
                                 f"pass --delimiter {sep!r}")
    by_lower = {h.lower(): h for h in header}
    for h, field in cmap.items():
        if h not in header:
            hint = (f"; the header has {by_lower[h.lower()]!r} (names are case-sensitive)"
                    if h.lower() in by_lower else "")
            raise UsageError(f"--columns {field}={h}: {path} has no column {h!r}{hint}")
    try:
        mapped = csv_columns_from_header(header, cmap, require_ts=False)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    unknown = [h for h, m in zip(header, mapped, strict=True) if not m] if not cmap else []
    cased = [h for h in unknown if h.lower() in TICK_FIELDS]
    unknown = [h for h in unknown if h not in cased]
    missing = [f for f in required if f not in mapped and f not in {h.lower() for h in cased}]
    problems: list[str] = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}")
    if cased:
        fix = ",".join(f"{h.lower()}={h}" for h in cased)
        problems.append(f"column(s) {', '.join(cased)}: names are case-sensitive; rename them "
                        f"or pass --columns {fix}")
    if "symbol" in missing:
        problems.append("without a symbol column pass --symbol SYMBOL (one instrument per "
                        "file) or map one with --columns symbol=<column>")
    if problems:
        canon = ",".join(f"{f}=<column>" for f in required)
        optional = ",".join(f for f in TICK_FIELDS if f not in required)
        raise UsageError(f"{where}: {'; '.join(problems)} (expected {','.join(required)} "
                         f"[optional: {optional}]; map a vendor's names with --columns {canon})")
    return mapped


@dataclass(frozen=True, slots=True)
class TickInput:
    """A resolved tick source: the file, how to read it and the defaults it needs."""

    path: Path
    label: str
    spec: TickFileSpec
    column_map: dict[str, str] | None
    tz: str | None
    default_symbol: str | None
    default_venue: str
    bundled: bool
    delimiter: str = ","


def resolve_ticks(opts: ReplayOptions) -> TickInput:
    """The tick file to replay: ``--ticks`` or the bundled E-mini sample."""
    if opts.ticks is None:
        if opts.columns or opts.delimiter != ",":
            raise UsageError("--columns and --delimiter describe a --ticks file")
        path = data.fetch_emini(quiet=opts.quiet)
        spec = inspect_tick_file(path, column_map=EMINI_COLUMN_MAP, has_default_symbol=True)
        return TickInput(path=path, label=path.name, spec=spec, column_map=EMINI_COLUMN_MAP,
                         tz=opts.tz or data.EMINI_TZ,
                         default_symbol=opts.symbol or data.EMINI_SYMBOL,
                         default_venue=opts.venue or data.EMINI_VENUE, bundled=True)
    cmap = opts.column_map or None
    spec = inspect_tick_file(opts.ticks, column_map=cmap,
                             has_default_symbol=opts.symbol is not None, delimiter=opts.delimiter)
    return TickInput(path=opts.ticks, label=opts.ticks.name, spec=spec, column_map=cmap,
                     tz=opts.tz, default_symbol=opts.symbol,
                     default_venue=opts.venue or "UNKNOWN", bundled=False,
                     delimiter=opts.delimiter)


def normalize_config(src: TickInput, instruments: Path | None, *,
                     max_forward_jump_ns: int = MAX_FORWARD_JUMP_NS,
                     dedupe_window_ns: int = DEDUPE_WINDOW_NS) -> NormalizeConfig:
    known: tuple[str, ...] | None = None
    if instruments is not None:
        if not instruments.is_file():
            raise UsageError(f"--instruments {instruments}: no such file")
        try:
            known = tuple(known_symbols(load_instruments(instruments)))
        except ValueError as exc:
            raise UsageError(f"--instruments {instruments}: {exc}") from None
    return NormalizeConfig(tz=src.tz, csv_columns=src.spec.columns, csv_delimiter=src.delimiter,
                           default_symbol=src.default_symbol, default_venue=src.default_venue,
                           instruments=known, max_forward_jump_ns=max_forward_jump_ns,
                           dedupe_window_ns=dedupe_window_ns)


def iter_records(src: TickInput, *, block_bytes: int | None = BLOCK_BYTES,
                 max_lines: int | None = None) -> Iterator[RawRecord]:
    """One raw record per data line, with its file name and 1-based line number, streamed
    in blocks of about ``block_bytes`` (at most ``max_lines`` lines)."""
    return iter_raw_records(src.path, label=src.label, header=src.spec.fmt == "csv",
                            block_bytes=block_bytes, max_lines=max_lines)


def load_controls(path: Path | None) -> list[Control]:
    if path is None:
        return []
    if not path.is_file():
        raise UsageError(f"--control {path}: no such file")
    out = []
    for n, line in enumerate(read_lines(path), 1):
        if line.strip():
            try:
                out.append(msgspec.json.decode(line, type=Control))
            except msgspec.DecodeError as exc:
                raise UsageError(f"--control {path}:{n}: {exc}") from None
    return out


def bar_tick(bar: Bar) -> Tick:
    """The trade a bar replay fills against: one print at the bar's close, at its end.

    A decision made on bar t (at its end) is filled by the next bar's print, at that bar's
    close: later than the decision by a whole bar, never on the bar that produced it.
    """
    return Tick(ts_event=bar.ts_end, symbol=bar.symbol, venue="BAR", price=bar.close,
                size=bar.volume)
