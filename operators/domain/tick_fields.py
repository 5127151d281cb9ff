"""One tick's field values: parsing and the checks every input path applies the same way.

Normalize (per record) and the columnar replay accelerator (per column) both call these, so a
cell means the same thing, and a rejection says the same words, on either path.

Value conventions: strings are trimmed; an empty string is "absent"; numbers accept what
Python's ``float`` accepts except underscores and non-ASCII digits; integer trade ids become
decimal strings; an absent or blank venue takes the configured default.
"""

from __future__ import annotations

import csv
import math
from typing import Any

from operators.domain.bars import format_duration
from operators.domain.timeparse import format_ns
from topics.dlq import DlqReason
from topics.messages import RawTick

TICK_FIELDS: tuple[str, ...] = tuple(RawTick.__struct_fields__)
"""The canonical tick fields, in order: ``ts, symbol, price, size, venue, trade_id, bid, ask``.
A tick file's columns map onto these names."""

REQUIRED_TICK_FIELDS: tuple[str, ...] = ("ts", "symbol", "price", "size")

BAD_BYTE = "\ufffd"
"""What an undecodable byte becomes when a file is read (``jobs.text_files``)."""

class RejectedError(Exception):
    """A record failed a check: the dead letter's reason and detail."""

    def __init__(self, reason: DlqReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_number(value: object) -> float | None:
    """A numeric field: None when absent or blank, else a float; ``ValueError`` if not a number.

    Stricter than ``float()``: rejects underscores, non-ASCII digits and booleans, so a cell
    means the same in every parser. NaN and ±inf parse; the caller decides if they are valid.
    """
    if value is None:
        return None
    t = type(value)
    if t is float:
        return value  # type: ignore[return-value]
    if t is int:
        try:
            return float(value)  # type: ignore[arg-type]
        except OverflowError:
            raise ValueError("integer too large for a float") from None
    if t is str:
        s = value.strip()  # type: ignore[attr-defined]
        if not s:
            return None
        if "_" in s or not s.isascii():
            raise ValueError("not a plain decimal number")
        return float(s)
    raise ValueError(f"unsupported type {t.__name__}")


def split_csv_line(line: str, delimiter: str = ",") -> list[str]:
    """Split one CSV record; quoted cells (RFC 4180) take the slow path through ``csv``."""
    if '"' not in line:
        return line.split(delimiter)
    return next(csv.reader([line], delimiter=delimiter, strict=True))


def price_problem(v: float) -> str | None:
    """Why a parsed price is invalid (None: valid)."""
    if not math.isfinite(v):
        return "is not finite"
    if v <= 0:
        return "must be > 0"
    return None


def nonnegative_problem(v: float) -> str | None:
    """Sizes and quotes: finite and >= 0 (a zero size is a valid trade)."""
    if not math.isfinite(v):
        return "is not finite"
    if v < 0:
        return "must be >= 0"
    return None


def symbol_problem(symbol: str, known: frozenset[str] | None) -> tuple[DlqReason, str] | None:
    """Why a present (trimmed) symbol is rejected: blank, or not among the known ones."""
    if not symbol:
        return DlqReason.EMPTY_SYMBOL, f"symbol {symbol!r} is blank"
    if known is not None and symbol not in known:
        return DlqReason.UNKNOWN_SYMBOL, f"symbol {symbol!r} is not a known instrument"
    return None


def clean_venue(raw: object, default: str) -> str:
    """The venue of a record: trimmed text, or ``default`` when absent or blank."""
    if raw is None:
        return default
    if type(raw) is not str:
        raise RejectedError(DlqReason.BAD_SCHEMA, f"venue {raw!r} is not a string")
    v = raw.strip()  # type: ignore[attr-defined]
    return v if v else default


def clean_trade_id(raw: object) -> str | None:
    """A trade id as trimmed text (integers as decimal strings); None when absent or blank."""
    if raw is None:
        return None
    t = type(raw)
    if t is str:
        s = raw.strip()  # type: ignore[attr-defined]
        return s if s else None
    if t is int:
        return str(raw)
    raise RejectedError(DlqReason.BAD_SCHEMA,
                        f"trade_id {raw!r} is neither a string nor an integer")


def is_implausible(ts: int, watermark: int, max_jump_ns: int, no_watermark: int) -> bool:
    """A tick more than ``max_jump_ns`` ahead of the stream's watermark (none yet: never)."""
    return watermark != no_watermark and ts - watermark > max_jump_ns


def implausible_detail(ts: int, watermark: int, max_jump_ns: int) -> str:
    """The dead-letter detail of a tick too far ahead of the stream."""
    return (f"ts {format_ns(ts)} is more than {format_duration(max_jump_ns)} ahead of the "
            f"watermark {format_ns(watermark)} (--max-forward-jump)")


__all__ = [
    "BAD_BYTE",
    "REQUIRED_TICK_FIELDS",
    "TICK_FIELDS",
    "RejectedError",
    "clean_trade_id",
    "clean_venue",
    "implausible_detail",
    "is_implausible",
    "nonnegative_problem",
    "parse_number",
    "price_problem",
    "split_csv_line",
    "symbol_problem",
]


SYMBOL_FIELD = TICK_FIELDS.index("symbol")


def fields_of_cells(cells: list[str], mapped: tuple[tuple[int, int], ...]) -> list[Any]:
    """One CSV row's cells as the eight canonical fields (``TICK_FIELDS`` order; ``mapped``:
    ``(field index, cell index)`` pairs). A blank cell is an absent field, except an explicit
    symbol column, whose blank is ``EMPTY_SYMBOL`` rather than a default."""
    out: list[Any] = [None] * len(TICK_FIELDS)
    for fi, ci in mapped:
        c = cells[ci].strip()
        if c or fi == SYMBOL_FIELD:
            out[fi] = c
    return out
