"""Round trips from fills: what a trader counts as one trade, and its profit after costs.

A round trip of a symbol opens when its position leaves zero and closes when the position is
back at zero, or when a fill flips it through zero: the flipping fill is split, the part that
closes the old position ends the trip and the rest opens the next one (fees split by quantity).
Its PnL is the cash it moved, ``Σ −signed qty × price × multiplier``, which over a flat-to-flat
trip is the realized PnL; ``net`` subtracts its fees. Fill prices already include slippage, so
``gross`` is after slippage and before fees. A trip still open at the end is reported apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from operators.domain.timeparse import format_ns
from topics.messages import Fill

FLAT = 1e-9  # quantities are lots (1.0, 0.0001 ...): below this a position is flat


@dataclass(slots=True)
class RoundTrip:
    symbol: str
    direction: str  # LONG or SHORT
    entry_ts: int
    exit_ts: int | None = None
    max_quantity: float = 0.0
    bought: float = 0.0
    sold: float = 0.0
    buy_value: float = 0.0  # Σ qty × price over the trip's buys
    sell_value: float = 0.0
    fees: float = 0.0
    fills: int = 0
    multiplier: float = 1.0
    _cash: list[float] = field(default_factory=list)

    @property
    def gross(self) -> float:
        """Cash moved by the trip's fills before fees (after slippage)."""
        return math.fsum(self._cash)

    @property
    def net(self) -> float:
        return self.gross - self.fees

    @property
    def entry_price(self) -> float:
        qty, value = ((self.bought, self.buy_value) if self.direction == "LONG"
                      else (self.sold, self.sell_value))
        return value / qty if qty else math.nan

    @property
    def exit_price(self) -> float:
        qty, value = ((self.sold, self.sell_value) if self.direction == "LONG"
                      else (self.bought, self.buy_value))
        return value / qty if qty else math.nan

    def add(self, side: str, qty: float, price: float, fee: float, ts: int) -> None:
        self.fills += 1
        self.fees += fee
        if side == "BUY":
            self.bought += qty
            self.buy_value += qty * price
            self._cash.append(-qty * price * self.multiplier)
        else:
            self.sold += qty
            self.sell_value += qty * price
            self._cash.append(qty * price * self.multiplier)
        self.max_quantity = max(self.max_quantity, abs(self.bought - self.sold))


def round_trips(fills: Iterable[Fill], multipliers: Mapping[str, float]
                ) -> tuple[list[RoundTrip], list[RoundTrip]]:
    """Closed round trips in the order they closed, and the trips still open at the end.

    Every symbol is assumed flat before its first fill (a replay starts flat).
    """
    pos: dict[str, float] = {}
    open_: dict[str, RoundTrip] = {}
    closed: list[RoundTrip] = []
    for f in fills:
        q = pos.get(f.symbol, 0.0)
        signed = f.quantity if f.side == "BUY" else -f.quantity
        m = multipliers.get(f.symbol, 1.0)
        remaining, fee = f.quantity, f.fee
        trip = open_.get(f.symbol)
        if trip is not None and q * signed < 0:  # reduces (maybe flips) the position
            closing = min(abs(q), f.quantity)
            share = fee * closing / f.quantity
            trip.add(f.side, closing, f.price, share, f.ts_event)
            remaining -= closing
            fee -= share
            q += math.copysign(closing, signed)
            if abs(q) <= FLAT:
                q = 0.0
                trip.exit_ts = f.ts_event
                closed.append(trip)
                del open_[f.symbol]
        if remaining > FLAT:
            trip = open_.get(f.symbol)
            if trip is None:
                trip = RoundTrip(symbol=f.symbol, direction="LONG" if signed > 0 else "SHORT",
                                 entry_ts=f.ts_event, multiplier=m)
                open_[f.symbol] = trip
            trip.add(f.side, remaining, f.price, fee, f.ts_event)
            q += math.copysign(remaining, signed)
        pos[f.symbol] = q
    return closed, [open_[s] for s in sorted(open_)]


def trip_stats(closed: Sequence[RoundTrip]) -> dict[str, float | int | None]:
    """Count, hit rate (share of trips with net PnL > 0), average win and average loss."""
    wins = [t.net for t in closed if t.net > 0]
    losses = [t.net for t in closed if t.net < 0]
    return {
        "count": len(closed),
        "wins": len(wins),
        "losses": len(losses),
        "hit_rate": len(wins) / len(closed) if closed else None,
        "avg_win": math.fsum(wins) / len(wins) if wins else None,
        "avg_loss": math.fsum(losses) / len(losses) if losses else None,
        "net_pnl": math.fsum(t.net for t in closed),
    }


TRADES_COLUMNS = ("symbol", "direction", "entry_ts", "exit_ts", "entry_time", "exit_time",
                  "max_quantity", "entry_price", "exit_price", "fills", "gross_pnl", "fees",
                  "net_pnl")


def write_trades_csv(path: Path, closed: Sequence[RoundTrip], still_open: Sequence[RoundTrip]
                     ) -> None:
    """One row per round trip (ts in ns and as UTC ISO); open trips last with empty exit."""
    def row(t: RoundTrip) -> str:
        cells = [t.symbol, t.direction, str(t.entry_ts),
                 "" if t.exit_ts is None else str(t.exit_ts), format_ns(t.entry_ts),
                 "" if t.exit_ts is None else format_ns(t.exit_ts), repr(t.max_quantity),
                 repr(round(t.entry_price, 10)),
                 "" if t.exit_ts is None else repr(round(t.exit_price, 10)), str(t.fills),
                 "" if t.exit_ts is None else repr(round(t.gross, 6)), repr(round(t.fees, 6)),
                 "" if t.exit_ts is None else repr(round(t.net, 6))]
        return ",".join(cells) + "\n"

    path.write_text(",".join(TRADES_COLUMNS) + "\n" + "".join(row(t) for t in closed)
                    + "".join(row(t) for t in still_open))
