"""The embedded local runtime: a thin host over ``jobs.core`` for one process and one source.

It drives the same operators a Flink job wraps, with the core's semantics (``docs/time.md``):
one source partition whose watermark is ``max event time seen on the watermark topic -
lateness`` (``jobs.core.watermarks``), advanced after every source record; stages fire due
timers in topological order and their outputs reach downstream stages before those stages see
the new watermark; outputs are dispatched depth first, with a watermark step's outputs
delivered topic by topic and split into keyed runs (``jobs.core.dispatch``); end of stream
advances the watermark to ``END_OF_STREAM``, firing every pending timer.

What is local here is only the plumbing: records come from the caller (``feed``; ``inject``
for messages produced outside the graph's source, as the batched replay does), outputs go to a
:class:`TopicSink`, and checkpoints are bytes (``jobs.core.checkpoint``) whose source offset is
the number of records fed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from jobs.core.checkpoint import decode_checkpoint, encode_checkpoint, make_checkpoint
from jobs.core.dispatch import GraphDispatcher
from jobs.core.watermarks import WatermarkTracker
from jobs.graph import Graph
from jobs.sinks.probe import ReplayProbe, bind_taps
from jobs.topic_sink import TopicSink
from operators.contract import END_OF_STREAM, MIN_WATERMARK, Emit
from topics import names as tn

PARTITION = 0
"""The local runner reads its source as one partition."""


class LocalRunner:
    """Runs a :class:`Graph` in process, writing every produced topic to a :class:`TopicSink`."""

    def __init__(
        self,
        graph: Graph,
        sink: TopicSink,
        *,
        lateness_ns: int = 0,
        watermark_topic: str = tn.MD_TICKS,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.graph = graph
        self.sink = sink
        self.lateness_ns = lateness_ns
        self.watermark_topic = watermark_topic
        self._tracker = WatermarkTracker(1, lateness_ns=lateness_ns)
        self._folded = MIN_WATERMARK  # the newest event time the tracker has been given
        self._core = GraphDispatcher(graph, sink, watermark_topic=watermark_topic,
                                     clock=clock)
        self._source_inlets = self._core.inlets(graph.source_topic)
        self._source_is_wm = graph.source_topic == watermark_topic
        self.watermark = MIN_WATERMARK
        self.offset = 0
        """Source records fed so far (the source offset a checkpoint records)."""
        self.output_positions: dict[str, int] = {}
        """What the run a checkpoint came from had emitted per topic (empty on a fresh run)."""
        bind_taps(sink.taps, ReplayProbe(self))  # taps that report on the run (metrics)

    # -- feeding ----------------------------------------------------------------------------
    def feed(self, value: msgspec.Struct) -> None:
        """One source record: process it through the graph, then advance the watermark."""
        core = self._core
        if self._source_is_wm and value.ts_event > core.seen:  # type: ignore[attr-defined]
            core.seen = value.ts_event  # type: ignore[attr-defined]
        deliver = core.deliver
        for inlet in self._source_inlets:
            for topic, _, out in inlet(value):
                deliver(topic, out)
        self.offset += 1
        seen = core.seen  # one partition: the dispatcher's running maximum is the partition's
        if seen > self._folded:
            self._folded = seen
            wm = self._tracker.observe(PARTITION, seen)
        else:
            wm = self._tracker.current
        if wm > self.watermark:
            self.watermark = wm
            core.advance(wm)

    def inject(self, topic: str, value: msgspec.Struct) -> None:
        """Deliver a message produced outside the graph's source (batched paths, control)."""
        self._core.deliver(topic, value)

    def inject_many(self, topic: str, values: Sequence[msgspec.Struct]) -> None:
        """Deliver messages that arrive together (a batched front end's watermark step)."""
        self._core.deliver_many([Emit(topic, "", v) for v in values])

    def advance_to_data(self) -> None:
        """Advance the watermark to what the data seen so far allows (after ``inject``)."""
        wm = self._fold()
        if wm > self.watermark:
            self.advance_watermark(wm)

    def end_of_stream(self) -> None:
        self._tracker.end(PARTITION)
        self.advance_watermark(END_OF_STREAM)

    def advance_watermark(self, wm: int) -> None:
        if wm < self.watermark:
            raise ValueError(f"watermark must not go back ({wm} < {self.watermark})")
        self.watermark = wm
        self._core.advance(wm)

    def _fold(self) -> int:
        """Take what the watermark topic showed since the last fold into the tracker."""
        seen = self._core.seen
        if seen > self._folded:
            self._folded = seen
            self._tracker.observe(PARTITION, seen)
        return self._tracker.current

    # -- state access (checkpoints, tests, probes) ---------------------------------------------
    @property
    def dispatcher(self) -> GraphDispatcher:
        """The graph's stage hosts (read by ``jobs.sinks.probe``; not for driving them)."""
        return self._core

    def states(self, uid: str) -> dict[str, Any]:
        states: dict[str, Any] = self._core.by_uid[uid].states  # type: ignore[assignment]
        return states

    def checkpoint(self) -> bytes:
        """A consistent checkpoint between two source records (``jobs.core.checkpoint``)."""
        self._fold()
        counts = self.sink.counts
        cp = make_checkpoint(
            watermark=self.watermark,
            partitions=self._tracker.snapshot(),
            operators=self._core.snapshot(),
            source_offsets={(self.graph.source_topic, PARTITION): self.offset},
            output_positions={t: counts[t] for t in self.graph.output_topics})
        return encode_checkpoint(cp)

    def restore(self, data: bytes) -> None:
        """Load a :meth:`checkpoint` into this (fresh) runner; envelopes are checked once each."""
        cp = decode_checkpoint(data)
        self._core.restore(cp.operators)
        self._tracker.restore(cp.partitions)
        self._folded = self._core.seen = cp.partitions[PARTITION].max_ts
        self.watermark = cp.watermark
        self.offset = next((o.offset for o in cp.source_offsets
                            if (o.topic, o.partition) == (self.graph.source_topic, PARTITION)), 0)
        self.output_positions = dict(cp.output_positions)
