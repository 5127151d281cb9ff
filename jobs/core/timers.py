"""The timer service: event-time timers as ``(ts, key)`` entries, fired in ``(ts, key)`` order.

One instance per stage (the local runner) or per key (a wrapper whose engine already keys the
state, e.g. a Flink ``KeyedProcessFunction``, registers under one key). A second registration
of the same ``(ts, key)`` is dropped while the first is pending, so a timer fires once however
often it was asked for; once it fired, registering it again schedules it again. This is the
only timer heap in the code base: every host fires timers through it, so the order is the
same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from heapq import heapify, heappop, heappush


class TimerService:
    """Pending ``(ts, key)`` timers; ``heap[0]`` is the next to fire.

    Like Flink's timer service it has a current key (set by the host before each call into
    the operator): ``register_timer(ts)`` is what ``Context.register_timer`` does.
    """

    __slots__ = ("current_key", "heap", "pending")

    def __init__(self) -> None:
        self.heap: list[tuple[int, str]] = []
        self.pending: set[tuple[int, str]] = set()
        self.current_key = ""

    def __len__(self) -> int:
        return len(self.heap)

    def register(self, ts: int, key: str) -> None:
        item = (ts, key)
        if item not in self.pending:
            self.pending.add(item)
            heappush(self.heap, item)

    def register_timer(self, ts: int) -> None:
        """A timer at ``ts`` for the current key."""
        item = (ts, self.current_key)
        if item not in self.pending:
            self.pending.add(item)
            heappush(self.heap, item)

    def due(self, watermark: int) -> bool:
        """Whether a timer fires at ``watermark`` (a timer at ts fires when W >= ts)."""
        heap = self.heap
        return bool(heap) and heap[0][0] <= watermark

    def pop(self) -> tuple[int, str]:
        """Remove and return the next timer (callers check :meth:`due` first)."""
        item = heappop(self.heap)
        self.pending.discard(item)
        return item

    def pop_due(self, watermark: int) -> list[tuple[int, str]]:
        """Every timer due at ``watermark``, in firing order (none registered meanwhile)."""
        out: list[tuple[int, str]] = []
        heap = self.heap
        while heap and heap[0][0] <= watermark:
            out.append(self.pop())
        return out

    def snapshot(self) -> list[tuple[int, str]]:
        """The pending timers, sorted: the same timers always give the same list."""
        return sorted(self.heap)

    def restore(self, timers: Iterable[tuple[int, str]]) -> None:
        """Replace the pending timers (in place: hosts may hold the heap list)."""
        items = sorted({(int(ts), str(key)) for ts, key in timers})
        self.heap[:] = items  # a sorted list is a valid heap
        heapify(self.heap)
        self.pending.clear()
        self.pending.update(items)
