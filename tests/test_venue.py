"""The venue protocol's simulated venue on real E-mini trades, driven through its four calls.

Trades are the sample's (parsed here with pandas, CME local time to UTC); expectations come
from those trades and the documented fill model (docs/decision-chain.md, docs/risk.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from operators.domain.execution import ExecConfig
from operators.domain.ledger import InstrumentSpec
from operators.domain.limits import AccountConfig
from operators.domain.venue import ExternalVenue, SimulatedVenue, VenueBook
from topics.messages import Order, OrderType, Side, Tick, VenueReport

ES = InstrumentSpec(symbol="ES", multiplier=50.0, tick_size=0.25, lot_size=1.0,
                    group="equity-index", venue="CME")
SECOND = 1_000_000_000
ROWS = 20_000


@pytest.fixture(scope="module")
def trades(emini_ticks_path: Path) -> list[Tick]:
    df = pd.read_csv(emini_ticks_path, nrows=ROWS)
    ts = (pd.to_datetime(df["DateTime"]).dt.tz_localize("America/Chicago")
          .dt.tz_convert("UTC").astype("int64"))
    return [Tick(ts_event=int(t), symbol="ES", venue="CME", price=float(p), size=float(s))
            for t, p, s in zip(ts, df["Price"], df["Volume"], strict=True)]


def order(ts: int, side: Side, qty: float, kind: OrderType = "MARKET",
          limit: float | None = None, cid: str = "C-one") -> Order:
    return Order(ts_event=ts, client_order_id=cid, parent_order_id="P-one", decision_id="d",
                 account="acct", symbol="ES", side=side, quantity=qty, order_type=kind,
                 limit_price=limit, time_in_force="GTD", algo="IMMEDIATE", slice="1/1",
                 venue="CME")


def venue(**cfg: float) -> SimulatedVenue:
    return SimulatedVenue("acct", ExecConfig(**cfg), {"ES": ES},  # type: ignore[arg-type]
                          AccountConfig(fee_per_contract=2.0))


def play(v: SimulatedVenue, book: VenueBook, trades: list[Tick]) -> list[VenueReport]:
    out: list[VenueReport] = []
    for t in trades:
        out += v.expire(book, t.ts_event)
        out += v.on_tick(book, t)
    return out


def test_market_order_fills_later_trades_after_the_latency_at_a_half_tick_slippage(
        trades: list[Tick]) -> None:
    v, book = venue(participation=0.5), VenueBook()
    t0 = trades[1000].ts_event
    (ack,) = v.send(book, order(t0, "BUY", 12.0), t0 + 600 * SECOND)
    assert (ack.kind, ack.client_order_id, ack.venue) == ("ACK", "C-one", "CME")
    latency = ExecConfig().latency_ns
    fills: list[VenueReport] = []
    for t in (t for t in trades if t.ts_event >= t0):
        for f in v.on_tick(book, t):  # the fills this one trade made
            assert f.kind == "FILL" and t.ts_event >= t0 + latency
            assert f.ts_event == t.ts_event
            assert f.price == t.price + 0.125  # half a 0.25 tick
            assert f.quantity <= math.floor(t.size * 0.5)  # participation: partial fills
            assert f.fee == 2.0 * f.quantity and f.liquidity == "TAKER"
            fills.append(f)
    assert sum(f.quantity for f in fills) == 12.0 and not book.working
    assert len(fills) > 1
    assert [f.fill_id for f in fills] == [f"F-one-{k}" for k in range(1, len(fills) + 1)]


def test_limit_order_fills_at_its_limit_only_when_a_trade_prints_through(
        trades: list[Tick]) -> None:
    v, book = venue(), VenueBook()
    t0 = trades[2000].ts_event
    later = [t for t in trades if t.ts_event > t0 + SECOND]
    low = min(t.price for t in later[:5000])
    v.send(book, order(t0, "BUY", 1.0, "LIMIT", low), t0 + 10_000 * SECOND)
    (fill,) = play(v, book, later[:5000])
    first_through = next(t for t in later if t.price <= low)
    assert (fill.price, fill.ts_event, fill.liquidity) == (low, first_through.ts_event, "MAKER")


def test_the_unfilled_rest_expires_at_its_good_till_time(trades: list[Tick]) -> None:
    v, book = venue(participation=0.01), VenueBook()  # 1 % of a trade: rarely a whole lot
    t0 = trades[3000].ts_event
    expires = t0 + 5 * SECOND
    v.send(book, order(t0, "SELL", 50.0), expires)
    reports = play(v, book, [t for t in trades if t.ts_event >= t0])
    filled = sum(r.quantity for r in reports if r.kind == "FILL")
    (done,) = [r for r in reports if r.kind != "FILL"]
    assert done.kind == "EXPIRED" and done.quantity == 50.0 - filled
    assert all(r.ts_event < expires for r in reports if r.kind == "FILL")
    assert not book.working


def test_cancel_takes_the_order_off_and_reports_its_rest(trades: list[Tick]) -> None:
    v, book = venue(), VenueBook()
    t0 = trades[4000].ts_event
    v.send(book, order(t0, "BUY", 3.0, cid="C-a"), t0 + 60 * SECOND)
    v.send(book, order(t0, "SELL", 2.0, cid="C-b"), t0 + 60 * SECOND)
    (done,) = v.cancel(book, "C-a", t0 + 1, "superseded")
    assert (done.kind, done.quantity, done.reason) == ("CANCELLED", 3.0, "superseded")
    assert [w.client_order_id for w in book.working] == ["C-b"]
    assert v.cancel(book, "C-a", t0 + 2, "again") == []  # nothing left to cancel


def test_an_external_venue_answers_nothing_itself(trades: list[Tick]) -> None:
    v, book = ExternalVenue(), VenueBook()
    t0 = trades[0].ts_event
    assert v.external and not SimulatedVenue.external
    assert v.send(book, order(t0, "BUY", 1.0), t0 + SECOND) == []
    assert v.on_tick(book, trades[1]) == [] and v.expire(book, t0 + 2 * SECOND) == []
    assert v.cancel(book, "C-one", t0, "x") == [] and not book.working
