"""The instrument list: which symbols exist and their contract terms.

Normalize needs only the known symbols (UNKNOWN_SYMBOL); sizing and routing later read the
contract terms, so the loader already returns full, frozen ``Instrument`` records.

File formats (chosen by suffix; ``.gz`` is not supported: these files are small and edited
by hand):

CSV (``.csv``, UTF-8, comma separated) with a header row; ``symbol`` is required, every other
column optional, empty cells take the default::

    symbol,venue,multiplier,tick_size,lot_size,group,session_start,sector
    ES,CME,50,0.25,1,equity_index,17:00,index

Known columns: ``symbol``, ``venue``, ``multiplier`` (default 1.0), ``tick_size`` (0.01),
``lot_size`` (1.0), ``group`` (""), ``session_start`` (""). Unknown columns (``sector`` above)
are kept verbatim in ``Instrument.extra`` so a later stage can use them without a format change.

TOML (``.toml``): an array of tables named ``instrument`` with the same keys; other keys go to
``extra`` as strings::

    [[instrument]]
    symbol = "ES"
    venue = "CME"
    multiplier = 50
    tick_size = 0.25

A symbol may appear once: the pipeline keys positions, limits and fills by symbol, so a second
row for it (another venue or multiplier) would silently replace the first. It is an error that
names both lines; list one venue per symbol (a second venue needs its own symbol, e.g. ``ES.X``).
"""

from __future__ import annotations

import csv
import io
import math
import sys
import tomllib
from collections.abc import Iterable, Mapping
from datetime import time
from pathlib import Path

import msgspec


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """One tradable instrument and its contract terms."""

    symbol: str
    venue: str | None = None
    multiplier: float = 1.0
    tick_size: float = 0.01
    lot_size: float = 1.0
    group: str = ""
    session_start: str = ""
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.symbol or self.symbol != self.symbol.strip():
            raise ValueError(f"instrument symbol must be non-empty and trimmed: {self.symbol!r}")
        if self.venue is not None and (not self.venue or self.venue != self.venue.strip()):
            raise ValueError(f"{self.symbol}: venue must be non-empty and trimmed or absent")
        for name in ("multiplier", "tick_size", "lot_size"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{self.symbol}: {name} must be a finite number > 0, got {v!r}")
        if self.session_start and not _is_hh_mm(self.session_start):
            raise ValueError(f"{self.symbol}: session_start must be HH:MM (24-hour, the session "
                             f"zone), got {self.session_start!r}")


def _is_hh_mm(text: str) -> bool:
    try:
        time.fromisoformat(text)
    except ValueError:
        return False
    return True


_FLOATS = ("multiplier", "tick_size", "lot_size")
_STRINGS = ("venue", "group", "session_start")
KNOWN_COLUMNS = ("symbol", "venue", *_FLOATS, "group", "session_start")


def _build(row: Mapping[str, object], where: str) -> Instrument:
    kwargs: dict[str, object] = {}
    extra: list[tuple[str, str]] = []
    for name, raw in row.items():
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            continue
        value = raw.strip() if isinstance(raw, str) else raw
        if name in _FLOATS:
            if isinstance(value, bool):
                raise ValueError(f"{where}: {name} must be a number, got {raw!r}")
            try:
                kwargs[name] = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(f"{where}: {name} must be a number, got {raw!r}") from None
        elif name == "symbol" or name in _STRINGS:
            if not isinstance(value, str):
                raise ValueError(f"{where}: {name} must be a string, got {raw!r}")
            kwargs[name] = value
        else:
            extra.append((name, str(value)))
    if "symbol" not in kwargs:
        raise ValueError(f"{where}: missing symbol")
    kwargs["extra"] = tuple(extra)
    try:
        return Instrument(**kwargs)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _unique(items: Iterable[tuple[Instrument, str]], source: str) -> tuple[Instrument, ...]:
    """The instruments in file order; a symbol listed twice is an error naming both rows."""
    seen: dict[str, tuple[Instrument, str]] = {}
    out = []
    for ins, where in items:
        first = seen.get(ins.symbol)
        if first is not None:
            a, b = first[0], ins
            diff = [f"{n} {getattr(a, n)!r} vs {getattr(b, n)!r}"
                    for n in ("venue", *_FLOATS, "group", "session_start")
                    if getattr(a, n) != getattr(b, n)]
            raise ValueError(f"{source}: duplicate instrument {ins.symbol!r} at {first[1]} and "
                             f"{where}" + (f" ({', '.join(diff)})" if diff else "")
                             + "; list each symbol once")
        seen[ins.symbol] = (ins, where)
        out.append(ins)
    return tuple(out)


def parse_instruments_csv(text: str, source: str = "<csv>") -> tuple[Instrument, ...]:
    """Parse the CSV format (header required, ``symbol`` column required)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{source}: empty instrument file (a header row is required)")
    names = [h.strip() for h in header]
    if "symbol" not in names:
        raise ValueError(f"{source}: header {header!r} has no 'symbol' column")
    if len(set(names)) != len(names) or "" in names:
        raise ValueError(f"{source}: header {header!r} has empty or repeated column names")
    rows = []
    for lineno, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            raise ValueError(
                f"{source}:{lineno}: {len(cells)} cells for {len(names)} header columns"
            )
        rows.append((_build(dict(zip(names, cells, strict=True)), f"{source}:{lineno}"),
                     f"line {lineno}"))
    return _unique(rows, source)


def parse_instruments_toml(text: str, source: str = "<toml>") -> tuple[Instrument, ...]:
    """Parse the TOML format (``[[instrument]]`` tables)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: {exc}") from None
    tables = doc.get("instrument", [])
    if not isinstance(tables, list):
        raise ValueError(f"{source}: 'instrument' must be an array of tables ([[instrument]])")
    rows = []
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ValueError(f"{source}: instrument #{i} is not a table")
        rows.append((_build(table, f"{source}: instrument #{i}"), f"instrument #{i}"))
    return _unique(rows, source)


def load_instruments(path: str | Path) -> tuple[Instrument, ...]:
    """Read an instrument file (``.csv`` or ``.toml``) in file order."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    if suffix == ".toml":
        return parse_instruments_toml(text, str(p))
    if suffix == ".csv":
        return parse_instruments_csv(text, str(p))
    raise ValueError(f"{p}: instrument files must end in .csv or .toml")


def known_symbols(instruments: Iterable[Instrument]) -> tuple[str, ...]:
    """The sorted distinct symbols (what ``NormalizeConfig.instruments`` takes)."""
    return tuple(sorted({ins.symbol for ins in instruments}))


DEFAULT_INSTRUMENTS = Path(__file__).parent.parent / "data" / "instruments.csv"


def instrument_master(path: Path | None, symbols: tuple[str, ...], quiet: bool
                      ) -> dict[str, Instrument]:
    """Instruments by symbol: ``--instruments`` or the shipped file (each symbol once),
    defaults for the rest."""
    table = {i.symbol: i for i in load_instruments(path or DEFAULT_INSTRUMENTS)}
    for sym in symbols:
        if sym not in table:
            if not quiet:
                print(f"warning: {sym} is not in the instrument master; using multiplier 1, "
                      "lot 1, tick 0.01 (pass --instruments)", file=sys.stderr)
            table[sym] = Instrument(symbol=sym)
    return table
