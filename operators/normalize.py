"""The normalize stage: raw venue ticks in, validated ``Tick`` or ``DeadLetter`` out.

Input is a ``RawRecord``: the raw text of one record (a CSV line or a JSON object), where it
came from, and optionally the already-decoded ``RawTick``. Normalize decodes, validates and
deduplicates; every record gives exactly one output, a ``Tick`` on ``md.ticks`` (key: symbol)
or a ``DeadLetter`` on ``md.ticks.dlq`` (key ``""``) carrying the raw payload and its source.
Nothing bad raises out of ``process``: an unexpected failure is itself a dead letter
(``INTERNAL``) so no input is lost.

Checks run in this order; the first failure is the reason (both paths use the same order):

1. decode: ``BAD_JSON`` / ``BAD_SCHEMA`` / ``BAD_CSV``;
2. ``BAD_TIMESTAMP`` (missing or unparseable; see ``operators.domain.timeparse``);
3. symbol: ``MISSING_FIELD`` (absent and no ``default_symbol``), ``EMPTY_SYMBOL`` (present but
   blank), ``UNKNOWN_SYMBOL`` (only with an instrument list);
4. price: ``MISSING_FIELD``, ``BAD_PRICE`` (not a number, NaN, ±inf, ≤ 0);
5. size: ``MISSING_FIELD``, ``BAD_SIZE`` (not a number, NaN, ±inf, < 0; zero is a valid size);
6. quotes: ``BAD_QUOTE`` (bid or ask present but not a finite number ≥ 0), then
   ``CROSSED_QUOTE`` (bid > ask, both present);
7. ``DUPLICATE``: same venue + symbol + trade id seen within ``dedupe_ttl_ns`` of event time.

Value conventions: strings are trimmed; an empty string is "absent" for every field except the
symbol (an explicitly blank symbol is ``EMPTY_SYMBOL``, an absent one takes ``default_symbol``);
an absent or blank venue takes ``default_venue``; integer trade ids become decimal strings.
Numbers accept what Python's ``float`` accepts except underscores and non-ASCII digits.

Dedupe applies only to records that carry a trade id: identical trades without an id are
distinct trades (the E-mini file has ~306k rows identical to an earlier one, all real). Per
key (symbol) the state keeps each seen ``venue|trade_id`` with its event time in a min-heap;
an id expires once the highest event time seen with an id passes its time + TTL, and the
oldest ids are dropped beyond ``dedupe_max_ids``.

The batched path (``validate_columns``) applies the same checks to numpy columns, e.g. from
``jobs.tick_files.load_tick_columns``, and gives the same reasons row for row.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from heapq import heappop, heappush
from typing import Any, ClassVar

import msgspec
import numpy as np
import numpy.typing as npt

from operators.contract import Context, Emit, Operator
from operators.domain.timeparse import NAT, TimestampError, TimestampParser, load_zone
from topics.messages import DeadLetter, RawTick, SourceRef, Tick

TICKS_TOPIC = "md.ticks"
DLQ_TOPIC = "md.ticks.dlq"

CANONICAL_FIELDS: tuple[str, ...] = (
    "ts",
    "symbol",
    "price",
    "size",
    "venue",
    "trade_id",
    "bid",
    "ask",
)
"""Names a CSV column can map to (``""`` in ``csv_columns`` means: ignore this column)."""

_TS, _SYMBOL, _PRICE, _SIZE, _VENUE, _TRADE_ID, _BID, _ASK = range(8)


class Reason(StrEnum):
    """Dead-letter reason codes (the ``reason`` field of ``md.ticks.dlq``)."""

    BAD_JSON = "BAD_JSON"  # payload looks like JSON but does not parse
    BAD_SCHEMA = "BAD_SCHEMA"  # valid JSON that is not a RawTick object (wrong type, array...)
    BAD_CSV = "BAD_CSV"  # CSV line with the wrong number of cells (or unparseable quoting)
    MISSING_FIELD = "MISSING_FIELD"  # symbol (without default), price or size absent
    BAD_TIMESTAMP = "BAD_TIMESTAMP"  # ts missing, unparseable or out of the int64 ns range
    BAD_PRICE = "BAD_PRICE"  # price not a number, NaN, inf, zero or negative
    BAD_SIZE = "BAD_SIZE"  # size not a number, NaN, inf or negative (zero is fine)
    EMPTY_SYMBOL = "EMPTY_SYMBOL"  # symbol present but blank
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"  # symbol not in the configured instrument list
    BAD_QUOTE = "BAD_QUOTE"  # bid/ask present but not a number, non-finite or negative
    CROSSED_QUOTE = "CROSSED_QUOTE"  # bid > ask
    DUPLICATE = "DUPLICATE"  # venue+symbol+trade_id already seen within the TTL
    INTERNAL = "INTERNAL"  # a bug in normalize; the record is kept rather than lost


REASONS: tuple[Reason, ...] = tuple(Reason)
"""Reason by array code: ``code = REASONS.index(r) + 1``; code 0 means valid."""

_CODE = {r: i + 1 for i, r in enumerate(REASONS)}


def reason_code(reason: Reason) -> int:
    """The uint8 code of a reason in ``ColumnsResult.codes`` (0 is "valid")."""
    return _CODE[reason]


class _RejectError(Exception):
    """Internal control flow: a record failed a check."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


# ----------------------------------------------------------------------------- messages


class RawRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Normalize's input: the raw text of one record, its source and maybe its fields.

    ``fields`` is None when the payload has not been decoded yet (normalize decodes it);
    a source that already has a ``RawTick`` passes it and normalize skips decoding.
    """

    payload: str
    source: SourceRef
    fields: RawTick | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NormalizeConfig:
    """Frozen, validated configuration of the normalize stage.

    - ``tz``: IANA zone of naive timestamps (None: UTC). Validated here.
    - ``csv_columns``: canonical name per CSV column in file order (``""`` = ignore the
      column); set: every payload is one CSV line; None: every payload is one JSON object.
    - ``default_symbol`` / ``default_venue``: fill an absent symbol / venue.
    - ``instruments``: known symbols; when set, other symbols are ``UNKNOWN_SYMBOL``.
    - ``dedupe_ttl_ns`` / ``dedupe_max_ids``: trade-id memory per symbol (event time).
    """

    tz: str | None = None
    csv_columns: tuple[str, ...] | None = None
    csv_delimiter: str = ","
    default_symbol: str | None = None
    default_venue: str = "UNKNOWN"
    instruments: tuple[str, ...] | None = None
    dedupe_ttl_ns: int = 3_600_000_000_000
    dedupe_max_ids: int = 100_000

    def __post_init__(self) -> None:
        load_zone(self.tz)
        if self.csv_columns is not None:
            if not isinstance(self.csv_columns, tuple) or not self.csv_columns:
                raise ValueError("csv_columns must be a non-empty tuple of column names")
            named = [c for c in self.csv_columns if c]
            bad = [c for c in named if c not in CANONICAL_FIELDS]
            if bad:
                raise ValueError(f"csv_columns {bad} are not among {CANONICAL_FIELDS} or ''")
            if len(set(named)) != len(named):
                raise ValueError(f"csv_columns repeat a name: {self.csv_columns}")
        if len(self.csv_delimiter) != 1 or self.csv_delimiter in '"\r\n{':
            raise ValueError(f"csv_delimiter must be one character, got {self.csv_delimiter!r}")
        if self.default_symbol is not None and (
            not self.default_symbol or self.default_symbol != self.default_symbol.strip()
        ):
            raise ValueError("default_symbol must be non-empty and trimmed or None")
        if not self.default_venue or self.default_venue != self.default_venue.strip():
            raise ValueError("default_venue must be non-empty and trimmed")
        if self.instruments is not None:
            if not isinstance(self.instruments, tuple):
                raise ValueError("instruments must be a tuple of symbols (or None)")
            if any(not isinstance(s, str) or not s or s != s.strip() for s in self.instruments):
                raise ValueError("instruments must be non-empty, trimmed symbol strings")
        if type(self.dedupe_ttl_ns) is not int or self.dedupe_ttl_ns <= 0:
            raise ValueError(f"dedupe_ttl_ns must be a positive int, got {self.dedupe_ttl_ns!r}")
        if type(self.dedupe_max_ids) is not int or self.dedupe_max_ids < 1:
            raise ValueError(f"dedupe_max_ids must be an int >= 1, got {self.dedupe_max_ids!r}")


class NormalizeState(msgspec.Struct, kw_only=True):
    """Per-symbol dedupe memory: seen ``venue|trade_id`` → event time, expiring in ts order."""

    ids: dict[str, int] = msgspec.field(default_factory=dict)
    expiry: list[tuple[int, str]] = msgspec.field(default_factory=list)  # min-heap (ts, id)
    high_ts: int = NAT  # highest event time seen on a record with a trade id


# ----------------------------------------------------------------------------- value parsing


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


def _price_problem(v: float) -> str | None:
    if not math.isfinite(v):
        return "is not finite"
    if v <= 0:
        return "must be > 0"
    return None


def _nonnegative_problem(v: float) -> str | None:
    """Sizes and quotes: finite and >= 0 (a zero size is a valid trade)."""
    if not math.isfinite(v):
        return "is not finite"
    if v < 0:
        return "must be >= 0"
    return None


# ----------------------------------------------------------------------------- columns


@dataclass(frozen=True, slots=True, kw_only=True)
class TickColumns:
    """Pre-parsed columns of many records, the input of ``Normalize.validate_columns``.

    Sentinels instead of exceptions, so one bad cell never stops a batch:

    - ``ts``: int64 ns UTC; ``NAT`` (int64 min) where missing or unparseable;
    - ``price``/``size``/``bid``/``ask``: float64; NaN = absent, ``-inf`` = present but not
      a number (or the text "nan"); other non-finite or out-of-range values stay as parsed;
    - ``symbol_codes``: int32 index into ``symbol_names``; -1 = absent (``default_symbol``
      applies); names are trimmed by the validator, a blank name is ``EMPTY_SYMBOL``;
    - ``venue_codes``/``venue_names``: likewise (None: every row takes ``default_venue``);
    - ``trade_id``: per-row ``str | None`` (None: no id) or None when the source has none;
    - ``malformed``: rows that could not be split into the expected cells (``BAD_CSV``);
    - ``line``: source line numbers; ``file``: the ``SourceRef.file`` of every row;
    - ``payload``: the raw text of row i, as a sequence or a callable (only rejected rows
      are fetched).
    """

    ts: npt.NDArray[np.int64]
    price: npt.NDArray[np.float64]
    size: npt.NDArray[np.float64]
    symbol_codes: npt.NDArray[np.int32]
    symbol_names: tuple[str, ...]
    line: npt.NDArray[np.int64]
    payload: Sequence[str] | Callable[[int], str]
    file: str | None = None
    venue_codes: npt.NDArray[np.int32] | None = None
    venue_names: tuple[str, ...] = ()
    trade_id: Sequence[str | None] | None = None
    bid: npt.NDArray[np.float64] | None = None
    ask: npt.NDArray[np.float64] | None = None
    malformed: npt.NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        n = len(self.ts)
        arrays: dict[str, Any] = {
            "price": self.price,
            "size": self.size,
            "symbol_codes": self.symbol_codes,
            "line": self.line,
            "venue_codes": self.venue_codes,
            "trade_id": self.trade_id,
            "bid": self.bid,
            "ask": self.ask,
            "malformed": self.malformed,
        }
        for name, arr in arrays.items():
            if arr is not None and len(arr) != n:
                raise ValueError(f"TickColumns.{name} has {len(arr)} rows, ts has {n}")
        if not callable(self.payload) and len(self.payload) != n:
            raise ValueError(f"TickColumns.payload has {len(self.payload)} rows, ts has {n}")
        if self.ts.dtype != np.int64:
            raise ValueError("TickColumns.ts must be int64 ns")
        if n and int(self.symbol_codes.max(initial=-1)) >= len(self.symbol_names):
            raise ValueError("symbol_codes index past symbol_names")
        if (
            self.venue_codes is not None
            and n
            and int(self.venue_codes.max(initial=-1)) >= len(self.venue_names)
        ):
            raise ValueError("venue_codes index past venue_names")

    def __len__(self) -> int:
        return len(self.ts)

    def payload_of(self, i: int) -> str:
        p = self.payload
        return p(i) if callable(p) else p[i]

    def source_of(self, i: int) -> SourceRef:
        return SourceRef(file=self.file, line=int(self.line[i]))

    def select(self, mask: npt.NDArray[np.bool_]) -> TickColumns:
        """The rows where ``mask`` is true (e.g. ``result.valid``), names and order kept."""
        idx = np.flatnonzero(mask)
        rows = idx.tolist()
        src = self.payload
        # Lazy: only dead letters ever read a payload, so never copy 500k strings up front.
        payload: Callable[[int], str]
        if callable(src):
            payload = lambda i: src(rows[i])  # noqa: E731
        else:
            payload = lambda i: src[rows[i]]  # noqa: E731
        return TickColumns(
            ts=self.ts[idx],
            price=self.price[idx],
            size=self.size[idx],
            symbol_codes=self.symbol_codes[idx],
            symbol_names=self.symbol_names,
            line=self.line[idx],
            payload=payload,
            file=self.file,
            venue_codes=None if self.venue_codes is None else self.venue_codes[idx],
            venue_names=self.venue_names,
            trade_id=None if self.trade_id is None else [self.trade_id[i] for i in rows],
            bid=None if self.bid is None else self.bid[idx],
            ask=None if self.ask is None else self.ask[idx],
            malformed=None if self.malformed is None else self.malformed[idx],
        )


@dataclass(frozen=True, slots=True)
class ColumnsResult:
    """What ``validate_columns`` returns.

    ``codes[i]`` is 0 for a valid row, else ``reason_code(reason)``; ``valid`` is
    ``codes == 0``; ``dead_letters`` are the rejected rows in input order; ``states`` is the
    dedupe state per symbol after the batch (pass it to the next batch or to the per-event
    operator to continue).
    """

    valid: npt.NDArray[np.bool_]
    codes: npt.NDArray[np.uint8]
    dead_letters: list[DeadLetter]
    states: dict[str, NormalizeState]

    def reasons(self) -> list[Reason | None]:
        return [None if c == 0 else REASONS[c - 1] for c in self.codes.tolist()]


# ----------------------------------------------------------------------------- the operator


class Normalize(Operator[NormalizeState, RawRecord]):
    """Parse, validate and dedupe raw ticks; every bad record to the DLQ with a reason code.

    The instance keeps a memo of time-zone offsets per local hour (a pure cache: outputs never
    depend on it), so reuse one instance per task rather than one per record.
    """

    UID: ClassVar[str] = "normalize"
    STATE_VERSION: ClassVar[int] = 1
    State = NormalizeState

    def __init__(self, config: NormalizeConfig | None = None) -> None:
        self.config = config if config is not None else NormalizeConfig()
        cfg = self.config
        self._ts = TimestampParser(cfg.tz)
        self._known = frozenset(cfg.instruments) if cfg.instruments is not None else None
        self._json = msgspec.json.Decoder(RawTick)
        cols = cfg.csv_columns or ()
        self._ncols = len(cols)
        self._col_of = tuple(
            cols.index(f) if f in cols else -1 for f in CANONICAL_FIELDS
        )  # CSV cell index per canonical field
        self._mapped = tuple((fi, ci) for fi, ci in enumerate(self._col_of) if ci >= 0)
        self._ttl = cfg.dedupe_ttl_ns
        self._max_ids = cfg.dedupe_max_ids

    def config_fingerprint(self) -> str:
        """Only the dedupe settings shape the state; other settings may change on restore."""
        raw = msgspec.json.encode([self.UID, self._ttl, self._max_ids])
        return hashlib.sha256(raw).hexdigest()[:16]

    def new_state(self, key: str) -> NormalizeState:
        return NormalizeState()

    # -- partitioning --------------------------------------------------------------------
    def key(self, event: RawRecord) -> str:
        """The symbol as ``process`` will see it ("" when it cannot be decoded)."""
        try:
            vals = self._values(event)
        except Exception:
            return ""
        sym = vals[_SYMBOL]
        if sym is None:
            return self.config.default_symbol or ""
        return sym.strip() if isinstance(sym, str) else ""

    # -- per event -----------------------------------------------------------------------
    def process(
        self, state: NormalizeState, event: RawRecord, ctx: Context
    ) -> tuple[NormalizeState, list[Emit]]:
        try:
            return state, [self._one(state, event)]
        except Exception as exc:  # a bug must not lose the record or stop the stream
            dl = self._dead(None, Reason.INTERNAL, f"{type(exc).__name__}: {exc}", event)
            return state, [Emit(DLQ_TOPIC, "", dl)]

    def _one(self, state: NormalizeState, event: RawRecord) -> Emit:
        ts: int | None = None
        try:
            vals = self._values(event)
            ts = self._parse_ts(vals[_TS])
            tick = self._validate(state, vals, ts, event.source)
        except _RejectError as r:
            return Emit(DLQ_TOPIC, "", self._dead(ts, r.reason, r.detail, event))
        return Emit(TICKS_TOPIC, tick.symbol, tick)

    def _dead(self, ts: int | None, reason: Reason, detail: str, event: RawRecord) -> DeadLetter:
        payload = event.payload
        if not payload and event.fields is not None:  # keep what we were given, readably
            try:
                payload = msgspec.json.encode(event.fields).decode()
            except Exception:
                payload = repr(event.fields)
        return DeadLetter(
            ts_event=ts, reason=reason.value, detail=detail, payload=payload, source=event.source
        )

    def _values(self, event: RawRecord) -> list[Any]:
        """The eight canonical raw values of a record, decoding its payload if needed."""
        f = event.fields
        if f is None:
            payload = event.payload
            if self._ncols == 0:
                try:
                    f = self._json.decode(payload)
                except msgspec.ValidationError as exc:
                    detail = f"JSON is not a tick object: {exc}"
                    raise _RejectError(Reason.BAD_SCHEMA, detail) from None
                except msgspec.DecodeError as exc:
                    raise _RejectError(Reason.BAD_JSON, f"{exc}") from None
            else:
                return self._csv_values(payload)
        return [f.ts, f.symbol, f.price, f.size, f.venue, f.trade_id, f.bid, f.ask]

    def _csv_values(self, payload: str) -> list[Any]:
        line = payload.rstrip("\r\n")
        try:
            cells = split_csv_line(line, self.config.csv_delimiter)
        except csv.Error as exc:
            raise _RejectError(Reason.BAD_CSV, f"unparseable CSV quoting: {exc}") from None
        if len(cells) != self._ncols:
            raise _RejectError(
                Reason.BAD_CSV,
                f"{len(cells)} cells, expected {self._ncols} {self.config.csv_columns}",
            )
        out: list[Any] = [None] * 8
        for fi, ci in self._mapped:
            c = cells[ci].strip()
            if c or fi == _SYMBOL:  # blank means absent, except for an explicit symbol
                out[fi] = c
        return out

    def _parse_ts(self, raw: object) -> int:
        if raw is None or (type(raw) is str and not raw.strip()):  # type: ignore[attr-defined]
            raise _RejectError(Reason.BAD_TIMESTAMP, "ts is missing")
        try:
            return self._ts.parse(raw)
        except TimestampError as exc:
            raise _RejectError(Reason.BAD_TIMESTAMP, f"ts: {exc}") from None

    def _symbol(self, raw: object) -> str:
        if raw is None:
            if self.config.default_symbol is None:
                raise _RejectError(Reason.MISSING_FIELD, "symbol is missing (no default_symbol)")
            sym = self.config.default_symbol
        elif type(raw) is str:
            sym = raw.strip()  # type: ignore[attr-defined]
            if not sym:
                raise _RejectError(Reason.EMPTY_SYMBOL, f"symbol {raw!r} is blank")
        else:
            raise _RejectError(Reason.BAD_SCHEMA, f"symbol {raw!r} is not a string")
        if self._known is not None and sym not in self._known:
            raise _RejectError(Reason.UNKNOWN_SYMBOL, f"symbol {sym!r} is not a known instrument")
        return sym

    def _validate(self, state: NormalizeState, vals: list[Any], ts: int, source: SourceRef) -> Tick:
        sym = self._symbol(vals[_SYMBOL])

        raw = vals[_PRICE]
        try:
            price = parse_number(raw)
        except ValueError:
            raise _RejectError(Reason.BAD_PRICE, f"price {raw!r} is not a number") from None
        if price is None:
            raise _RejectError(Reason.MISSING_FIELD, "price is missing")
        problem = _price_problem(price)
        if problem:
            raise _RejectError(Reason.BAD_PRICE, f"price {raw!r} {problem}")

        raw = vals[_SIZE]
        try:
            size = parse_number(raw)
        except ValueError:
            raise _RejectError(Reason.BAD_SIZE, f"size {raw!r} is not a number") from None
        if size is None:
            raise _RejectError(Reason.MISSING_FIELD, "size is missing")
        problem = _nonnegative_problem(size)
        if problem:
            raise _RejectError(Reason.BAD_SIZE, f"size {raw!r} {problem}")

        bid = None if vals[_BID] is None else self._quote("bid", vals[_BID])
        ask = None if vals[_ASK] is None else self._quote("ask", vals[_ASK])
        if bid is not None and ask is not None and bid > ask:
            raise _RejectError(Reason.CROSSED_QUOTE, f"bid {bid!r} > ask {ask!r}")

        venue = _venue(vals[_VENUE], self.config.default_venue)
        tid = _trade_id(vals[_TRADE_ID])
        if tid is not None and not self._admit(state, venue, tid, ts):
            raise _RejectError(Reason.DUPLICATE, f"trade_id {tid!r} on {venue}:{sym} already seen")
        return Tick(
            ts_event=ts,
            symbol=sym,
            venue=venue,
            price=price,
            size=size + 0.0,  # -0.0 → 0.0: one canonical zero
            trade_id=tid,
            bid=bid,
            ask=ask,
            source=source,
        )

    @staticmethod
    def _quote(name: str, raw: object) -> float | None:
        try:
            v = parse_number(raw)
        except ValueError:
            raise _RejectError(Reason.BAD_QUOTE, f"{name} {raw!r} is not a number") from None
        if v is not None:
            problem = _nonnegative_problem(v)
            if problem:
                raise _RejectError(Reason.BAD_QUOTE, f"{name} {raw!r} {problem}")
        return v

    # -- dedupe --------------------------------------------------------------------------
    def _admit(self, state: NormalizeState, venue: str, trade_id: str, ts: int) -> bool:
        """Record ``venue|trade_id`` at ``ts``; False if it is a duplicate within the TTL."""
        if ts > state.high_ts:
            state.high_ts = ts
        ids = state.ids
        heap = state.expiry
        horizon = state.high_ts - self._ttl
        while heap and heap[0][0] < horizon:
            t, k = heappop(heap)
            if ids.get(k) == t:
                del ids[k]
        key = f"{venue}\x1f{trade_id}"
        if key in ids:
            return False
        ids[key] = ts
        heappush(heap, (ts, key))
        while len(ids) > self._max_ids:
            t, k = heappop(heap)
            if ids.get(k) == t:
                del ids[k]
        return True

    # -- batched -------------------------------------------------------------------------
    def validate_columns(
        self,
        cols: TickColumns,
        states: MutableMapping[str, NormalizeState] | None = None,
    ) -> ColumnsResult:
        """Validate many pre-parsed rows at once; same reasons as ``process`` row for row.

        ``states`` (symbol → dedupe state) is updated in place when given, so batches and
        per-event processing can follow each other; dedupe itself walks only the rows that
        carry a trade id and passed every other check, in input order.
        """
        cfg = self.config
        n = len(cols)
        codes = np.zeros(n, np.uint8)

        def mark(mask: npt.NDArray[np.bool_], reason: Reason) -> None:
            codes[(codes == 0) & mask] = _CODE[reason]

        if cols.malformed is not None:
            mark(cols.malformed, Reason.BAD_CSV)
        mark(cols.ts == NAT, Reason.BAD_TIMESTAMP)

        # symbols: decide once per distinct name, then broadcast by code
        names = [s.strip() for s in cols.symbol_names]
        absent = len(names)
        sym_codes = np.where(cols.symbol_codes < 0, absent, cols.symbol_codes)
        name_reason = np.zeros(absent + 1, np.uint8)
        for j, s in enumerate(names):
            if not s:
                name_reason[j] = _CODE[Reason.EMPTY_SYMBOL]
            elif self._known is not None and s not in self._known:
                name_reason[j] = _CODE[Reason.UNKNOWN_SYMBOL]
        default = cfg.default_symbol
        names.append(default if default is not None else "")
        if default is None:
            name_reason[absent] = _CODE[Reason.MISSING_FIELD]
        elif self._known is not None and default not in self._known:
            name_reason[absent] = _CODE[Reason.UNKNOWN_SYMBOL]
        row_reason = name_reason[sym_codes]
        codes[:] = np.where(codes == 0, row_reason, codes)

        p = cols.price
        mark(np.isnan(p), Reason.MISSING_FIELD)
        mark(~(np.isfinite(p) & (p > 0)), Reason.BAD_PRICE)
        z = cols.size
        mark(np.isnan(z), Reason.MISSING_FIELD)
        mark(~(np.isfinite(z) & (z >= 0)), Reason.BAD_SIZE)
        for q in (cols.bid, cols.ask):
            if q is not None:
                mark(~np.isnan(q) & ~(np.isfinite(q) & (q >= 0)), Reason.BAD_QUOTE)
        if cols.bid is not None and cols.ask is not None:
            mark(cols.bid > cols.ask, Reason.CROSSED_QUOTE)  # NaN compares False

        venues = [_venue(v, cfg.default_venue) for v in cols.venue_names]
        out_states: MutableMapping[str, NormalizeState] = {} if states is None else states
        if cols.trade_id is not None:
            tids = cols.trade_id
            dup = _CODE[Reason.DUPLICATE]
            for i in np.flatnonzero(codes == 0).tolist():
                tid = _trade_id(tids[i])
                if tid is None:
                    continue
                sym = names[sym_codes[i]]
                st = out_states.get(sym)
                if st is None:
                    st = out_states[sym] = self.new_state(sym)
                venue = self._venue_at(cols, venues, i)
                if not self._admit(st, venue, tid, int(cols.ts[i])):
                    codes[i] = dup

        dead: list[DeadLetter] = []
        for i in np.flatnonzero(codes).tolist():
            reason = REASONS[codes[i] - 1]
            t = int(cols.ts[i])
            dead.append(
                DeadLetter(
                    ts_event=None if t == NAT else t,
                    reason=reason.value,
                    detail=self._column_detail(reason, cols, i, (names, sym_codes, venues)),
                    payload=cols.payload_of(i),
                    source=cols.source_of(i),
                )
            )
        return ColumnsResult(codes == 0, codes, dead, dict(out_states))

    def _venue_at(self, cols: TickColumns, venues: list[str], i: int) -> str:
        if cols.venue_codes is None:
            return self.config.default_venue
        c = int(cols.venue_codes[i])
        return venues[c] if c >= 0 else self.config.default_venue

    def _column_detail(
        self,
        reason: Reason,
        cols: TickColumns,
        i: int,
        lookups: tuple[list[str], npt.NDArray[np.intp], list[str]],
    ) -> str:
        names, sym_codes, venues = lookups

        def num(v: float) -> str:
            return "unparseable" if v == -math.inf else repr(v)

        sym = names[sym_codes[i]]
        if reason is Reason.BAD_CSV:
            return f"wrong number of cells, expected {self._ncols} {self.config.csv_columns}"
        if reason is Reason.BAD_TIMESTAMP:
            return "ts is missing or unparseable"
        if reason is Reason.MISSING_FIELD:
            if int(cols.symbol_codes[i]) < 0 and self.config.default_symbol is None:
                return "symbol is missing (no default_symbol)"
            return "price is missing" if math.isnan(cols.price[i]) else "size is missing"
        if reason is Reason.EMPTY_SYMBOL:
            return f"symbol {cols.symbol_names[cols.symbol_codes[i]]!r} is blank"
        if reason is Reason.UNKNOWN_SYMBOL:
            return f"symbol {sym!r} is not a known instrument"
        if reason is Reason.BAD_PRICE:
            v = float(cols.price[i])
            return f"price {num(v)} {_price_problem(v) or 'is not a number'}"
        if reason is Reason.BAD_SIZE:
            v = float(cols.size[i])
            return f"size {num(v)} {_nonnegative_problem(v) or 'is not a number'}"
        if reason in (Reason.BAD_QUOTE, Reason.CROSSED_QUOTE):
            b = float(cols.bid[i]) if cols.bid is not None else math.nan
            a = float(cols.ask[i]) if cols.ask is not None else math.nan
            if reason is Reason.CROSSED_QUOTE:
                return f"bid {b!r} > ask {a!r}"
            bad = ("bid", b) if not math.isnan(b) and _nonnegative_problem(b) else ("ask", a)
            return f"{bad[0]} {num(bad[1])} {_nonnegative_problem(bad[1]) or 'is not a number'}"
        if reason is Reason.DUPLICATE:
            tid = _trade_id(cols.trade_id[i]) if cols.trade_id is not None else None
            venue = self._venue_at(cols, venues, i)
            return f"trade_id {tid!r} on {venue}:{sym} already seen"
        return reason.value

    def ticks_from_columns(self, cols: TickColumns, valid: npt.NDArray[np.bool_]) -> list[Tick]:
        """Materialize the valid rows as ``Tick`` messages (what ``process`` would emit).

        Column-wise: every per-row value is looked up with numpy first, so the loop only
        builds the two structs per row (this is most of the batched replay's cost).
        """
        cfg = self.config
        idx = np.flatnonzero(valid)
        n = idx.size
        sym_table = np.array([s.strip() for s in cols.symbol_names] + [cfg.default_symbol or ""],
                             dtype=object)
        codes = cols.symbol_codes[idx]
        symbols = sym_table[np.where(codes >= 0, codes, len(sym_table) - 1)].tolist()
        if cols.venue_codes is None:
            venues: list[str] = [cfg.default_venue] * n
        else:
            ven_table = np.array([_venue(v, cfg.default_venue) for v in cols.venue_names]
                                 + [cfg.default_venue], dtype=object)
            vc = cols.venue_codes[idx]
            venues = ven_table[np.where(vc >= 0, vc, len(ven_table) - 1)].tolist()

        def quotes(col: npt.NDArray[np.float64] | None) -> list[float | None]:
            if col is None:
                return [None] * n
            v = col[idx]
            obj = v.astype(object)
            obj[np.isnan(v)] = None
            out: list[float | None] = obj.tolist()
            return out

        trade_ids = ([_trade_id(cols.trade_id[i]) for i in idx.tolist()]
                     if cols.trade_id is not None else [None] * n)
        sizes = (cols.size[idx] + 0.0).tolist()  # + 0.0: -0.0 becomes 0.0 as in process()
        file = cols.file
        return [
            Tick(ts_event=t, symbol=sy, venue=ve, price=p, size=z, trade_id=tid, bid=b, ask=a,
                 source=SourceRef(file=file, line=ln))
            for t, sy, ve, p, z, tid, b, a, ln in zip(
                cols.ts[idx].tolist(), symbols, venues, cols.price[idx].tolist(), sizes,
                trade_ids, quotes(cols.bid), quotes(cols.ask), cols.line[idx].tolist(),
                strict=True)
        ]


def _venue(raw: object, default: str) -> str:
    if raw is None:
        return default
    if type(raw) is not str:
        raise _RejectError(Reason.BAD_SCHEMA, f"venue {raw!r} is not a string")
    v = raw.strip()  # type: ignore[attr-defined]
    return v if v else default


def _trade_id(raw: object) -> str | None:
    if raw is None:
        return None
    t = type(raw)
    if t is str:
        s = raw.strip()  # type: ignore[attr-defined]
        return s if s else None
    if t is int:
        return str(raw)
    raise _RejectError(Reason.BAD_SCHEMA, f"trade_id {raw!r} is neither a string nor an integer")


__all__ = [
    "CANONICAL_FIELDS",
    "DLQ_TOPIC",
    "REASONS",
    "TICKS_TOPIC",
    "ColumnsResult",
    "Normalize",
    "NormalizeConfig",
    "NormalizeState",
    "RawRecord",
    "Reason",
    "TickColumns",
    "parse_number",
    "reason_code",
    "split_csv_line",
]
