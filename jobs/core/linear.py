"""The graph's dispatch rules in linear form: each stage a separate task on one item stream.

``GraphDispatcher`` runs a whole graph in one process and recurses into downstream stages. A
host that runs every stage as its own task (PyFlink: one keyed process function per stage,
connected in topological order) cannot recurse; it forwards. This module states the same
rules (``jobs.core.dispatch``: depth first, watermark steps emitted then delivered topic by
topic in keyed runs, stages receive a watermark after their upstream's step outputs) as what
one stage does to a stream of *items*:

- ``(SOURCE, value)``: a source record (``LocalRunner.feed``): consumed, then the watermark is
  folded and advanced by the first stage;
- ``(OUT, topic, value)``: a message was emitted (the writer at the end of the chain writes it);
- ``(DELIVER, topic, value)``: a message reaches its consumers depth first;
- ``(BATCH, topic, values)``: one topic's part of a watermark step (``deliver_many``);
- ``(HEARTBEAT, watermark)`` / ``(END,)``: watermark records carried by the stream (a quiet
  source's heartbeat, the end of the input), folded by the first stage;
- ``(WATERMARK, watermark)``: the graph's watermark moved; each stage fires what is due.

A stage handles an item and returns the items for the next stage: its own outputs (``OUT``
then ``DELIVER`` per output, depth first) before the item itself is forwarded to later
consumers, so every stage sees exactly the call sequence it sees in ``GraphDispatcher`` and the
``OUT`` items reach the end of the chain in the dispatcher's emission order (proved against
``LocalRunner`` by ``tests/test_linear_dispatch.py``). Timers, watermarks, merges and keyed
runs are the ``StageHost``'s and the ``WatermarkTracker``'s; only forwarding is stated here.

The watermark is a function of the data: the first stage folds the watermark topic's event
times (it must be the only producer of that topic, or the topic is the source's) into the
core's tracker after each source record, as ``LocalRunner.feed`` does, and sends
``WATERMARK`` down the same stream, so no engine timing can move it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from jobs.core.checkpoint import KeyState, OperatorCheckpoint, PartitionWatermark
from jobs.core.stage import StageHost, StateStore
from jobs.core.watermarks import WatermarkTracker
from jobs.graph import Graph
from operators.contract import END_OF_STREAM, MIN_WATERMARK, Emit

SOURCE, OUT, DELIVER, BATCH, HEARTBEAT, END, WATERMARK = range(7)

Item = tuple[Any, ...]

PARTITION = 0
"""A linear chain reads its source as one partition (its order is the stream's)."""


class LinearState(msgspec.Struct, frozen=True):
    """A linear stage's runtime state: the stage's checkpoint part and, for the first stage,
    the graph watermark's inputs (what ``LocalRunner`` keeps)."""

    operator: OperatorCheckpoint
    partitions: list[PartitionWatermark]
    seen: int
    watermark: int


_encode = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(LinearState).decode


def check_linear(graph: Graph, watermark_topic: str) -> None:
    """A graph runs linearly when only its first stage (or its source) produces the watermark
    topic: the first stage then sees every event time that moves the watermark."""
    late = [st.uid for st in graph.stages[1:] if watermark_topic in st.outputs]
    if late:
        raise ValueError(f"stages {late} produce the watermark topic {watermark_topic!r}; a "
                         "linear chain needs it produced by the first stage or the source")


class LinearStage:
    """One stage of a graph on the item stream (see module doc)."""

    __slots__ = ("_folded", "first", "forward", "host", "inputs", "seen", "source_topic",
                 "tracker", "watermark", "wm_topic")

    def __init__(
        self,
        graph: Graph,
        index: int,
        *,
        lateness_ns: int = 0,
        watermark_topic: str,
        store: StateStore | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        check_linear(graph, watermark_topic)
        st = graph.stages[index]
        self.host = StageHost(st.operator, store=store,
                              merge_inputs=st.inputs if st.merge_inputs else None, clock=clock)
        self.inputs = frozenset(st.inputs)
        self.forward = frozenset(t for later in graph.stages[index + 1:] for t in later.inputs)
        """Topics a later stage consumes: only those travel on as ``DELIVER`` / ``BATCH``."""
        self.first = index == 0
        self.source_topic = graph.source_topic
        self.wm_topic = watermark_topic
        self.tracker = WatermarkTracker(1, lateness_ns=lateness_ns)
        self.seen = MIN_WATERMARK
        self._folded = MIN_WATERMARK
        self.watermark = MIN_WATERMARK
        """The first stage: the graph's watermark (``LocalRunner.watermark``)."""

    # -- items ----------------------------------------------------------------------------------
    def handle_all(self, items: Iterable[Item]) -> list[Item]:
        out: list[Item] = []
        for item in items:
            self.handle(item, out)
        return out

    def handle(self, item: Item, out: list[Item]) -> None:
        """One item: what this stage forwards is appended to ``out`` in stream order."""
        kind = item[0]
        if kind == OUT:
            if self.first and item[1] == self.wm_topic:
                self._see(item[2].ts_event)
            out.append(item)
        elif kind == DELIVER:
            topic, value = item[1], item[2]
            if topic in self.inputs:
                for inlet_out in self.host.inlet(topic)(value):
                    self._emit(inlet_out, out)
            if topic in self.forward:
                out.append(item)
        elif kind == BATCH:
            self._batch(item[1], item[2], out)
            if item[1] in self.forward:
                out.append(item)
        elif kind == WATERMARK:
            self._advance(item[1], out)
        elif kind == SOURCE:
            self._source(item, out)
        elif kind == HEARTBEAT:
            if not self.first:
                raise ValueError("a heartbeat reaches the first stage only")
            self._fold()
            wm = self.tracker.heartbeat(PARTITION, item[1])
            if wm > self.watermark:
                self._graph_advance(wm, out)
        elif kind == END:
            if not self.first:
                raise ValueError("end of stream reaches the first stage only")
            self._fold()
            self.tracker.end(PARTITION)
            self._graph_advance(END_OF_STREAM, out)
        else:
            raise ValueError(f"unknown item kind {kind!r}")

    def _source(self, item: Item, out: list[Item]) -> None:
        if not self.first:
            if self.source_topic in self.inputs:
                for e in self.host.inlet(self.source_topic)(item[1]):
                    self._emit(e, out)
            if self.source_topic in self.forward:
                out.append(item)
            return
        value = item[1]
        if self.source_topic == self.wm_topic:
            self._see(value.ts_event)
        if self.source_topic in self.inputs:
            for e in self.host.inlet(self.source_topic)(value):
                self._emit(e, out)
        if self.source_topic in self.forward:
            out.append(item)
        wm = self._fold()
        if wm > self.watermark:
            self._graph_advance(wm, out)

    def _see(self, ts: int) -> None:
        if ts > self.seen:
            self.seen = ts

    def _fold(self) -> int:
        if self.seen > self._folded:
            self._folded = self.seen
            return self.tracker.observe(PARTITION, self.seen)
        return self.tracker.current

    def _graph_advance(self, wm: int, out: list[Item]) -> None:
        if wm < self.watermark:
            raise ValueError(f"watermark must not go back ({wm} < {self.watermark})")
        self.watermark = wm
        self._advance(wm, out)

    # -- dispatch -------------------------------------------------------------------------------
    def _emit(self, e: Emit, out: list[Item]) -> None:
        """``GraphDispatcher.deliver`` of one output: emitted, then its consumers."""
        topic = e.topic
        out.append((OUT, topic, e.value))
        if self.first and topic == self.wm_topic:
            self._see(e.value.ts_event)  # type: ignore[attr-defined]
        if topic in self.forward:
            out.append((DELIVER, topic, e.value))

    def _batch(self, topic: str, values: list[Any], out: list[Item]) -> None:
        """``GraphDispatcher.deliver_many``'s part for this stage and one topic."""
        if topic not in self.inputs:
            return
        host = self.host
        inlet = host.inlet(topic)
        if len(values) == 1:
            for e in inlet(values[0]):
                self._emit(e, out)
        elif host.merge is not None:
            for v in values:
                inlet(v)
        else:
            for key, run in host.runs(values).items():
                for e in host.process_run(key, run):
                    self._emit(e, out)

    def _advance(self, wm: int, out: list[Item]) -> None:
        """``GraphDispatcher.advance`` for this stage: fire, emit the step, pass ``wm`` on."""
        host = self.host
        if ((host.heap and host.heap[0][0] <= wm)
                or (host.merge_heap and host.merge_heap[0][0] <= wm)):
            step = host.fire(wm)
            if len(step) == 1:
                self._emit(step[0], out)
            elif step:
                by_topic: dict[str, list[Any]] = {}
                for e in step:
                    out.append((OUT, e.topic, e.value))
                    if self.first and e.topic == self.wm_topic:
                        self._see(e.value.ts_event)  # type: ignore[attr-defined]
                    by_topic.setdefault(e.topic, []).append(e.value)
                for topic, values in by_topic.items():
                    if topic in self.forward:
                        out.append((BATCH, topic, values))
        host.watermark = wm
        if self.forward or wm == END_OF_STREAM:  # a later stage, or the end for the writer
            out.append((WATERMARK, wm))

    # -- state ----------------------------------------------------------------------------------
    def snapshot(self, *, with_states: bool = True) -> bytes:
        """The stage's state as bytes; ``with_states=False`` leaves the keyed states out (a
        host keeping them apart, per key, e.g. in a Flink ``MapState``)."""
        cp = self.host.snapshot(with_states=with_states)
        return _encode(LinearState(operator=cp, partitions=self.tracker.snapshot(),
                                   seen=self.seen, watermark=self.watermark))

    def restore(self, data: bytes, states: Iterable[KeyState] = ()) -> None:
        """Load a :meth:`snapshot` (plus the keyed states kept apart); envelope checked once."""
        ls = _decode_state(data)
        cp = ls.operator
        extra = sorted(states, key=lambda ks: ks.key)
        if extra:
            cp = msgspec.structs.replace(cp, states=[*cp.states, *extra])
        self.host.restore(cp)
        self.tracker.restore(ls.partitions)
        self.seen = self._folded = ls.seen
        self.watermark = ls.watermark


def linear_chain(graph: Graph, *, lateness_ns: int = 0, watermark_topic: str,
                 clock: Callable[[], int] = time.monotonic_ns) -> list[LinearStage]:
    """Every stage of ``graph`` as a :class:`LinearStage`, in topological order."""
    return [LinearStage(graph, i, lateness_ns=lateness_ns, watermark_topic=watermark_topic,
                        clock=clock) for i in range(len(graph.stages))]


def run_chain(stages: list[LinearStage], items: Iterable[Item]) -> list[Item]:
    """Items through every stage in turn, in process (what a chain of tasks does)."""
    batch = list(items)
    for stage in stages:
        batch = stage.handle_all(batch)
    return batch
