"""The hosts the operator contract suite runs every operator on; a new runtime joins here.

Each host drives one operator of a contract case the way that runtime would and exposes the
same handful of calls, so ``tests/test_operator_contract.py`` runs every check once per host
and also asserts that every host writes the reference host's bytes:

- ``local``: the embedded ``LocalRunner`` (the reference): a one-stage graph, outputs through
  a ``TopicSink``, checkpoints of the whole runner;
- ``stage``: one ``jobs.core.stage.StageHost`` driven directly, as a Flink
  ``KeyedProcessFunction`` or a Faust agent wraps one operator: keyed state kept as the
  codec's bytes between calls (``EncodedStore``, like ``ValueState[bytes]``), timers and a
  one-partition watermark tracker from the core, outputs returned to the caller.

- ``flink-linear``: the stage as the Flink job's ``KeyedProcessFunction`` runs it
  (``jobs.core.linear`` through the Flink wire format, state kept as the Flink function keeps
  it), without starting Flink.

A future host adds a class with these calls and one ``HOSTS`` entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from jobs.core.checkpoint import (
    KeyState,
    decode_checkpoint,
    encode_checkpoint,
    make_checkpoint,
)
from jobs.core.linear import END as LINEAR_END
from jobs.core.linear import SOURCE, Item, LinearStage
from jobs.core.sequenced import DATA, END, Element
from jobs.core.sequenced_runner import SequencedRunner
from jobs.core.stage import EncodedStore, StageHost
from jobs.core.watermarks import WatermarkTracker
from jobs.flink import wire as flink_wire
from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from operators.contract import END_OF_STREAM, Emit
from tests.operator_cases import OperatorCase


class ContractHost(Protocol):
    """What the contract suite needs from a runtime hosting one operator."""

    @property
    def watermark(self) -> int: ...

    def feed(self, event: msgspec.Struct) -> None: ...

    def end_of_stream(self) -> None: ...

    def outputs(self) -> dict[str, bytes]:
        """Every output topic as JSON lines, in the order the host produced them."""
        ...

    def states(self) -> dict[str, Any]:
        """The operator's keyed states, decoded."""
        ...

    def checkpoint(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


def _json_lines(by_topic: dict[str, list[msgspec.Struct]], topics: tuple[str, ...]
                ) -> dict[str, bytes]:
    enc = msgspec.json.Encoder()
    return {t: b"\n".join(enc.encode(v) for v in by_topic.get(t, [])) for t in topics}


class LocalHost:
    """The operator as a one-stage graph on the ``LocalRunner``."""

    def __init__(self, case: OperatorCase) -> None:
        self.case = case
        op = case.make()
        graph = Graph(case.input_topic, (Stage(op, (case.input_topic,), case.output_topics),))
        self.sink = TopicSink(None, case.output_topics, capture=True)
        self.runner = LocalRunner(graph, self.sink, lateness_ns=case.lateness_ns,
                                  watermark_topic=case.wm_topic)
        self.uid = op.UID

    @property
    def watermark(self) -> int:
        return self.runner.watermark

    def feed(self, event: msgspec.Struct) -> None:
        self.runner.feed(event)

    def end_of_stream(self) -> None:
        self.runner.end_of_stream()

    def outputs(self) -> dict[str, bytes]:
        assert self.sink.captured is not None
        return _json_lines(self.sink.captured, self.case.output_topics)

    def states(self) -> dict[str, Any]:
        return self.runner.states(self.uid)

    def checkpoint(self) -> bytes:
        return self.runner.checkpoint()

    def restore(self, data: bytes) -> None:
        self.runner.restore(data)


class StageDriver:
    """The operator on one core ``StageHost`` with bytes-backed keyed state (a Flink wrapper)."""

    def __init__(self, case: OperatorCase) -> None:
        self.case = case
        op = case.make()
        self.host = StageHost(op, store=EncodedStore(op))
        self.tracker = WatermarkTracker(1, lateness_ns=case.lateness_ns)
        self.emitted: dict[str, list[msgspec.Struct]] = {t: [] for t in case.output_topics}

    @property
    def watermark(self) -> int:
        return self.host.watermark

    def _collect(self, emits: list[Emit]) -> None:
        wm_topic = self.case.wm_topic
        for e in emits:
            self.emitted[e.topic].append(e.value)
            if e.topic == wm_topic:
                self.tracker.observe(0, e.value.ts_event)  # type: ignore[attr-defined]

    def feed(self, event: msgspec.Struct) -> None:
        self._collect(self.host.process(event))
        if self.case.input_topic == self.case.wm_topic:
            self.tracker.observe(0, event.ts_event)  # type: ignore[attr-defined]
        if self.tracker.current > self.host.watermark:
            self._collect(self.host.fire(self.tracker.current))

    def end_of_stream(self) -> None:
        self.tracker.end(0)
        self._collect(self.host.fire(END_OF_STREAM))

    def outputs(self) -> dict[str, bytes]:
        return _json_lines(self.emitted, self.case.output_topics)

    def states(self) -> dict[str, Any]:
        return dict(self.host.states.items())

    def checkpoint(self) -> bytes:
        return encode_checkpoint(make_checkpoint(
            watermark=self.host.watermark, partitions=self.tracker.snapshot(),
            operators=[self.host.snapshot()]))

    def restore(self, data: bytes) -> None:
        cp = decode_checkpoint(data)
        (oc,) = cp.operators
        self.host.restore(oc)
        self.tracker.restore(cp.partitions)


class SequencedHost:
    """The operator as a one-stage graph on the live path's core (``SequencedRunner``): its
    input as partition 0 of a two-partition sequenced source whose partition 1 has only its
    end mark, so every record goes through the merge, the look-ahead and the per-partition
    tracker, as on Kafka."""

    LAST = 1 << 62  # partition 1's end mark: after every record this host will feed

    def __init__(self, case: OperatorCase) -> None:
        self.case = case
        op = case.make()
        graph = Graph(case.input_topic, (Stage(op, (case.input_topic,), case.output_topics),))
        self.sink = TopicSink(None, case.output_topics, capture=True)
        self.runner = SequencedRunner(graph, self.sink, partitions=2,
                                      lateness_ns=case.lateness_ns,
                                      watermark_topic=case.wm_topic)
        self.uid = op.UID
        self._reread()

    def _reread(self) -> None:
        """What a consumer reads again after a (re)start: partition 1's end mark."""
        m = self.runner.merge
        if not m.ended_partitions[1]:
            self.runner.push(Element(self.LAST, END, 1, m.next_offsets[1]))

    @property
    def watermark(self) -> int:
        return self.runner.watermark

    def feed(self, event: msgspec.Struct) -> None:
        m = self.runner.merge
        self.runner.push(Element(m.released_seq + 1, DATA, 0, m.next_offsets[0], event))
        self.runner.run_ready()

    def end_of_stream(self) -> None:
        m = self.runner.merge
        self.runner.push(Element(self.LAST - 1, END, 0, m.next_offsets[0]))
        self.runner.run_ready()

    def outputs(self) -> dict[str, bytes]:
        assert self.sink.captured is not None
        return _json_lines(self.sink.captured, self.case.output_topics)

    def states(self) -> dict[str, Any]:
        states: dict[str, Any] = self.runner.core.by_uid[self.uid].states  # type: ignore[assignment]
        return states

    def checkpoint(self) -> bytes:
        return self.runner.checkpoint(dict(self.sink.counts))

    def restore(self, data: bytes) -> None:
        self.runner.restore(data)
        self._reread()


class LinearHost:
    """The operator as the Flink job's stage runs it (``jobs.core.linear.LinearStage``): its
    items through the Flink wire format (``jobs.flink.wire``) in and out, keyed state as the
    codec's bytes between calls, the watermark from the stage's own tracker, checkpoints as the
    stage's Flink state (the operator part without states plus each key's bytes)."""

    def __init__(self, case: OperatorCase) -> None:
        self.case = case
        op = case.make()
        self.graph = Graph(case.input_topic,
                           (Stage(op, (case.input_topic,), case.output_topics),))
        self.stage = self._stage()
        self.emitted: dict[str, list[bytes]] = {t: [] for t in case.output_topics}

    def _stage(self) -> LinearStage:
        op = self.graph.stages[0].operator
        return LinearStage(self.graph, 0, lateness_ns=self.case.lateness_ns,
                           watermark_topic=self.case.wm_topic, store=EncodedStore(op))

    @property
    def watermark(self) -> int:
        return self.stage.watermark

    def _run(self, items: list[Item], kind: type[Any] | None = None) -> None:
        s = self.stage
        got, wire = flink_wire.unpack(flink_wire.pack(items), s.inputs, source=kind,
                                      ts_topic=s.wm_topic)
        for topic, payload in flink_wire.out_messages(flink_wire.encode(s.handle_all(got),
                                                                        wire)):
            self.emitted[topic].append(payload)

    def feed(self, event: msgspec.Struct) -> None:
        self._run([(SOURCE, event)], type(event))

    def end_of_stream(self) -> None:
        self._run([(LINEAR_END,)])

    def outputs(self) -> dict[str, bytes]:
        return {t: b"\n".join(v) for t, v in self.emitted.items()}

    def states(self) -> dict[str, Any]:
        return dict(self.stage.host.states.items())

    def checkpoint(self) -> bytes:
        op = self.stage.host.op
        states = [KeyState(k, op.encode_state(v)) for k, v in self.stage.host.states.items()]
        return msgspec.msgpack.encode((self.stage.snapshot(with_states=False), states))

    def restore(self, data: bytes) -> None:
        host, states = msgspec.msgpack.decode(data, type=tuple[bytes, list[KeyState]])
        self.stage = self._stage()
        self.stage.restore(host, states)


REFERENCE = "local"
HOSTS: dict[str, Callable[[OperatorCase], ContractHost]] = {
    "local": LocalHost,
    "stage": StageDriver,
    "sequenced": SequencedHost,
    "flink-linear": LinearHost,
}
"""Host name -> factory of a fresh host for a case; the suite runs once per entry."""
