"""The account operator: pre-trade gate, execution, venue, ledger and session roll composed.

Keyed by account (several accounts with their own limits in one run, ``AccountSpec``). Inputs:
sized intents (``orders.intents``), the account's trades and commands (``account.feed``, from
``operators.account_feed``) and a live venue's reports (``venue.reports``). Closing the loop
in one operator keeps fills as state changes in event-time order (DESIGN.md §Time).

The parts are domain libraries wired here: ``risk_gate`` (every rule on a parent, the child
rules on each child at release; a denial emits ``risk.rejects``, a denied child cancels its
parent), ``execution`` (schedules, VWAP profile), ``venue`` (the simulated venue answers
inside this step, a live one on ``venue.reports``), ``ledger`` and ``sessions``.

Inputs wait until the watermark passes them and are released in ``(ts, kind, symbol,
arrival)`` order, commands before venue reports before trades before intents at equal time,
whatever the runtime's interleaving (``process`` and ``_take_due``). Every decision emits
one ``audit.decisions`` record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import time
from itertools import pairwise
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import numpy.typing as npt

from operators.account_records import (
    cancel_record,
    decision_record,
    fill_record,
    order_record,
    parent_reject_record,
    position_record,
)
from operators.contract import END_OF_STREAM, MIN_WATERMARK, Context, Emit, Operator
from operators.domain import ledger as lg
from operators.domain.execution import (
    Child,
    ExecConfig,
    ExecState,
    releases,
    schedule,
    track_volume,
    unrouted,
    volume_profile,
)
from operators.domain.limits import AccountSpec
from operators.domain.money import SCALE
from operators.domain.risk_gate import (
    check_child,
    check_order,
    risk_check_flags,
    to_reject,
    trip_reduce_only,
)
from operators.domain.risk_rules import DAILY_LOSS_LIMIT, OrderProposal
from operators.domain.sessions import next_session
from operators.domain.venue import ExternalVenue, SimulatedVenue, Venue, VenueBook
from operators.event_buffer import Buffered, take_due
from topics import names as tn
from topics.messages import (
    AccountFeed,
    Control,
    OrderIntent,
    Reason,
    Side,
    Tick,
    VenueReport,
)

_CONTROL, _REPORT, _TICK, _INTENT = 0, 1, 2, 3

AccountInput = AccountFeed | OrderIntent | VenueReport


class AccountOpConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    accounts: tuple[AccountSpec, ...] = (AccountSpec(),)
    instruments: dict[str, lg.InstrumentSpec]
    execution: ExecConfig = ExecConfig()
    venue: Literal["simulated", "external"] = "simulated"
    session_start: str = "17:00"
    session_tz: str = "America/Chicago"
    resize_to_allowed: bool = True

    def __post_init__(self) -> None:
        if not self.accounts:
            raise ValueError("at least one account is needed")
        names = [a.name for a in self.accounts]
        if len(set(names)) != len(names):
            raise ValueError(f"account names must be unique, got {names}")
        for sym, spec in self.instruments.items():
            if sym != spec.symbol:
                raise ValueError(f"instrument key {sym!r} != spec symbol {spec.symbol!r}")
        for a in self.accounts:
            unknown = [s for s in a.symbols if s not in self.instruments]
            if unknown:
                raise ValueError(f"account {a.name!r} trades {unknown}, which the instrument "
                                 "master does not list")
        try:
            ZoneInfo(self.session_tz)
        except Exception as exc:
            raise ValueError(f"unknown session_tz {self.session_tz!r}") from exc
        try:
            time.fromisoformat(self.session_start)
        except ValueError as exc:
            raise ValueError(f"session_start must be HH:MM, got {self.session_start!r}") from exc


class AccountOpState(msgspec.Struct, kw_only=True):
    account: str
    ledger: lg.AccountState
    execution: ExecState = msgspec.field(default_factory=ExecState)
    venue: VenueBook = msgspec.field(default_factory=VenueBook)
    buffer: list[Buffered] = []
    seq: int = 0
    timer_ts: int = MIN_WATERMARK
    """Event time of the pending timer the newest buffered input registered."""
    next_session_ts: int = 0
    counters: dict[str, int] = {}
    last_ts: int = 0  # newest event time released (stamps the end-of-stream marks)


@dataclass(frozen=True, slots=True)
class QuietTicks:
    """One account's trades in the order its buffer releases them, as columns.

    What the batched replay hands :meth:`AccountOperator.quiet_ticks` for a stretch where
    the account has no child orders and buffers no trades: ``symbol``
    holds codes into ``symbols``; ``tick_at(k)`` builds row ``k``'s ``Tick`` for the rows
    that need the per-event code (a session roll, a possible daily-loss trip).
    """

    ts: npt.NDArray[np.int64]
    price: npt.NDArray[np.float64]
    size: npt.NDArray[np.float64]
    symbol: npt.NDArray[np.integer[Any]]
    symbols: tuple[str, ...]
    tick_at: Callable[[int], Tick]


def _bump(state: AccountOpState, name: str, n: int = 1) -> None:
    state.counters[name] = state.counters.get(name, 0) + n


class AccountOperator(Operator[AccountOpState, AccountInput]):
    UID = "account"
    STATE_VERSION = 2
    State = AccountOpState

    def __init__(self, config: AccountOpConfig) -> None:
        self.config = config
        self._tz = ZoneInfo(config.session_tz)
        self._session_time = time.fromisoformat(config.session_start)
        self._accounts = {a.name: a for a in config.accounts}
        self._venues: dict[str, Venue] = {
            a.name: (SimulatedVenue(a.name, config.execution, config.instruments, a.settings)
                     if config.venue == "simulated" else ExternalVenue())
            for a in config.accounts}
        self._track_volume = config.execution.track_volume

    # -- contract ---------------------------------------------------------------------------
    def key(self, event: AccountInput) -> str:
        return event.account

    def new_state(self, key: str) -> AccountOpState:
        spec = self._accounts.get(key)
        if spec is None:
            raise ValueError(f"account {key!r} is not configured "
                             f"(configured: {sorted(self._accounts)})")
        ledger = lg.new_account(spec.settings)
        for ins in sorted(self.config.instruments.values(), key=lambda s: s.symbol):
            if spec.trades(ins.symbol):
                lg.register_instrument(ledger, ins)
        return AccountOpState(account=key, ledger=ledger)

    def on_timer(
        self, state: AccountOpState, ts: int, ctx: Context
    ) -> tuple[AccountOpState, list[Emit]]:
        out: list[Emit] = []
        ex = state.execution
        for b in self._take_due(state, ts):
            if b.ts > state.last_ts:
                state.last_ts = b.ts
            if b.rank == _TICK:  # a run of trades: each one as if buffered alone
                for t in b.ticks:
                    if ex.children:
                        self._advance(state, b.ts, out, ctx)
                    self._on_tick(state, t, out)
                continue
            if ex.children:
                self._advance(state, b.ts, out, ctx)
            if b.intent is not None:
                self._on_intent(state, b.intent, out, ctx)
            elif b.control is not None:
                self._on_control(state, b.control, out)
            elif b.report is not None:
                self._check_loss(state, b.report.symbol,
                                 self._apply_reports(state, [b.report], out))
        if ts == END_OF_STREAM:
            self._end(state, out)
        elif ex.children:
            self._advance(state, ts, out, ctx)
        return state, out

    # -- event-time buffering (the runtime core's multi-input merge will take this over) ----
    def process(
        self, state: AccountOpState, event: AccountInput, ctx: Context
    ) -> tuple[AccountOpState, list[Emit]]:
        """Hold an input until the watermark passes it (a timer at its event time).

        Consecutive trades of one symbol at one event time share a buffered item (they would
        be released one after another anyway): one allocation and one sort key per run.
        """
        if type(event) is AccountFeed:
            t = event.tick
            if t is not None:
                buf = state.buffer
                if buf:
                    last = buf[-1]
                    if last.rank == _TICK and last.ts == t.ts_event and last.symbol == t.symbol:
                        last.ticks.append(t)  # its timer is pending
                        return state, []
                item = Buffered(ts=t.ts_event, rank=_TICK, symbol=t.symbol, seq=state.seq,
                                ticks=[t])
            else:
                c = event.control
                assert c is not None, "an account.feed record holds a tick or a control"
                item = Buffered(ts=c.ts_event, rank=_CONTROL, symbol=c.symbol or "",
                                seq=state.seq, control=c)
        elif isinstance(event, OrderIntent):
            item = Buffered(ts=event.ts_event, rank=_INTENT, symbol=event.symbol,
                            seq=state.seq, intent=event)
        else:
            assert isinstance(event, VenueReport)
            item = Buffered(ts=event.ts_event, rank=_REPORT, symbol=event.symbol,
                            seq=state.seq, report=event)
        state.seq += 1
        state.buffer.append(item)
        if item.ts != state.timer_ts:  # inputs at one event time share a timer
            ctx.register_timer(item.ts)
            state.timer_ts = item.ts
        if state.seq == 1:  # once per key (checkpoints keep timers): the final marks
            ctx.register_timer(END_OF_STREAM)
        return state, []

    @staticmethod
    def _take_due(state: AccountOpState, ts: int) -> list[Buffered]:
        """The buffered inputs with event time <= ``ts``, in release order."""
        if ts >= state.timer_ts:  # timers fire in time order: the input timer has fired
            state.timer_ts = MIN_WATERMARK
        due, state.buffer = take_due(state.buffer, ts)
        return due

    # -- time-driven work: expiring working children, releasing scheduled ones ---------------
    def _advance(self, state: AccountOpState, now: int, out: list[Emit], ctx: Context) -> None:
        ex = state.execution
        if not ex.children:
            return
        if state.venue.working:
            reports = self._venues[state.account].expire(state.venue, now)
            if reports:
                self._apply_reports(state, reports, out)
        cancelled: set[str] = set()
        for c in releases(ex.children, now, cancelled):
            sent_at = max(c.release_ts, now)  # an iceberg clip goes out when its predecessor ends
            if not self._child_passes(state, c, sent_at, out):
                cancelled.add(c.parent_order_id)  # its other due slices went with it
                continue
            self._send(state, c, sent_at, out, ctx)

    def _child_passes(self, state: AccountOpState, c: Child, now: int, out: list[Emit]
                      ) -> bool:
        """The child rules at release; a denial cancels the parent with one reject."""
        led = state.ledger
        order = OrderProposal(c.symbol, c.side, c.remaining, c.reference_price, now)
        decision = check_child(order, led, self._accounts[state.account].limits,
                               self._spec(c.symbol),
                               unrouted=unrouted(state.execution.children, c.symbol, c.side))
        if decision.approved:
            return True
        self._cancel_parent(state, c, decision.reasons, out, now)
        return False

    def _send(self, state: AccountOpState, c: Child, sent_at: int, out: list[Emit],
              ctx: Context) -> None:
        cfg = self.config.execution
        account = state.account
        c.sent = True
        expires_at = sent_at + cfg.child_ttl_ns
        ctx.register_timer(expires_at)
        order = order_record(c, account, sent_at, cfg, self._venue(c.symbol))
        out.append(Emit(tn.ORDERS, account, order))
        _bump(state, "child_orders")
        reports = self._venues[account].send(state.venue, order, expires_at)
        if reports:
            self._apply_reports(state, reports, out)

    # -- cancelling ---------------------------------------------------------------------------
    def _cancel(self, state: AccountOpState, victims: list[Child], why: str, now: int,
                out: list[Emit]) -> float:
        """Cancel ``victims``; returns their unfilled quantity.

        A scheduled child just goes; a working one is cancelled at its venue (the simulated
        venue confirms at once, a live one later: the child keeps its working quantity and
        is marked ``cancelling`` until the venue reports it done).
        """
        venue = self._venues[state.account]
        total = 0.0
        for c in victims:
            if c.cancelling:
                continue
            total += c.remaining
            _bump(state, f"children_{why}")
            if not c.sent:
                self._drop(state, c)
                continue
            reports = venue.cancel(state.venue, c.client_order_id, now, why)
            if venue.external:
                c.cancelling = True
                out.append(Emit(tn.ORDERS_CANCELS, state.account, cancel_record(
                    c, state.account, now, self._venue(c.symbol), why)))
            if reports:
                self._apply_reports(state, reports, out)
        return total

    def _cancel_parent(self, state: AccountOpState, first: Child, reasons: tuple[Reason, ...],
                       out: list[Emit], now: int) -> None:
        """Cancel every unsent and working child of ``first``'s parent, with one reject."""
        pid = first.parent_order_id
        victims = [c for c in state.execution.children if c.parent_order_id == pid]
        cancelled = self._cancel(state, victims, "cancelled", now, out)
        out.append(Emit(tn.RISK_REJECTS, state.account,
                        parent_reject_record(first, state.account, now, cancelled, reasons)))

    @staticmethod
    def _drop(state: AccountOpState, c: Child) -> None:
        """Forget a child that is done, releasing the working quantity it still held."""
        if c.remaining > 0:
            lg.add_working(state.ledger, c.symbol, c.side, -c.remaining)
        children = state.execution.children
        for i, o in enumerate(children):
            if o is c:
                del children[i]  # in place: ``releases`` is reading this list
                break

    # -- venue reports --------------------------------------------------------------------------
    def _apply_reports(self, state: AccountOpState, reports: list[VenueReport],
                       out: list[Emit]) -> bool:
        """Apply a venue's reports in order; True if anything filled."""
        filled = False
        for r in reports:
            kind = r.kind
            if kind == "ACK":
                _bump(state, "acks")
                continue
            child = next((c for c in state.execution.children
                          if c.client_order_id == r.client_order_id and c.sent), None)
            if child is None:  # e.g. a late report of a child already done
                _bump(state, "unknown_reports")
                continue
            if kind == "FILL":
                self._on_fill(state, child, r, out)
                filled = True
            else:
                self._drop(state, child)
                if kind != "CANCELLED":  # a requested cancel was counted when it was asked
                    _bump(state, f"children_{kind.lower()}")
        return filled

    def _on_fill(self, state: AccountOpState, c: Child, r: VenueReport, out: list[Emit]
                 ) -> None:
        spec = self._spec(r.symbol)
        c.filled += r.quantity
        if c.remaining <= 0:
            self._drop(state, c)
        lg.apply_fill(state.ledger, r.symbol, c.side, r.quantity, r.price, r.fee,
                      spec.multiplier, spec.group)
        _bump(state, "fills")
        out.append(Emit(tn.FILLS, state.account, fill_record(r, c, state.account)))
        out.append(self._position(state, r.symbol, r.ts_event, "fill"))

    # -- inputs -------------------------------------------------------------------------------
    def _on_control(self, state: AccountOpState, c: Control, out: list[Emit]) -> None:
        led = state.ledger
        children = state.execution.children
        if c.command == "KILL":
            lg.set_halted(led, True, c.reason or "manual")
            self._cancel(state, list(children), "cancelled", c.ts_event, out)
        elif c.command == "RESET":
            lg.set_halted(led, False)
        elif c.command == "HALT_SYMBOL" and c.symbol:
            lg.set_symbol_halted(led, c.symbol, True, c.reason or "manual")
            self._cancel(state, [o for o in children if o.symbol == c.symbol], "cancelled",
                         c.ts_event, out)
        elif c.command == "RESUME_SYMBOL" and c.symbol:
            lg.set_symbol_halted(led, c.symbol, False)
        _bump(state, f"control_{c.command.lower()}")

    def _on_tick(self, state: AccountOpState, t: Tick, out: list[Emit]) -> None:
        if t.ts_event >= state.next_session_ts:
            self._roll_session(state, t.ts_event)
        prices = state.ledger.last_prices
        moved = prices.get(t.symbol) != t.price
        prices[t.symbol] = t.price  # ledger.mark
        if self._track_volume:
            track_volume(state.execution.volumes, t.symbol, t.ts_event, t.size,
                         self.config.execution)
        filled = False
        if state.venue.working:
            reports = self._venues[state.account].on_tick(state.venue, t)
            if reports:
                filled = self._apply_reports(state, reports, out)
        if moved or filled:  # equity changes only through marks and fills
            self._check_loss(state, t.symbol, filled)

    # -- the batched replay's quiet stretches -------------------------------------------------
    def quiet_until(self, state: AccountOpState) -> int | None:
        """Until when trades alone would emit nothing, or None if they might now.

        Quiet means no child orders (so nothing working at the venue, no release or expiry
        due) and the final-marks timer set; the answer is the earliest event time of a
        buffered command or intent, before which trades are released on their own
        (``END_OF_STREAM`` if none is buffered).
        """
        if state.execution.children or state.venue.working or state.seq == 0:
            return None
        until = END_OF_STREAM
        for b in state.buffer:
            if b.rank != _TICK and b.ts < until:
                until = b.ts
        return until

    @staticmethod
    def take_released_ticks(state: AccountOpState, watermark: int) -> list[Tick]:
        """Take the buffered trades a watermark at ``watermark`` releases, in arrival order
        (for :meth:`quiet_ticks`, which applies them in release order)."""
        out: list[Tick] = []
        kept: list[Buffered] = []
        for b in state.buffer:
            if b.rank == _TICK and b.ts <= watermark:
                out.extend(b.ticks)
            else:
                kept.append(b)
        state.buffer = kept
        return out

    def quiet_ticks(self, state: AccountOpState, run: QuietTicks) -> None:
        """Apply a run of trades to a quiet account (:meth:`quiet_until`), released by
        watermarks before the ``until`` time: what ``process`` and ``on_timer`` do per trade,
        over columns.

        Between the trades that need it, a trade only moves a mark (and a VWAP volume
        bucket): marks are the last price per symbol, volumes are summed in order. A session
        roll and every trade that might trip the daily loss (a price move of an open
        position whose equity comes near the limit) run through ``_on_tick`` itself, so the
        semantics stay in one place; the rows before them are applied first.
        """
        n = len(run.ts)
        if n == 0:
            return
        led = state.ledger
        pos = 0
        while pos < n:
            later = np.flatnonzero(run.ts[pos:] >= state.next_session_ts)
            end = n if later.size == 0 else pos + int(later[0])
            if end > pos and not led.reduce_only:
                cand = self._loss_candidate(state, run, pos, end)
                if cand is not None:
                    end = cand
            if end > pos:
                self._marks(state, run, pos, end)
            if end == n:
                break
            out: list[Emit] = []
            self._on_tick(state, run.tick_at(end), out)
            if out:
                raise AssertionError("a trade of a quiet account emitted output")
            pos = end + 1
        last = int(run.ts.max())
        if last > state.last_ts:
            state.last_ts = last
        state.timer_ts = MIN_WATERMARK  # the trades' timers have fired

    def _marks(self, state: AccountOpState, run: QuietTicks, a: int, b: int) -> None:
        """Rows ``[a, b)``, none of which rolls the session or trips the loss: marks and
        volumes only."""
        codes = run.symbol[a:b]
        prices = state.ledger.last_prices
        first = int(codes[0])
        if codes[-1] == first and (codes == first).all():
            present = [(first, b - 1)]
        else:
            rev = codes[::-1]
            uniq, at = np.unique(rev, return_index=True)
            present = [(int(c), b - 1 - int(k)) for c, k in zip(uniq, at, strict=True)]
        for code, last in present:
            prices[run.symbols[code]] = float(run.price[last])
        if not self._track_volume:
            return
        cfg = self.config.execution
        vols = state.execution.volumes
        for code, _ in present:
            rows = a + np.flatnonzero(codes == code) if len(present) > 1 else np.arange(a, b)
            sym = run.symbols[code]
            ts, size = run.ts[rows], run.size[rows]
            starts = ts - ts % cfg.slice_interval_ns
            vb = vols.get(sym)
            if (vb is not None and int(starts[0]) < vb.start) or (np.diff(starts) < 0).any():
                for t, z in zip(ts.tolist(), size.tolist(), strict=True):  # out of order
                    track_volume(vols, sym, t, z, cfg)
                continue
            # one ``track_volume`` per bucket opens it; its other trades add in order
            heads = np.flatnonzero(np.diff(starts, prepend=starts[0] - 1))
            bounds = [*heads.tolist(), len(rows)]
            for h, nxt in pairwise(bounds):
                track_volume(vols, sym, int(ts[h]), float(size[h]), cfg)
                if nxt - h > 1:
                    vb = vols[sym]
                    if vb.start == int(starts[h]):
                        acc = np.cumsum(np.concatenate(([vb.current], size[h + 1:nxt])))
                        vb.current = float(acc[-1])

    def _loss_candidate(self, state: AccountOpState, run: QuietTicks, a: int, b: int
                        ) -> int | None:
        """The first row in ``[a, b)`` whose loss check might trip (approximately, with a
        margin far above rounding: the exact check runs on it), or None."""
        led = state.ledger
        open_pos = {s: p for s, p in led.positions.items() if p.quantity != 0.0}
        if not open_pos:
            return None
        codes = run.symbol[a:b]
        index = {s: k for k, s in enumerate(run.symbols)}
        m = b - a
        equity = np.full(m, lg.equity(led) - led.start_equity)
        checked = np.zeros(m, dtype=bool)
        scale = 0.0
        for sym, p in open_pos.items():
            code = index.get(sym)
            if code is None:
                continue
            rows = np.flatnonzero(codes == code)
            if rows.size == 0:
                continue
            px = run.price[a + rows]
            before = led.last_prices.get(sym)
            prev = np.concatenate(([np.nan if before is None else before], px[:-1]))
            checked[rows[px != prev]] = True
            base = p.cost_units / SCALE if before is None else p.quantity * before * \
                p.multiplier
            value = np.full(m, base)
            last = np.maximum.accumulate(np.where(codes == code, np.arange(m), -1))
            has = last >= 0
            value[has] = p.quantity * run.price[a + last[has]] * p.multiplier
            equity += value - base
            scale += abs(base) + float(np.abs(value).max())
        if not checked.any():
            return None
        limit = self._accounts[state.account].limits.daily_loss_limit
        margin = 1e-9 * (scale + abs(led.start_equity)) + 1e-6
        hit = np.flatnonzero(checked & (equity <= -limit * led.start_equity + margin))
        return a + int(hit[0]) if hit.size else None

    def _check_loss(self, state: AccountOpState, symbol: str, filled: bool) -> None:
        """Equity moves only through fills and marks of open positions: check the loss then
        (``trip_reduce_only`` spelt out: it runs on most trades of an open position)."""
        led = state.ledger
        if led.reduce_only:
            return
        if not filled:
            pos = led.positions.get(symbol)
            if pos is None or pos.quantity == 0.0:
                return
        limit = self._accounts[state.account].limits.daily_loss_limit
        if lg.equity(led) - led.start_equity <= -limit * led.start_equity:
            lg.set_reduce_only(led, True, DAILY_LOSS_LIMIT)
            _bump(state, "reduce_only_trips")

    def _on_intent(
        self, state: AccountOpState, it: OrderIntent, out: list[Emit], ctx: Context
    ) -> None:
        led = state.ledger
        account = state.account
        limits = self._accounts[account].limits
        spec = self._spec(it.symbol)
        # A new target supersedes the execution of earlier ones in this symbol: cancel their
        # unsent slices and working remainders, so two parents never trade against each other.
        ex = state.execution
        if any(c.symbol == it.symbol for c in ex.children):
            self._cancel(state, [c for c in ex.children if c.symbol == it.symbol],
                         "superseded", it.ts_event, out)
        pos = lg.position(led, it.symbol)
        current = pos.quantity + pos.working_buy - pos.working_sell
        if ex.children:  # a live venue's cancels in flight: aim as if they succeed
            current -= sum(c.remaining if c.side == "BUY" else -c.remaining
                           for c in ex.children if c.cancelling and c.symbol == it.symbol)
        delta = it.target_position - current
        lots = math.floor(abs(delta) / spec.lot_size + 1e-9)
        action: Literal["BUY", "SELL", "HOLD"] = "HOLD"
        qty = 0.0
        flags: dict[str, bool] = {}
        order_ids: tuple[str, ...] = ()
        if lots > 0:
            side: Side = "BUY" if delta > 0 else "SELL"
            action = side
            requested = lots * spec.lot_size
            price = led.last_prices.get(it.symbol, it.reference_price)
            proposal = OrderProposal(it.symbol, side, requested, price, it.ts_event)
            decision = check_order(proposal, led, limits, spec)
            flags = risk_check_flags(decision)
            if decision.daily_loss_breached and trip_reduce_only(led, limits):
                _bump(state, "reduce_only_trips")
            if decision.approved:
                qty = requested
            else:
                _bump(state, "rejects")
                out.append(Emit(tn.RISK_REJECTS, account, to_reject(
                    decision, proposal, decision_id=it.decision_id, account=account)))
                if self.config.resize_to_allowed and decision.allowed_quantity >= spec.lot_size:
                    qty = decision.allowed_quantity
            if qty > 0:
                lg.record_order(led, it.ts_event, limits)
                lg.add_working(led, it.symbol, side, qty)
                children = schedule(
                    algo=it.algo,
                    decision_id=it.decision_id,
                    symbol=it.symbol,
                    side=side,
                    quantity=qty,
                    ts=it.ts_event,
                    reference_price=price,
                    lot=spec.lot_size,
                    tick_size=spec.tick_size,
                    cfg=self.config.execution,
                    volume_profile=volume_profile(ex.volumes, it.symbol),
                )
                ex.children.extend(children)
                order_ids = tuple(c.client_order_id for c in children)
                for c in children:
                    if c.release_ts > it.ts_event:
                        ctx.register_timer(c.release_ts)
                _bump(state, "parent_orders")
                self._advance(state, it.ts_event, out, ctx)
        _bump(state, "decisions")
        out.append(Emit(tn.AUDIT_DECISIONS, it.decision_id,
                        decision_record(it, action, qty, flags, order_ids)))
        out.append(self._position(state, it.symbol, it.ts_event, "decision"))

    def _end(self, state: AccountOpState, out: list[Emit]) -> None:
        """End of stream: working children expire; every position is marked a last time."""
        self._cancel(state, list(state.execution.children), "expired", state.last_ts, out)
        state.execution.children = []
        for sym in sorted(state.ledger.positions):
            if sym in state.ledger.last_prices:
                out.append(self._position(state, sym, state.last_ts, "end"))

    # -- helpers ------------------------------------------------------------------------------
    def _spec(self, symbol: str) -> lg.InstrumentSpec:
        spec = self.config.instruments.get(symbol)
        if spec is None:
            raise ValueError(f"{symbol}: not in the account's instrument master")
        return spec

    def _venue(self, symbol: str) -> str:
        """The venue a child in ``symbol`` goes to: the instrument master's, else the default."""
        spec = self.config.instruments.get(symbol)
        if spec is not None and spec.venue:
            return spec.venue
        return self.config.execution.venue

    def _position(
        self, state: AccountOpState, symbol: str, ts: int, cause: Literal["fill", "decision", "end"]
    ) -> Emit:
        return Emit(tn.POSITIONS, state.account,
                    position_record(state.ledger, state.account, symbol, ts, cause))

    def _roll_session(self, state: AccountOpState, ts: int) -> None:
        state.next_session_ts, session_id = next_session(ts, self._tz, self._session_time)
        lg.start_session(state.ledger, session_id)
        _bump(state, "sessions")

