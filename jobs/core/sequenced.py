"""The sequenced source: a source's partitions merged back into the order it produced them.

A broker delivers a topic's partitions interleaved however fetches happen to return; a graph
fed in that order would close bars and classify late ticks differently from run to run. The
source (one feed handler) therefore numbers everything it writes (``jobs.live.wire``: ``sq.seq``,
increasing across partitions) and the host releases records in that order: the element with the
smallest sequence among the partitions' heads, and only once every partition that has not
ended shows a head, so nothing smaller can still arrive. Heartbeats on every partition keep the
merge moving when a partition has no data; an ``end`` mark retires a partition.

Watermark look-ahead: when a data record is released, every other partition's head is already
known (the merge waited for it); a heartbeat or end mark at a head is that partition's promise
about its future, so its watermark input is applied at once (``lookahead``). With the data in
one partition this makes the source watermark exactly the embedded runner's (``max event time
seen - lateness``) however sparse the heartbeats are, because the idle partitions' heads always
promise at least the source clock at the record being released.

The merge is pure bookkeeping (no I/O, no clocks): a host pushes what it consumed and pulls
what is ready; what it released so far per partition is its resume position.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

DATA, HEARTBEAT, END = 0, 1, 2
"""Element kinds."""


@dataclass(slots=True)
class Element:
    """One record of the source: its sequence, where it sits and what it carries.

    ``payload`` is the host's record for ``DATA``, the event time (ns) for ``HEARTBEAT`` and
    None for ``END``.
    """

    seq: int
    kind: int
    partition: int
    offset: int
    payload: Any = None


class SequenceError(RuntimeError):
    """The source broke the sequencing rules (two producers, a replayed topic, data after end)."""


class SequencedMerge:
    """Per-partition queues of consumed elements, released in source order."""

    __slots__ = ("_ended", "_last_seq", "_queues", "_released_seq", "next_offsets")

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError("a source has at least one partition")
        self._queues: list[deque[Element]] = [deque() for _ in range(partitions)]
        self._last_seq = [-1] * partitions  # newest seq pushed per partition
        self._ended = [False] * partitions  # an END was released
        self._released_seq = -1
        self.next_offsets = [0] * partitions
        """Per partition: the offset after the last released element (where to resume)."""

    @property
    def partitions(self) -> int:
        return len(self._queues)

    def push(self, e: Element) -> None:
        """A consumed element, in its partition's offset order."""
        p = e.partition
        if e.seq <= self._last_seq[p]:
            raise SequenceError(
                f"partition {p} offset {e.offset}: sequence {e.seq} after {self._last_seq[p]} "
                "(two producers on one source, or records written again?)")
        if self._ended[p] or (self._queues[p] and self._queues[p][-1].kind == END):
            raise SequenceError(f"partition {p} offset {e.offset}: a record after the "
                                "partition's end mark")
        self._last_seq[p] = e.seq
        self._queues[p].append(e)

    def buffered(self) -> int:
        return sum(len(q) for q in self._queues)

    def pop_run(self) -> list[Element]:
        """The next elements in source order: one partition's run of consecutive elements
        below every other head; empty when some live partition has no head yet."""
        best = -1
        best_seq = 0
        second = -1  # smallest head seq among the other partitions
        for p, q in enumerate(self._queues):
            if not q:
                if self._ended[p]:
                    continue
                return []
            s = q[0].seq
            if best < 0 or s < best_seq:
                if best >= 0:
                    second = best_seq if second < 0 else min(second, best_seq)
                best, best_seq = p, s
            elif second < 0 or s < second:
                second = s
        if best < 0:
            return []
        q = self._queues[best]
        run = [q.popleft()]
        while q and (second < 0 or q[0].seq < second) and run[-1].kind == DATA:
            run.append(q.popleft())
        last = run[-1]
        if last.seq <= self._released_seq:
            raise SequenceError(f"partition {best} offset {last.offset}: sequence {last.seq} "
                                f"was already merged (up to {self._released_seq})")
        self._released_seq = last.seq
        self.next_offsets[best] = last.offset + 1
        if last.kind == END:
            self._ended[best] = True
        return run

    def lookahead(self, released: int) -> list[Element]:
        """The marks (heartbeat, end) at the heads of the partitions other than ``released``:
        promises about those partitions' future that already hold."""
        return [q[0] for p, q in enumerate(self._queues)
                if p != released and q and q[0].kind != DATA]

    def ended(self) -> bool:
        """Every partition has released its end mark."""
        return all(self._ended)

    def restore(self, next_offsets: list[int], released_seq: int, ended: list[bool]) -> None:
        """Resume after a checkpoint: the host re-reads each partition from its offset."""
        if len(next_offsets) != len(self._queues) or len(ended) != len(self._queues):
            raise ValueError(f"checkpoint has {len(next_offsets)} source partitions, this "
                             f"source has {len(self._queues)}")
        self.next_offsets = list(next_offsets)
        self._released_seq = released_seq
        self._last_seq = [released_seq] * len(self._queues)
        self._ended = list(ended)
        for q in self._queues:
            q.clear()

    @property
    def released_seq(self) -> int:
        return self._released_seq

    @property
    def ended_partitions(self) -> list[bool]:
        return list(self._ended)
