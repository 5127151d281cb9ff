"""Event-time merge of a multi-input stage's inputs, so its result ignores arrival order.

A stage that consumes several topics (market data, intents, control) sees them interleaved
however the runtime happened to deliver them: Kafka partitions, Flink's two-input operators
and the local runner's depth-first dispatch all interleave differently. With the merge, the
host buffers each arriving event per key and releases it when the watermark reaches its event
time (a timer at the event's ``ts``), so the operator sees its inputs in one order fixed by the
data alone:

1. event time ``ts``;
2. input rank: the position of the event's topic in the stage's ``inputs``;
3. the record's partition key (the catalog key of its topic: ``symbol`` for ``md.ticks``,
   ``account`` for ``orders.intents`` and ``control``); records of different keys have no
   defined relative order on Kafka, so the key decides;
4. arrival order within that key (Kafka keeps a key's records in order).

Released events are interleaved with the stage's own timers in ``(ts, key)`` order, and at
equal ``(ts, key)`` the events come before the timer: a timer at ``ts`` sees every event at
``ts``. An event that arrives after the watermark passed its time (late) is released at the
next watermark step, ahead of anything later. Buffers live in checkpoints
(``OperatorCheckpoint.merge``); the release timers are derived from them on restore.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import msgspec

from jobs.core.checkpoint import BufferedInput, MergeBuffer
from jobs.core.timers import TimerService
from topics.catalog import topic as catalog_topic

Entry = tuple[int, int, str, str, Any]
"""``(ts, rank, partition key, topic, value)``: buffered in arrival order."""

_ORDER = itemgetter(0, 1, 2)  # a stable sort keeps arrival order within equal keys


def partition_key_of(topic_name: str) -> Callable[[Any], str]:
    """The record key the catalog gives ``topic_name``'s values ("" for unkeyed topics)."""
    field = catalog_topic(topic_name).key
    if field == "none":
        return lambda value: ""
    return lambda value: getattr(value, field) or ""


class EventTimeMerge:
    """Per-key buffers of one stage's inputs and the timers that release them."""

    __slots__ = ("_decoders", "_pkey", "_rank", "buffers", "inputs", "timers")

    def __init__(self, inputs: Sequence[str]) -> None:
        if len(set(inputs)) != len(inputs):
            raise ValueError(f"duplicate merge inputs {list(inputs)}")
        self.inputs = tuple(inputs)
        self._rank = {t: i for i, t in enumerate(inputs)}
        self._pkey = {t: partition_key_of(t) for t in inputs}
        self._decoders = {t: msgspec.msgpack.Decoder(catalog_topic(t).schema) for t in inputs}
        self.buffers: dict[str, list[Entry]] = {}
        self.timers = TimerService()

    def add(self, key: str, topic_name: str, value: Any) -> None:
        """Buffer one event of ``key`` from input ``topic_name`` until the watermark passes."""
        ts: int = value.ts_event
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = []
        buf.append((ts, self._rank[topic_name], self._pkey[topic_name](value), topic_name,
                    value))
        self.timers.register(ts, key)

    def release(self, key: str, ts: int) -> list[Any]:
        """The events of ``key`` with event time ``<= ts``, in merge order, leaving the rest."""
        buf = self.buffers.get(key)
        if not buf:
            return []
        if max(e[0] for e in buf) <= ts:
            due = buf
            del self.buffers[key]
        else:
            due = [e for e in buf if e[0] <= ts]
            self.buffers[key] = [e for e in buf if e[0] > ts]
        if len(due) > 1:
            due.sort(key=_ORDER)
        return [e[4] for e in due]

    # -- checkpoints --------------------------------------------------------------------------
    def snapshot(self) -> list[MergeBuffer]:
        enc = msgspec.msgpack.encode
        return [MergeBuffer(key, [BufferedInput(e[3], enc(e[4])) for e in buf])
                for key, buf in sorted(self.buffers.items()) if buf]

    def restore(self, buffers: list[MergeBuffer]) -> None:
        self.buffers.clear()
        self.timers.restore(())
        for mb in buffers:
            for b in mb.entries:
                if b.topic not in self._rank:
                    raise ValueError(f"merge buffer holds {b.topic!r}, not an input "
                                     f"of this stage {list(self.inputs)}")
                self.add(mb.key, b.topic, self._decoders[b.topic].decode(b.value))
