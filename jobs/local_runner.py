"""The embedded local runtime: in-process topics, per-event watermarks, keyed state, timers.

It drives the same operators a Flink job wraps, with the same semantics:
- one source; its watermark is ``max event time seen on the watermark topic - lateness``,
  advanced after every source record (punctuated, so lateness is a function of the data);
- a stage sees the watermark it last received; when the watermark advances, stages fire their
  due timers in topological order, each in ``(ts, key)`` order, and their outputs reach
  downstream stages before those stages receive the new watermark (Flink's order);
- end of stream advances the watermark to ``END_OF_STREAM``, firing every pending timer.
Outputs are dispatched depth first, so one source record's consequences are complete before the
next record is read: the order of every topic is a function of the input alone. What a stage's
timers emit at one watermark step is delivered topic by topic, and a consumer that offers
``process_many`` (e.g. ``infer``: one ONNX call for every vector that closed together) gets the
whole topic's batch in one call; each topic keeps the order depth-first dispatch would give it.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from jobs.graph import Graph, Stage
from jobs.topic_sink import TopicSink
from operators.contract import END_OF_STREAM, MIN_WATERMARK, Emit


class _StageRuntime:
    """Per-stage keyed state, timer service and the reusable call context."""

    __slots__ = ("_clock", "heap", "key", "op", "pending", "stage", "states", "watermark")

    def __init__(self, stage: Stage, clock: Callable[[], int]) -> None:
        self.stage = stage
        self.op = stage.operator
        self.states: dict[str, Any] = {}
        self.heap: list[tuple[int, str]] = []
        self.pending: set[tuple[int, str]] = set()
        self.watermark = MIN_WATERMARK
        self.key = ""
        self._clock = clock

    # Context protocol -----------------------------------------------------------------
    @property
    def now(self) -> int:
        return self._clock()

    def register_timer(self, ts: int) -> None:
        item = (ts, self.key)
        if item not in self.pending:
            self.pending.add(item)
            heapq.heappush(self.heap, item)


class LocalRunner:
    """Runs a :class:`Graph` in process, writing every produced topic to a :class:`TopicSink`."""

    def __init__(
        self,
        graph: Graph,
        sink: TopicSink,
        *,
        lateness_ns: int = 0,
        watermark_topic: str = "md.ticks",
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if lateness_ns < 0:
            raise ValueError("lateness must be >= 0")
        self.graph = graph
        self.sink = sink
        self.lateness_ns = lateness_ns
        self.watermark_topic = watermark_topic
        self._stages = [_StageRuntime(st, clock) for st in graph.stages]
        self._by_uid = {sr.stage.uid: sr for sr in self._stages}
        topics = {graph.source_topic, *graph.external, *graph.output_topics}
        self._consumers: dict[str, tuple[_StageRuntime, ...]] = {
            t: tuple(self._by_uid[st.uid] for st in graph.consumers(t)) for t in topics
        }
        self._source_is_wm = graph.source_topic == watermark_topic
        self.max_ts = MIN_WATERMARK
        self.watermark = MIN_WATERMARK

    # -- feeding ----------------------------------------------------------------------
    def feed(self, value: msgspec.Struct) -> None:
        """One source record: process it through the graph, then advance the watermark."""
        if self._source_is_wm:
            ts = value.ts_event  # type: ignore[attr-defined]
            if ts > self.max_ts:
                self.max_ts = ts
        for sr in self._consumers[self.graph.source_topic]:
            self._process(sr, value)
        if self.max_ts != MIN_WATERMARK:
            wm = self.max_ts - self.lateness_ns
            if wm > self.watermark:
                self.advance_watermark(wm)

    def inject(self, topic: str, value: msgspec.Struct) -> None:
        """Deliver a message produced outside the graph's source (batched paths, control)."""
        self._dispatch(Emit(topic, "", value))

    def inject_many(self, topic: str, values: Sequence[msgspec.Struct]) -> None:
        """Deliver messages that arrive together (a batched front end's watermark step)."""
        self._dispatch_many([Emit(topic, "", v) for v in values])

    def advance_to_data(self) -> None:
        """Advance the watermark to what the data seen so far allows (after ``inject``)."""
        if self.max_ts != MIN_WATERMARK:
            wm = self.max_ts - self.lateness_ns
            if wm > self.watermark:
                self.advance_watermark(wm)

    def end_of_stream(self) -> None:
        self.advance_watermark(END_OF_STREAM)

    def advance_watermark(self, wm: int) -> None:
        if wm < self.watermark:
            raise ValueError(f"watermark must not go back ({wm} < {self.watermark})")
        self.watermark = wm
        for sr in self._stages:
            heap = sr.heap
            step: list[Emit] = []
            while heap and heap[0][0] <= wm:
                item = heapq.heappop(heap)
                sr.pending.discard(item)
                ts, key = item
                sr.key = key
                sr.watermark = wm
                state = sr.states.get(key)
                if state is None:
                    state = sr.op.new_state(key)
                state, outs = sr.op.on_timer(state, ts, sr)
                sr.states[key] = state
                step.extend(outs)
            if step:
                self._dispatch_many(step)
            sr.watermark = wm

    # -- internals --------------------------------------------------------------------
    def _process(self, sr: _StageRuntime, value: Any) -> None:
        op = sr.op
        key = op.key(value)
        sr.key = key
        state = sr.states.get(key)
        if state is None:
            state = op.new_state(key)
        state, outs = op.process(state, value, sr)
        sr.states[key] = state
        for e in outs:
            self._dispatch(e)

    def _dispatch(self, e: Emit) -> None:
        topic = e.topic
        value = e.value
        self.sink.emit(topic, value)
        if topic == self.watermark_topic:
            ts = value.ts_event  # type: ignore[attr-defined]
            if ts > self.max_ts:
                self.max_ts = ts
        for sr in self._consumers.get(topic, ()):
            self._process(sr, value)

    def _dispatch_many(self, emits: list[Emit]) -> None:
        if len(emits) == 1:
            self._dispatch(emits[0])
            return
        by_topic: dict[str, list[Any]] = {}
        for e in emits:
            self.sink.emit(e.topic, e.value)
            if e.topic == self.watermark_topic:
                ts = e.value.ts_event  # type: ignore[attr-defined]
                if ts > self.max_ts:
                    self.max_ts = ts
            by_topic.setdefault(e.topic, []).append(e.value)
        for topic, values in by_topic.items():
            for sr in self._consumers.get(topic, ()):
                many = getattr(sr.op, "process_many", None)
                if many is not None and len(values) > 1:
                    sr.key = ""
                    self._dispatch_many(many(sr.states, values, sr))
                else:
                    for v in values:
                        self._process(sr, v)

    # -- state access (checkpoints, tests) -----------------------------------------------
    def states(self, uid: str) -> dict[str, Any]:
        return self._by_uid[uid].states

    def checkpoint(self) -> bytes:
        """A consistent snapshot between two source records: states, timers, watermarks.

        Each key's state goes through its operator's versioned ``snapshot``; keys and timers
        are sorted so the same position always gives the same bytes.
        """
        stages = []
        for sr in self._stages:
            stages.append(
                _StageCheckpoint(
                    uid=sr.stage.uid,
                    watermark=sr.watermark,
                    states={k: sr.op.snapshot(v) for k, v in sorted(sr.states.items())},
                    timers=sorted(sr.heap),
                )
            )
        cp = _Checkpoint(max_ts=self.max_ts, watermark=self.watermark, stages=stages)
        return msgspec.msgpack.encode(cp)

    def restore(self, data: bytes) -> None:
        """Load a :meth:`checkpoint` into this (fresh) runner; operators validate their state."""
        cp = msgspec.msgpack.decode(data, type=_Checkpoint)
        uids = [sc.uid for sc in cp.stages]
        if uids != [sr.stage.uid for sr in self._stages]:
            raise ValueError(f"checkpoint stages {uids} do not match the graph")
        self.max_ts = cp.max_ts
        self.watermark = cp.watermark
        for sc in cp.stages:
            sr = self._by_uid[sc.uid]
            sr.watermark = sc.watermark
            sr.states = {k: sr.op.restore(v) for k, v in sc.states.items()}
            sr.heap = [(ts, key) for ts, key in sc.timers]
            heapq.heapify(sr.heap)
            sr.pending = set(sr.heap)


class _StageCheckpoint(msgspec.Struct, frozen=True):
    uid: str
    watermark: int
    states: dict[str, bytes]
    timers: list[tuple[int, str]]


class _Checkpoint(msgspec.Struct, frozen=True):
    max_ts: int
    watermark: int
    stages: list[_StageCheckpoint]
