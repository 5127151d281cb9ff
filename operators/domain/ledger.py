"""Account ledger: positions, cash, marks and the flags the pre-trade check reads.

One ``AccountState`` per account key. The functions here follow the operator contract's
ownership rule: a function receives the state, may update it in place and returns the state
to keep, so the per-tick ``mark`` costs no copy. Take ``copy_state`` first when the old
value must survive. Positions are frozen values replaced on change, which keeps
``copy_state`` a cheap shallow copy.

Accounting is average cost. Cash moves by the full notional of every fill
(``qty * price * multiplier``) and by fees, so ``equity = cash + sum(q * mark * multiplier)``
for stocks and futures alike (for a futures account "cash" is a notional ledger, not margin).
Realized PnL is gross of fees; fees are kept per position and in cash.

Money is fixed point (``operators.domain.money``): cash, each position's cost basis, realized
PnL and fees are integers of 10**-8 currency units, so ``equity = initial + realized +
unrealized - fees`` holds exactly and published figures carry no float dust. A partial close
removes the pro-rata share of the cost basis, rounded half-even to the unit. ``avg_price`` is
the basis divided by the position (a float, for display and the risk check).
"""

from __future__ import annotations

import bisect
import math

import msgspec

from operators.domain.limits import AccountConfig, RiskLimits
from operators.domain.money import FAST_LIMIT, SCALE, from_units, notional_units, pro_rata, to_units
from topics.messages import Side

_QTY_EPS = 1e-9
"""Relative size below which a position is treated as flat (float dust from lot sums)."""


class InstrumentSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the account needs of an instrument (mapped from the instrument master).

    ``group`` is the exposure bucket of the sector limit (e.g. ``equity_index``); ``venue``
    is where its orders go (None: the execution config's default venue).
    """

    symbol: str
    multiplier: float
    tick_size: float
    lot_size: float
    group: str
    venue: str | None = None

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("symbol must be non-empty")
        if not self.group:
            raise ValueError(f"{self.symbol}: group must be non-empty")
        for name in ("multiplier", "tick_size", "lot_size"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0.0):
                raise ValueError(f"{self.symbol}: {name} must be finite and > 0, got {v!r}")


class Holding(msgspec.Struct, frozen=True, kw_only=True):
    """One symbol's position; ``quantity`` is signed (short < 0), ``avg_price`` 0 when flat.

    ``working_buy`` / ``working_sell`` are routed but unfilled child quantities: the risk
    check counts them as if they filled, so slicing an order cannot get round a limit.
    Money fields are integers of 10**-8 currency units; ``realized_pnl`` and ``fees`` publish
    them as floats.
    """

    quantity: float = 0.0
    avg_price: float = 0.0
    cost_units: int = 0
    """Signed cost basis ``sum(open q * entry price) * multiplier`` in money units."""
    realized_units: int = 0
    fee_units: int = 0
    multiplier: float = 1.0
    group: str = ""
    working_buy: float = 0.0
    working_sell: float = 0.0

    @property
    def realized_pnl(self) -> float:
        return from_units(self.realized_units)

    @property
    def fees(self) -> float:
        return from_units(self.fee_units)


class AccountState(msgspec.Struct, kw_only=True):
    """Everything the pre-trade check of one account knows.

    Dicts are iterated in insertion order (deterministic for a given event sequence).
    ``order_times`` holds the event times of the most recent accepted orders, sorted and
    never longer than the rate limit needs (see ``record_order``).
    """

    cash_units: int
    start_equity: float
    session_id: str = ""
    positions: dict[str, Holding] = msgspec.field(default_factory=dict)
    last_prices: dict[str, float] = msgspec.field(default_factory=dict)
    halted: bool = False
    halt_reason: str = ""
    halted_symbols: dict[str, str] = msgspec.field(default_factory=dict)
    reduce_only: bool = False
    reduce_only_reason: str = ""
    order_times: list[int] = msgspec.field(default_factory=list)
    allow_short: bool = True

    @property
    def cash(self) -> float:
        return from_units(self.cash_units)


FLAT = Holding()


def new_account(config: AccountConfig, session_id: str = "") -> AccountState:
    """A fresh account holding ``initial_equity`` in cash."""
    return AccountState(
        cash_units=to_units(config.initial_equity),
        start_equity=config.initial_equity,
        session_id=session_id,
        allow_short=config.allow_short,
    )


def copy_state(state: AccountState) -> AccountState:
    """An independent copy (positions are frozen, so shallow container copies suffice)."""
    return msgspec.structs.replace(
        state,
        positions=dict(state.positions),
        last_prices=dict(state.last_prices),
        halted_symbols=dict(state.halted_symbols),
        order_times=list(state.order_times),
    )


def position(state: AccountState, symbol: str) -> Holding:
    """The position in ``symbol`` (a flat one if never traded)."""
    return state.positions.get(symbol, FLAT)


def register_instrument(state: AccountState, spec: InstrumentSpec) -> AccountState:
    """Record the multiplier and group of ``spec`` so exposure sums can value it.

    Idempotent; a different multiplier for a symbol already held is an error (it would
    silently rescale its PnL).
    """
    pos = state.positions.get(spec.symbol)
    if pos is None:
        state.positions[spec.symbol] = Holding(multiplier=spec.multiplier, group=spec.group)
        return state
    if pos.multiplier != spec.multiplier:
        raise ValueError(
            f"{spec.symbol}: multiplier {spec.multiplier} != {pos.multiplier} already on book"
        )
    if pos.group != spec.group:
        state.positions[spec.symbol] = msgspec.structs.replace(pos, group=spec.group)
    return state


def apply_fill(
    state: AccountState,
    symbol: str,
    side: Side,
    qty: float,
    price: float,
    fee: float,
    multiplier: float,
    group: str | None = None,
    *,
    release_working: bool = True,
) -> AccountState:
    """Book a fill: average price, realized PnL (flips handled), fees and cash.

    Adding to a position (or opening one) averages the price; reducing realizes
    ``closed * (price - avg) * multiplier`` (sign of the position) and keeps the average; a
    flip realizes the whole old position and opens the rest at the fill price. With
    ``release_working`` the filled quantity leaves that side's working quantity (clamped at
    zero, so fills of orders never booked as working are harmless).
    ``group`` names the exposure group when the symbol is new (default: the symbol itself).
    """
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side must be BUY or SELL, got {side!r}")
    if not (qty > 0.0 and math.isfinite(qty)):
        raise ValueError(f"{symbol}: fill quantity must be finite and > 0, got {qty!r}")
    if not (price > 0.0 and math.isfinite(price)):
        raise ValueError(f"{symbol}: fill price must be finite and > 0, got {price!r}")
    if not (multiplier > 0.0 and math.isfinite(multiplier)):
        raise ValueError(f"{symbol}: multiplier must be finite and > 0, got {multiplier!r}")
    if not math.isfinite(fee):
        raise ValueError(f"{symbol}: fee must be finite, got {fee!r}")

    pos = state.positions.get(symbol)
    if pos is None:
        pos = Holding(multiplier=multiplier, group=group or symbol)
    elif pos.multiplier != multiplier:
        raise ValueError(f"{symbol}: fill multiplier {multiplier} != {pos.multiplier} on book")

    q = pos.quantity
    cost = pos.cost_units
    realized = pos.realized_units
    s = qty if side == "BUY" else -qty
    new_q = q + s
    if abs(new_q) <= _QTY_EPS * max(abs(q), qty):
        new_q = 0.0
    notional = notional_units(qty, price, multiplier)  # of the whole fill, > 0
    if q == 0.0 or (q > 0.0) == (s > 0.0):
        cost += notional if s > 0.0 else -notional
    else:
        closed = min(qty, abs(q))
        flat_or_flipped = new_q == 0.0 or (new_q > 0.0) != (q > 0.0)
        removed = cost if flat_or_flipped else pro_rata(cost, closed, abs(q))
        closed_notional = (notional if closed == qty or new_q == 0.0
                           else notional_units(closed, price, multiplier))
        realized += (closed_notional if q > 0.0 else -closed_notional) - removed
        cost -= removed
        if new_q != 0.0 and flat_or_flipped:  # the remainder opens at the fill price
            opened = notional - closed_notional
            cost = opened if new_q > 0.0 else -opened
    avg = cost / (new_q * multiplier * SCALE) if new_q != 0.0 else 0.0

    wb, ws = pos.working_buy, pos.working_sell
    if release_working:
        if s > 0.0:
            wb = max(0.0, wb - qty)
        else:
            ws = max(0.0, ws - qty)

    fee_units = to_units(fee)
    state.positions[symbol] = msgspec.structs.replace(
        pos,
        quantity=new_q,
        avg_price=avg,
        cost_units=cost,
        realized_units=realized,
        fee_units=pos.fee_units + fee_units,
        working_buy=wb,
        working_sell=ws,
    )
    state.cash_units -= (notional if s > 0.0 else -notional) + fee_units
    return state


def add_working(state: AccountState, symbol: str, side: Side, qty: float) -> AccountState:
    """Book ``qty`` routed but unfilled on ``side``; a negative ``qty`` releases (cancel).

    The symbol must be known (``register_instrument`` or a previous fill) so its exposure
    can be valued.
    """
    pos = state.positions.get(symbol)
    if pos is None:
        raise ValueError(f"{symbol}: register_instrument before booking working orders")
    if side == "BUY":
        pos = msgspec.structs.replace(pos, working_buy=max(0.0, pos.working_buy + qty))
    elif side == "SELL":
        pos = msgspec.structs.replace(pos, working_sell=max(0.0, pos.working_sell + qty))
    else:
        raise ValueError(f"side must be BUY or SELL, got {side!r}")
    state.positions[symbol] = pos
    return state


def mark(state: AccountState, symbol: str, price: float) -> AccountState:
    """Record the last trade price of ``symbol`` (used for equity and the price collar)."""
    state.last_prices[symbol] = price
    return state


def mark_price(state: AccountState, symbol: str) -> float:
    """Last trade of ``symbol``, else the position's average price (valued at cost)."""
    px = state.last_prices.get(symbol)
    if px is None:
        return state.positions.get(symbol, FLAT).avg_price
    return px


def market_value_units(state: AccountState, symbol: str, pos: Holding) -> int:
    """``q × mark × multiplier`` of one position in money units (at cost if never traded)."""
    px = state.last_prices.get(symbol)
    if px is None:
        return pos.cost_units
    return notional_units(pos.quantity, px, pos.multiplier)


def equity_units(state: AccountState) -> int:
    """Cash plus every position marked at its last price, in money units (exact).

    On the per-tick path (the daily-loss check): ``market_value_units`` inlined.
    """
    total = state.cash_units
    last = state.last_prices
    for sym, pos in state.positions.items():
        q = pos.quantity
        if q != 0.0:
            px = last.get(sym)
            if px is None:
                total += pos.cost_units
                continue
            x = q * px * pos.multiplier * SCALE
            total += round(x) if -FAST_LIMIT < x < FAST_LIMIT else notional_units(
                q, px, pos.multiplier)
    return total


def equity(state: AccountState) -> float:
    """Cash plus every position marked at its last price, times its multiplier."""
    return equity_units(state) / SCALE


def unrealized_pnl(state: AccountState, symbol: str | None = None) -> float:
    """Mark-to-market PnL of open positions (one symbol, or all when ``symbol`` is None)."""
    items = (
        state.positions.items()
        if symbol is None
        else ((symbol, state.positions.get(symbol, FLAT)),)
    )
    total = 0
    for sym, pos in items:
        if pos.quantity != 0.0:
            total += market_value_units(state, sym, pos) - pos.cost_units
    return from_units(total)


def realized_pnl(state: AccountState) -> float:
    """Realized PnL (gross of fees) summed over symbols, since the account opened."""
    return from_units(sum(p.realized_units for p in state.positions.values()))


def total_fees(state: AccountState) -> float:
    return from_units(sum(p.fee_units for p in state.positions.values()))


def day_pnl(state: AccountState) -> float:
    """Equity change since the session started (marked, net of fees)."""
    return equity(state) - state.start_equity


def start_session(
    state: AccountState, session_id: str, equity_now: float | None = None
) -> AccountState:
    """Open a trading session: new day-PnL baseline, reduce-only lifted.

    ``equity_now`` defaults to the current marked equity. The kill switch is *not* lifted:
    only an explicit reset does that.
    """
    state.session_id = session_id
    state.start_equity = equity(state) if equity_now is None else equity_now
    state.reduce_only = False
    state.reduce_only_reason = ""
    return state


def set_halted(state: AccountState, halted: bool, reason: str = "") -> AccountState:
    """Trip (``True``) or reset (``False``) the account's kill switch."""
    state.halted = halted
    state.halt_reason = reason if halted else ""
    return state


def set_symbol_halted(
    state: AccountState, symbol: str, halted: bool, reason: str = ""
) -> AccountState:
    """Halt or resume trading in one symbol (``control`` HALT_SYMBOL / RESUME_SYMBOL)."""
    if halted:
        state.halted_symbols[symbol] = reason
    else:
        state.halted_symbols.pop(symbol, None)
    return state


def set_reduce_only(state: AccountState, on: bool, reason: str = "") -> AccountState:
    """Allow only risk-reducing orders until ``start_session`` (or an explicit reset)."""
    state.reduce_only = on
    state.reduce_only_reason = reason if on else ""
    return state


def orders_in_window(state: AccountState, ts: int, window_ns: int) -> int:
    """Accepted orders with event time in ``(ts - window_ns, ts]``."""
    times = state.order_times
    return bisect.bisect_right(times, ts) - bisect.bisect_right(times, ts - window_ns)


def record_order(state: AccountState, ts: int, limits: RiskLimits) -> AccountState:
    """Count an accepted order at event time ``ts`` toward the rate limit.

    Keeps only the newest ``max_orders_per_window`` times: the window holds that many
    orders exactly when its oldest kept one is inside it, so older times cannot matter.
    """
    times = state.order_times
    bisect.insort(times, ts)
    excess = len(times) - limits.max_orders_per_window
    if excess > 0:
        del times[:excess]
    return state
