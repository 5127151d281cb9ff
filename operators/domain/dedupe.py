"""Trade-id dedupe over an event-time window: one symbol's memory and its admit rule.

Only records that carry a trade id are deduplicated: identical trades without an id are
distinct trades. The state keeps each seen ``venue|trade_id`` with its event time in a
min-heap; an id expires once the highest event time seen with an id passes its time + TTL,
and the oldest ids are dropped beyond ``max_ids``. Normalize (per record) and the columnar
replay accelerator (per row, in input order) call the same ``admit``.
"""

from __future__ import annotations

from heapq import heappop, heappush

import msgspec

from operators.domain.timeparse import NAT


class DedupeState(msgspec.Struct, kw_only=True):
    """Per-symbol dedupe memory: seen ``venue|trade_id`` → event time, expiring in ts order."""

    ids: dict[str, int] = msgspec.field(default_factory=dict)
    expiry: list[tuple[int, str]] = msgspec.field(default_factory=list)  # min-heap (ts, id)
    high_ts: int = NAT  # highest event time seen on a record with a trade id


def admit(state: DedupeState, venue: str, trade_id: str, ts: int, *, ttl_ns: int,
          max_ids: int) -> bool:
    """Record ``venue|trade_id`` at ``ts``; False if it is a duplicate within the TTL."""
    if ts > state.high_ts:
        state.high_ts = ts
    ids = state.ids
    heap = state.expiry
    horizon = state.high_ts - ttl_ns
    while heap and heap[0][0] < horizon:
        t, k = heappop(heap)
        if ids.get(k) == t:
            del ids[k]
    key = f"{venue}\x1f{trade_id}"
    if key in ids:
        return False
    ids[key] = ts
    heappush(heap, (ts, key))
    while len(ids) > max_ids:
        t, k = heappop(heap)
        if ids.get(k) == t:
            del ids[k]
    return True


def duplicate_detail(trade_id: str, venue: str, symbol: str) -> str:
    return f"trade_id {trade_id!r} on {venue}:{symbol} already seen"


__all__ = ["DedupeState", "admit", "duplicate_detail"]
