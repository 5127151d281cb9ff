"""The gate runs one rule list for parents and children: the child subset and its working rule.

E-mini-sized books (ES ~1640 x 50 = $82,000 a contract on $1,000,000). A child is checked when
it is released, with ``unrouted`` = its own quantity plus its parent's other unsent slices
(reserved in the ledger, at no venue); the expected outcomes are worked out by hand.
"""

from __future__ import annotations

import pytest

from operators.domain.ledger import (
    AccountState,
    InstrumentSpec,
    add_working,
    apply_fill,
    mark,
    new_account,
    register_instrument,
    set_halted,
    set_reduce_only,
    set_symbol_halted,
)
from operators.domain.limits import AccountConfig, RiskLimits
from operators.domain.risk_gate import check_child, check_order
from operators.domain.risk_rules import (
    CHILD_RULE_CODES,
    CHILD_RULES,
    KILL_SWITCH,
    REDUCE_ONLY,
    RULES,
    TRADING_HALTED,
    OrderProposal,
)
from topics.messages import Side

T0 = 1_378_216_800_000_000_000
ES = InstrumentSpec(symbol="ES", multiplier=50.0, tick_size=0.25, lot_size=1.0,
                    group="equity_index")
LIMITS = RiskLimits()


def book(position: float, working_buy: float = 0.0, working_sell: float = 0.0) -> AccountState:
    st = new_account(AccountConfig())
    register_instrument(st, ES)
    mark(st, "ES", 1640.0)
    if position:
        apply_fill(st, "ES", "BUY" if position > 0 else "SELL", abs(position), 1640.0, 0.0, 50.0)
    if working_buy:
        add_working(st, "ES", "BUY", working_buy)
    if working_sell:
        add_working(st, "ES", "SELL", working_sell)
    return st


def child(side: Side, qty: float) -> OrderProposal:
    return OrderProposal("ES", side, qty, 1640.0, T0)


def test_the_child_rules_are_a_named_subset_of_the_one_list_in_its_order() -> None:
    assert CHILD_RULE_CODES == (KILL_SWITCH, TRADING_HALTED, REDUCE_ONLY)
    assert tuple(r for r in RULES if r.code in CHILD_RULE_CODES) == CHILD_RULES
    assert all(any(r is p for p in RULES) for r in CHILD_RULES)  # the same rule objects


def test_a_child_is_not_held_to_the_parent_size_rules() -> None:
    # 10 lots = 820,000 USD: far past concentration (25 %) and leverage for a parent...
    st = book(0.0, working_buy=10.0)
    assert not check_order(child("BUY", 10.0), book(0.0), LIMITS, ES).approved
    # ... but a slice of an accepted parent runs only the account switches
    assert check_child(child("BUY", 10.0), st, LIMITS, ES, unrouted=10.0).approved


@pytest.mark.parametrize(("trip", "code"), [
    (lambda st: set_halted(st, True, "desk stop"), KILL_SWITCH),
    (lambda st: set_symbol_halted(st, "ES", True, "exchange halt"), TRADING_HALTED),
])
def test_kill_switch_and_symbol_halt_stop_children_with_the_parent_rules_reason(
        trip: object, code: str) -> None:
    st = book(2.0, working_sell=2.0)
    trip(st)  # type: ignore[operator]
    d = check_child(child("SELL", 2.0), st, LIMITS, ES, unrouted=2.0)
    parent = check_order(child("SELL", 2.0), book(2.0), LIMITS, ES)
    assert parent.approved
    assert d.codes == (code,) and d.allowed_quantity == 0.0
    trip_parent = book(2.0)
    trip(trip_parent)  # type: ignore[operator]
    assert check_order(child("SELL", 2.0), trip_parent, LIMITS, ES).reasons == d.reasons


def test_reduce_only_child_counts_only_routed_working_not_its_own_reservation() -> None:
    # Short 5; a TWAP buy of 8 (four slices of 2) was accepted before the account turned
    # reduce-only, so 8 is booked as working buys though no slice is at the venue yet.
    st = book(-5.0, working_buy=8.0)
    set_reduce_only(st, True, "DAILY_LOSS_LIMIT")
    # the first slice reduces the short from 5 to 3: it passes (its own 2 and the three
    # unsent siblings' 6 are not "working")
    assert check_child(child("BUY", 2.0), st, LIMITS, ES, unrouted=8.0).approved
    # counting the reservation as working would have blocked it (-5 + 8 > 0)
    assert not check_child(child("BUY", 2.0), st, LIMITS, ES, unrouted=0.0).approved


def test_reduce_only_child_is_denied_when_slices_at_the_venue_would_flip_with_it() -> None:
    # Short 3, reduce-only; slice 1 (2 lots) is at the venue unfilled, slices 2-4 (6) unsent.
    st = book(-3.0, working_buy=8.0)
    set_reduce_only(st, True, "DAILY_LOSS_LIMIT")
    d = check_child(child("BUY", 2.0), st, LIMITS, ES, unrouted=6.0)
    # -3 + 2 (working at the venue) + 2 = +1: together they flip the position. The earlier
    # child test looked at the filled position only (-3 + 2 = -1) and let it through.
    assert d.codes == (REDUCE_ONLY,)
    assert d.reasons[0].limit == 1.0 and d.reasons[0].proposed == 2.0
    # the parent rule gives the same answer for the same order on the same book
    parent_view = book(-3.0, working_buy=2.0)
    set_reduce_only(parent_view, True, "DAILY_LOSS_LIMIT")
    assert check_order(child("BUY", 2.0), parent_view, LIMITS, ES).reasons == d.reasons


def test_a_child_passes_while_no_account_switch_is_on() -> None:
    d = check_child(child("BUY", 3.0), book(-1.0, working_buy=3.0), LIMITS, ES, unrouted=3.0)
    assert d.approved and d.allowed_quantity == 3.0 and d.reasons == ()
