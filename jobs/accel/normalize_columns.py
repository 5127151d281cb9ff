"""Normalize over columns: every row of a tick file checked at once, same reasons per row.

Static checks (those that look at one record alone) run as numpy masks; a row they reject is
re-checked through ``Normalize.check`` on its raw text, which gives its dead letter the exact
detail (the columns cannot quote an unparseable cell) and proves the two agree. The stream
checks (a tick too far ahead of the watermark, then dedupe) depend on the rows before; they
walk the rows that passed every other check in input order, with the same functions the
operator calls (``tick_fields.is_implausible``, ``dedupe.admit``). Without trade ids one numpy
pass finds the first implausible row and only the rows after it (usually none) are walked.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from operators.contract import MIN_WATERMARK
from operators.domain.dedupe import DedupeState, admit, rejection_detail
from operators.domain.tick_fields import (
    clean_trade_id,
    clean_venue,
    implausible_detail,
    is_implausible,
    symbol_problem,
)
from operators.domain.timeparse import NAT
from operators.normalize import Normalize, RawRecord
from topics.dlq import DlqReason
from topics.messages import DeadLetter, SourceRef, Tick

REASONS: tuple[DlqReason, ...] = tuple(DlqReason)
"""Reason by array code: ``code = REASONS.index(r) + 1``; code 0 means valid."""

_CODE = {r: i + 1 for i, r in enumerate(REASONS)}


def reason_code(reason: DlqReason) -> int:
    """The uint8 code of a reason in ``ColumnsResult.codes`` (0 is "valid")."""
    return _CODE[reason]


@dataclass(frozen=True, slots=True, kw_only=True)
class RawTickColumns:
    """Pre-parsed cells of many records (``jobs.tick_files.load_tick_columns``).

    Sentinels instead of exceptions, so one bad cell never stops a batch:

    - ``ts``: int64 ns UTC; ``NAT`` (int64 min) where missing or unparseable;
    - ``price``/``size``/``bid``/``ask``: float64; NaN = absent, ``-inf`` = present but not
      a number (or the text "nan"); other non-finite or out-of-range values stay as parsed;
    - ``symbol_codes``: int32 index into ``symbol_names``; -1 = absent (``default_symbol``
      applies); names are trimmed by the validator, a blank name is ``EMPTY_SYMBOL``;
    - ``venue_codes``/``venue_names``: likewise (None: every row takes ``default_venue``);
    - ``trade_id``: per-row ``str | None`` (None: no id) or None when the source has none;
    - ``malformed``: rows that could not be split into the expected cells (``BAD_CSV``);
    - ``bad_encoding``: rows holding U+FFFD, an undecodable byte (``BAD_ENCODING``);
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
    bad_encoding: npt.NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        n = len(self.ts)
        arrays: dict[str, Any] = {
            "price": self.price, "size": self.size, "symbol_codes": self.symbol_codes,
            "line": self.line, "venue_codes": self.venue_codes, "trade_id": self.trade_id,
            "bid": self.bid, "ask": self.ask, "malformed": self.malformed,
            "bad_encoding": self.bad_encoding,
        }
        for name, arr in arrays.items():
            if arr is not None and len(arr) != n:
                raise ValueError(f"RawTickColumns.{name} has {len(arr)} rows, ts has {n}")
        if not callable(self.payload) and len(self.payload) != n:
            raise ValueError(f"RawTickColumns.payload has {len(self.payload)} rows, ts has {n}")
        if self.ts.dtype != np.int64:
            raise ValueError("RawTickColumns.ts must be int64 ns")
        if n and int(self.symbol_codes.max(initial=-1)) >= len(self.symbol_names):
            raise ValueError("symbol_codes index past symbol_names")
        if (self.venue_codes is not None and n
                and int(self.venue_codes.max(initial=-1)) >= len(self.venue_names)):
            raise ValueError("venue_codes index past venue_names")

    def __len__(self) -> int:
        return len(self.ts)

    def payload_of(self, i: int) -> str:
        p = self.payload
        return p(i) if callable(p) else p[i]

    def source_of(self, i: int) -> SourceRef:
        return SourceRef(file=self.file, line=int(self.line[i]))

    def select(self, mask: npt.NDArray[np.bool_]) -> RawTickColumns:
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
        return RawTickColumns(
            ts=self.ts[idx], price=self.price[idx], size=self.size[idx],
            symbol_codes=self.symbol_codes[idx], symbol_names=self.symbol_names,
            line=self.line[idx], payload=payload, file=self.file,
            venue_codes=None if self.venue_codes is None else self.venue_codes[idx],
            venue_names=self.venue_names,
            trade_id=None if self.trade_id is None else [self.trade_id[i] for i in rows],
            bid=None if self.bid is None else self.bid[idx],
            ask=None if self.ask is None else self.ask[idx],
            malformed=None if self.malformed is None else self.malformed[idx],
            bad_encoding=None if self.bad_encoding is None else self.bad_encoding[idx],
        )


@dataclass(frozen=True, slots=True)
class ColumnsResult:
    """What ``NormalizeColumns.validate`` returns.

    ``codes[i]`` is 0 for a valid row, else ``reason_code(reason)``; ``valid`` is
    ``codes == 0``; ``dead_letters`` are the rejected rows in input order; ``states`` is the
    dedupe state per symbol after the batch (pass it to the next batch or to the per-event
    operator to continue); ``max_seen`` the newest valid event time (the watermark's basis).
    """

    valid: npt.NDArray[np.bool_]
    codes: npt.NDArray[np.uint8]
    dead_letters: list[DeadLetter]
    states: dict[str, DedupeState]
    max_seen: int | None = None

    def reasons(self) -> list[DlqReason | None]:
        return [None if c == 0 else REASONS[c - 1] for c in self.codes.tolist()]


class NormalizeColumns:
    """The columnar twin of one ``Normalize`` operator (same config, same per-row logic)."""

    def __init__(self, op: Normalize) -> None:
        self.op = op
        self.config = op.config

    def validate(
        self,
        cols: RawTickColumns,
        states: MutableMapping[str, DedupeState] | None = None,
        *,
        lateness_ns: int | None = None,
        max_seen: int | None = None,
    ) -> ColumnsResult:
        """Validate many pre-parsed rows at once; same reasons as ``Normalize.process``.

        ``states`` (symbol → dedupe state) is updated in place when given, and ``max_seen``
        (the newest valid event time before this batch; None: none yet) carries the
        watermark, so batches and per-event processing can follow each other. The watermark
        before a row is ``max_seen - lateness_ns`` over the valid rows before it, what the
        runtime hands ``Normalize.process``; ``lateness_ns=None`` means no watermark at all
        (like driving the operator with ``SimpleContext()``): nothing is judged against one.
        """
        cfg = self.config
        n = len(cols)
        codes = np.zeros(n, np.uint8)

        def mark(mask: npt.NDArray[np.bool_], reason: DlqReason) -> None:
            codes[(codes == 0) & mask] = _CODE[reason]

        if cols.bad_encoding is not None:
            mark(cols.bad_encoding, DlqReason.BAD_ENCODING)
        if cols.malformed is not None:
            mark(cols.malformed, DlqReason.BAD_CSV)
        mark(cols.ts == NAT, DlqReason.BAD_TIMESTAMP)

        # symbols: decide once per distinct name, then broadcast by code
        names, sym_codes = self._symbols(cols)
        name_reason = np.zeros(len(names), np.uint8)
        for j, s in enumerate(names[:-1]):
            problem = symbol_problem(s, self.op.known)
            if problem is not None:
                name_reason[j] = _CODE[problem[0]]
        default = cfg.default_symbol
        if default is None:
            name_reason[-1] = _CODE[DlqReason.MISSING_FIELD]
        elif (problem := symbol_problem(default, self.op.known)) is not None:
            name_reason[-1] = _CODE[problem[0]]
        codes[:] = np.where(codes == 0, name_reason[sym_codes], codes)

        p = cols.price
        mark(np.isnan(p), DlqReason.MISSING_FIELD)
        mark(~(np.isfinite(p) & (p > 0)), DlqReason.BAD_PRICE)
        z = cols.size
        mark(np.isnan(z), DlqReason.MISSING_FIELD)
        mark(~(np.isfinite(z) & (z >= 0)), DlqReason.BAD_SIZE)
        for q in (cols.bid, cols.ask):
            if q is not None:
                mark(~np.isnan(q) & ~(np.isfinite(q) & (q >= 0)), DlqReason.BAD_QUOTE)
        if cols.bid is not None and cols.ask is not None:
            mark(cols.bid > cols.ask, DlqReason.CROSSED_QUOTE)  # NaN compares False

        static_codes = codes.copy()
        out_states: MutableMapping[str, DedupeState] = {} if states is None else states
        details: dict[int, str] = {}
        rows = np.flatnonzero(codes == 0)
        judged = lateness_ns is not None  # else no watermark: no row can be ahead of it
        lateness = lateness_ns or 0
        if cols.trade_id is None:
            k = self._first_implausible(cols.ts[rows], lateness, max_seen) if judged else len(rows)
            if k == len(rows):
                if len(rows):
                    newest = int(cols.ts[rows].max())
                    max_seen = newest if max_seen is None else max(max_seen, newest)
            else:
                if k:
                    before = int(cols.ts[rows[:k]].max())
                    max_seen = before if max_seen is None else max(max_seen, before)
                max_seen = self._in_order(cols, rows[k:], codes, details, lateness, max_seen,
                                          None)
        else:
            dedupe = (names, sym_codes, out_states, self._venue_table(cols))
            max_seen = self._in_order(cols, rows, codes, details, lateness if judged else None,
                                      max_seen, dedupe)

        dead = [self._dead_letter(cols, i, REASONS[codes[i] - 1], bool(static_codes[i]),
                                  details.get(i, ""))
                for i in np.flatnonzero(codes).tolist()]
        return ColumnsResult(codes == 0, codes, dead, dict(out_states), max_seen)

    def _symbols(self, cols: RawTickColumns) -> tuple[list[str], npt.NDArray[np.intp]]:
        """Trimmed names plus the default as the last entry; per-row index into them."""
        names = [s.strip() for s in cols.symbol_names]
        absent = len(names)
        names.append(self.config.default_symbol or "")
        return names, np.where(cols.symbol_codes < 0, absent, cols.symbol_codes)

    def _first_implausible(self, ts: npt.NDArray[np.int64], lateness: int,
                           max_seen: int | None) -> int:
        """Index of the first row too far ahead of the watermark, ``len(ts)`` if none.

        Rows before it are all valid, so the watermark is the running maximum: one numpy
        pass (in float, with a margin) finds candidates, exact integer arithmetic decides.
        """
        n = len(ts)
        if n == 0:
            return 0
        prev = np.empty(n, np.int64)
        prev[0] = ts[0] if max_seen is None else max_seen
        if n > 1:
            prev[1:] = np.maximum.accumulate(ts)[:-1]
        if max_seen is not None:
            np.maximum(prev, max_seen, out=prev)
        jump = self.config.max_forward_jump_ns
        ahead = ts.astype(np.float64) - (prev.astype(np.float64) - lateness)
        candidates = np.flatnonzero(ahead > jump - 1e6)
        for k in candidates.tolist():
            if (k or max_seen is not None) and int(ts[k]) - (int(prev[k]) - lateness) > jump:
                return int(k)
        return n

    def _in_order(self, cols: RawTickColumns, rows: npt.NDArray[np.intp],
                  codes: npt.NDArray[np.uint8], details: dict[int, str], lateness: int | None,
                  max_seen: int | None,
                  dedupe: tuple[list[str], npt.NDArray[np.intp], MutableMapping[str, DedupeState],
                                list[str]] | None) -> int | None:
        """The stream checks row by row, as ``Normalize.process`` makes them: too far ahead
        of the watermark (``lateness=None``: no watermark), then (with trade ids) dedupe.
        Returns the newest valid time."""
        cfg = self.config
        jump = cfg.max_forward_jump_ns
        window, max_ids = cfg.dedupe_window_ns, cfg.dedupe_max_ids
        imp = _CODE[DlqReason.IMPLAUSIBLE_TIME]
        m = max_seen
        for i, t in zip(rows.tolist(), cols.ts[rows].tolist(), strict=True):
            if (lateness is not None and m is not None
                    and is_implausible(t, m - lateness, jump, MIN_WATERMARK)):
                codes[i] = imp
                details[i] = implausible_detail(t, m - lateness, jump)
                continue
            if dedupe is not None:
                assert cols.trade_id is not None
                tid = clean_trade_id(cols.trade_id[i])
                if tid is not None:
                    names, sym_codes, states, venues = dedupe
                    sym = names[sym_codes[i]]
                    st = states.get(sym)
                    if st is None:
                        st = states[sym] = self.op.new_state(sym)
                    venue = self._venue_at(cols, venues, i)
                    rejected = admit(st, venue, tid, t, window_ns=window, max_ids=max_ids)
                    if rejected is not None:
                        codes[i] = _CODE[rejected]
                        details[i] = rejection_detail(rejected, st, tid, venue, sym, t, window)
                        continue
            if m is None or t > m:
                m = t
        return m

    def _venue_table(self, cols: RawTickColumns) -> list[str]:
        return [clean_venue(v, self.config.default_venue) for v in cols.venue_names]

    def _venue_at(self, cols: RawTickColumns, venues: list[str], i: int) -> str:
        if cols.venue_codes is None:
            return self.config.default_venue
        c = int(cols.venue_codes[i])
        return venues[c] if c >= 0 else self.config.default_venue

    def _dead_letter(self, cols: RawTickColumns, i: int, reason: DlqReason, static: bool,
                     detail: str) -> DeadLetter:
        rec = RawRecord(payload=cols.payload_of(i), source=cols.source_of(i))
        if static:
            # The record alone is invalid: its dead letter is the per-record check's, word for
            # word; the two implementations must agree on the reason.
            checked = self.op.check(rec)
            if not isinstance(checked, DeadLetter) or checked.reason != reason:
                got = checked.reason if isinstance(checked, DeadLetter) else "valid"
                raise AssertionError(f"{rec.source}: columns say {reason}, the record {got}")
            return checked
        return self.op.dead_letter(int(cols.ts[i]), reason, detail, rec)

    def ticks(self, cols: RawTickColumns, valid: npt.NDArray[np.bool_]) -> list[Tick]:
        """Materialize the valid rows as ``Tick`` messages (what ``process`` would emit).

        Column-wise: every per-row value is looked up with numpy first, so the loop only
        builds the two structs per row (this is most of the batched replay's cost).
        """
        return self.ticks_at(cols, np.flatnonzero(valid))

    def ticks_at(self, cols: RawTickColumns, idx: npt.NDArray[np.intp]) -> list[Tick]:
        """The rows ``idx`` (valid ones) as ``Tick`` messages: :meth:`ticks` for some rows."""
        f = self.tick_fields(cols, idx)
        file = f.file
        return [
            Tick(ts_event=t, symbol=sy, venue=ve, price=p, size=z, trade_id=tid, bid=b, ask=a,
                 source=SourceRef(file=file, line=ln))
            for t, sy, ve, p, z, tid, b, a, ln in zip(
                f.ts, f.symbol, f.venue, f.price, f.size, f.trade_id, f.bid, f.ask, f.line,
                strict=True)
        ]

    def tick_lines(self, cols: RawTickColumns) -> bytes:
        """Every row of ``cols`` (valid ones) as the JSON lines of its ``Tick`` message, byte
        for byte what ``msgspec.json`` writes for the messages :meth:`ticks` builds, without
        building them: a chunk's ``md.ticks`` file text (the batched replay's largest cost
        when it writes topic files was building and encoding those messages).

        Numbers take msgspec's own text (one encode of each column as a list, split on the
        commas); the rows are put together by numpy's byte-string ``add`` over columns, and
        the padding of its fixed-width result (NUL bytes, which JSON text never holds raw)
        is dropped.
        """
        n = len(cols)
        if n == 0:
            return b""
        cfg = self.config
        enc = msgspec.json.encode

        def numbers(v: npt.NDArray[Any] | list[Any]) -> npt.NDArray[np.bytes_]:
            text = enc(v.tolist() if isinstance(v, np.ndarray) else v)
            return np.array(text[1:-1].split(b","), dtype=np.bytes_)

        def few(v: npt.NDArray[np.float64]) -> npt.NDArray[np.bytes_]:
            # prices and sizes take few distinct values: encode each bit pattern once
            bits, inverse = np.unique(v.view(np.int64), return_inverse=True)
            out: npt.NDArray[np.bytes_] = numbers(bits.view(np.float64))[inverse]
            return out

        def table(names: list[str], codes: npt.NDArray[np.int32], default: str
                  ) -> npt.NDArray[np.bytes_]:
            encoded = np.array([enc(s) for s in [*names, default]], dtype=np.bytes_)
            out: npt.NDArray[np.bytes_] = encoded[np.where(codes >= 0, codes, len(names))]
            return out

        def quotes(col: npt.NDArray[np.float64] | None) -> npt.NDArray[np.bytes_] | bytes:
            if col is None:
                return b"null"
            obj = col.astype(object)
            obj[np.isnan(col)] = None
            return numbers(obj.tolist())

        symbols = table([s.strip() for s in cols.symbol_names], cols.symbol_codes,
                        cfg.default_symbol or "")
        venues: npt.NDArray[np.bytes_] | bytes = (
            enc(cfg.default_venue) if cols.venue_codes is None
            else table(self._venue_table(cols), cols.venue_codes, cfg.default_venue))
        trade_ids: npt.NDArray[np.bytes_] | bytes = (
            b"null" if cols.trade_id is None
            else np.array([enc(clean_trade_id(t)) for t in cols.trade_id], dtype=np.bytes_))
        source = b'"source":{' + (b"" if cols.file is None else
                                  b'"file":' + enc(cols.file) + b",") + b'"line":'
        parts: list[npt.NDArray[np.bytes_] | bytes] = [
            b'{"ts_event":', numbers(cols.ts), b',"schema_version":1,"symbol":',
            symbols, b',"venue":', venues, b',"price":', few(cols.price),
            b',"size":', few(cols.size + 0.0), b',"trade_id":', trade_ids, b',"bid":',
            quotes(cols.bid), b',"ask":', quotes(cols.ask), b"," + source,
            numbers(cols.line), b"}}\n"]
        # constants next to each other are one piece; then one add per column
        merged: list[npt.NDArray[np.bytes_] | bytes] = []
        for p in parts:
            if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
                merged[-1] = merged[-1] + p
            else:
                merged.append(p)
        # pairwise, so each byte is copied about log2(pieces) times rather than once per
        # piece after it
        while len(merged) > 1:
            merged = [np.strings.add(merged[k], merged[k + 1]) if k + 1 < len(merged)
                      else merged[k] for k in range(0, len(merged), 2)]
        out = merged[0]
        assert isinstance(out, np.ndarray)
        return out.tobytes().replace(b"\x00", b"")

    def tick_fields(self, cols: RawTickColumns, idx: npt.NDArray[np.intp]) -> TickFields:
        """The rows ``idx`` (valid ones) as the fields of their ``Tick`` messages, one list
        per field: the batched chain keeps a chunk's and builds only the ticks it needs."""
        cfg = self.config
        n = idx.size
        sym_table = np.array([s.strip() for s in cols.symbol_names] + [cfg.default_symbol or ""],
                             dtype=object)
        codes = cols.symbol_codes[idx]
        symbols = sym_table[np.where(codes >= 0, codes, len(sym_table) - 1)].tolist()
        if cols.venue_codes is None:
            venues: list[str] = [cfg.default_venue] * n
        else:
            ven_table = np.array([*self._venue_table(cols), cfg.default_venue], dtype=object)
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

        trade_ids: list[str | None] = (
            [clean_trade_id(cols.trade_id[i]) for i in idx.tolist()]
            if cols.trade_id is not None else [None] * n)
        sizes = (cols.size[idx] + 0.0).tolist()  # + 0.0: -0.0 becomes 0.0 as in process()
        return TickFields(ts=cols.ts[idx].tolist(), symbol=symbols, venue=venues,
                          price=cols.price[idx].tolist(), size=sizes, trade_id=trade_ids,
                          bid=quotes(cols.bid), ask=quotes(cols.ask),
                          line=cols.line[idx].tolist(), file=cols.file)


@dataclass(frozen=True, slots=True)
class TickFields:
    """Rows' ``Tick`` fields as Python lists (``NormalizeColumns.tick_fields``)."""

    ts: list[int]
    symbol: list[str]
    venue: list[str]
    price: list[float]
    size: list[float]
    trade_id: list[str | None]
    bid: list[float | None]
    ask: list[float | None]
    line: list[int]
    file: str | None

    def tick(self, k: int) -> Tick:
        """Row ``k``'s message, as ``ticks_at`` builds it."""
        return Tick(ts_event=self.ts[k], symbol=self.symbol[k], venue=self.venue[k],
                    price=self.price[k], size=self.size[k], trade_id=self.trade_id[k],
                    bid=self.bid[k], ask=self.ask[k],
                    source=SourceRef(file=self.file, line=self.line[k]))


__all__ = [
    "REASONS",
    "ColumnsResult",
    "NormalizeColumns",
    "RawTickColumns",
    "TickFields",
    "reason_code",
]
