"""The account operator (pre-trade gate, execution, simulated venue) driven on its own.

The account feed router and the account operator on the embedded ``LocalRunner``: real E-mini
trades on ``md.ticks`` (parsed here with pandas, independently of ``normalize``), crafted
``OrderIntent``s and ``Control``s fed beside them. Expectations come from the trades themselves
and the documented rules (docs/risk.md), read from the operator's output topics.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from operators.account import AccountOpConfig, AccountOperator
from operators.account_feed import AccountFeedConfig, AccountFeedRouter
from operators.domain.execution import ExecConfig, client_order_id
from operators.domain.ledger import InstrumentSpec
from operators.domain.limits import AccountConfig, AccountSpec, RiskLimits
from topics.messages import (
    Algo,
    Control,
    Fill,
    Order,
    OrderCancel,
    OrderIntent,
    Position,
    RiskReject,
    Tick,
    VenueReport,
)

NS = 1_000_000_000
OUTPUTS = ("orders", "fills", "risk.rejects", "positions", "audit.decisions")
ES = InstrumentSpec(symbol="ES", multiplier=50.0, tick_size=0.25, lot_size=1.0,
                    group="equity-index")
START_EQUITY = 100_000.0
# Leverage is allowed far past the defaults so that a 20-lot position (~16x equity) can lose
# more than 2 % of the day's equity on a 3-point move of the real tape.
LOOSE = RiskLimits(max_concentration=30.0, max_gross_leverage=30.0, max_group_exposure=30.0,
                   max_order_notional=1e9, max_orders_per_window=100)


def utc(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


@dataclass(frozen=True, slots=True)
class Tape:
    """The E-mini trades in file order, UTC nanoseconds (CME local time converted)."""

    ts: npt.NDArray[np.int64]
    price: npt.NDArray[np.float64]
    size: npt.NDArray[np.float64]

    def window(self, start: int, end: int) -> list[Tick]:
        lo, hi = np.searchsorted(self.ts, [start, end], side="left")
        return [Tick(ts_event=int(t), symbol="ES", venue="CME", price=float(p), size=float(s))
                for t, p, s in zip(self.ts[lo:hi], self.price[lo:hi], self.size[lo:hi],
                                   strict=True)]

    def extreme(self, start: int, end: int, *, highest: bool) -> tuple[int, float]:
        lo, hi = np.searchsorted(self.ts, [start, end], side="left")
        seg = self.price[lo:hi]
        i = lo + int(np.argmax(seg) if highest else np.argmin(seg))
        return int(self.ts[i]), float(self.price[i])


@pytest.fixture(scope="module")
def tape(emini_ticks_path: Path) -> Tape:
    df = pd.read_csv(emini_ticks_path)
    ts = (pd.to_datetime(df["DateTime"]).dt.tz_localize("America/Chicago")
          .dt.tz_convert("UTC").astype("int64").to_numpy())
    assert np.all(np.diff(ts) >= 0)
    return Tape(ts=ts, price=df["Price"].to_numpy(np.float64),
                size=df["Volume"].to_numpy(np.float64))


def account(limits: RiskLimits = LOOSE, equity: float = START_EQUITY, es: InstrumentSpec = ES,
            venue: Any = "simulated") -> AccountOperator:
    return AccountOperator(AccountOpConfig(
        accounts=(AccountSpec(name="paper", limits=limits,
                              settings=AccountConfig(initial_equity=equity)),),
        instruments={"ES": es}, execution=ExecConfig(), venue=venue,
        session_start="17:00", session_tz="America/Chicago"))


class Desk:
    """The account operator behind its feed router on a ``LocalRunner``, fed ticks, intents
    and controls."""

    def __init__(self, op: AccountOperator) -> None:
        router = AccountFeedRouter(AccountFeedConfig.of(op.config.accounts))
        graph = Graph("md.ticks", (
            Stage(router, ("md.ticks", "control"), ("account.feed",)),
            Stage(op, ("orders.intents", "account.feed", "venue.reports"),
                  (*OUTPUTS, "orders.cancels")),
        ), external=("orders.intents", "control", "venue.reports"))
        self.sink = TopicSink(None, (*OUTPUTS, "orders.cancels"), capture=True)
        self.runner = LocalRunner(graph, self.sink)
        self.n = 0

    def intent(self, ts: int, target: float, algo: Algo = "IMMEDIATE") -> str:
        self.n += 1
        did = f"ES-test-{self.n}"
        self.runner.inject("orders.intents", OrderIntent(
            ts_event=ts, decision_id=did, account="paper", symbol="ES",
            side="BUY" if target >= 0 else "SELL", quantity=abs(target),
            target_position=target, reference_price=1.0, algo=algo))
        return did

    def control(self, ts: int, command: Any) -> None:
        self.runner.inject("control", Control(ts_event=ts, command=command, account="paper",
                                              symbol="ES"))

    def feed(self, ticks: list[Tick]) -> None:
        for t in ticks:
            self.runner.feed(t)

    def out(self, topic: str) -> list[Any]:
        assert self.sink.captured is not None
        return list(self.sink.captured[topic])

    def orders_of(self, did: str) -> list[Order]:
        return [o for o in self.out("orders") if o.decision_id == did]

    def rejects_of(self, did: str) -> list[RiskReject]:
        return [r for r in self.out("risk.rejects") if r.decision_id == did]

    def filled(self, did: str) -> float:
        ids = {o.client_order_id for o in self.orders_of(did)}
        return float(sum(f.quantity for f in self.out("fills") if f.client_order_id in ids))

    def position_at(self, did: str) -> Position:
        (d,) = [d for d in self.out("audit.decisions") if d.decision_id == did]
        (p,) = [p for p in self.out("positions")
                if p.cause == "decision" and p.ts_event == d.ts_event]
        assert isinstance(p, Position)
        return p


def _codes(rejects: list[RiskReject]) -> set[str]:
    return {r.code for rej in rejects for r in rej.reasons}


# ------------------------------------------------------------------------------ daily loss


def test_a_day_loss_past_two_percent_admits_only_reducing_orders_until_the_next_session(
        tape: Tape) -> None:
    # Labor Day 2013, session of 1 Sep 17:00 CT: long 20 lots at the morning high, then the
    # tape falls 3.25 points, ~3.4 % of the 100,000 USD the day started with.
    t_buy, peak = tape.extreme(utc("2013-09-02 11:00"), utc("2013-09-02 12:00"), highest=True)
    t_low, low = tape.extreme(t_buy, utc("2013-09-02 17:00"), highest=False)
    assert peak - low >= 3.0
    desk = Desk(account())
    desk.feed(tape.window(t_buy - 120 * NS, t_buy))
    buy = desk.intent(t_buy, 20)
    desk.feed(tape.window(t_buy, t_low + NS))
    assert desk.filled(buy) == 20 and not desk.rejects_of(buy)

    more = desk.intent(t_low + NS, 25)  # adds risk: refused
    less = desk.intent(t_low + 2 * NS, 10)  # sells 10 of 20: reduces, passes
    desk.feed(tape.window(t_low + NS, t_low + 300 * NS))
    flip = desk.intent(t_low + 300 * NS, -5)  # sells 15 of 10: only the 10 that flatten pass
    desk.feed(tape.window(t_low + 300 * NS, utc("2013-09-02 17:00")))

    at_more = desk.position_at(more)
    assert at_more.quantity == 20
    assert at_more.equity <= 0.98 * START_EQUITY, "the premise: a loss past 2 % of the day"
    (rej,) = desk.rejects_of(more)
    assert {"DAILY_LOSS_LIMIT", "REDUCE_ONLY"} <= _codes([rej])
    assert rej.allowed_quantity == 0 and not desk.orders_of(more)

    assert not desk.rejects_of(less)
    assert [o.side for o in desk.orders_of(less)] == ["SELL"] and desk.filled(less) == 10

    (rej,) = desk.rejects_of(flip)
    assert "REDUCE_ONLY" in _codes([rej])
    # the loss rule reports only while the account is below the limit right now
    at_flip = desk.position_at(flip)
    assert ("DAILY_LOSS_LIMIT" in _codes([rej])) == (at_flip.equity <= 0.98 * START_EQUITY)
    assert (rej.requested_quantity, rej.allowed_quantity) == (15, 10)
    assert desk.filled(flip) == 10
    assert desk.out("positions")[-1].quantity == 0

    # Globex reopens at 17:00 CT: a new session, a new baseline, risk may be added again
    reopen = utc("2013-09-02 22:00")
    desk.feed(tape.window(reopen, reopen + 60 * NS))
    again = desk.intent(reopen + 60 * NS, 3)
    desk.feed(tape.window(reopen + 60 * NS, reopen + 300 * NS))
    assert not desk.rejects_of(again)
    assert desk.filled(again) == 3


# ------------------------------------------------------------------------------ kill switch, halts


def test_kill_switch_cancels_working_slices_and_rejects_until_reset(tape: Tape) -> None:
    t0 = utc("2013-09-03 14:00")
    desk = Desk(account())
    desk.feed(tape.window(t0 - 60 * NS, t0))
    twap = desk.intent(t0, 8, algo="TWAP")  # four slices of two, 15 s apart
    desk.control(t0 + 20 * NS, "KILL")
    killed = desk.intent(t0 + 30 * NS, 12)
    desk.control(t0 + 120 * NS, "RESET")
    after = desk.intent(t0 + 130 * NS, 12)
    desk.feed(tape.window(t0, t0 + 300 * NS))

    sent = desk.orders_of(twap)
    assert [o.slice for o in sent] == ["1/4", "2/4"]  # slices 3 and 4 were due after the kill
    assert [o.ts_event for o in sent] == [t0, t0 + 15 * NS]
    assert all(o.client_order_id == client_order_id(twap, k) for k, o in
               enumerate(sent, 1))
    assert not [f for f in desk.out("fills") if t0 + 20 * NS <= f.ts_event < t0 + 120 * NS]
    (rej,) = desk.rejects_of(killed)
    assert [r.code for r in rej.reasons] == ["KILL_SWITCH"] and rej.allowed_quantity == 0
    assert not desk.orders_of(killed)
    # after the reset the target is pursued again from what actually filled
    held = desk.filled(twap)
    assert held == 4
    assert [o.quantity for o in desk.orders_of(after)] == [12 - held]
    assert not desk.rejects_of(after)


def test_a_halted_symbol_rejects_with_trading_halted_until_resumed(tape: Tape) -> None:
    t0 = utc("2013-09-03 14:00")
    desk = Desk(account())
    desk.feed(tape.window(t0 - 60 * NS, t0))
    desk.control(t0, "HALT_SYMBOL")
    halted = desk.intent(t0 + NS, 2)
    desk.control(t0 + 60 * NS, "RESUME_SYMBOL")
    resumed = desk.intent(t0 + 61 * NS, 2)
    desk.feed(tape.window(t0, t0 + 180 * NS))
    (rej,) = desk.rejects_of(halted)
    assert [r.code for r in rej.reasons] == ["TRADING_HALTED"] and rej.allowed_quantity == 0
    assert desk.filled(resumed) == 2


# ------------------------------------------------------------------------------ event time


def _scenario(tape: Tape, *, up_front: bool) -> dict[str, list[Any]]:
    """TWAP and immediate intents plus a kill/reset over five real minutes.

    ``up_front`` delivers every intent and control before the first tick; otherwise each
    arrives just before the first tick past it, as a live stream would deliver it.
    """
    t0 = utc("2013-09-03 15:00")
    ticks = tape.window(t0 - 30 * NS, t0 + 300 * NS)
    events: list[tuple[int, str, Any]] = [
        (t0, "intent", (6, "TWAP")), (t0 + 40 * NS, "intent", (-4, "IMMEDIATE")),
        (t0 + 90 * NS, "control", "KILL"), (t0 + 100 * NS, "intent", (5, "IMMEDIATE")),
        (t0 + 150 * NS, "control", "RESET"), (t0 + 160 * NS, "intent", (5, "VWAP")),
        (t0 + 230 * NS, "intent", (0, "IMMEDIATE")),
    ]
    desk = Desk(account())

    def deliver(ts: int, kind: str, what: Any) -> None:
        if kind == "intent":
            desk.intent(ts, what[0], algo=what[1])
        else:
            desk.control(ts, what)

    pending = list(events)
    if up_front:
        for e in pending:
            deliver(*e)
        pending = []
    for t in ticks:
        while pending and pending[0][0] < t.ts_event:
            deliver(*pending.pop(0))
        desk.runner.feed(t)
    desk.runner.end_of_stream()
    assert desk.sink.captured is not None
    return desk.sink.captured


def test_outputs_follow_event_time_not_the_order_inputs_arrive_in(tape: Tape) -> None:
    live = _scenario(tape, up_front=False)
    early = _scenario(tape, up_front=True)
    assert live["orders"] and live["fills"] and live["risk.rejects"]
    for topic in OUTPUTS:
        assert early[topic] == live[topic], topic


def test_fills_follow_their_orders_by_the_latency_at_real_trade_prices(tape: Tape) -> None:
    out = _scenario(tape, up_front=False)
    orders = {o.client_order_id: o for o in out["orders"]}
    by_ts: dict[int, set[float]] = defaultdict(set)
    lo, hi = np.searchsorted(tape.ts, [utc("2013-09-03 15:00") - 30 * NS,
                                       utc("2013-09-03 15:05")])
    for t, p in zip(tape.ts[lo:hi].tolist(), tape.price[lo:hi].tolist(), strict=True):
        by_ts[t].add(p)
    fills: list[Fill] = out["fills"]
    assert fills
    for f in fills:
        o = orders[f.client_order_id]
        assert f.ts_event >= o.ts_event + ExecConfig().latency_ns
        slip = 0.125 if f.side == "BUY" else -0.125
        assert f.price - slip in by_ts[f.ts_event]
        assert f.fee == f.quantity


def test_end_of_stream_marks_every_position_a_last_time(tape: Tape) -> None:
    out = _scenario(tape, up_front=False)
    last = out["positions"][-1]
    assert last.cause == "end"
    assert last.ts_event == max(t.ts_event for t in tape.window(
        utc("2013-09-03 15:00") - 30 * NS, utc("2013-09-03 15:05")))


def test_a_blocked_parent_is_rejected_once_however_many_slices_were_due() -> None:
    """Slices of one TWAP parent that fall due together (a gap in the tape) and meet a
    reduce-only account: the parent is cancelled with one reject naming all of it."""
    from operators.contract import SimpleContext
    from operators.domain import ledger as lg
    from operators.domain.execution import ExecConfig as Exec
    from operators.domain.execution import schedule

    op = account()
    state = op.new_state("paper")
    lg.apply_fill(state.ledger, "ES", "BUY", 5.0, 1650.0, 0.0, 50.0, "equity-index")
    lg.mark(state.ledger, "ES", 1650.0)
    t0 = utc("2013-09-03 14:00")
    kids = schedule(algo="TWAP", decision_id="ES-gap", symbol="ES", side="BUY", quantity=8.0,
                    ts=t0, reference_price=1650.0, lot=1.0, tick_size=0.25, cfg=Exec(),
                    volume_profile=[])
    assert [k.quantity for k in kids] == [2.0, 2.0, 2.0, 2.0]
    lg.add_working(state.ledger, "ES", "BUY", 8.0)
    state.execution.children = kids
    lg.set_reduce_only(state.ledger, True, "DAILY_LOSS_LIMIT")
    state, out = op.on_timer(state, t0 + 50 * NS, SimpleContext(watermark=t0 + 50 * NS))
    rejects = [e.value for e in out if e.topic == "risk.rejects"]
    assert len(rejects) == 1
    assert rejects[0].reasons[0].code == "REDUCE_ONLY"
    assert rejects[0].requested_quantity == 8.0
    assert not [e for e in out if e.topic == "orders"]
    assert state.execution.children == []
    assert lg.position(state.ledger, "ES").working_buy == 0.0


# ------------------------------------------------------------------------------ venues


def test_orders_and_fills_name_the_venue_of_the_instrument_master(tape: Tape) -> None:
    t0 = utc("2013-09-03 14:00")
    venues = {}
    for name, es in (("CME", msgspec.structs.replace(ES, venue="XCME")), ("none", ES)):
        desk = Desk(account(es=es))
        desk.feed(tape.window(t0 - 60 * NS, t0))
        did = desk.intent(t0, 2)
        desk.feed(tape.window(t0, t0 + 60 * NS))
        assert desk.filled(did) == 2
        venues[name] = ({o.venue for o in desk.orders_of(did)},
                        {f.venue for f in desk.out("fills")})
    assert venues["CME"] == ({"XCME"}, {"XCME"})  # the instrument's venue
    assert venues["none"] == ({"PAPER"}, {"PAPER"})  # no venue listed: the default


def _report(ts: int, kind: Any, cid: str, qty: float, price: float = 0.0,
            side: Any = "BUY") -> VenueReport:
    return VenueReport(ts_event=ts, kind=kind, account="paper", client_order_id=cid,
                       symbol="ES", side=side, venue="XCME", quantity=qty, price=price,
                       fee=0.85 * qty, fill_id=f"X-{ts}" if kind == "FILL" else "")


def test_a_live_venue_fills_from_its_reports_and_is_sent_cancels(tape: Tape) -> None:
    t0 = utc("2013-09-03 14:00")
    desk = Desk(account(es=msgspec.structs.replace(ES, venue="XCME"), venue="external"))
    desk.feed(tape.window(t0 - 60 * NS, t0))
    buy = desk.intent(t0, 3)
    desk.feed(tape.window(t0, t0 + NS))  # the watermark passes the intent: the order goes out
    (first,) = desk.orders_of(buy)
    inject = desk.runner.inject
    inject("venue.reports", _report(t0 + NS, "ACK", first.client_order_id, 0.0))
    px = tape.window(t0, t0 + NS)[-1].price
    inject("venue.reports", _report(t0 + 2 * NS, "FILL", first.client_order_id, 2.0, px))
    flat = desk.intent(t0 + 5 * NS, 0)  # supersedes: the working lot is cancelled at the venue
    desk.feed(tape.window(t0 + NS, t0 + 10 * NS))

    assert desk.filled(buy) == 2  # only what the venue reported; the tape fills nothing
    (fill,) = desk.out("fills")
    assert (fill.price, fill.fee, fill.venue, fill.fill_id) == (px, 1.7, "XCME", f"X-{t0 + 2 * NS}")
    (cancel,) = desk.out("orders.cancels")
    assert isinstance(cancel, OrderCancel)
    assert (cancel.client_order_id, cancel.reason, cancel.venue) == (
        first.client_order_id, "superseded", "XCME")
    (sell,) = desk.orders_of(flat)  # aims as if the cancel succeeds: sells the 2 held
    assert (sell.side, sell.quantity) == ("SELL", 2.0)
    state = desk.runner.states("account")["paper"]
    assert state.ledger.positions["ES"].working_buy == 1.0  # until the venue confirms

    inject("venue.reports", _report(t0 + 11 * NS, "CANCELLED", first.client_order_id, 1.0))
    inject("venue.reports", _report(t0 + 12 * NS, "FILL", sell.client_order_id, 2.0, px,
                                    side="SELL"))
    inject("venue.reports", _report(t0 + 13 * NS, "EXPIRED", "C-unknown", 1.0))
    desk.feed(tape.window(t0 + 10 * NS, t0 + 20 * NS))
    book = state.ledger.positions["ES"]
    assert (book.quantity, book.working_buy, book.working_sell) == (0.0, 0.0, 0.0)
    assert [p.quantity for p in desk.out("positions") if p.cause == "fill"] == [2.0, 0.0]
    assert state.counters["unknown_reports"] == 1 and state.execution.children == []
