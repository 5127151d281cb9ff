"""The normalize stage: raw venue ticks in, validated ``Tick`` or ``DeadLetter`` out.

Input is a ``RawRecord``: the raw text of one record (a CSV line or a JSON object), where it
came from, and optionally the already-decoded ``RawTick``. Normalize decodes, validates and
deduplicates; every record gives exactly one output, a ``Tick`` on ``md.ticks`` (key: symbol)
or a ``DeadLetter`` on ``md.ticks.dlq`` (key ``""``) carrying the raw payload and its source.
Nothing bad raises out of ``process``: an unexpected failure is itself a dead letter
(``INTERNAL``) so no input is lost.

Checks run in this order; the first failure is the reason (both paths use the same order):

0. ``BAD_ENCODING``: the payload holds U+FFFD, what a byte that is not UTF-8 becomes when the
   source decodes it (so one bad byte costs one record, wherever it is);
1. decode: ``BAD_JSON`` / ``BAD_SCHEMA`` / ``BAD_CSV``;
2. ``BAD_TIMESTAMP`` (missing or unparseable; see ``operators.domain.timeparse``);
3. symbol: ``MISSING_FIELD`` (absent and no ``default_symbol``), ``EMPTY_SYMBOL`` (present but
   blank), ``UNKNOWN_SYMBOL`` (only with an instrument list);
4. price: ``MISSING_FIELD``, ``BAD_PRICE`` (not a number, NaN, ±inf, ≤ 0);
5. size: ``MISSING_FIELD``, ``BAD_SIZE`` (not a number, NaN, ±inf, < 0; zero is a valid size);
6. quotes: ``BAD_QUOTE`` (bid or ask present but not a finite number ≥ 0), then
   ``CROSSED_QUOTE`` (bid > ask, both present);
7. ``IMPLAUSIBLE_TIME``: more than ``max_forward_jump_ns`` ahead of the watermark the runtime
   passes in (newest valid event time - allowed lateness), e.g. a year-2200 tick in the
   middle of a day; rejected, it never reaches ``md.ticks`` and so never moves the watermark;
8. ``DUPLICATE``: same venue + symbol + trade id remembered in the dedupe window, else
   ``STALE_TRADE_ID``: an id too old for the window to check (``operators.domain.dedupe``
   states the window's semantics).

Steps 0-6 look at the record alone (``check``); 7 needs the watermark and 8 the key's state.
Field parsing and the per-field checks live in ``operators.domain.tick_fields``, shared with
the columnar replay accelerator (``jobs.accel.normalize_columns``), which gives the same
reasons row for row.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from operators.contract import MIN_WATERMARK, Context, Emit, Operator
from operators.domain.dedupe import DedupeState, admit, rejection_detail
from operators.domain.tick_fields import (
    BAD_BYTE,
    TICK_FIELDS,
    RejectedError,
    clean_trade_id,
    clean_venue,
    fields_of_cells,
    implausible_detail,
    is_implausible,
    nonnegative_problem,
    parse_number,
    price_problem,
    split_csv_line,
    symbol_problem,
)
from operators.domain.timeparse import TimestampError, TimestampParser, load_zone
from topics.catalog import topic
from topics.dlq import DLQ_TOPIC, DlqReason
from topics.messages import DeadLetter, RawTick, SourceRef, Tick

TICKS_TOPIC = topic("md.ticks").name

MAX_FORWARD_JUMP_NS = 7 * 86_400 * 1_000_000_000
DEDUPE_WINDOW_NS = 3_600_000_000_000

_TS, _SYMBOL, _PRICE, _SIZE, _VENUE, _TRADE_ID, _BID, _ASK = range(8)


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
    - ``dedupe_window_ns`` / ``dedupe_max_ids``: trade-id memory per symbol (event time).
    - ``max_forward_jump_ns``: how far ahead of the watermark a tick may be (default 7 days,
      above weekend and holiday gaps).
    """

    tz: str | None = None
    csv_columns: tuple[str, ...] | None = None
    csv_delimiter: str = ","
    default_symbol: str | None = None
    default_venue: str = "UNKNOWN"
    instruments: tuple[str, ...] | None = None
    dedupe_window_ns: int = DEDUPE_WINDOW_NS
    dedupe_max_ids: int = 100_000
    max_forward_jump_ns: int = MAX_FORWARD_JUMP_NS

    def __post_init__(self) -> None:
        load_zone(self.tz)
        if self.csv_columns is not None:
            if not isinstance(self.csv_columns, tuple) or not self.csv_columns:
                raise ValueError("csv_columns must be a non-empty tuple of column names")
            named = [c for c in self.csv_columns if c]
            bad = [c for c in named if c not in TICK_FIELDS]
            if bad:
                raise ValueError(f"csv_columns {bad} are not among {TICK_FIELDS} or ''")
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
        if type(self.dedupe_window_ns) is not int or self.dedupe_window_ns <= 0:
            raise ValueError(f"dedupe_window_ns must be a positive int, got "
                             f"{self.dedupe_window_ns!r}")
        if type(self.dedupe_max_ids) is not int or self.dedupe_max_ids < 1:
            raise ValueError(f"dedupe_max_ids must be an int >= 1, got {self.dedupe_max_ids!r}")
        if type(self.max_forward_jump_ns) is not int or self.max_forward_jump_ns <= 0:
            raise ValueError(f"max_forward_jump_ns must be a positive int, got "
                             f"{self.max_forward_jump_ns!r}")


class Normalize(Operator[DedupeState, RawRecord]):
    """Parse, validate and dedupe raw ticks; every bad record to the DLQ with a reason code.

    The instance keeps a memo of time-zone offsets per local hour (a pure cache: outputs never
    depend on it), so reuse one instance per task rather than one per record.
    """

    UID: ClassVar[str] = "normalize"
    STATE_VERSION: ClassVar[int] = 2  # 2: DedupeState.forgotten_ts
    State = DedupeState

    def __init__(self, config: NormalizeConfig | None = None) -> None:
        self.config = config if config is not None else NormalizeConfig()
        cfg = self.config
        self.timestamps = TimestampParser(cfg.tz)
        self.known = frozenset(cfg.instruments) if cfg.instruments is not None else None
        self._json = msgspec.json.Decoder(RawTick)
        cols = cfg.csv_columns or ()
        self._ncols = len(cols)
        self._col_of = tuple(
            cols.index(f) if f in cols else -1 for f in TICK_FIELDS
        )  # CSV cell index per canonical field
        self._mapped = tuple((fi, ci) for fi, ci in enumerate(self._col_of) if ci >= 0)
        self._window = cfg.dedupe_window_ns
        self._max_ids = cfg.dedupe_max_ids
        # the plain-CSV fast path (``_plain_csv``): cell indexes per field, -1 when unmapped
        (self._c_ts, self._c_sym, self._c_price, self._c_size, self._c_venue, self._c_trade,
         self._c_bid, self._c_ask) = self._col_of

    def config_fingerprint(self) -> str:
        """Only the dedupe settings shape the state; other settings may change on restore."""
        raw = msgspec.json.encode([self.UID, self._window, self._max_ids])
        return hashlib.sha256(raw).hexdigest()[:16]

    def new_state(self, key: str) -> DedupeState:
        return DedupeState()

    # -- partitioning --------------------------------------------------------------------
    def key(self, event: RawRecord) -> str:
        """The symbol as ``process`` will see it ("" when it cannot be decoded).

        A CSV without a symbol column keys every record by the default symbol: no need to
        parse the line twice (once here, once in ``process``) to learn what is fixed.
        """
        if self._ncols and event.fields is None:
            ci = self._c_sym
            if ci < 0:
                return self.config.default_symbol or ""
            line = event.payload.rstrip("\r\n")
            if '"' not in line:  # what ``_values`` finds, without parsing the other cells
                cells = line.split(self.config.csv_delimiter)
                return cells[ci].strip() if len(cells) == self._ncols else ""
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
        self, state: DedupeState, event: RawRecord, ctx: Context
    ) -> tuple[DedupeState, list[Emit]]:
        try:
            return state, [self._one(state, event, ctx.watermark)]
        except Exception as exc:  # a bug must not lose the record or stop the stream
            dl = self.dead_letter(None, DlqReason.INTERNAL, f"{type(exc).__name__}: {exc}",
                                  event)
            return state, [Emit(DLQ_TOPIC, "", dl)]

    def _one(self, state: DedupeState, event: RawRecord, watermark: int) -> Emit:
        plain = self._plain_csv(event) if self._ncols else None
        if plain is None:
            checked = self._check(event)
            if type(checked) is DeadLetter:
                return Emit(DLQ_TOPIC, "", checked)
            assert type(checked) is Tick
            tick = checked
        else:
            tick = plain
        jump = self.config.max_forward_jump_ns
        if is_implausible(tick.ts_event, watermark, jump, MIN_WATERMARK):
            detail = implausible_detail(tick.ts_event, watermark, jump)
            return Emit(DLQ_TOPIC, "", self.dead_letter(tick.ts_event, DlqReason.IMPLAUSIBLE_TIME,
                                                        detail, event))
        if tick.trade_id is not None:
            rejected = admit(state, tick.venue, tick.trade_id, tick.ts_event,
                             window_ns=self._window, max_ids=self._max_ids)
            if rejected is not None:
                detail = rejection_detail(rejected, state, tick.trade_id, tick.venue, tick.symbol,
                                          tick.ts_event, self._window)
                return Emit(DLQ_TOPIC, "", self.dead_letter(tick.ts_event, rejected, detail,
                                                            event))
        return Emit(TICKS_TOPIC, tick.symbol, tick)

    def check(self, event: RawRecord) -> Tick | DeadLetter:
        """Checks 0-6, which look at the record alone: the tick, or the first failure."""
        tick = self._plain_csv(event) if self._ncols else None
        return tick if tick is not None else self._check(event)

    def _check(self, event: RawRecord) -> Tick | DeadLetter:
        """``check`` on the general path."""
        ts: int | None = None
        try:
            if BAD_BYTE in event.payload:
                raise RejectedError(DlqReason.BAD_ENCODING, "the record holds bytes that are not "
                                    "UTF-8 (read as U+FFFD)")
            vals = self._values(event)
            ts = self._parse_ts(vals[_TS])
            return self._validate(vals, ts, event.source)
        except RejectedError as r:
            return self.dead_letter(ts, r.reason, r.detail, event)

    def _plain_csv(self, event: RawRecord) -> Tick | None:
        """The usual CSV record, checked inline: its tick, or None to take the general path.

        Checks 0-6 and the tick built exactly as ``_values`` + ``_validate`` do, for a line
        without quotes whose cells all pass; anything else (a quote, a failed check, a cell
        the general path treats specially) returns None, and the general path gives the same
        tick or the first failure's reason. Per record it saves a dozen calls.
        """
        if event.fields is not None:
            return None
        line = event.payload
        if BAD_BYTE in line:
            return None
        line = line.rstrip("\r\n")
        if '"' in line:
            return None
        cells = line.split(self.config.csv_delimiter)
        if len(cells) != self._ncols:
            return None
        ts_text = cells[self._c_ts].strip()
        if not ts_text:
            return None
        try:
            ts = self.timestamps.parse_str(ts_text)
        except TimestampError:
            return None
        ci = self._c_sym
        if ci < 0:
            sym = self.config.default_symbol
            if sym is None:
                return None
        else:
            sym = cells[ci].strip()
            if not sym:
                return None
        known = self.known
        if known is not None and sym not in known:
            return None
        p = cells[self._c_price].strip()
        z = cells[self._c_size].strip()
        if not (p and z and p.isascii() and z.isascii()) or "_" in p or "_" in z:
            return None
        try:
            price = float(p)
            size = float(z)
        except ValueError:
            return None
        if not (0.0 < price < _INF and 0.0 <= size < _INF):  # NaN fails both
            return None
        bid = ask = None
        ci = self._c_bid
        if ci >= 0:
            bid = _plain_quote(cells[ci])
            if bid is _BAD:
                return None
        ci = self._c_ask
        if ci >= 0:
            ask = _plain_quote(cells[ci])
            if ask is _BAD:
                return None
        if bid is not None and ask is not None and bid > ask:  # type: ignore[operator]
            return None
        ci = self._c_venue
        venue = (cells[ci].strip() if ci >= 0 else "") or self.config.default_venue
        ci = self._c_trade
        trade_id = (cells[ci].strip() or None) if ci >= 0 else None
        return Tick(ts_event=ts, symbol=sym, venue=venue, price=price, size=size + 0.0,
                    trade_id=trade_id, bid=bid, ask=ask,  # type: ignore[arg-type]
                    source=event.source)

    def dead_letter(self, ts: int | None, reason: DlqReason, detail: str, event: RawRecord
                    ) -> DeadLetter:
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
                    raise RejectedError(DlqReason.BAD_SCHEMA, detail) from None
                except msgspec.DecodeError as exc:
                    raise RejectedError(DlqReason.BAD_JSON, f"{exc}") from None
            else:
                return self._csv_values(payload)
        return [f.ts, f.symbol, f.price, f.size, f.venue, f.trade_id, f.bid, f.ask]

    def _csv_values(self, payload: str) -> list[Any]:
        line = payload.rstrip("\r\n")
        try:
            cells = split_csv_line(line, self.config.csv_delimiter)
        except csv.Error as exc:
            raise RejectedError(DlqReason.BAD_CSV, f"unparseable CSV quoting: {exc}") from None
        if len(cells) != self._ncols:
            raise RejectedError(DlqReason.BAD_CSV, self.cell_count_detail(len(cells)))
        return fields_of_cells(cells, self._mapped)

    def cell_count_detail(self, got: int) -> str:
        return f"{got} cells, expected {self._ncols} {self.config.csv_columns}"

    def _parse_ts(self, raw: object) -> int:
        if raw is None or (type(raw) is str and not raw.strip()):  # type: ignore[attr-defined]
            raise RejectedError(DlqReason.BAD_TIMESTAMP, "ts is missing")
        try:
            return self.timestamps.parse(raw)
        except TimestampError as exc:
            raise RejectedError(DlqReason.BAD_TIMESTAMP, f"ts: {exc}") from None

    def _symbol(self, raw: object) -> str:
        if raw is None:
            if self.config.default_symbol is None:
                raise RejectedError(DlqReason.MISSING_FIELD,
                                    "symbol is missing (no default_symbol)")
            sym = self.config.default_symbol
        elif type(raw) is str:
            sym = raw.strip()  # type: ignore[attr-defined]
            if not sym:
                raise RejectedError(DlqReason.EMPTY_SYMBOL, f"symbol {raw!r} is blank")
        else:
            raise RejectedError(DlqReason.BAD_SCHEMA, f"symbol {raw!r} is not a string")
        problem = symbol_problem(sym, self.known)
        if problem is not None:
            raise RejectedError(*problem)
        return sym

    def _validate(self, vals: list[Any], ts: int, source: SourceRef) -> Tick:
        sym = self._symbol(vals[_SYMBOL])

        raw = vals[_PRICE]
        try:
            price = parse_number(raw)
        except ValueError:
            raise RejectedError(DlqReason.BAD_PRICE, f"price {raw!r} is not a number") from None
        if price is None:
            raise RejectedError(DlqReason.MISSING_FIELD, "price is missing")
        problem = price_problem(price)
        if problem:
            raise RejectedError(DlqReason.BAD_PRICE, f"price {raw!r} {problem}")

        raw = vals[_SIZE]
        try:
            size = parse_number(raw)
        except ValueError:
            raise RejectedError(DlqReason.BAD_SIZE, f"size {raw!r} is not a number") from None
        if size is None:
            raise RejectedError(DlqReason.MISSING_FIELD, "size is missing")
        problem = nonnegative_problem(size)
        if problem:
            raise RejectedError(DlqReason.BAD_SIZE, f"size {raw!r} {problem}")

        bid = None if vals[_BID] is None else _quote("bid", vals[_BID])
        ask = None if vals[_ASK] is None else _quote("ask", vals[_ASK])
        if bid is not None and ask is not None and bid > ask:
            raise RejectedError(DlqReason.CROSSED_QUOTE, f"bid {bid!r} > ask {ask!r}")

        return Tick(
            ts_event=ts,
            symbol=sym,
            venue=clean_venue(vals[_VENUE], self.config.default_venue),
            price=price,
            size=size + 0.0,  # -0.0 → 0.0: one canonical zero
            trade_id=clean_trade_id(vals[_TRADE_ID]),
            bid=bid,
            ask=ask,
            source=source,
        )


_INF = float("inf")
_BAD = object()


def _plain_quote(cell: str) -> object:
    """A quote cell as ``_quote`` reads it: None (blank), the value, or ``_BAD`` (a failure,
    left to the general path to name)."""
    q = cell.strip()
    if not q:
        return None
    if "_" in q or not q.isascii():
        return _BAD
    try:
        v = float(q)
    except ValueError:
        return _BAD
    return v if 0.0 <= v < _INF else _BAD


def _quote(name: str, raw: object) -> float | None:
    try:
        v = parse_number(raw)
    except ValueError:
        raise RejectedError(DlqReason.BAD_QUOTE, f"{name} {raw!r} is not a number") from None
    if v is not None:
        problem = nonnegative_problem(v)
        if problem:
            raise RejectedError(DlqReason.BAD_QUOTE, f"{name} {raw!r} {problem}")
    return v


__all__ = [
    "DEDUPE_WINDOW_NS",
    "MAX_FORWARD_JUMP_NS",
    "TICKS_TOPIC",
    "Normalize",
    "NormalizeConfig",
    "RawRecord",
]
