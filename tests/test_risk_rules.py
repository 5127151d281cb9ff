"""Pre-trade rules: each rule's code, allowed_quantity, and the daily-loss / kill-switch cycle.

Crafted E-mini-sized cases (equity $1,000,000, ES ~1640 x 50 = $82,000 per contract). Each
rule is isolated by setting every other limit wide (``WIDE``) and tightening only its own;
expected allowed quantities are worked out in the tests with plain arithmetic.
"""

from __future__ import annotations

import dataclasses
import math

import msgspec
import numpy as np
import pytest

from operators.domain.ledger import (
    AccountState,
    InstrumentSpec,
    add_working,
    apply_fill,
    equity,
    mark,
    new_account,
    record_order,
    register_instrument,
    set_halted,
    set_reduce_only,
    set_symbol_halted,
    start_session,
)
from operators.domain.limits import AccountConfig, RiskLimits
from operators.domain.risk_gate import (
    RiskDecision,
    check_order,
    daily_loss_breached,
    reduces_risk,
    risk_check_flags,
    to_reject,
    trip_reduce_only,
)
from operators.domain.risk_rules import (
    CONCENTRATION_LIMIT,
    DAILY_LOSS_LIMIT,
    KILL_SWITCH,
    LEVERAGE_LIMIT,
    MAX_NOTIONAL,
    PRICE_COLLAR,
    QUANTITY_DEPENDENT,
    RATE_LIMIT,
    REDUCE_ONLY,
    RESTRICTED,
    RULE_CODES,
    RULES,
    SECTOR_LIMIT,
    SHORT_SALE,
    TRADING_HALTED,
    OrderProposal,
)
from topics.messages import Side

SEC = 1_000_000_000
T0 = 1_378_216_800 * SEC  # 2013-09-03 13:00 UTC, inside the E-mini sample

SPECS = {
    s.symbol: s
    for s in (
        InstrumentSpec(
            symbol="ES", multiplier=50.0, tick_size=0.25, lot_size=1.0, group="equity_index"
        ),
        InstrumentSpec(
            symbol="NQ", multiplier=20.0, tick_size=0.25, lot_size=1.0, group="equity_index"
        ),
        InstrumentSpec(
            symbol="YM", multiplier=5.0, tick_size=1.0, lot_size=1.0, group="equity_index"
        ),
        InstrumentSpec(
            symbol="ZN", multiplier=1000.0, tick_size=1 / 64, lot_size=1.0, group="rates"
        ),
        InstrumentSpec(symbol="GC", multiplier=100.0, tick_size=0.1, lot_size=1.0, group="metals"),
        InstrumentSpec(
            symbol="BTC-USD", multiplier=1.0, tick_size=0.01, lot_size=0.001, group="crypto"
        ),
    )
}
LAST = {"ES": 1640.0, "NQ": 3100.0, "YM": 14800.0, "ZN": 126.0, "GC": 1390.0, "BTC-USD": 30000.0}
ES_CONTRACT = 1640.0 * 50.0  # $82,000

WIDE = RiskLimits(
    max_order_notional=1e12,
    max_concentration=100.0,
    max_gross_leverage=100.0,
    max_group_exposure=100.0,
    daily_loss_limit=1.0,
    max_orders_per_window=1_000_000,
)


def book(
    positions: dict[str, float] | None = None, cfg: AccountConfig | None = None
) -> AccountState:
    """An account with fee-free fills at LAST and every symbol marked at LAST."""
    st = new_account(cfg or AccountConfig())
    for spec in SPECS.values():
        register_instrument(st, spec)
        mark(st, spec.symbol, LAST[spec.symbol])
    for sym, q in (positions or {}).items():
        apply_fill(
            st, sym, "BUY" if q > 0 else "SELL", abs(q), LAST[sym], 0.0, SPECS[sym].multiplier
        )
    return st


def order(
    sym: str, side: Side, qty: float, price: float | None = None, ts: int = T0
) -> OrderProposal:
    return OrderProposal(sym, side, qty, LAST[sym] if price is None else price, ts)


def check(o: OrderProposal, st: AccountState, lim: RiskLimits) -> RiskDecision:
    return check_order(o, st, lim, SPECS[o.symbol])


def with_qty(o: OrderProposal, qty: float) -> OrderProposal:
    return msgspec.structs.replace(o, quantity=qty)


def assert_only(d: RiskDecision, code: str) -> None:
    assert not d.approved
    assert d.codes == (code,), d.reasons


# --------------------------------------------------------------------------- each rule


def test_kill_switch_blocks_every_order_and_reset_unblocks() -> None:
    st = book({"ES": 2.0})
    set_halted(st, True, "ops: venue outage")
    for o in (order("ES", "BUY", 1.0), order("ES", "SELL", 1.0), order("ZN", "BUY", 1.0)):
        d = check(o, st, WIDE)
        assert_only(d, KILL_SWITCH)
        assert d.allowed_quantity == 0.0
        assert "venue outage" in d.reasons[0].message
    set_halted(st, False)
    assert check(order("ES", "BUY", 1.0), st, WIDE).approved
    assert check(order("ES", "SELL", 1.0), st, WIDE).approved


def test_halted_symbol_blocks_only_that_symbol() -> None:
    st = book()
    set_symbol_halted(st, "ES", True, "CME halt")
    d = check(order("ES", "BUY", 1.0), st, WIDE)
    assert_only(d, TRADING_HALTED)
    assert d.allowed_quantity == 0.0
    assert check(order("NQ", "BUY", 1.0), st, WIDE).approved
    set_symbol_halted(st, "ES", False)
    assert check(order("ES", "BUY", 1.0), st, WIDE).approved


def test_restricted_symbol_is_denied_with_nothing_allowed() -> None:
    lim = dataclasses.replace(WIDE, restricted_symbols=("ES",))
    st = book()
    d = check(order("ES", "BUY", 1.0), st, lim)
    assert_only(d, RESTRICTED)
    assert d.allowed_quantity == 0.0
    assert check(order("NQ", "BUY", 1.0), st, lim).approved


def test_reduce_only_lets_through_only_the_reducing_part() -> None:
    st = book({"ES": 3.0})
    set_reduce_only(st, True, "manual")
    d = check(order("ES", "BUY", 1.0), st, WIDE)
    assert_only(d, REDUCE_ONLY)
    assert d.allowed_quantity == 0.0
    flip = order("ES", "SELL", 5.0)  # long 3 -> short 2 would flip
    d = check(flip, st, WIDE)
    assert_only(d, REDUCE_ONLY)
    assert d.allowed_quantity == 3.0
    assert check(with_qty(flip, d.allowed_quantity), st, WIDE).approved
    assert reduces_risk(with_qty(flip, 3.0), st)
    assert not reduces_risk(flip, st)
    assert not reduces_risk(order("ES", "BUY", 1.0), st)
    assert not reduces_risk(order("NQ", "SELL", 1.0), st)  # flat: selling opens a short


def test_daily_loss_limit_triggers_at_two_percent_of_start_equity() -> None:
    lim = dataclasses.replace(WIDE, daily_loss_limit=0.02)
    st = book({"ES": 4.0})
    mark(st, "ES", 1540.25)  # 4 * 99.75 * 50 = 19,950 lost: inside the limit
    assert not daily_loss_breached(st, lim)
    d = check(order("ES", "BUY", 1.0, 1540.25), st, lim)
    assert d.approved and not d.daily_loss_breached
    mark(st, "ES", 1540.0)  # 4 * 100 * 50 = 20,000 = 2 % of 1,000,000: breached (<=)
    assert daily_loss_breached(st, lim)
    d = check(order("ES", "BUY", 1.0, 1540.0), st, lim)
    assert_only(d, DAILY_LOSS_LIMIT)
    assert d.daily_loss_breached
    assert d.allowed_quantity == 0.0
    assert d.reasons[0].proposed == pytest.approx(0.02, rel=1e-12)


def test_daily_loss_breach_blocks_risk_increasing_orders_until_next_session() -> None:
    lim = dataclasses.replace(WIDE, daily_loss_limit=0.02)
    st = book({"ES": 3.0})
    mark(st, "ES", 1500.0)  # 3 * 140 * 50 = 21,000 > 20,000
    add_more = order("ES", "BUY", 1.0, 1500.0)
    d = check(add_more, st, lim)
    assert_only(d, DAILY_LOSS_LIMIT)
    assert d.daily_loss_breached
    # the caller turns the account reduce-only on the breach
    assert trip_reduce_only(st, lim)
    assert st.reduce_only and st.reduce_only_reason == DAILY_LOSS_LIMIT
    assert not trip_reduce_only(st, lim)  # already set
    assert check(add_more, st, lim).codes == (REDUCE_ONLY, DAILY_LOSS_LIMIT)
    # reducing orders still pass; a sell beyond flat is cut to the position
    assert check(order("ES", "SELL", 2.0, 1500.0), st, lim).approved
    d = check(order("ES", "SELL", 5.0, 1500.0), st, lim)
    assert d.codes == (REDUCE_ONLY, DAILY_LOSS_LIMIT)
    assert d.allowed_quantity == 3.0
    # the market recovers within the session: still reduce-only, now only that code
    mark(st, "ES", 1600.0)
    d = check(order("ES", "BUY", 1.0, 1600.0), st, lim)
    assert_only(d, REDUCE_ONLY)
    assert not d.daily_loss_breached
    # a new session lifts it
    start_session(st, "2013-09-04")
    assert check(order("ES", "BUY", 1.0, 1600.0), st, lim).approved


def test_short_sale_is_denied_when_the_account_may_not_short() -> None:
    st = book({"ES": 2.0}, AccountConfig(allow_short=False))
    o = order("ES", "SELL", 3.0)
    d = check(o, st, WIDE)
    assert_only(d, SHORT_SALE)
    assert d.allowed_quantity == 2.0
    assert check(with_qty(o, 2.0), st, WIDE).approved
    assert check(order("ES", "BUY", 3.0), st, WIDE).approved
    assert_only(check(order("NQ", "SELL", 1.0), st, WIDE), SHORT_SALE)


def test_max_notional_caps_one_order() -> None:
    lim = dataclasses.replace(WIDE, max_order_notional=500_000.0)
    st = book()
    o = order("ES", "BUY", 7.0)  # 7 * 82,000 = 574,000
    d = check(o, st, lim)
    assert_only(d, MAX_NOTIONAL)
    assert d.reasons[0].proposed == 7 * ES_CONTRACT
    assert d.allowed_quantity == 500_000 // ES_CONTRACT == 6
    assert check(with_qty(o, d.allowed_quantity), st, lim).approved
    # a reducing order is still a big order: the notional cap has no reducing exemption
    st = book({"ES": 10.0})
    assert_only(check(order("ES", "SELL", 7.0), st, lim), MAX_NOTIONAL)


def test_price_collar_rejects_fat_fingers_around_the_last_trade() -> None:
    st = book()  # ES last 1640; collar 5 % = [1558, 1722]
    lim = dataclasses.replace(WIDE, price_collar_pct=0.05)
    for px in (1722.25, 1557.75, 2640.0):
        d = check(order("ES", "BUY", 1.0, px), st, lim)
        assert_only(d, PRICE_COLLAR)
        assert d.allowed_quantity == 0.0
        assert d.reasons[0].proposed == pytest.approx(abs(px / 1640.0 - 1.0), rel=1e-12)
    for px in (1722.0, 1558.0, 1640.25):
        assert check(order("ES", "BUY", 1.0, px), st, lim).approved
    del st.last_prices["ES"]
    assert_only(check(order("ES", "BUY", 1.0), st, lim), PRICE_COLLAR)


def test_concentration_limit_caps_the_position_at_a_quarter_of_equity() -> None:
    lim = dataclasses.replace(WIDE, max_concentration=0.25)
    st = book()
    o = order("ES", "BUY", 4.0)  # 4 * 82,000 = 32.8 % of 1,000,000
    d = check(o, st, lim)
    assert_only(d, CONCENTRATION_LIMIT)
    assert d.reasons[0].proposed == pytest.approx(4 * ES_CONTRACT / 1e6, rel=1e-12)
    assert d.allowed_quantity == math.floor(0.25 * 1e6 / ES_CONTRACT) == 3
    assert check(with_qty(o, 3.0), st, lim).approved
    # from short 3, buying 6 ends long 3 (24.6 %), 7 ends long 4 (32.8 %)
    st = book({"ES": -3.0})
    d = check(order("ES", "BUY", 8.0), st, lim)
    assert_only(d, CONCENTRATION_LIMIT)
    assert d.allowed_quantity == 6.0
    assert check(order("ES", "BUY", 6.0), st, lim).approved


def test_exposure_limits_never_block_an_order_that_reduces_exposure() -> None:
    st = book({"ES": 5.0, "ZN": 8.0})  # ES 41 %, ZN 100.8 %, gross 141.8 %
    lim = dataclasses.replace(
        WIDE, max_concentration=0.25, max_gross_leverage=1.0, max_group_exposure=0.3
    )
    assert check(order("ES", "SELL", 1.0), st, lim).approved
    assert check(order("ZN", "SELL", 8.0), st, lim).approved
    # selling 10 ES flips to short 5: same exposure as now, still allowed
    assert check(order("ES", "SELL", 10.0), st, lim).approved
    d = check(order("ES", "SELL", 11.0), st, lim)
    assert d.codes == (CONCENTRATION_LIMIT, LEVERAGE_LIMIT, SECTOR_LIMIT)
    assert d.allowed_quantity == 10.0


def test_leverage_limit_caps_gross_exposure_across_symbols() -> None:
    lim = dataclasses.replace(WIDE, max_gross_leverage=1.5)
    st = book({"ZN": 7.0})  # 7 * 126 * 1000 = 882,000 gross
    o = order("ES", "BUY", 8.0)  # + 656,000 = 1,538,000 > 1,500,000
    d = check(o, st, lim)
    assert_only(d, LEVERAGE_LIMIT)
    assert d.reasons[0].proposed == pytest.approx((882_000 + 8 * ES_CONTRACT) / 1e6, rel=1e-12)
    assert d.allowed_quantity == math.floor((1_500_000 - 882_000) / ES_CONTRACT) == 7
    assert check(with_qty(o, 7.0), st, lim).approved
    # a short position is gross exposure too
    st = book({"ZN": -7.0})
    assert check(o, st, lim).allowed_quantity == 7.0


def test_sector_limit_caps_one_instrument_group() -> None:
    lim = dataclasses.replace(WIDE, max_group_exposure=0.5)
    st = book({"ES": 3.0, "NQ": 2.0})  # 246,000 + 124,000 = 370,000 equity_index
    o = order("YM", "BUY", 3.0)  # 3 * 14,800 * 5 = 222,000 -> 592,000
    d = check(o, st, lim)
    assert_only(d, SECTOR_LIMIT)
    assert d.allowed_quantity == math.floor((500_000 - 370_000) / 74_000) == 1
    assert check(with_qty(o, 1.0), st, lim).approved
    # another group is not affected by equity-index exposure
    assert check(order("GC", "BUY", 3.0), st, lim).approved


def test_rate_limit_counts_accepted_orders_in_an_event_time_window() -> None:
    lim = dataclasses.replace(WIDE, max_orders_per_window=3, rate_window_ns=60 * SEC)
    st = book()
    for i in range(3):
        o = order("ES", "BUY", 1.0, ts=T0 + i * SEC)
        assert check(o, st, lim).approved
        record_order(st, o.ts, lim)
    d = check(order("ES", "BUY", 1.0, ts=T0 + 30 * SEC), st, lim)
    assert_only(d, RATE_LIMIT)
    assert d.allowed_quantity == 0.0
    assert_only(check(order("ES", "BUY", 1.0, ts=T0 + 60 * SEC - 1), st, lim), RATE_LIMIT)
    # at T0 + 60 s the first order (at T0) has left the window (ts - 60 s, ts]
    assert check(order("ES", "BUY", 1.0, ts=T0 + 60 * SEC), st, lim).approved


def test_working_orders_count_so_slicing_cannot_exceed_a_limit() -> None:
    lim = dataclasses.replace(WIDE, max_concentration=0.25)
    st = book({"ES": 2.0})
    assert check(order("ES", "BUY", 1.0), st, lim).approved  # would be long 3 = 24.6 %
    add_working(st, "ES", "BUY", 1.0)
    d = check(order("ES", "BUY", 1.0), st, lim)  # 2 held + 1 working + 1 = 32.8 %
    assert_only(d, CONCENTRATION_LIMIT)
    assert d.allowed_quantity == 0.0
    # working orders of other symbols count toward gross and group exposure
    lev = dataclasses.replace(WIDE, max_gross_leverage=1.5)
    st2 = book()
    assert check(order("ES", "BUY", 8.0), st2, lev).approved  # 656,000 alone
    add_working(st2, "ZN", "SELL", 7.0)  # worst case short 7 ZN = 882,000
    d = check(order("ES", "BUY", 8.0), st2, lev)
    assert_only(d, LEVERAGE_LIMIT)
    assert d.allowed_quantity == 7.0
    # working sells do not make a new sell "reducing"
    set_reduce_only(st, True)
    add_working(st, "ES", "SELL", 2.0)
    assert not reduces_risk(order("ES", "SELL", 1.0), st)
    assert_only(check(order("ES", "SELL", 1.0), st, lim), REDUCE_ONLY)


# --------------------------------------------------------------------------- the decision


def test_every_failing_rule_is_reported_in_rule_order() -> None:
    lim = RiskLimits(
        restricted_symbols=("ES",), max_order_notional=1_000_000.0, max_orders_per_window=1
    )
    st = book({"NQ": 4.0})
    record_order(st, T0, lim)
    d = check(order("ES", "BUY", 20.0, 1800.0, ts=T0 + SEC), st, lim)
    assert d.codes == (
        RESTRICTED,
        MAX_NOTIONAL,
        PRICE_COLLAR,
        CONCENTRATION_LIMIT,  # 20 * 1800 * 50 = 1.8M: 180 % of equity
        LEVERAGE_LIMIT,
        SECTOR_LIMIT,
        RATE_LIMIT,
    )
    assert d.allowed_quantity == 0.0  # quantity-independent failures


def test_allowed_quantity_is_the_tightest_of_the_quantity_rules() -> None:
    lim = RiskLimits(max_order_notional=400_000.0)  # notional 4, concentration 3, group 1
    st = book({"NQ": 6.0})  # 372,000 equity_index already
    d = check(order("ES", "BUY", 10.0), st, lim)
    assert d.codes == (MAX_NOTIONAL, CONCENTRATION_LIMIT, SECTOR_LIMIT)
    caps = (400_000 // ES_CONTRACT, 250_000 // ES_CONTRACT, (500_000 - 372_000) // ES_CONTRACT)
    assert d.allowed_quantity == min(caps) == 1.0
    assert check(order("ES", "BUY", 1.0), st, lim).approved


def test_check_reads_the_state_without_changing_it() -> None:
    st = book({"ES": 3.0, "ZN": -2.0})
    set_reduce_only(st, True)
    before = msgspec.msgpack.encode(st)
    check(order("ES", "BUY", 5.0), st, RiskLimits())
    check(order("ZN", "BUY", 1.0), st, RiskLimits())
    assert msgspec.msgpack.encode(st) == before


def test_spec_must_match_the_order_symbol() -> None:
    with pytest.raises(ValueError, match="spec is for 'NQ'"):
        check_order(order("ES", "BUY", 1.0), book(), WIDE, SPECS["NQ"])


def test_invalid_order_proposals_are_rejected_at_construction() -> None:
    for args in (
        ("ES", "HOLD", 1.0, 1640.0, T0),
        ("ES", "BUY", 0.0, 1640.0, T0),
        ("ES", "BUY", float("nan"), 1640.0, T0),
        ("ES", "BUY", 1.0, -1640.0, T0),
        ("ES", "BUY", 1.0, float("inf"), T0),
    ):
        with pytest.raises(ValueError):
            OrderProposal(*args)  # type: ignore[arg-type]


def test_audit_flags_name_every_rule_and_mark_the_failing_ones() -> None:
    lim = dataclasses.replace(WIDE, max_concentration=0.25, max_group_exposure=0.5)
    st = book({"NQ": 6.0})
    approved = check(order("ES", "BUY", 1.0), st, lim)
    flags = risk_check_flags(approved)
    assert list(flags) == [f"{c.lower()}_ok" for c in RULE_CODES]
    assert "max_notional_ok" in flags and "kill_switch_ok" in flags
    assert all(flags.values())
    denied = check(order("ES", "BUY", 4.0), st, lim)
    flags = risk_check_flags(denied)
    assert [k for k, ok in flags.items() if not ok] == ["concentration_limit_ok", "sector_limit_ok"]
    rej = to_reject(denied, order("ES", "BUY", 4.0), decision_id="d-1", account="acct-1")
    assert (rej.requested_quantity, rej.allowed_quantity) == (4.0, denied.allowed_quantity)
    assert rej.reasons == denied.reasons and rej.ts_event == T0 and rej.side == "BUY"


def test_public_predicates_each_report_their_own_rule() -> None:
    assert [r.code for r in RULES] == list(RULE_CODES)
    st = book({"ES": 3.0})
    set_halted(st, True)
    lim = RiskLimits(restricted_symbols=("ES",))
    o = order("ES", "BUY", 1.0)
    failing = [rule.code for rule in RULES if rule(o, st, lim, SPECS["ES"]) is not None]
    assert failing == [KILL_SWITCH, RESTRICTED, CONCENTRATION_LIMIT]


# --------------------------------------------------------------------------- randomized


def _random_case(rng: np.random.Generator) -> tuple[AccountState, RiskLimits, OrderProposal]:
    st = new_account(AccountConfig(allow_short=bool(rng.random() < 0.8)))
    for sym, spec in SPECS.items():
        register_instrument(st, spec)
        tick = spec.tick_size
        lots = int(rng.integers(-8, 9)) if rng.random() < 0.7 else 0
        fill_px = round(LAST[sym] * (1 + rng.normal(0, 0.01)) / tick) * tick
        if lots:
            apply_fill(
                st,
                sym,
                "BUY" if lots > 0 else "SELL",
                abs(lots) * spec.lot_size,
                fill_px,
                1.0,
                spec.multiplier,
            )
        mark(st, sym, round(LAST[sym] * (1 + rng.normal(0, 0.01)) / tick) * tick)
        if rng.random() < 0.3:
            add_working(st, sym, "BUY", int(rng.integers(1, 4)) * spec.lot_size)
        if rng.random() < 0.3:
            add_working(st, sym, "SELL", int(rng.integers(1, 4)) * spec.lot_size)
    if rng.random() < 0.2:
        set_reduce_only(st, True)
    st.start_equity = equity(st) * float(rng.uniform(0.97, 1.03))
    lim = RiskLimits(
        max_order_notional=float(rng.uniform(5e4, 2e6)),
        max_concentration=float(rng.uniform(0.05, 0.6)),
        max_gross_leverage=float(rng.uniform(0.5, 3.0)),
        max_group_exposure=float(rng.uniform(0.2, 1.5)),
        daily_loss_limit=float(rng.uniform(0.005, 0.04)),
        price_collar_pct=0.05,
    )
    sym = str(rng.choice(list(SPECS)))
    spec = SPECS[sym]
    px = round(st.last_prices[sym] * (1 + rng.uniform(-0.02, 0.02)) / spec.tick_size)
    o = OrderProposal(
        sym,
        "BUY" if rng.random() < 0.5 else "SELL",
        int(rng.integers(1, 25)) * spec.lot_size,
        px * spec.tick_size,
        T0,
    )
    return st, lim, o


def test_allowed_quantity_passes_and_one_more_lot_fails_on_random_accounts() -> None:
    rng = np.random.default_rng(7)
    partial = 0
    for _ in range(400):
        st, lim, o = _random_case(rng)
        spec = SPECS[o.symbol]
        d = check_order(o, st, lim, spec)
        # the decision agrees with the rules run one by one
        expected = tuple(r for rule in RULES if (r := rule(o, st, lim, spec)) is not None)
        assert d.reasons == expected
        if d.approved:
            assert d.allowed_quantity == o.quantity
            continue
        assert d.allowed_quantity <= o.quantity
        lots = round(d.allowed_quantity / spec.lot_size)
        assert d.allowed_quantity == pytest.approx(lots * spec.lot_size, rel=1e-12)
        if not set(d.codes) <= QUANTITY_DEPENDENT:
            assert d.allowed_quantity == 0.0
            continue
        # brute force: the largest lot count that check_order approves
        n_req = round(o.quantity / spec.lot_size)
        passing = [
            k
            for k in range(1, n_req + 1)
            if check_order(with_qty(o, k * spec.lot_size), st, lim, spec).approved
        ]
        assert lots == (max(passing) if passing else 0)
        if lots:
            partial += 1
            assert check_order(with_qty(o, d.allowed_quantity), st, lim, spec).approved
        if lots < n_req:
            more = check_order(with_qty(o, (lots + 1) * spec.lot_size), st, lim, spec)
            assert not more.approved
            assert set(more.codes) <= QUANTITY_DEPENDENT
    assert partial > 40  # the sample really exercised partial allowances
