"""Event-time buffering for a multi-input operator (the account's, until the runtime core
merges inputs by event time for every host).

An input waits in the key's state until the watermark passes its event time (the operator
registers a timer at it), then inputs are released in ``(ts, rank, symbol, seq)`` order:
``rank`` orders the kinds of input at equal time, ``seq`` is the arrival order within the key.
The result therefore does not depend on how a runtime interleaved the inputs.
"""

from __future__ import annotations

from operator import attrgetter

import msgspec

from topics.messages import Control, OrderIntent, Tick, VenueReport


class Buffered(msgspec.Struct, kw_only=True):
    """Inputs waiting for the watermark: one intent, command or report, or a run of trades of
    one symbol at one event time that arrived one after another (in arrival order)."""

    ts: int
    rank: int
    symbol: str
    seq: int
    ticks: list[Tick] = []
    intent: OrderIntent | None = None
    control: Control | None = None
    report: VenueReport | None = None


_ORDER = attrgetter("ts", "rank", "symbol", "seq")


def take_due(buffer: list[Buffered], ts: int) -> tuple[list[Buffered], list[Buffered]]:
    """``(due, kept)``: the inputs with event time <= ``ts`` in release order, and the rest."""
    if buffer and buffer[-1].ts <= ts and (
            len(buffer) == 1 or max(b.ts for b in buffer) <= ts):
        due, kept = buffer, []  # the usual case: everything buffered is due
    else:
        due = [b for b in buffer if b.ts <= ts]
        kept = [b for b in buffer if b.ts > ts] if due else buffer
    if len(due) > 1:
        due.sort(key=_ORDER)
    return due, kept
