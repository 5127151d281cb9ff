"""Account ledger: average cost, realized PnL through flips, marks, equity, sessions, throttle."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest

from operators.domain.ledger import (
    AccountState,
    InstrumentSpec,
    add_working,
    apply_fill,
    copy_state,
    day_pnl,
    equity,
    mark,
    new_account,
    orders_in_window,
    position,
    realized_pnl,
    record_order,
    register_instrument,
    set_halted,
    set_reduce_only,
    start_session,
    total_fees,
    unrealized_pnl,
)
from operators.domain.limits import AccountConfig, RiskLimits
from topics.messages import Side

ES = InstrumentSpec(
    symbol="ES", multiplier=50.0, tick_size=0.25, lot_size=1.0, group="equity_index"
)
ZN = InstrumentSpec(symbol="ZN", multiplier=1000.0, tick_size=1 / 64, lot_size=1.0, group="rates")
GC = InstrumentSpec(symbol="GC", multiplier=100.0, tick_size=0.1, lot_size=1.0, group="metals")


def _fresh() -> AccountState:
    return new_account(AccountConfig())


def test_average_price_and_realized_pnl_through_adds_reductions_flips_and_covers() -> None:
    """Hand-checked E-mini sequence (fee $1/contract); numbers worked out in the comments."""
    st = _fresh()
    steps: list[tuple[Side, int, float, tuple[int, float, float]]] = [
        # side, qty, price, expected (quantity, avg_price, realized)
        ("BUY", 2, 1640.00, (2, 1640.0, 0.0)),
        ("BUY", 1, 1646.00, (3, 1642.0, 0.0)),  # (2*1640 + 1646) / 3
        ("SELL", 1, 1650.00, (2, 1642.0, 400.0)),  # 1 * (1650-1642) * 50
        ("SELL", 4, 1630.00, (-2, 1630.0, -800.0)),  # closes 2: 2*(1630-1642)*50; flips at 1630
        ("BUY", 1, 1620.00, (-1, 1630.0, -300.0)),  # covers 1: 1*(1630-1620)*50
        ("SELL", 1, 1625.00, (-2, 1627.5, -300.0)),  # (1630 + 1625) / 2
        ("BUY", 2, 1632.00, (0, 0.0, -750.0)),  # 2*(1627.5-1632)*50 = -450
    ]
    for side, qty, px, (eq_q, eq_avg, eq_real) in steps:
        apply_fill(st, "ES", side, float(qty), px, 1.0 * qty, ES.multiplier, ES.group)
        p = position(st, "ES")
        assert (p.quantity, p.avg_price, p.realized_pnl) == (eq_q, eq_avg, eq_real), (side, qty)
        if (side, qty) == ("SELL", 4):
            # short 2 @ 1630 marked at 1635: unrealized -2*(1635-1630)*50 = -500;
            # equity = 1e6 - 800 realized - 8 fees - 500
            mark(st, "ES", 1635.0)
            assert unrealized_pnl(st, "ES") == -500.0
            assert equity(st) == 998_692.0
    assert position(st, "ES").fees == 12.0
    # flat: equity is cash = 1e6 - 750 - 12
    assert st.cash == 999_238.0
    assert equity(st) == 999_238.0


def _reference_average_cost(
    fills: list[tuple[str, int, Fraction]], mult: int
) -> list[tuple[Fraction, Fraction, Fraction]]:
    """Independent average-cost books in exact rationals: total cost basis shrinks pro rata.

    Each fill is split into the part that closes the open position and the part that opens
    (or extends) one; returns (quantity, avg price, realized) after each fill.
    """
    q = 0
    basis = Fraction(0)  # signed sum of (open quantity * its entry price)
    realized = Fraction(0)
    out = []
    for side, qty, px in fills:
        s = qty if side == "BUY" else -qty
        closing = min(qty, abs(q)) if q * s < 0 else 0
        if closing:
            removed = basis * Fraction(closing, abs(q))  # pro-rata share of the basis
            sign = 1 if q > 0 else -1
            realized += (sign * closing * px - removed) * mult
            basis -= removed
            q += sign * -closing
        opening = qty - closing
        if opening:
            q += opening if s > 0 else -opening
            basis += (opening if s > 0 else -opening) * px
        out.append((Fraction(q), basis / q if q else Fraction(0), realized))
    return out


def _real_es_prices(path: Path, n: int, rng: np.random.Generator) -> list[float]:
    ticks = pd.read_csv(path, usecols=["Price"], nrows=100_000)
    idx = np.sort(rng.choice(len(ticks), size=n, replace=False))
    return [float(p) for p in ticks["Price"].to_numpy()[idx]]


def test_ledger_matches_an_exact_rational_recomputation_on_real_emini_prices(
    emini_ticks_path: Path,
) -> None:
    rng = np.random.default_rng(20130901)
    prices = _real_es_prices(emini_ticks_path, 400, rng)
    cfg = AccountConfig()
    fills: list[tuple[Side, int, float]] = []
    q = 0
    for px in prices:  # a mean-reverting walk, so the position crosses zero often
        side: Side = "BUY" if rng.random() < min(0.9, max(0.1, 0.5 - q / 20)) else "SELL"
        qty = int(rng.integers(1, 8))
        q += qty if side == "BUY" else -qty
        fills.append((side, qty, px))
    ref = _reference_average_cost([(s, q, Fraction(px)) for s, q, px in fills], 50)
    st = new_account(cfg)
    fees = 0.0
    cash_flow = Fraction(0)
    flips = 0
    for (side, qty, px), (rq, ravg, rreal) in zip(fills, ref, strict=True):
        before = position(st, "ES").quantity
        fee = cfg.fee(qty, px, ES.multiplier)
        apply_fill(st, "ES", side, float(qty), px, fee, ES.multiplier, ES.group)
        mark(st, "ES", px)
        fees += fee
        cash_flow += (-1 if side == "BUY" else 1) * qty * Fraction(px) * 50
        p = position(st, "ES")
        flips += before * p.quantity < 0
        assert p.quantity == float(rq)
        assert p.avg_price == pytest.approx(float(ravg), rel=1e-12, abs=1e-9)
        assert p.realized_pnl == pytest.approx(float(rreal), rel=1e-12, abs=1e-6)
        assert st.cash == pytest.approx(1_000_000 + float(cash_flow) - fees, rel=1e-12)
        # identity: equity change = realized + unrealized - fees
        assert equity(st) - 1_000_000 == pytest.approx(
            realized_pnl(st) + unrealized_pnl(st) - total_fees(st), abs=1e-6
        )
    assert flips > 30  # the random walk really exercised position flips


def test_fractional_lots_that_sum_to_flat_leave_an_exactly_flat_position() -> None:
    st = _fresh()
    apply_fill(st, "BTC-USD", "BUY", 0.1, 30_000.0, 0.0, 1.0)
    apply_fill(st, "BTC-USD", "BUY", 0.2, 30_100.0, 0.0, 1.0)
    apply_fill(st, "BTC-USD", "SELL", 0.3, 30_200.0, 0.0, 1.0)
    p = position(st, "BTC-USD")
    assert p.quantity == 0.0
    assert p.avg_price == 0.0
    # 0.1*(30200-30000) + 0.2*(30200-30100) = 20 + 20
    assert p.realized_pnl == pytest.approx(40.0, rel=1e-12)


def test_equity_is_cash_plus_positions_marked_with_their_multipliers() -> None:
    st = _fresh()
    for spec in (ES, ZN, GC):
        register_instrument(st, spec)
    apply_fill(st, "ES", "BUY", 3.0, 1640.0, 3.0, 50.0)
    apply_fill(st, "ZN", "SELL", 2.0, 126.5, 2.0, 1000.0)
    apply_fill(st, "GC", "BUY", 1.0, 1390.0, 1.0, 100.0)
    mark(st, "ES", 1643.25)
    mark(st, "ZN", 126.25)
    # GC never marked: valued at its average price
    cash = 1_000_000 - 3 * 1640 * 50 + 2 * 126.5 * 1000 - 1 * 1390 * 100 - 6
    assert st.cash == cash
    expected = cash + 3 * 1643.25 * 50 - 2 * 126.25 * 1000 + 1 * 1390 * 100
    assert equity(st) == pytest.approx(expected, rel=1e-15)
    # ES +3.25 pts * 3 * 50, ZN short gains 0.25 * 2 * 1000
    assert unrealized_pnl(st) == pytest.approx(487.5 + 500.0, rel=1e-15)
    assert unrealized_pnl(st, "ES") == pytest.approx(487.5, rel=1e-15)
    assert day_pnl(st) == pytest.approx(487.5 + 500.0 - 6.0, rel=1e-12)


def test_start_session_resets_baseline_and_reduce_only_but_not_the_kill_switch() -> None:
    st = _fresh()
    apply_fill(st, "ES", "BUY", 3.0, 1640.0, 3.0, 50.0)
    mark(st, "ES", 1500.0)  # -21,000 - fees
    set_reduce_only(st, True, "DAILY_LOSS_LIMIT")
    set_halted(st, True, "manual")
    assert day_pnl(st) == -21_003.0
    start_session(st, "2013-09-03")
    assert st.session_id == "2013-09-03"
    assert st.start_equity == 1_000_000.0 - 21_003.0
    assert day_pnl(st) == 0.0
    assert not st.reduce_only and st.reduce_only_reason == ""
    assert st.halted and st.halt_reason == "manual"
    start_session(st, "2013-09-04", equity_now=990_000.0)
    assert st.start_equity == 990_000.0


def test_working_quantity_is_booked_and_released_by_fills_and_cancels() -> None:
    st = _fresh()
    with pytest.raises(ValueError, match="register_instrument"):
        add_working(st, "ES", "BUY", 2.0)
    register_instrument(st, ES)
    add_working(st, "ES", "BUY", 5.0)
    add_working(st, "ES", "SELL", 1.0)
    apply_fill(st, "ES", "BUY", 2.0, 1640.0, 2.0, 50.0)
    p = position(st, "ES")
    assert (p.quantity, p.working_buy, p.working_sell, p.group) == (2.0, 3.0, 1.0, "equity_index")
    add_working(st, "ES", "BUY", -3.0)  # cancel the rest
    apply_fill(st, "ES", "SELL", 2.0, 1641.0, 2.0, 50.0)  # more than working: clamps at 0
    p = position(st, "ES")
    assert (p.quantity, p.working_buy, p.working_sell) == (0.0, 0.0, 0.0)


def test_rate_window_counts_orders_by_event_time_and_stays_bounded() -> None:
    st = _fresh()
    lim = RiskLimits(max_orders_per_window=3, rate_window_ns=60_000_000_000)
    sec = 1_000_000_000
    for t in (0, 10, 20, 30, 40):
        record_order(st, t * sec, lim)
    assert st.order_times == [20 * sec, 30 * sec, 40 * sec]
    assert orders_in_window(st, 40 * sec, lim.rate_window_ns) == 3
    # window is (ts - 60 s, ts]: at 80 s the order at 20 s has left it
    assert orders_in_window(st, 80 * sec, lim.rate_window_ns) == 2
    assert orders_in_window(st, 79 * sec, lim.rate_window_ns) == 3
    assert orders_in_window(st, 101 * sec, lim.rate_window_ns) == 0


def test_copy_state_is_independent_of_the_original() -> None:
    st = _fresh()
    apply_fill(st, "ES", "BUY", 1.0, 1640.0, 1.0, 50.0)
    mark(st, "ES", 1640.0)
    record_order(st, 1, RiskLimits())
    cp = copy_state(st)
    apply_fill(st, "ES", "BUY", 1.0, 1641.0, 1.0, 50.0)
    mark(st, "ES", 1650.0)
    record_order(st, 2, RiskLimits())
    assert position(cp, "ES").quantity == 1.0
    assert cp.last_prices == {"ES": 1640.0}
    assert cp.order_times == [1]
    assert cp.cash == 1_000_000 - 1640 * 50 - 1


def test_state_round_trips_through_msgpack() -> None:
    st = _fresh()
    register_instrument(st, ZN)
    apply_fill(st, "ES", "SELL", 2.0, 1640.0, 2.0, 50.0, "equity_index")
    mark(st, "ES", 1638.5)
    add_working(st, "ZN", "BUY", 4.0)
    record_order(st, 123, RiskLimits())
    set_halted(st, True, "ops")
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(st), type=AccountState)
    assert again == st
    assert equity(again) == equity(st)


def test_inconsistent_instrument_data_and_bad_fills_are_rejected() -> None:
    st = _fresh()
    apply_fill(st, "ES", "BUY", 1.0, 1640.0, 1.0, 50.0)
    with pytest.raises(ValueError, match="multiplier"):
        apply_fill(st, "ES", "BUY", 1.0, 1640.0, 1.0, 5.0)
    with pytest.raises(ValueError, match="multiplier"):
        register_instrument(
            st,
            InstrumentSpec(symbol="ES", multiplier=5.0, tick_size=0.25, lot_size=1.0, group="x"),
        )
    for bad in (
        {"qty": 0.0},
        {"qty": float("nan")},
        {"price": -1.0},
        {"price": float("inf")},
        {"fee": float("nan")},
    ):
        args = {"qty": 1.0, "price": 1640.0, "fee": 0.0} | bad
        with pytest.raises(ValueError):
            apply_fill(st, "ES", "BUY", args["qty"], args["price"], args["fee"], 50.0)
    with pytest.raises(ValueError, match="lot_size"):
        InstrumentSpec(symbol="ES", multiplier=50.0, tick_size=0.25, lot_size=0.0, group="g")
    with pytest.raises(ValueError, match="group"):
        InstrumentSpec(symbol="ES", multiplier=50.0, tick_size=0.25, lot_size=1.0, group="")
