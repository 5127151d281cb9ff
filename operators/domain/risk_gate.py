"""The pre-trade gate: runs the ordered rules of ``risk_rules`` on parent and child orders.

A parent order (a sized intent) runs every rule (``check_order``); a denial lists *all*
failing codes and the largest lot multiple every quantity-dependent rule would accept. Each
child order runs ``CHILD_RULES`` when it is released (``check_child``): the same rule
functions, so "reducing" means the same thing for both, with the child's own quantity and
its unsent siblings taken out of the working quantity (they are reserved, not at a venue).

The gate reads the account state and never changes it; the caller records what follows
(``ledger.record_order`` on approval, ``trip_reduce_only`` when ``daily_loss_breached``).
"""

from __future__ import annotations

import msgspec

from operators.domain.ledger import AccountState, InstrumentSpec, equity, set_reduce_only
from operators.domain.limits import RiskLimits
from operators.domain.risk_rules import (
    CHILD_RULES,
    DAILY_LOSS_LIMIT,
    RULE_CODES,
    RULES,
    OrderProposal,
    Rule,
    RuleInputs,
    allowed_quantity,
    loss_breached,
    prepare,
)
from topics.messages import Reason, RiskReject


class RiskDecision(msgspec.Struct, frozen=True):
    """The gate's answer.

    ``allowed_quantity`` equals the request when approved. ``daily_loss_breached`` tells the
    caller to turn the account reduce-only (the check itself does not change state).
    """

    approved: bool
    requested_quantity: float
    allowed_quantity: float
    reasons: tuple[Reason, ...]
    daily_loss_breached: bool

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


def _failing(
    rules: tuple[Rule, ...], order: OrderProposal, qty: float, x: RuleInputs
) -> tuple[list[Reason] | None, bool]:
    reasons: list[Reason] | None = None
    blocked = False
    for rule in rules:
        r = rule.check(order, qty, x)
        if r is not None:
            if reasons is None:
                reasons = [r]
            else:
                reasons.append(r)
            if not rule.quantity_dependent:
                blocked = True
    return reasons, blocked


def check_order(
    order: OrderProposal, state: AccountState, limits: RiskLimits, spec: InstrumentSpec
) -> RiskDecision:
    """A parent order through every rule; the decision carries all failing reasons.

    Reads ``state`` only. ``spec`` must describe ``order.symbol``.
    """
    if spec.symbol != order.symbol:
        raise ValueError(f"spec is for {spec.symbol!r}, order for {order.symbol!r}")
    x = prepare(order, state, limits, spec)
    qty = order.quantity
    reasons, blocked = _failing(RULES, order, qty, x)
    if reasons is None:
        return RiskDecision(True, qty, qty, (), loss_breached(x))
    allowed = 0.0 if blocked else allowed_quantity(order, x)
    return RiskDecision(False, qty, allowed, tuple(reasons), loss_breached(x))


def check_child(
    order: OrderProposal,
    state: AccountState,
    limits: RiskLimits,
    spec: InstrumentSpec,
    *,
    unrouted: float,
) -> RiskDecision:
    """A child order at release through ``CHILD_RULES``.

    ``unrouted`` is the quantity on the child's side that the ledger books as working but no
    venue holds: the child itself and its parent's other unsent slices. A denied child
    allows nothing (``allowed_quantity`` 0): the caller cancels its parent.
    """
    st = state
    if not (st.halted or st.halted_symbols or st.reduce_only):  # every child rule passes
        return RiskDecision(True, order.quantity, order.quantity, (), False)
    x = prepare(order, state, limits, spec, unrouted)
    qty = order.quantity
    reasons, _ = _failing(CHILD_RULES, order, qty, x)
    if reasons is None:
        return RiskDecision(True, qty, qty, (), loss_breached(x))
    return RiskDecision(False, qty, 0.0, tuple(reasons), loss_breached(x))


# -- helpers for the caller ------------------------------------------------------------------


def reduces_risk(order: OrderProposal, state: AccountState) -> bool:
    """True when ``order`` neither increases |position| nor flips it.

    Working quantity on the order's side counts as filled, so two reducing slices that
    together would flip the position are not both "reducing".
    """
    pos = state.positions.get(order.symbol)
    if pos is None:
        return False
    if order.side == "BUY":
        room = -(pos.quantity + pos.working_buy)
    else:
        room = pos.quantity - pos.working_sell
    return order.quantity <= room


def daily_loss_breached(state: AccountState, limits: RiskLimits) -> bool:
    """Whether day PnL is at or below ``-daily_loss_limit * start-of-day equity``."""
    return equity(state) - state.start_equity <= -limits.daily_loss_limit * state.start_equity


def trip_reduce_only(state: AccountState, limits: RiskLimits) -> bool:
    """Turn the account reduce-only if the daily loss limit is breached (e.g. after marks).

    Returns True when this call set the flag.
    """
    if state.reduce_only or not daily_loss_breached(state, limits):
        return False
    set_reduce_only(state, True, DAILY_LOSS_LIMIT)
    return True


def risk_check_flags(decision: RiskDecision) -> dict[str, bool]:
    """One ``<code>_ok`` bool per rule, in rule order (the audit record's ``risk_checks``)."""
    failed = {r.code for r in decision.reasons}
    return {f"{code.lower()}_ok": code not in failed for code in RULE_CODES}


def to_reject(
    decision: RiskDecision, order: OrderProposal, *, decision_id: str, account: str
) -> RiskReject:
    """The ``risk.rejects`` message for a denied order (event time = the order's)."""
    return RiskReject(
        ts_event=order.ts,
        decision_id=decision_id,
        account=account,
        symbol=order.symbol,
        side=order.side,
        requested_quantity=decision.requested_quantity,
        allowed_quantity=decision.allowed_quantity,
        reasons=decision.reasons,
    )
