"""The account operator: pre-trade check, routing and the paper broker in one keyed step.

Keyed by account, with three inputs: sized intents (``orders.intents``), market data
(``md.ticks``) and operator commands (``control``). Closing the loop inside one operator keeps
fills as internal state changes in event-time order; no cycle crosses a topic (DESIGN.md
§Time). Inputs are buffered and released by event time when the watermark passes them, in
``(ts, kind, symbol, arrival)`` order with control before ticks before intents at equal time,
so the result does not depend on how the runtime interleaved the inputs.

Every child order passes the risk gate: the parent through every rule of
``operators.domain.risk_rules`` (a denial emits ``risk.rejects`` with all failing codes and the
allowed quantity, which is traded instead when ``resize_to_allowed``), each child again at
release through the state-dependent rules (kill switch, symbol halt, reduce-only). Every
decision emits one ``audit.decisions`` record.
"""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import msgspec

from operators.contract import END_OF_STREAM, Context, Emit, Operator
from operators.domain import ledger as lg
from operators.domain.execution import Child, ExecConfig, fill_price, schedule
from operators.domain.limits import AccountConfig, RiskLimits
from operators.domain.risk_rules import (
    KILL_SWITCH,
    REDUCE_ONLY,
    TRADING_HALTED,
    OrderProposal,
    check_order,
    risk_check_flags,
    to_reject,
    trip_reduce_only,
)
from topics.messages import (
    Control,
    Decision,
    Fill,
    Order,
    OrderIntent,
    Position,
    Reason,
    RiskReject,
    Side,
    Tick,
)

_CONTROL, _TICK, _INTENT = 0, 1, 2


class AccountOpConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    account: str
    instruments: dict[str, lg.InstrumentSpec]
    limits: RiskLimits = RiskLimits()
    account_cfg: AccountConfig = AccountConfig()
    execution: ExecConfig = ExecConfig()
    session_start: str = "17:00"
    session_tz: str = "America/Chicago"
    resize_to_allowed: bool = True

    def __post_init__(self) -> None:
        if not self.account:
            raise ValueError("account must be non-empty")
        for sym, spec in self.instruments.items():
            if sym != spec.symbol:
                raise ValueError(f"instrument key {sym!r} != spec symbol {spec.symbol!r}")
        try:
            ZoneInfo(self.session_tz)
        except Exception as exc:
            raise ValueError(f"unknown session_tz {self.session_tz!r}") from exc
        try:
            time.fromisoformat(self.session_start)
        except ValueError as exc:
            raise ValueError(f"session_start must be HH:MM, got {self.session_start!r}") from exc


class Buffered(msgspec.Struct, kw_only=True):
    ts: int
    rank: int
    symbol: str
    seq: int
    tick: Tick | None = None
    intent: OrderIntent | None = None
    control: Control | None = None


class VolumeBuckets(msgspec.Struct, kw_only=True):
    """Per-symbol traded volume in slice-interval buckets (the VWAP profile)."""

    start: int = 0
    current: float = 0.0
    history: list[float] = []


class AccountOpState(msgspec.Struct, kw_only=True):
    ledger: lg.AccountState
    buffer: list[Buffered] = []
    seq: int = 0
    children: list[Child] = []
    next_session_ts: int = 0
    volumes: dict[str, VolumeBuckets] = {}
    counters: dict[str, int] = {}
    last_ts: int = 0  # newest event time released (stamps the end-of-stream marks)


def _bump(state: AccountOpState, name: str, n: int = 1) -> None:
    state.counters[name] = state.counters.get(name, 0) + n


class AccountOperator(Operator[AccountOpState, Tick | OrderIntent | Control]):
    UID = "account"
    STATE_VERSION = 1
    State = AccountOpState

    def __init__(self, config: AccountOpConfig) -> None:
        self.config = config
        self._tz = ZoneInfo(config.session_tz)
        self._session_time = time.fromisoformat(config.session_start)

    # -- contract ---------------------------------------------------------------------------
    def key(self, event: Tick | OrderIntent | Control) -> str:
        return self.config.account

    def new_state(self, key: str) -> AccountOpState:
        ledger = lg.new_account(self.config.account_cfg)
        for spec in sorted(self.config.instruments.values(), key=lambda s: s.symbol):
            lg.register_instrument(ledger, spec)
        return AccountOpState(ledger=ledger)

    def process(
        self, state: AccountOpState, event: Tick | OrderIntent | Control, ctx: Context
    ) -> tuple[AccountOpState, list[Emit]]:
        if isinstance(event, Tick):
            item = Buffered(
                ts=event.ts_event, rank=_TICK, symbol=event.symbol, seq=state.seq, tick=event
            )
        elif isinstance(event, OrderIntent):
            if event.account != self.config.account:
                return state, []
            item = Buffered(
                ts=event.ts_event, rank=_INTENT, symbol=event.symbol, seq=state.seq, intent=event
            )
        else:
            if event.account not in ("*", self.config.account):
                return state, []
            item = Buffered(
                ts=event.ts_event,
                rank=_CONTROL,
                symbol=event.symbol or "",
                seq=state.seq,
                control=event,
            )
        state.seq += 1
        state.buffer.append(item)
        ctx.register_timer(item.ts)
        if state.seq == 1:  # once per key (checkpoints keep timers): the final marks
            ctx.register_timer(END_OF_STREAM)
        return state, []

    def on_timer(
        self, state: AccountOpState, ts: int, ctx: Context
    ) -> tuple[AccountOpState, list[Emit]]:
        out: list[Emit] = []
        buf = state.buffer
        if buf and buf[-1].ts <= ts and (len(buf) == 1 or max(b.ts for b in buf) <= ts):
            due, state.buffer = buf, []  # the usual case: everything buffered is due
        else:
            due = [b for b in buf if b.ts <= ts]
            if due:
                state.buffer = [b for b in buf if b.ts > ts]
        if due:
            if len(due) > 1:
                due.sort(key=lambda b: (b.ts, b.rank, b.symbol, b.seq))
            for b in due:
                state.last_ts = max(state.last_ts, b.ts)
                self._advance(state, b.ts, out, ctx)
                if b.tick is not None:
                    self._on_tick(state, b.tick, out)
                elif b.intent is not None:
                    self._on_intent(state, b.intent, out, ctx)
                elif b.control is not None:
                    self._on_control(state, b.control, out)
        if ts == END_OF_STREAM:
            self._end(state, out)
        else:
            self._advance(state, ts, out, ctx)
        return state, out

    # -- time-driven work: releasing scheduled children, expiring working ones ----------------
    def _advance(self, state: AccountOpState, now: int, out: list[Emit], ctx: Context) -> None:
        if not state.children:
            return
        cfg = self.config.execution
        keep: list[Child] = []
        for c in state.children:
            if c.sent and c.expires_at <= now and c.remaining > 0:
                self._cancel_child(state, c, "expired")
                continue
            if c.sent and c.remaining <= 0:
                continue
            keep.append(c)
        state.children = keep
        cancelled: set[str] = set()
        for c in list(state.children):
            if c.sent or c.release_ts > now or c.parent_order_id in cancelled:
                continue
            if c.algo == "ICEBERG" and any(
                o.sent and o.parent_order_id == c.parent_order_id and o.remaining > 0
                for o in state.children
            ):
                continue
            blocked = self._child_block(state, c)
            if blocked is not None:
                self._cancel_parent(state, c, blocked, out, max(c.release_ts, now))
                cancelled.add(c.parent_order_id)  # its other due slices went with it
                continue
            sent_at = max(c.release_ts, now)  # an iceberg clip goes out when its predecessor ends
            c.sent = True
            c.fillable_from = sent_at + cfg.latency_ns
            c.expires_at = sent_at + cfg.child_ttl_ns
            ctx.register_timer(c.expires_at)
            out.append(
                Emit(
                    "orders",
                    self.config.account,
                    Order(
                        ts_event=sent_at,
                        client_order_id=c.client_order_id,
                        parent_order_id=c.parent_order_id,
                        decision_id=c.decision_id,
                        account=self.config.account,
                        symbol=c.symbol,
                        side=c.side,
                        quantity=c.quantity,
                        order_type="LIMIT" if c.order_type == "LIMIT" else "MARKET",
                        limit_price=c.limit_price,
                        time_in_force=cfg.time_in_force,
                        algo=c.algo,
                        slice=f"{c.slice_no}/{c.slices}",
                        venue=self._venue(c.symbol),
                    ),
                )
            )
            _bump(state, "child_orders")
        state.children = [c for c in state.children if not (c.sent and c.remaining <= 0)]

    def _child_block(self, state: AccountOpState, c: Child) -> Reason | None:
        led = state.ledger
        if led.halted:
            return Reason(code=KILL_SWITCH, message=f"kill switch: {led.halt_reason}")
        if c.symbol in led.halted_symbols:
            return Reason(
                code=TRADING_HALTED, message=f"{c.symbol} halted: {led.halted_symbols[c.symbol]}"
            )
        if led.reduce_only:
            q = lg.position(led, c.symbol).quantity
            signed = c.remaining if c.side == "BUY" else -c.remaining
            if abs(q + signed) > abs(q) + 1e-9 or (q != 0 and (q + signed) * q < 0):
                return Reason(code=REDUCE_ONLY, message=f"reduce-only: {led.reduce_only_reason}")
        return None

    def _cancel_child(self, state: AccountOpState, c: Child, why: str) -> None:
        if c.sent and c.remaining > 0:
            lg.add_working(state.ledger, c.symbol, c.side, -c.remaining)
        elif not c.sent:
            lg.add_working(state.ledger, c.symbol, c.side, -c.quantity)
        _bump(state, f"children_{why}")

    def _cancel_parent(
        self, state: AccountOpState, first: Child, reason: Reason, out: list[Emit], now: int
    ) -> None:
        """Cancel every unsent and working child of ``first``'s parent (kill switch, halt)."""
        pid = first.parent_order_id
        cancelled = 0.0
        keep: list[Child] = []
        for c in state.children:
            if c.parent_order_id == pid:
                cancelled += c.remaining
                self._cancel_child(state, c, "cancelled")
            else:
                keep.append(c)
        state.children = keep
        out.append(
            Emit(
                "risk.rejects",
                self.config.account,
                RiskReject(
                    ts_event=now,
                    decision_id=first.decision_id,
                    account=self.config.account,
                    symbol=first.symbol,
                    side=first.side,
                    requested_quantity=cancelled,
                    allowed_quantity=0.0,
                    reasons=(reason,),
                ),
            )
        )

    # -- inputs -------------------------------------------------------------------------------
    def _on_control(self, state: AccountOpState, c: Control, out: list[Emit]) -> None:
        led = state.ledger
        if c.command == "KILL":
            lg.set_halted(led, True, c.reason or "manual")
            for child in list(state.children):
                self._cancel_child(state, child, "cancelled")
            state.children = []
        elif c.command == "RESET":
            lg.set_halted(led, False)
        elif c.command == "HALT_SYMBOL" and c.symbol:
            lg.set_symbol_halted(led, c.symbol, True, c.reason or "manual")
            keep = []
            for child in state.children:
                if child.symbol == c.symbol:
                    self._cancel_child(state, child, "cancelled")
                else:
                    keep.append(child)
            state.children = keep
        elif c.command == "RESUME_SYMBOL" and c.symbol:
            lg.set_symbol_halted(led, c.symbol, False)
        _bump(state, f"control_{c.command.lower()}")

    def _on_tick(self, state: AccountOpState, t: Tick, out: list[Emit]) -> None:
        led = state.ledger
        if t.ts_event >= state.next_session_ts:
            self._roll_session(state, t.ts_event)
        lg.mark(led, t.symbol, t.price)
        if self.config.execution.track_volume:
            self._track_volume(state, t)
        filled = self._fill(state, t, out) if state.children else False
        # Equity moves only through fills and marks of open positions: check the loss then.
        if led.reduce_only:
            return
        pos = led.positions.get(t.symbol)
        if (filled or (pos is not None and pos.quantity != 0.0)) and trip_reduce_only(
                led, self.config.limits):
            _bump(state, "reduce_only_trips")

    def _fill(self, state: AccountOpState, t: Tick, out: list[Emit]) -> bool:
        """Fill working children of ``t``'s symbol against it; True if anything filled."""
        cfg = self.config.execution
        filled = False
        spec = self._spec(t.symbol)
        lot = spec.lot_size
        capacity = math.floor(t.size * cfg.participation / lot + 1e-9) * lot
        for c in state.children:
            if capacity <= 0:
                break
            if (
                not c.sent
                or c.symbol != t.symbol
                or c.remaining <= 0
                or t.ts_event < c.fillable_from
                or t.ts_event >= c.expires_at
            ):
                continue
            px = fill_price(c, t.price, spec.tick_size, cfg.slippage_ticks)
            if px is None:
                continue
            qty = min(c.remaining, capacity)
            capacity -= qty
            c.filled += qty
            filled = True
            fee = self.config.account_cfg.fee(qty, px, spec.multiplier)
            lg.apply_fill(state.ledger, t.symbol, c.side, qty, px, fee, spec.multiplier, spec.group)
            fill_no = state.counters.get("fills", 0) + 1
            _bump(state, "fills")
            out.append(
                Emit(
                    "fills",
                    self.config.account,
                    Fill(
                        ts_event=t.ts_event,
                        fill_id=f"F-{c.client_order_id[2:]}-{fill_no}",
                        client_order_id=c.client_order_id,
                        account=self.config.account,
                        symbol=t.symbol,
                        side=c.side,
                        quantity=qty,
                        price=px,
                        fee=fee,
                        venue=self._venue(t.symbol),
                        liquidity="MAKER" if c.order_type == "LIMIT" else "TAKER",
                    ),
                )
            )
            out.append(self._position(state, t.symbol, t.ts_event, "fill"))
        return filled

    def _on_intent(
        self, state: AccountOpState, it: OrderIntent, out: list[Emit], ctx: Context
    ) -> None:
        led = state.ledger
        spec = self._spec(it.symbol)
        # A new target supersedes the execution of earlier ones in this symbol: cancel their
        # unsent slices and working remainders, so two parents never trade against each other.
        if any(c.symbol == it.symbol for c in state.children):
            keep: list[Child] = []
            for c in state.children:
                if c.symbol == it.symbol:
                    self._cancel_child(state, c, "superseded")
                else:
                    keep.append(c)
            state.children = keep
        pos = lg.position(led, it.symbol)
        current = pos.quantity + pos.working_buy - pos.working_sell
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
            decision = check_order(proposal, led, self.config.limits, spec)
            flags = risk_check_flags(decision)
            if decision.daily_loss_breached and trip_reduce_only(led, self.config.limits):
                _bump(state, "reduce_only_trips")
            if decision.approved:
                qty = requested
            else:
                _bump(state, "rejects")
                out.append(
                    Emit(
                        "risk.rejects",
                        self.config.account,
                        to_reject(
                            decision,
                            proposal,
                            decision_id=it.decision_id,
                            account=self.config.account,
                        ),
                    )
                )
                if self.config.resize_to_allowed and decision.allowed_quantity >= spec.lot_size:
                    qty = decision.allowed_quantity
            if qty > 0:
                lg.record_order(led, it.ts_event, self.config.limits)
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
                    volume_profile=self._profile(state, it.symbol),
                )
                state.children.extend(children)
                order_ids = tuple(c.client_order_id for c in children)
                for c in children:
                    if c.release_ts > it.ts_event:
                        ctx.register_timer(c.release_ts)
                _bump(state, "parent_orders")
                self._advance(state, it.ts_event, out, ctx)
        _bump(state, "decisions")
        tr = it.trace
        out.append(
            Emit(
                "audit.decisions",
                it.decision_id,
                Decision(
                    ts_event=it.ts_event,
                    decision_id=it.decision_id,
                    symbol=it.symbol,
                    action=action,
                    quantity=qty,
                    confidence=float(it.sizing.get("confidence", 0.0)),
                    regime_probs=tr.regime_probs if tr else {},
                    strategy_weights=tr.strategy_weights if tr else {},
                    features=tr.features if tr else {},
                    model_versions=tr.model_versions if tr else {},
                    model_outputs=tr.model_outputs if tr else {},
                    sizing=dict(it.sizing),
                    risk_checks=flags,
                    order_ids=order_ids,
                    contributions=tr.contributions if tr else {},
                    inputs=tr.inputs if tr else (),
                ),
            )
        )
        out.append(self._position(state, it.symbol, it.ts_event, "decision"))

    def _end(self, state: AccountOpState, out: list[Emit]) -> None:
        """End of stream: working children expire; every position is marked a last time."""
        for c in state.children:
            self._cancel_child(state, c, "expired")
        state.children = []
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
        return self.config.execution.venue

    def _position(
        self, state: AccountOpState, symbol: str, ts: int, cause: Literal["fill", "decision", "end"]
    ) -> Emit:
        led = state.ledger
        p = lg.position(led, symbol)
        return Emit(
            "positions",
            self.config.account,
            Position(
                ts_event=ts,
                account=self.config.account,
                symbol=symbol,
                quantity=p.quantity,
                avg_price=p.avg_price,
                realized_pnl=p.realized_pnl,
                unrealized_pnl=lg.unrealized_pnl(led, symbol),
                fees=p.fees,
                equity=lg.equity(led),
                cause=cause,
            ),
        )

    def _roll_session(self, state: AccountOpState, ts: int) -> None:
        local = datetime.fromtimestamp(ts / 1e9, self._tz)
        boundary = datetime.combine(local.date(), self._session_time, self._tz)
        if local >= boundary:
            boundary = datetime.combine(
                local.date() + timedelta(days=1), self._session_time, self._tz
            )
        state.next_session_ts = int(boundary.timestamp()) * 1_000_000_000
        lg.start_session(state.ledger, boundary.date().isoformat())
        _bump(state, "sessions")

    def _track_volume(self, state: AccountOpState, t: Tick) -> None:
        interval = self.config.execution.slice_interval_ns
        vb = state.volumes.get(t.symbol)
        start = t.ts_event - t.ts_event % interval
        if vb is None:
            vb = state.volumes[t.symbol] = VolumeBuckets(start=start)
        if start > vb.start:
            n = self.config.execution.slices
            gaps = min(n, (start - vb.start) // interval - 1)
            vb.history.append(vb.current)
            vb.history.extend([0.0] * gaps)
            del vb.history[:-n]
            vb.start = start
            vb.current = 0.0
        if start == vb.start:
            vb.current += t.size

    def _profile(self, state: AccountOpState, symbol: str) -> list[float]:
        vb = state.volumes.get(symbol)
        return list(vb.history) if vb is not None else []
