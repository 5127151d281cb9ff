"""The graph dispatcher: the stages of a ``Graph`` as stage hosts, and how messages move.

Rules (the same for every host that runs a whole graph in one process):

- **Depth first.** A message produced on a topic goes to the ``output`` (the topic sink, a
  Kafka producer), then to each consuming stage in topological order; each output of
  a ``process`` call is dispatched the same way before the next one. One source record's
  consequences are complete before the next record is read, so the order of every topic is a
  function of the input alone.
- **Watermark steps.** ``advance(W)`` walks the stages in topological order; each fires what
  is due at ``W`` (``StageHost.fire``) and its outputs reach downstream stages *before* those
  stages receive ``W`` (Flink's order).
- **Per-step batching by topic.** What one stage's timers emit at one step is emitted in order,
  then delivered topic by topic (topics in order of first appearance).
- **Keyed batches.** When a step delivers several values of a topic to a stage, they are
  split per key (keys in order of first appearance, each key's values in order) and each key's
  run is one ``process_batch`` call (``process`` for a run of one); its outputs are dispatched
  depth first before the next run. A stage that merges its inputs buffers them instead.
- **Watermark observation.** Every value on the watermark topic raises ``seen``, the newest
  event time observed; the host folds it into its ``jobs.core.watermarks.WatermarkTracker``
  for the partition the record came from (a host reading several partitions resets ``seen``
  before each record; with one partition it is that partition's maximum).

A source record is handed to ``inlets(source_topic)`` by the host (it is the host's input, not
re-emitted); everything the stages produce goes through ``deliver`` / ``deliver_many``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from jobs.core.checkpoint import OperatorCheckpoint
from jobs.core.stage import StageHost
from jobs.graph import Graph
from operators.contract import MIN_WATERMARK, Emit


class Output(Protocol):
    """Where produced messages go (a ``TopicSink``, a Kafka producer).

    An output may also offer ``counted_only() -> (topics, counts)``: topics of which it only
    counts messages, and the per-topic count dict it keeps. The dispatcher then bumps those
    counts itself instead of calling ``emit`` (one call less per message; most messages of a
    replay are only counted).
    """

    def emit(self, topic: str, value: msgspec.Struct, /) -> None: ...

Inlet = Callable[[Any], list[Emit]]
Route = tuple[bool, bool, tuple[Inlet, ...]]
"""Per topic: only counted (no ``emit`` call), the watermark topic, the consuming inlets."""


class GraphDispatcher:
    """Runs a graph's stages in process; ``output`` receives every produced message."""

    __slots__ = ("_batch_consumers", "_consumers", "_counted", "_counts", "_emit", "_heaps",
                 "_routes", "by_uid", "graph", "hosts", "output", "seen", "watermark_topic")

    def __init__(
        self,
        graph: Graph,
        output: Output,
        *,
        watermark_topic: str,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.graph = graph
        self.watermark_topic = watermark_topic
        self.output = output
        self.hosts = tuple(
            StageHost(st.operator, merge_inputs=st.inputs if st.merge_inputs else None,
                      clock=clock)
            for st in graph.stages)
        self.by_uid = {h.uid: h for h in self.hosts}
        topics = {graph.source_topic, *graph.external, *graph.output_topics}
        self._batch_consumers: dict[str, tuple[tuple[StageHost, Inlet], ...]] = {
            t: tuple((h, h.inlet(t)) for h in (self.by_uid[st.uid] for st in graph.consumers(t)))
            for t in topics}
        self._consumers: dict[str, tuple[Inlet, ...]] = {
            t: tuple(inlet for _, inlet in hs) for t, hs in self._batch_consumers.items() if hs}
        self._heaps = tuple((h, h.heap, h.merge_heap) for h in self.hosts)
        self.seen = MIN_WATERMARK
        self._emit = output.emit
        counted_only = getattr(output, "counted_only", None)
        self._counted: frozenset[str]
        self._counts: dict[str, int]
        self._counted, self._counts = counted_only() if counted_only else (frozenset(), {})
        self._routes: dict[str, Route] = {}
        for t in topics:
            self._route(t)

    def _route(self, topic: str) -> Route:
        """How a message on ``topic`` is emitted, observed and consumed (built once a topic)."""
        route = (topic in self._counted, topic == self.watermark_topic,
                 self._consumers.get(topic, ()))
        self._routes[topic] = route
        return route

    # -- messages -----------------------------------------------------------------------------
    def inlets(self, topic: str) -> tuple[Inlet, ...]:
        """The consuming stages' entry points for ``topic``: a host hands a source record
        (which it does not re-emit) to each, and dispatches what they return with
        ``deliver``."""
        return self._consumers.get(topic, ())

    def deliver(self, topic: str, value: Any) -> None:
        """A message on ``topic``: emitted, observed, then consumed depth first."""
        route = self._routes.get(topic)
        counted, is_wm, inlets = route if route is not None else self._route(topic)
        if counted:
            self._counts[topic] += 1
        else:
            self._emit(topic, value)
        if is_wm:
            ts = value.ts_event
            if ts > self.seen:
                self.seen = ts
        for inlet in inlets:
            for out_topic, _, out in inlet(value):
                self.deliver(out_topic, out)

    def deliver_many(self, emits: Sequence[Emit]) -> None:
        """Messages produced together (one watermark step): emitted, then topic by topic."""
        if len(emits) == 1:
            e = emits[0]
            self.deliver(e.topic, e.value)
            return
        emit = self._emit
        counted, counts = self._counted, self._counts
        wm_topic = self.watermark_topic
        by_topic: dict[str, list[Any]] = {}
        for topic, _, value in emits:
            if topic in counted:
                counts[topic] += 1
            else:
                emit(topic, value)
            if topic == wm_topic and value.ts_event > self.seen:  # type: ignore[attr-defined]
                self.seen = value.ts_event  # type: ignore[attr-defined]
            values = by_topic.get(topic)
            if values is None:
                by_topic[topic] = [value]
            else:
                values.append(value)
        deliver = self.deliver
        for topic, values in by_topic.items():
            for host, inlet in self._batch_consumers.get(topic, ()):
                if len(values) == 1:
                    for t, _, v in inlet(values[0]):
                        deliver(t, v)
                else:
                    self._deliver_batch(host, inlet, values)

    def _deliver_batch(self, host: StageHost, inlet: Inlet, values: list[Any]) -> None:
        if host.merge is not None:
            for v in values:
                inlet(v)
            return
        deliver = self.deliver
        for key, run in host.runs(values).items():
            for t, _, v in host.process_run(key, run):
                deliver(t, v)

    # -- time ---------------------------------------------------------------------------------
    def advance(self, watermark: int) -> None:
        """Every stage receives ``watermark`` in topological order (the host checks order)."""
        for host, heap, mheap in self._heaps:
            if (heap and heap[0][0] <= watermark) or (mheap and mheap[0][0] <= watermark):
                step = host.fire(watermark)
                if step:
                    self.deliver_many(step)
            host.watermark = watermark

    # -- checkpoints --------------------------------------------------------------------------
    def snapshot(self) -> list[OperatorCheckpoint]:
        return [h.snapshot() for h in self.hosts]

    def restore(self, operators: list[OperatorCheckpoint]) -> None:
        uids = [oc.envelope.uid for oc in operators]
        if uids != [h.uid for h in self.hosts]:
            raise ValueError(f"checkpoint stages {uids} do not match the graph "
                             f"{[h.uid for h in self.hosts]}")
        for host, oc in zip(self.hosts, operators, strict=True):
            host.restore(oc)
