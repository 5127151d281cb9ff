"""Replay sources: tick files (CSV/JSONL, optionally gzipped) and bar files, as source records.

A source only frames records (one per line, with its file and line number) and checks the
file's shape up front: a file with wrong or missing columns is a usage error naming them, not
500,000 dead letters. Parsing and validation of each record is normalize's job, so the
per-event path and Kafka input share one code path.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import msgspec

from jobs.errors import UsageError

TICK_COLUMNS = ("ts", "symbol", "price", "size", "venue", "trade_id", "bid", "ask")
BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")

# The bundled E-mini sample's header, mapped onto canonical names.
EMINI_COLUMN_MAP = {"DateTime": "ts", "Price": "price", "Volume": "size"}


def open_text(path: Path) -> IO[str]:
    """Open a text file, transparently gunzipping ``*.gz``."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


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


def _check_columns(path: Path, names: tuple[str, ...], allowed: tuple[str, ...],
                   required: tuple[str, ...]) -> None:
    unknown = [c for c in names if c not in allowed]
    missing = [c for c in required if c not in names]
    dup = sorted({c for c in names if names.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}")
    if dup:
        problems.append(f"duplicate column(s): {', '.join(dup)}")
    if problems:
        optional = [c for c in allowed if c not in required]
        expected = ",".join(required) + (f" [optional: {','.join(optional)}]" if optional else "")
        raise UsageError(f"{path}: {'; '.join(problems)} (expected {expected})")


def inspect_tick_file(
    path: Path,
    *,
    column_map: dict[str, str] | None = None,
    has_default_symbol: bool = False,
) -> TickFileSpec:
    """Check a tick file's existence and columns; raise :class:`UsageError` naming problems."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    fmt = file_format(path)
    required = ("ts", "price", "size") if has_default_symbol else ("ts", "symbol", "price", "size")
    with open_text(path) as f:
        first = f.readline()
    if not first.strip():
        raise UsageError(f"{path}: empty file")
    if fmt == "csv":
        header = tuple(h.strip() for h in first.rstrip("\r\n").split(","))
        mapped = tuple((column_map or {}).get(h, h) for h in header)
        _check_columns(path, mapped, TICK_COLUMNS, required)
        return TickFileSpec(path, "csv", mapped)
    try:
        obj = msgspec.json.decode(first)
    except msgspec.DecodeError as exc:
        raise UsageError(f"{path}: line 1 is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: line 1 is not a JSON object")
    _check_columns(path, tuple(obj), TICK_COLUMNS, required)
    return TickFileSpec(path, "jsonl", None)


def inspect_bar_file(path: Path, *, has_default_symbol: bool = False) -> tuple[str, ...]:
    """Check a bar CSV's columns; returns them in file order."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    with open_text(path) as f:
        first = f.readline()
    header = tuple(h.strip() for h in first.rstrip("\r\n").split(","))
    required = tuple(c for c in BAR_COLUMNS if not (c == "symbol" and has_default_symbol))
    _check_columns(path, header, BAR_COLUMNS, required)
    return header
