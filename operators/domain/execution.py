"""Execution algorithms and the paper fill model, as pure functions over explicit state.

A parent order becomes a schedule of child orders, each fully determined when the parent is
accepted (so every client order id is known and reproducible at decision time):

- IMMEDIATE: one market child now;
- TWAP: ``slices`` equal children (in lots) every ``slice_interval_ns``;
- VWAP: ``slices`` children every ``slice_interval_ns`` sized by the volume profile of the
  previous ``slices`` intervals (per symbol, from the ticks this operator has seen);
- ICEBERG: limit children of ``iceberg_display_lots`` each at the decision's reference price;
  the next one is released when the visible one is done.

The paper broker fills a working child against later ticks only: a child becomes fillable
``latency_ns`` after it is sent, and only by ticks released after it. Market children pay
``slippage_ticks`` ticks; limit children fill at their limit when a trade prints through it.
Each tick can fill at most ``participation × tick size`` (rounded down to lots) across children,
which gives partial fills; a child's unfilled remainder expires ``child_ttl_ns`` after it is
sent.
"""

from __future__ import annotations

import math

import msgspec

from operators.contract import stable_hash
from topics.messages import Algo, Side


class ExecConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: str = "PAPER"
    latency_ns: int = 50_000_000
    slippage_ticks: float = 0.5
    participation: float = 1.0
    child_ttl_ns: int = 60_000_000_000
    slices: int = 4
    slice_interval_ns: int = 15_000_000_000
    iceberg_display_lots: float = 1.0
    time_in_force: str = "GTD"
    track_volume: bool = True
    """Keep per-symbol volume buckets for VWAP profiles (off saves work when no VWAP runs)."""

    def __post_init__(self) -> None:
        if self.latency_ns < 0 or self.child_ttl_ns <= 0 or self.slice_interval_ns <= 0:
            raise ValueError("latency must be >= 0; child_ttl and slice_interval must be > 0")
        if self.slices < 1:
            raise ValueError("slices must be >= 1")
        if not (0 < self.participation <= 1 and math.isfinite(self.participation)):
            raise ValueError("participation must be in (0, 1]")
        if not (self.slippage_ticks >= 0 and math.isfinite(self.slippage_ticks)):
            raise ValueError("slippage_ticks must be >= 0")
        if not self.iceberg_display_lots > 0:
            raise ValueError("iceberg_display_lots must be > 0")


class Child(msgspec.Struct, kw_only=True):
    """A child order: scheduled (``sent`` False) or working at the paper broker."""

    client_order_id: str
    parent_order_id: str
    decision_id: str
    symbol: str
    side: Side
    quantity: float
    filled: float = 0.0
    release_ts: int
    order_type: str = "MARKET"
    limit_price: float | None = None
    algo: Algo = "IMMEDIATE"
    slice_no: int = 1
    slices: int = 1
    sent: bool = False
    fillable_from: int = 0
    expires_at: int = 0

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled


def parent_order_id(decision_id: str) -> str:
    return "P-" + stable_hash("parent", decision_id)[:20]


def client_order_id(decision_id: str, slice_no: int) -> str:
    return "C-" + stable_hash("child", decision_id, slice_no)[:20]


def split_lots(quantity: float, weights: list[float], lot: float) -> list[float]:
    """Split ``quantity`` (a whole number of lots) by weights, largest remainders first."""
    lots = round(quantity / lot)
    total = math.fsum(weights)
    if total <= 0 or not all(math.isfinite(w) and w >= 0 for w in weights):
        weights = [1.0] * len(weights)
        total = float(len(weights))
    raw = [lots * w / total for w in weights]
    base = [math.floor(x) for x in raw]
    short = lots - sum(base)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - base[i]), i))
    for i in order[:short]:
        base[i] += 1
    return [b * lot for b in base]


def schedule(
    *,
    algo: Algo,
    decision_id: str,
    symbol: str,
    side: Side,
    quantity: float,
    ts: int,
    reference_price: float,
    lot: float,
    tick_size: float,
    cfg: ExecConfig,
    volume_profile: list[float],
) -> list[Child]:
    """The children of one accepted parent, in release order (empty slices dropped)."""
    pid = parent_order_id(decision_id)
    if algo == "IMMEDIATE":
        sizes = [quantity]
        times = [ts]
    elif algo in ("TWAP", "VWAP"):
        n = cfg.slices
        weights = [1.0] * n
        if algo == "VWAP" and len(volume_profile) == n:
            weights = list(volume_profile)
        sizes = split_lots(quantity, weights, lot)
        times = [ts + k * cfg.slice_interval_ns for k in range(n)]
    else:  # ICEBERG: visible clips of the display size, released one after another
        display = max(lot, round(cfg.iceberg_display_lots / lot) * lot)
        clips = math.ceil(quantity / display - 1e-9)
        sizes = [display] * (clips - 1) + [quantity - display * (clips - 1)]
        times = [ts] * clips
    kept = [(s, t) for s, t in zip(sizes, times, strict=True) if s > 0]
    m = len(kept)
    limit = None
    if algo == "ICEBERG":
        limit = round(reference_price / tick_size) * tick_size
    return [
        Child(
            client_order_id=client_order_id(decision_id, k),
            parent_order_id=pid,
            decision_id=decision_id,
            symbol=symbol,
            side=side,
            quantity=s,
            release_ts=t,
            order_type="LIMIT" if algo == "ICEBERG" else "MARKET",
            limit_price=limit,
            algo=algo,
            slice_no=k,
            slices=m,
        )
        for k, (s, t) in enumerate(kept, 1)
    ]


def fill_price(
    child: Child, trade_price: float, tick_size: float, slippage_ticks: float
) -> float | None:
    """The paper fill price of ``child`` against a trade, or None if it does not fill."""
    if child.order_type == "LIMIT":
        assert child.limit_price is not None
        if child.side == "BUY":
            return child.limit_price if trade_price <= child.limit_price else None
        return child.limit_price if trade_price >= child.limit_price else None
    slip = slippage_ticks * tick_size
    return trade_price + slip if child.side == "BUY" else trade_price - slip
