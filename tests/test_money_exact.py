"""Money is exact: the ledger books in fixed point, the summary reports whole cents.

The E-mini replay's fills are re-booked here in exact rationals (average cost, the basis
removed pro rata), independently of the ledger; the summary's money figures must equal that
book to the cent, and print with at most two decimals (no -10,024.9999999999).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest

from operators.domain.ledger import (
    apply_fill,
    equity,
    mark,
    new_account,
    position,
    realized_pnl,
    total_fees,
    unrealized_pnl,
)
from operators.domain.limits import AccountConfig
from tests._replay_fixture import ReplayPool, pool_fixture
from topics.messages import Fill, Position

replays = pool_fixture()

ES_MULTIPLIER = 50


def _cents(x: Fraction) -> Decimal:
    """Half-even to the cent, as the summary rounds."""
    return (Decimal(x.numerator) / Decimal(x.denominator)).quantize(Decimal("0.01"))


def _exact_book(fills: list[Fill]) -> tuple[Fraction, Fraction, Fraction, int]:
    """Average-cost book in rationals: (realized, fees, basis of the open position, position)."""
    q = 0
    basis = Fraction(0)  # signed sum of open quantity x entry price x multiplier
    realized = Fraction(0)
    fees = Fraction(0)
    for f in fills:
        qty = int(f.quantity)
        assert qty == f.quantity
        px = Fraction(Decimal(repr(f.price)))
        fees += Fraction(Decimal(repr(f.fee)))
        s = qty if f.side == "BUY" else -qty
        closing = min(qty, abs(q)) if q * s < 0 else 0
        if closing:
            removed = basis * Fraction(closing, abs(q))
            sign = 1 if q > 0 else -1
            realized += sign * closing * px * ES_MULTIPLIER - removed
            basis -= removed
            q -= sign * closing
        opening = qty - closing
        if opening:
            q += opening if s > 0 else -opening
            basis += (opening if s > 0 else -opening) * px * ES_MULTIPLIER
    return realized, fees, basis, q


def _two_decimals(x: float) -> bool:
    d = Decimal(repr(x))
    return d == d.quantize(Decimal("0.01"))


def test_summary_money_equals_an_exact_rebooking_of_the_replays_fills_to_the_cent(
    replays: ReplayPool, emini_ticks_path: Path
) -> None:
    run = replays.get("base")
    fills: list[Fill] = run.topic("fills")
    assert len(fills) > 100, "too few fills to exercise the ledger"
    realized, fees, basis, q = _exact_book(fills)
    last_price = Fraction(Decimal(repr(float(
        pd.read_csv(emini_ticks_path, usecols=["Price"])["Price"].iloc[-1]))))
    unrealized = q * last_price * ES_MULTIPLIER - basis
    s = run.summary
    assert Decimal(repr(s["realized_pnl"])) == _cents(realized)
    assert Decimal(repr(s["fees"])) == _cents(fees)
    assert Decimal(repr(s["unrealized_pnl"])) == _cents(unrealized)
    assert Decimal(repr(s["pnl"])) == _cents(realized + unrealized - fees)
    assert Decimal(repr(s["gross_pnl"])) == _cents(realized + unrealized)
    for key in ("pnl", "gross_pnl", "realized_pnl", "unrealized_pnl", "fees", "final_equity"):
        assert _two_decimals(s[key]), f"summary {key} = {s[key]!r} is not a whole number of cents"
    # every published position is fixed point (at most eight decimals) and balances exactly
    positions: list[Position] = run.topic("positions")
    for p in positions:
        d = [Decimal(repr(v)) for v in (p.realized_pnl, p.unrealized_pnl, p.fees, p.equity)]
        assert all(v == v.quantize(Decimal("1e-8")) for v in d), p
        assert d[3] == Decimal(1_000_000) + d[0] + d[1] - d[2], p


def test_amounts_that_floats_cannot_hold_stay_exact_in_the_ledger() -> None:
    """Ten-cent steps: 0.1 + 0.2 != 0.3 in binary floats, but the ledger books decimals."""
    st = new_account(AccountConfig(initial_equity=1_000_000.1, fee_per_contract=0.1))
    cfg = AccountConfig(fee_per_contract=0.1)
    book = [("BUY", 3.0, 0.1), ("BUY", 7.0, 0.2), ("SELL", 10.0, 0.3), ("BUY", 1.0, 0.7),
            ("SELL", 1.0, 0.1)]
    for side, qty, px in book:
        apply_fill(st, "XYZ", side, qty, px, cfg.fee(qty, px, 1.0), 1.0)  # type: ignore[arg-type]
        mark(st, "XYZ", px)
    # realized: 3 x 0.2 + 7 x 0.1 - 0.6 = 0.7; fees: 22 contracts x 0.1 = 2.2
    assert realized_pnl(st) == 0.7
    assert total_fees(st) == 2.2
    assert position(st, "XYZ").quantity == 0.0
    assert unrealized_pnl(st) == 0.0
    assert repr(st.cash) == repr(equity(st)) == "999998.6"  # 1,000,000.1 + 0.7 - 2.2


def test_fees_are_rounded_half_up_to_the_cent() -> None:
    bps = AccountConfig(fee_per_contract=0.0, fee_bps=5.0)
    assert bps.fee(1.0, 10.0, 1.0) == 0.01  # 0.005 exactly: half up
    assert bps.fee(1.0, 9.99, 1.0) == 0.0  # 0.004995
    assert bps.fee(0.001, 43_210.57, 1.0) == 0.02  # 0.021605285
    assert AccountConfig().fee(3.0, 1640.375, 50.0) == 3.0


@pytest.mark.parametrize("qty", [1.0, 2.0, 3.0, 7.0])
def test_a_partial_close_removes_the_pro_rata_basis_rounded_to_the_unit(qty: float) -> None:
    """Buy 3 at three prices, sell ``qty``: realized equals the rational book to 1e-8 USD."""
    st = new_account(AccountConfig())
    fills = [("BUY", 1.0, 1640.25), ("BUY", 1.0, 1640.5), ("BUY", 1.0, 1641.0),
             ("SELL", qty, 1642.125)]
    for side, q, px in fills:
        apply_fill(st, "ES", side, q, px, 0.0, 50.0)  # type: ignore[arg-type]
        mark(st, "ES", px)
    basis = (Fraction("1640.25") + Fraction("1640.5") + Fraction("1641")) * 50
    closed = Fraction(min(qty, 3.0))
    exact = closed * Fraction("1642.125") * 50 - basis * closed / 3
    assert abs(Fraction(repr(realized_pnl(st))) - exact) <= Fraction(1, 10**8)
    # the identity holds exactly on the published decimals
    assert Fraction(repr(equity(st))) == (1_000_000 + Fraction(repr(realized_pnl(st)))
                                          + Fraction(repr(unrealized_pnl(st))))
