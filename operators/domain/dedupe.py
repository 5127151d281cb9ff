"""Trade-id dedupe over an event-time window: one symbol's memory and its admit rule.

The window's semantics, explicitly (``docs/normalize.md``):

- Only records that carry a trade id are deduplicated: identical trades without an id are
  distinct trades. The key is venue + symbol + trade id.
- Per symbol, the memory covers the last ``window_ns`` of event time, measured back from the
  newest event time seen with a trade id on that symbol (event time, so a replay and a live
  run remember the same ids), holding at most ``max_ids`` ids: beyond that the oldest are
  forgotten first.
- A record whose id is remembered is a ``DUPLICATE``.
- A record the memory no longer covers (its event time is before the window, or not after an
  id forgotten for room) cannot be checked: it is ``STALE_TRADE_ID``, counted in the DLQ,
  never let through unchecked. A re-sent trade keeps its original time, so a duplicate that
  arrives after the window is caught here rather than accepted twice.
- Any other record is admitted and its id remembered.

Normalize (per record) and the columnar replay accelerator (per row, in input order) call the
same ``admit``.
"""

from __future__ import annotations

from heapq import heappop, heappush

import msgspec

from operators.domain.bars import format_duration
from operators.domain.timeparse import NAT, format_ns
from topics.dlq import DlqReason


class DedupeState(msgspec.Struct, kw_only=True):
    """Per-symbol dedupe memory: seen ``venue|trade_id`` → event time, expiring in ts order."""

    ids: dict[str, int] = msgspec.field(default_factory=dict)
    expiry: list[tuple[int, str]] = msgspec.field(default_factory=list)  # min-heap (ts, id)
    high_ts: int = NAT  # newest event time seen on a record with a trade id
    forgotten_ts: int = NAT  # newest event time of an id forgotten for room (max_ids)


def admit(state: DedupeState, venue: str, trade_id: str, ts: int, *, window_ns: int,
          max_ids: int) -> DlqReason | None:
    """Check ``venue|trade_id`` at ``ts`` and remember it: None (admitted), ``DUPLICATE`` or
    ``STALE_TRADE_ID`` (outside what the memory covers)."""
    if ts > state.high_ts:
        state.high_ts = ts
    ids = state.ids
    heap = state.expiry
    horizon = state.high_ts - window_ns
    while heap and heap[0][0] < horizon:
        t, k = heappop(heap)
        if ids.get(k) == t:
            del ids[k]
    key = f"{venue}\x1f{trade_id}"
    if key in ids:
        return DlqReason.DUPLICATE
    if ts < horizon or ts <= state.forgotten_ts:
        return DlqReason.STALE_TRADE_ID
    ids[key] = ts
    heappush(heap, (ts, key))
    while len(ids) > max_ids:
        t, k = heappop(heap)
        if ids.get(k) == t:
            del ids[k]
            if t > state.forgotten_ts:
                state.forgotten_ts = t
    return None


def rejection_detail(reason: DlqReason, state: DedupeState, trade_id: str, venue: str,
                     symbol: str, ts: int, window_ns: int) -> str:
    """The dead-letter detail of an ``admit`` rejection (state as ``admit`` left it)."""
    where = f"trade_id {trade_id!r} on {venue}:{symbol}"
    if reason is DlqReason.DUPLICATE:
        return f"{where} already seen"
    if ts < state.high_ts - window_ns:
        return (f"{where} at {format_ns(ts)} is older than the dedupe window "
                f"({format_duration(window_ns)} back from {format_ns(state.high_ts)}): it "
                "cannot be checked for duplicates (--dedupe-window)")
    return (f"{where} at {format_ns(ts)} is not after {format_ns(state.forgotten_ts)}, when "
            "ids were forgotten for room: it cannot be checked for duplicates")


__all__ = ["DedupeState", "admit", "rejection_detail"]
