"""Pre-trade risk rules: one ordered list of small predicates, each returning a denial reason.

``RULES`` holds every rule in evaluation order; ``CHILD_RULES`` is the named subset checked
again when each child order of an accepted parent is released (``operators.domain.risk_gate``
runs both). A rule is ``check(order, quantity, inputs) -> Reason | None``: ``inputs``
(``prepare``) holds the account figures every rule reads, computed in one pass, and the
quantity is separate so ``allowed_quantity`` can ask "would this size pass?".

Exposure limits (concentration, leverage, group) never block an order that does not
increase the exposure they measure: an account pushed over a limit by the market must
still be able to reduce. Positions are taken as the worst case in the order's direction:
position plus the working (routed, unfilled) quantity on the order's side, so splitting an
order into slices cannot get round a limit. Quantity the ledger holds for the order itself
and its unsent sibling slices (``unrouted``) is not "working": a slice being released is
checked against the position and the slices already at the venue, never against itself.
The order's own symbol is valued at the order price; other symbols at their last trade
(their average price before any trade is seen).

The rules read the state and never change it; ``risk_gate`` says what the caller records.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from operators.domain.ledger import AccountState, InstrumentSpec, orders_in_window
from operators.domain.limits import RiskLimits
from topics.messages import Reason, Side

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
    """An order to check: ``price`` is its reference (limit or expected fill) price."""

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


class RuleInputs(NamedTuple):
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


def prepare(
    order: OrderProposal,
    state: AccountState,
    limits: RiskLimits,
    spec: InstrumentSpec,
    unrouted: float = 0.0,
) -> RuleInputs:
    """The figures the rules read; ``unrouted`` is the order's own side quantity the ledger
    books as working but that is not at a venue (the order itself and its unsent siblings)."""
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
    if unrouted:
        directed -= unrouted
    return RuleInputs(
        state, limits, spec, eq, eq - state.start_equity, q, directed, gross_other, group_other
    )


def _reducing_cap(x: RuleInputs) -> float:
    """Largest quantity that neither increases |position| nor flips it."""
    return -x.directed if x.directed < 0.0 else 0.0


def loss_breached(x: RuleInputs) -> bool:
    """Whether day PnL is at or below ``-daily_loss_limit`` x start-of-day equity."""
    return x.day_pnl <= -x.limits.daily_loss_limit * x.state.start_equity


def _ratio_cap(directed: float, k: float) -> float:
    """Largest qty passing "|directed + qty| <= |directed|  or  |directed + qty| <= k".

    Both sets are intervals starting at 0 (see docs/risk.md), so their union is
    ``[0, cap]``.
    """
    if directed < 0.0:
        return max(-2.0 * directed, k - directed)
    return max(0.0, k - directed)


RuleCheck = Callable[[OrderProposal, float, RuleInputs], Reason | None]
"""A rule's body: ``(order, quantity, inputs) -> Reason | None``."""


# -- quantity-independent rules -------------------------------------------------------------


def _kill_switch(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
    st = x.state
    if not st.halted:
        return None
    why = f": {st.halt_reason}" if st.halt_reason else ""
    return Reason(code=KILL_SWITCH, message=f"account kill switch is on{why}")


def _trading_halted(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
    halted = x.state.halted_symbols
    if o.symbol not in halted:
        return None
    why = f": {halted[o.symbol]}" if halted[o.symbol] else ""
    return Reason(code=TRADING_HALTED, message=f"trading in {o.symbol} is halted{why}")


def _restricted(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
    if o.symbol not in x.limits.restricted_symbols:
        return None
    return Reason(code=RESTRICTED, message=f"{o.symbol} is on the restricted list")


def _price_collar(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
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


def _rate_limit(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
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


def _reduce_only(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
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


def _daily_loss_limit(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
    if not loss_breached(x):
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


def _short_sale(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
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


def _max_notional(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
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


def _concentration(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
    after = abs(x.directed + qty)
    if after <= abs(x.directed):
        return None
    notional = after * o.price * x.spec.multiplier
    limit = x.limits.max_concentration
    if notional <= limit * x.equity:
        return None
    return _ratio_reason(CONCENTRATION_LIMIT, f"{o.symbol} position", notional, x.equity, limit)


def _leverage(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
    after = abs(x.directed + qty)
    if after <= abs(x.directed):
        return None
    gross = x.gross_other + after * o.price * x.spec.multiplier
    limit = x.limits.max_gross_leverage
    if gross <= limit * x.equity:
        return None
    return _ratio_reason(LEVERAGE_LIMIT, "gross exposure", gross, x.equity, limit)


def _sector(o: OrderProposal, qty: float, x: RuleInputs) -> Reason | None:
    after = abs(x.directed + qty)
    if after <= abs(x.directed):
        return None
    gross = x.group_other + after * o.price * x.spec.multiplier
    limit = x.limits.max_group_exposure
    if gross <= limit * x.equity:
        return None
    what = f"group {x.spec.group!r} exposure"
    return _ratio_reason(SECTOR_LIMIT, what, gross, x.equity, limit)


# -- the list ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One pre-trade rule: its code, its check, and whether a smaller order could pass it."""

    code: str
    check: RuleCheck
    quantity_dependent: bool

    def __call__(
        self, order: OrderProposal, state: AccountState, limits: RiskLimits, spec: InstrumentSpec
    ) -> Reason | None:
        """The rule alone on ``order``: its Reason if the order fails it, else None."""
        return self.check(order, order.quantity, prepare(order, state, limits, spec))


RULES: tuple[Rule, ...] = (
    Rule(KILL_SWITCH, _kill_switch, False),
    Rule(TRADING_HALTED, _trading_halted, False),
    Rule(RESTRICTED, _restricted, False),
    Rule(REDUCE_ONLY, _reduce_only, True),
    Rule(DAILY_LOSS_LIMIT, _daily_loss_limit, True),
    Rule(SHORT_SALE, _short_sale, True),
    Rule(MAX_NOTIONAL, _max_notional, True),
    Rule(PRICE_COLLAR, _price_collar, False),
    Rule(CONCENTRATION_LIMIT, _concentration, True),
    Rule(LEVERAGE_LIMIT, _leverage, True),
    Rule(SECTOR_LIMIT, _sector, True),
    Rule(RATE_LIMIT, _rate_limit, False),
)
"""Every rule, in evaluation order: a parent order runs all of them."""

CHILD_RULE_CODES: tuple[str, ...] = (KILL_SWITCH, TRADING_HALTED, REDUCE_ONLY)
CHILD_RULES: tuple[Rule, ...] = tuple(r for r in RULES if r.code in CHILD_RULE_CODES)
"""The subset of ``RULES`` each child order runs when it is released: the account switches
that can change between the parent's acceptance and a slice's release. The parent passed
every rule with its whole quantity (and working quantity counted), so the size, price and
exposure rules hold for its slices, and the rate limit counts parents, not slices."""

RULE_CODES: tuple[str, ...] = tuple(r.code for r in RULES)
"""Every rule's code, in evaluation order."""

QUANTITY_DEPENDENT: frozenset[str] = frozenset(r.code for r in RULES if r.quantity_dependent)
"""Codes whose failure leaves a positive ``allowed_quantity`` possible."""


# -- allowed quantity ------------------------------------------------------------------------


def _quantity_passes(o: OrderProposal, qty: float, x: RuleInputs) -> bool:
    """The quantity-dependent rules' conditions without building reasons (search loop).

    Mirrors the rule functions above; the tests hold the two to the same answers.
    """
    st = x.state
    lim = x.limits
    if (
        st.reduce_only or loss_breached(x) or (not st.allow_short and o.side == "SELL")
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


def allowed_quantity(o: OrderProposal, x: RuleInputs) -> float:
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
    if x.state.reduce_only or loss_breached(x) or (not x.state.allow_short and o.side == "SELL"):
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
