"""Execution algorithms: a parent order becomes child orders, as pure functions over state.

A parent order becomes a schedule of child orders, each fully determined when the parent is
accepted (so every client order id is known and reproducible at decision time):

- IMMEDIATE: one market child now;
- TWAP: ``slices`` equal children (in lots) every ``slice_interval_ns``;
- VWAP: ``slices`` children every ``slice_interval_ns`` sized by the volume profile of the
  previous ``slices`` intervals (per symbol, from the trades the account has seen:
  ``track_volume`` / ``volume_profile``);
- ICEBERG: limit children of ``iceberg_display_lots`` each at the decision's reference price;
  the next one is released when the visible one is done (``releases``).

Children live in ``ExecState.children`` from acceptance until they are done: scheduled
(``sent`` False), then working at a venue (``operators.domain.venue``) until filled, expired
or cancelled. ``ExecConfig`` also carries the simulated venue's settings (latency, slippage,
participation), since one ``[execution]`` table configures both.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

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
    """A child order: scheduled (``sent`` False) or working at a venue.

    ``cancelling``: a cancel went to a venue whose answer arrives later (a live venue); the
    child keeps its working quantity until the venue reports it done.
    """

    client_order_id: str
    parent_order_id: str
    decision_id: str
    symbol: str
    side: Side
    quantity: float
    reference_price: float
    """The parent's price at acceptance (its pre-trade check price)."""
    filled: float = 0.0
    release_ts: int
    order_type: str = "MARKET"
    limit_price: float | None = None
    algo: Algo = "IMMEDIATE"
    slice_no: int = 1
    slices: int = 1
    sent: bool = False
    cancelling: bool = False

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
            reference_price=reference_price,
            release_ts=t,
            order_type="LIMIT" if algo == "ICEBERG" else "MARKET",
            limit_price=limit,
            algo=algo,
            slice_no=k,
            slices=m,
        )
        for k, (s, t) in enumerate(kept, 1)
    ]


def releases(children: list[Child], now: int, cancelled: set[str]) -> Iterator[Child]:
    """The scheduled children due at ``now``, in schedule order, decided as the caller goes.

    The caller sends each child it is given (or cancels its parent, adding the parent id to
    ``cancelled``) before asking for the next, so an iceberg clip is held back while an
    earlier clip of its parent still works, and the other due slices of a cancelled parent
    are skipped.
    """
    for c in list(children):
        if c.sent or c.release_ts > now or c.parent_order_id in cancelled:
            continue
        if c.algo == "ICEBERG" and any(
            o.sent and o.parent_order_id == c.parent_order_id and o.remaining > 0
            for o in children
        ):
            continue
        yield c


def unrouted(children: list[Child], symbol: str, side: Side) -> float:
    """Quantity of ``symbol`` on ``side`` that is scheduled but not yet sent to a venue."""
    return math.fsum(c.remaining for c in children
                     if not c.sent and c.symbol == symbol and c.side == side)


# -- the VWAP volume profile -------------------------------------------------------------------


class VolumeBuckets(msgspec.Struct, kw_only=True):
    """One symbol's traded volume in slice-interval buckets (the VWAP profile)."""

    start: int = 0
    current: float = 0.0
    history: list[float] = []


def track_volume(volumes: dict[str, VolumeBuckets], symbol: str, ts: int, size: float,
                 cfg: ExecConfig) -> None:
    """Add one trade to its symbol's buckets, keeping the last ``slices`` closed intervals."""
    interval = cfg.slice_interval_ns
    vb = volumes.get(symbol)
    start = ts - ts % interval
    if vb is None:
        vb = volumes[symbol] = VolumeBuckets(start=start)
    if start > vb.start:
        n = cfg.slices
        gaps = min(n, (start - vb.start) // interval - 1)
        vb.history.append(vb.current)
        vb.history.extend([0.0] * gaps)
        del vb.history[:-n]
        vb.start = start
        vb.current = 0.0
    if start == vb.start:
        vb.current += size


def volume_profile(volumes: dict[str, VolumeBuckets], symbol: str) -> list[float]:
    """The closed intervals' volumes, oldest first (fewer than ``slices`` early on)."""
    vb = volumes.get(symbol)
    return list(vb.history) if vb is not None else []


class ExecState(msgspec.Struct, kw_only=True):
    """An account's execution state: live children and the per-symbol volume profiles."""

    children: list[Child] = []
    volumes: dict[str, VolumeBuckets] = {}
