"""Venues: where child orders go and what comes back, with the simulated venue as one kind.

The account talks to a venue in four calls, each answering with ``VenueReport``s
(``topics.messages``: ACK, FILL, EXPIRED, CANCELLED, REJECTED):

- ``send(book, order, expires_at)``: a child order (the ``Order`` the account also publishes
  on ``orders``), good till ``expires_at``;
- ``cancel(book, client_order_id, ts, reason)``: take a working child off the venue;
- ``on_tick(book, tick)``: a trade printed (only venues that fill from the tape use it);
- ``expire(book, now)``: event time reached ``now`` (good-till times run out).

The venue keeps its state in a ``VenueBook`` that lives inside the account's state, so the
account stays one pure, snapshottable step. Two implementations:

- ``SimulatedVenue`` (the paper broker): answers at once. A child becomes fillable
  ``latency_ns`` after it is sent, and only by later trades; market children pay
  ``slippage_ticks`` ticks, limit children fill at their limit when a trade prints through
  it; each trade fills at most ``participation`` x its size (rounded down to lots) across
  children, which gives partial fills; the remainder expires at ``expires_at``. Fees come
  from the account's fee schedule.
- ``ExternalVenue`` (a live connection): answers nothing itself. Orders leave on ``orders``,
  cancels on ``orders.cancels``, and the venue's reports arrive later as events on
  ``venue.reports``, which the account applies exactly as it applies the simulated ones.
"""

from __future__ import annotations

import math
from typing import Protocol

import msgspec

from operators.domain.execution import ExecConfig
from operators.domain.ledger import InstrumentSpec
from operators.domain.limits import AccountConfig
from topics.messages import Order, OrderType, ReportKind, Side, Tick, VenueReport


class WorkingOrder(msgspec.Struct, kw_only=True):
    """A child order the simulated venue holds."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    filled: float = 0.0
    order_type: OrderType = "MARKET"
    limit_price: float | None = None
    venue: str
    fillable_from: int
    expires_at: int

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled


class VenueBook(msgspec.Struct, kw_only=True):
    """A venue's state for one account: working orders in the order they arrived."""

    working: list[WorkingOrder] = []
    fill_seq: int = 0


class Venue(Protocol):
    """What an account needs of a venue (see the module docstring)."""

    @property
    def external(self) -> bool:
        """True when reports arrive from outside (cancels must then be published)."""
        ...

    def send(self, book: VenueBook, order: Order, expires_at: int) -> list[VenueReport]: ...

    def cancel(self, book: VenueBook, client_order_id: str, ts: int, reason: str
               ) -> list[VenueReport]: ...

    def on_tick(self, book: VenueBook, tick: Tick) -> list[VenueReport]: ...

    def expire(self, book: VenueBook, now: int) -> list[VenueReport]: ...


def fill_price(order: WorkingOrder, trade_price: float, tick_size: float,
               slippage_ticks: float) -> float | None:
    """The simulated fill price of ``order`` against a trade, or None if it does not fill."""
    if order.order_type == "LIMIT":
        assert order.limit_price is not None
        if order.side == "BUY":
            return order.limit_price if trade_price <= order.limit_price else None
        return order.limit_price if trade_price >= order.limit_price else None
    slip = slippage_ticks * tick_size
    return trade_price + slip if order.side == "BUY" else trade_price - slip


def _done(w: WorkingOrder, account: str, kind: ReportKind, ts: int, reason: str
          ) -> VenueReport:
    return VenueReport(ts_event=ts, kind=kind, account=account,
                       client_order_id=w.client_order_id, symbol=w.symbol, side=w.side,
                       venue=w.venue, quantity=w.remaining, reason=reason)


class SimulatedVenue:
    """The paper broker: fills working children against later trades of the tape."""

    external = False

    __slots__ = ("_account", "_cfg", "_fees", "_specs")

    def __init__(self, account: str, execution: ExecConfig,
                 instruments: dict[str, InstrumentSpec], fees: AccountConfig) -> None:
        self._account = account
        self._cfg = execution
        self._specs = instruments
        self._fees = fees

    def send(self, book: VenueBook, order: Order, expires_at: int) -> list[VenueReport]:
        book.working.append(WorkingOrder(
            client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
            quantity=order.quantity, order_type=order.order_type,
            limit_price=order.limit_price, venue=order.venue,
            fillable_from=order.ts_event + self._cfg.latency_ns, expires_at=expires_at))
        return [VenueReport(ts_event=order.ts_event, kind="ACK", account=self._account,
                            client_order_id=order.client_order_id, symbol=order.symbol,
                            side=order.side, venue=order.venue)]

    def cancel(self, book: VenueBook, client_order_id: str, ts: int, reason: str
               ) -> list[VenueReport]:
        for i, w in enumerate(book.working):
            if w.client_order_id == client_order_id:
                del book.working[i]
                return [_done(w, self._account, "CANCELLED", ts, reason)]
        return []

    def expire(self, book: VenueBook, now: int) -> list[VenueReport]:
        if not book.working:
            return []
        out: list[VenueReport] = []
        keep: list[WorkingOrder] = []
        for w in book.working:
            if w.expires_at <= now and w.remaining > 0:
                out.append(_done(w, self._account, "EXPIRED", now, "time in force"))
            else:
                keep.append(w)
        if out:
            book.working = keep
        return out

    def on_tick(self, book: VenueBook, tick: Tick) -> list[VenueReport]:
        """Fill working orders of the trade's symbol, oldest first, within its capacity."""
        cfg = self._cfg
        sym = tick.symbol
        ts = tick.ts_event
        spec: InstrumentSpec | None = None
        capacity = 0.0
        out: list[VenueReport] = []
        for w in book.working:
            if w.symbol != sym or w.remaining <= 0 or ts < w.fillable_from \
                    or ts >= w.expires_at:
                continue
            if spec is None:
                spec = self._specs[sym]
                lot = spec.lot_size
                capacity = math.floor(tick.size * cfg.participation / lot + 1e-9) * lot
            if capacity <= 0:
                break
            px = fill_price(w, tick.price, spec.tick_size, cfg.slippage_ticks)
            if px is None:
                continue
            qty = min(w.remaining, capacity)
            capacity -= qty
            w.filled += qty
            book.fill_seq += 1
            out.append(VenueReport(
                ts_event=ts, kind="FILL", account=self._account,
                client_order_id=w.client_order_id, symbol=sym, side=w.side, venue=w.venue,
                quantity=qty, price=px, fee=self._fees.fee(qty, px, spec.multiplier),
                fill_id=f"F-{w.client_order_id[2:]}-{book.fill_seq}",
                liquidity="MAKER" if w.order_type == "LIMIT" else "TAKER"))
        if out:
            book.working = [w for w in book.working if w.remaining > 0]
        return out


class ExternalVenue:
    """A live venue: nothing is answered here; its reports arrive on ``venue.reports``."""

    external = True

    __slots__ = ()

    def send(self, book: VenueBook, order: Order, expires_at: int) -> list[VenueReport]:
        return []

    def cancel(self, book: VenueBook, client_order_id: str, ts: int, reason: str
               ) -> list[VenueReport]:
        return []

    def on_tick(self, book: VenueBook, tick: Tick) -> list[VenueReport]:
        return []

    def expire(self, book: VenueBook, now: int) -> list[VenueReport]:
        return []
