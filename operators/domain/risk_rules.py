"""Pre-trade risk rules: small ordered predicates, and the check that runs them all.

Each rule is a function ``(order, state, limits, spec) -> Reason | None`` (``RULES``, in
order). ``check_order`` runs every rule, so a rejection lists *all* failing codes, and
computes ``allowed_quantity``: the largest lot multiple, same side and at most the request,
that every quantity-dependent rule would accept (0 when a quantity-independent rule fails).

Exposure limits (concentration, leverage, group) never block an order that does not
increase the exposure they measure: an account pushed over a limit by the market must
still be able to reduce. Positions are taken as the worst case in the order's direction:
position plus the working (routed, unfilled) quantity on the order's side, so splitting an
order into slices cannot get round a limit. The order's own symbol is valued at the order
price; other symbols at their last trade (their average price before any trade is seen).

``check_order`` reads the state and never changes it; the caller records what follows
from the decision (``ledger.record_order`` on approval, ``ledger.set_reduce_only`` when
``daily_loss_breached``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from operators.domain.ledger import (
    AccountState,
    InstrumentSpec,
    equity,
    orders_in_window,
    set_reduce_only,
)
from operators.domain.limits import RiskLimits
from topics.messages import Reason, RiskReject, Side

KILL_SWITCH = "KILL_SWITCH"
TRADING_HALTED = "TRADING_HALTED"
RESTRICTED = "RESTRICTED"
REDUCE_ONLY = "REDUCE_ONLY"
DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
SHORT_SALE = "SHORT_SALE"
MAX_NOTIONAL = "MAX_NOTIONAL"
PRICE_COLLAR = "PRICE_COLLAR"
CONCENTRATION_LIMIT = "CONCENTRATION_LIMIT"
LEVERAGE_LIMIT = "LEVERAGE_LIMIT"
SECTOR_LIMIT = "SECTOR_LIMIT"
RATE_LIMIT = "RATE_LIMIT"

_LOT_EPS = 1e-9


class OrderProposal(msgspec.Struct, frozen=True):
    """A parent order to check: ``price`` is its reference (limit or expected fill) price."""

    symbol: str
    side: Side
    quantity: float
    price: float
    ts: int

    def __post_init__(self) -> None:
        if self.side not in ("BUY", "SELL"):
            raise ValueError(f"side must be BUY or SELL, got {self.side!r}")
        if not (self.quantity > 0.0 and math.isfinite(self.quantity)):
            raise ValueError(f"quantity must be finite and > 0, got {self.quantity!r}")
        if not (self.price > 0.0 and math.isfinite(self.price)):
            raise ValueError(f"price must be finite and > 0, got {self.price!r}")


class RiskDecision(msgspec.Struct, frozen=True):
    """The outcome of ``check_order``.

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


class _Check(NamedTuple):
    """One check's inputs plus the account figures every rule needs, computed in one pass."""

    state: AccountState
    limits: RiskLimits
    spec: InstrumentSpec
    equity: float
    day_pnl: float
    quantity: float  # the order symbol's position
    directed: float  # (position + same-side working) signed in the order's direction
    gross_other: float  # worst-case |notional| of every other symbol
    group_other: float  # the same, summed over the order's group only


def _prepare(
    order: OrderProposal, state: AccountState, limits: RiskLimits, spec: InstrumentSpec
) -> _Check:
    sym = order.symbol
    group = spec.group
    last = state.last_prices
    eq = state.cash
    gross_other = 0.0
    group_other = 0.0
    q = 0.0
    wb = 0.0
    ws = 0.0
    for s, pos in state.positions.items():
        pq = pos.quantity
        px = last.get(s)
        if px is None:
            px = pos.avg_price
        if pq != 0.0:
            eq += pq * px * pos.multiplier
        if s == sym:
            q = pq
            wb = pos.working_buy
            ws = pos.working_sell
            continue
        hi = pq + pos.working_buy
        lo = pq - pos.working_sell
        worst = hi if hi >= -lo else -lo  # max(|hi|, |lo|) since hi >= lo
        if worst != 0.0:
            e = worst * px * pos.multiplier
            gross_other += e
            if pos.group == group:
                group_other += e
    directed = q + wb if order.side == "BUY" else ws - q
    return _Check(
        state, limits, spec, eq, eq - state.start_equity, q, directed, gross_other, group_other
    )


def _reducing_cap(x: _Check) -> float:
    """Largest quantity that neither increases |position| nor flips it."""
    return -x.directed if x.directed < 0.0 else 0.0


def _loss_breached(x: _Check) -> bool:
    return x.day_pnl <= -x.limits.daily_loss_limit * x.state.start_equity


def _ratio_cap(directed: float, k: float) -> float:
    """Largest qty passing "|directed + qty| <= |directed|  or  |directed + qty| <= k".

    Both sets are intervals starting at 0 (see docs/risk.md), so their union is
    ``[0, cap]``.
    """
    if directed < 0.0:
        return max(-2.0 * directed, k - directed)
    return max(0.0, k - directed)


_Rule = Callable[[OrderProposal, float, _Check], Reason | None]


# -- quantity-independent rules -------------------------------------------------------------


def _kill_switch(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    st = x.state
    if not st.halted:
        return None
    why = f": {st.halt_reason}" if st.halt_reason else ""
    return Reason(code=KILL_SWITCH, message=f"account kill switch is on{why}")


def _trading_halted(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    halted = x.state.halted_symbols
    if o.symbol not in halted:
        return None
    why = f": {halted[o.symbol]}" if halted[o.symbol] else ""
    return Reason(code=TRADING_HALTED, message=f"trading in {o.symbol} is halted{why}")


def _restricted(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    if o.symbol not in x.limits.restricted_symbols:
        return None
    return Reason(code=RESTRICTED, message=f"{o.symbol} is on the restricted list")


def _price_collar(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    pct = x.limits.price_collar_pct
    last = x.state.last_prices.get(o.symbol)
    if last is None:
        return Reason(
            code=PRICE_COLLAR,
            message=f"no last trade of {o.symbol} to check the price {o.price} against",
            limit=pct,
        )
    dev = abs(o.price - last)
    if dev <= pct * last:
        return None
    return Reason(
        code=PRICE_COLLAR,
        message=(
            f"price {o.price} is {dev / last:.2%} from the last trade {last} (collar {pct:.2%})"
        ),
        limit=pct,
        proposed=dev / last,
    )


def _rate_limit(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    lim = x.limits
    n = orders_in_window(x.state, o.ts, lim.rate_window_ns)
    if n < lim.max_orders_per_window:
        return None
    return Reason(
        code=RATE_LIMIT,
        message=(
            f"{n} orders in the last {lim.rate_window_ns / 1e9:g} s"
            f" (max {lim.max_orders_per_window})"
        ),
        limit=float(lim.max_orders_per_window),
        proposed=float(n + 1),
    )


# -- quantity-dependent rules ---------------------------------------------------------------


def _reduce_only(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    st = x.state
    if not st.reduce_only:
        return None
    cap = _reducing_cap(x)
    if qty <= cap:
        return None
    why = f" ({st.reduce_only_reason})" if st.reduce_only_reason else ""
    verb = "bought" if o.side == "BUY" else "sold"
    return Reason(
        code=REDUCE_ONLY,
        message=(
            f"account is reduce-only{why}: at most {cap:g} {o.symbol} may be {verb}"
            f" against position {x.quantity:g}"
        ),
        limit=cap,
        proposed=qty,
    )


def _daily_loss_limit(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    if not _loss_breached(x):
        return None
    cap = _reducing_cap(x)
    if qty <= cap:
        return None
    sod = x.state.start_equity
    lim = x.limits.daily_loss_limit
    return Reason(
        code=DAILY_LOSS_LIMIT,
        message=(
            f"day PnL {x.day_pnl:,.2f} breaches the daily loss limit {lim:.2%}"
            f" of start-of-day equity {sod:,.2f}: only reducing orders pass"
        ),
        limit=lim,
        proposed=-x.day_pnl / sod if sod > 0.0 else None,
    )


def _short_sale(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    if x.state.allow_short or o.side == "BUY":
        return None
    cap = _reducing_cap(x)  # for a sell: the long position net of working sells
    if qty <= cap:
        return None
    return Reason(
        code=SHORT_SALE,
        message=f"account may not sell short: at most {cap:g} {o.symbol} can be sold",
        limit=cap,
        proposed=qty,
    )


def _max_notional(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    notional = qty * o.price * x.spec.multiplier
    cap = x.limits.max_order_notional
    if notional <= cap:
        return None
    return Reason(
        code=MAX_NOTIONAL,
        message=f"order notional {notional:,.2f} exceeds {cap:,.2f}",
        limit=cap,
        proposed=notional,
    )


def _ratio_reason(code: str, what: str, after: float, equity: float, limit: float) -> Reason:
    ratio = after / equity if equity > 0.0 else None
    shown = f"{ratio:.2%}" if ratio is not None else f"{after:,.2f} with equity {equity:,.2f}"
    return Reason(
        code=code,
        message=f"{what} after the order would be {shown} of equity (limit {limit:.2%})",
        limit=limit,
        proposed=ratio,
    )


def _concentration(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    after = abs(x.directed + qty)
    if after <= abs(x.directed):
        return None
    notional = after * o.price * x.spec.multiplier
    limit = x.limits.max_concentration
    if notional <= limit * x.equity:
        return None
    return _ratio_reason(CONCENTRATION_LIMIT, f"{o.symbol} position", notional, x.equity, limit)


def _leverage(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    after = abs(x.directed + qty)
    if after <= abs(x.directed):
        return None
    gross = x.gross_other + after * o.price * x.spec.multiplier
    limit = x.limits.max_gross_leverage
    if gross <= limit * x.equity:
        return None
    return _ratio_reason(LEVERAGE_LIMIT, "gross exposure", gross, x.equity, limit)


def _sector(o: OrderProposal, qty: float, x: _Check) -> Reason | None:
    after = abs(x.directed + qty)
    if after <= abs(x.directed):
        return None
    gross = x.group_other + after * o.price * x.spec.multiplier
    limit = x.limits.max_group_exposure
    if gross <= limit * x.equity:
        return None
    what = f"group {x.spec.group!r} exposure"
    return _ratio_reason(SECTOR_LIMIT, what, gross, x.equity, limit)


# (code, rule, depends on quantity) in evaluation order.
_RULES: tuple[tuple[str, _Rule, bool], ...] = (
    (KILL_SWITCH, _kill_switch, False),
    (TRADING_HALTED, _trading_halted, False),
    (RESTRICTED, _restricted, False),
    (REDUCE_ONLY, _reduce_only, True),
    (DAILY_LOSS_LIMIT, _daily_loss_limit, True),
    (SHORT_SALE, _short_sale, True),
    (MAX_NOTIONAL, _max_notional, True),
    (PRICE_COLLAR, _price_collar, False),
    (CONCENTRATION_LIMIT, _concentration, True),
    (LEVERAGE_LIMIT, _leverage, True),
    (SECTOR_LIMIT, _sector, True),
    (RATE_LIMIT, _rate_limit, False),
)

RULE_CODES: tuple[str, ...] = tuple(code for code, _, _ in _RULES)
"""Every rule's code, in evaluation order."""

QUANTITY_DEPENDENT: frozenset[str] = frozenset(code for code, _, dep in _RULES if dep)
"""Codes whose failure leaves a positive ``allowed_quantity`` possible."""


# -- public predicates -----------------------------------------------------------------------

Predicate = Callable[[OrderProposal, AccountState, RiskLimits, InstrumentSpec], Reason | None]


def _public(rule: _Rule, name: str, code: str) -> Predicate:
    def predicate(
        order: OrderProposal, state: AccountState, limits: RiskLimits, spec: InstrumentSpec
    ) -> Reason | None:
        return rule(order, order.quantity, _prepare(order, state, limits, spec))

    predicate.__name__ = predicate.__qualname__ = name
    predicate.__doc__ = f"The {code} rule alone: its Reason if ``order`` fails it, else None."
    return predicate


rule_kill_switch = _public(_kill_switch, "rule_kill_switch", KILL_SWITCH)
rule_trading_halted = _public(_trading_halted, "rule_trading_halted", TRADING_HALTED)
rule_restricted = _public(_restricted, "rule_restricted", RESTRICTED)
rule_reduce_only = _public(_reduce_only, "rule_reduce_only", REDUCE_ONLY)
rule_daily_loss_limit = _public(_daily_loss_limit, "rule_daily_loss_limit", DAILY_LOSS_LIMIT)
rule_short_sale = _public(_short_sale, "rule_short_sale", SHORT_SALE)
rule_max_notional = _public(_max_notional, "rule_max_notional", MAX_NOTIONAL)
rule_price_collar = _public(_price_collar, "rule_price_collar", PRICE_COLLAR)
rule_concentration = _public(_concentration, "rule_concentration", CONCENTRATION_LIMIT)
rule_leverage = _public(_leverage, "rule_leverage", LEVERAGE_LIMIT)
rule_sector = _public(_sector, "rule_sector", SECTOR_LIMIT)
rule_rate_limit = _public(_rate_limit, "rule_rate_limit", RATE_LIMIT)

RULES: tuple[tuple[str, Predicate], ...] = (
    (KILL_SWITCH, rule_kill_switch),
    (TRADING_HALTED, rule_trading_halted),
    (RESTRICTED, rule_restricted),
    (REDUCE_ONLY, rule_reduce_only),
    (DAILY_LOSS_LIMIT, rule_daily_loss_limit),
    (SHORT_SALE, rule_short_sale),
    (MAX_NOTIONAL, rule_max_notional),
    (PRICE_COLLAR, rule_price_collar),
    (CONCENTRATION_LIMIT, rule_concentration),
    (LEVERAGE_LIMIT, rule_leverage),
    (SECTOR_LIMIT, rule_sector),
    (RATE_LIMIT, rule_rate_limit),
)
"""The rules in evaluation order, each callable on its own."""


# -- the check -------------------------------------------------------------------------------


def _quantity_passes(o: OrderProposal, qty: float, x: _Check) -> bool:
    """The quantity-dependent rules' conditions without building reasons (search loop).

    Mirrors the rule functions above; the tests hold the two to the same answers.
    """
    st = x.state
    lim = x.limits
    if (
        st.reduce_only or _loss_breached(x) or (not st.allow_short and o.side == "SELL")
    ) and qty > _reducing_cap(x):
        return False
    pm = o.price * x.spec.multiplier
    if qty * pm > lim.max_order_notional:
        return False
    after = abs(x.directed + qty)
    if after <= abs(x.directed):
        return True
    notional = after * pm
    eq = x.equity
    return (
        notional <= lim.max_concentration * eq
        and x.gross_other + notional <= lim.max_gross_leverage * eq
        and x.group_other + notional <= lim.max_group_exposure * eq
    )


def _allowed_quantity(o: OrderProposal, x: _Check) -> float:
    """Closed-form cap of every quantity-dependent rule, floored to the lot and verified.

    Each rule accepts an interval ``[0, cap]``, so together they accept ``[0, min(caps)]``.
    The verification steps absorb float rounding at the boundary (a lot or two at most),
    so the result passes every rule and one more lot does not.
    """
    lim = x.limits
    qty = o.quantity
    pm = o.price * x.spec.multiplier
    d = x.directed
    cap = min(qty, lim.max_order_notional / pm)
    if x.state.reduce_only or _loss_breached(x) or (not x.state.allow_short and o.side == "SELL"):
        cap = min(cap, _reducing_cap(x))
    eq = x.equity
    cap = min(cap, _ratio_cap(d, lim.max_concentration * eq / pm))
    cap = min(cap, _ratio_cap(d, (lim.max_gross_leverage * eq - x.gross_other) / pm))
    cap = min(cap, _ratio_cap(d, (lim.max_group_exposure * eq - x.group_other) / pm))

    lot = x.spec.lot_size
    n_req = math.floor(qty / lot + _LOT_EPS)
    n = min(n_req, max(0, math.floor(cap / lot + _LOT_EPS)))

    def size(k: int) -> float:
        s = k * lot
        return qty if s >= qty else s  # k lots == the request: no 1-ulp overshoot

    for _ in range(4):
        if n <= 0 or _quantity_passes(o, size(n), x):
            break
        n -= 1
    else:
        n = 0
    for _ in range(4):
        if n + 1 > n_req or not _quantity_passes(o, size(n + 1), x):
            break
        n += 1
    return size(n) if n > 0 else 0.0


def check_order(
    order: OrderProposal, state: AccountState, limits: RiskLimits, spec: InstrumentSpec
) -> RiskDecision:
    """Run every rule on ``order``; the decision carries all failing reasons.

    Reads ``state`` only. ``spec`` must describe ``order.symbol``.
    """
    if spec.symbol != order.symbol:
        raise ValueError(f"spec is for {spec.symbol!r}, order for {order.symbol!r}")
    x = _prepare(order, state, limits, spec)
    qty = order.quantity
    reasons: list[Reason] | None = None
    blocked = False
    for _, fn, dep in _RULES:
        r = fn(order, qty, x)
        if r is not None:
            if reasons is None:
                reasons = [r]
            else:
                reasons.append(r)
            if not dep:
                blocked = True
    if reasons is None:
        return RiskDecision(True, qty, qty, (), _loss_breached(x))
    allowed = 0.0 if blocked else _allowed_quantity(order, x)
    return RiskDecision(False, qty, allowed, tuple(reasons), _loss_breached(x))


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
