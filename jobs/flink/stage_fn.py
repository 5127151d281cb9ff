"""One stage of the graph as a Flink ``KeyedProcessFunction`` (a thin wrapper).

The function hosts a ``jobs.core.linear.LinearStage``: every rule (timers, watermarks, end of
stream, keyed runs, multi-input merge, what is forwarded) is the core's; the wrapper only moves
the stage's state in and out of Flink state, so Flink's checkpoints carry it:

- ``states`` (``MapState[str, bytes]``): each operator key's state as the operator's codec
  encodes it (the versioned snapshot bytes of ``Operator.encode_state``);
- ``host`` (``ValueState[bytes]``): the rest of the stage's checkpoint part
  (``OperatorCheckpoint`` without states: envelope, watermark, timers, merge buffers) and, in
  the first stage, the watermark tracker's inputs.

Both are written at the end of each element (a block of items), only the keys the block
touched; they are read back once, on the first element after a (re)start, and the envelope is
checked then. Between elements the decoded states stay in the function (write-through cache).

Fault injection for the recovery test (``STREAMQUANT_FLINK_FAULT=<uid>:<element>:<file>``):
the stage ``uid`` fails on its ``element``-th element unless ``file`` exists (it creates it
first, so the restarted job runs through), and every stage that restores state from a Flink
checkpoint appends ``restored <uid>`` to ``file``.

Outputs of the DLQ, late and reject topics also leave on side outputs (JSON text), tagged
``<topic>``, for a sink that wants them apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
from pyflink.common.typeinfo import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from jobs.core.checkpoint import KeyState
from jobs.core.linear import OUT, LinearStage
from jobs.flink.wire import encode, source_type, unpack
from jobs.graph import Graph
from topics import names as tn

SIDE_TOPICS = (tn.MD_TICKS_DLQ, tn.MD_TICKS_LATE, tn.RISK_REJECTS)
"""Topics also sent to side outputs (dead letters, late ticks, risk rejects)."""


def side_tag(topic: str) -> OutputTag:
    return OutputTag(topic.replace(".", "-"), Types.STRING())


class _TrackedStates(dict[str, Any]):
    """The stage host's state store: a dict that remembers which keys were written."""

    __slots__ = ("dirty",)

    def __init__(self) -> None:
        super().__init__()
        self.dirty: set[str] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.dirty.add(key)


class StageFunction(KeyedProcessFunction):  # type: ignore[misc]
    """``graph.stages[index]`` on the item stream; elements are packed item lists
    (``jobs.flink.wire``)."""

    def __init__(self, make_graph: Callable[[], Graph], index: int, side_topics: Sequence[str],
                 *, lateness_ns: int, watermark_topic: str) -> None:
        # The graph is built in the task: operators hold codecs and models that do not pickle,
        # and every task builds the same graph from the same options.
        self.make_graph = make_graph
        self.index = index
        self.lateness_ns = lateness_ns
        self.watermark_topic = watermark_topic
        self.side = {t: side_tag(t) for t in side_topics}

    def open(self, runtime_context: RuntimeContext) -> None:
        self._store = _TrackedStates()
        self.stage = LinearStage(self.make_graph(), self.index, lateness_ns=self.lateness_ns,
                                 watermark_topic=self.watermark_topic, store=self._store)
        op = self.stage.host.op
        self._encode = op.encode_state
        self._states = runtime_context.get_map_state(MapStateDescriptor(
            "states", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self._host = runtime_context.get_state(ValueStateDescriptor(
            "host", Types.PICKLED_BYTE_ARRAY()))
        self._loaded = False
        self._json = msgspec.json.Encoder()
        st = self.stage
        self._source = (source_type(st.source_topic) if st.source_topic in st.inputs or (
            st.first and st.source_topic == st.wm_topic) else None)
        self._elements = 0
        self._fault = _fault(self.stage.host.uid)
        op.open()

    def close(self) -> None:
        self.stage.host.op.close()

    def _load(self) -> None:
        raw = self._host.value()
        if raw is not None:
            states = [KeyState(k, bytes(v)) for k, v in self._states.items()]
            self.stage.restore(bytes(raw), states)
            if self._fault is not None:
                with self._fault[1].open("a") as f:
                    f.write(f"restored {self.stage.host.uid}\n")
        self._store.dirty.clear()
        self._loaded = True

    def process_element(self, value: bytes, ctx: KeyedProcessFunction.Context
                        ) -> Iterator[Any]:
        if not self._loaded:
            self._load()
        self._elements += 1
        if (self._fault is not None and self._elements == self._fault[0]
                and not self._fault[1].exists()):
            self._fault[1].write_text("")
            raise RuntimeError(f"injected fault in {self.stage.host.uid}")
        stage = self.stage
        items, wire = unpack(value, stage.inputs, source=self._source,
                             ts_topic=stage.wm_topic if stage.first else None)
        out = stage.handle_all(items)
        store = self._store
        if store.dirty:
            put, enc = self._states.put, self._encode
            for k in store.dirty:
                put(k, enc(store[k]))
            store.dirty.clear()
        self._host.update(stage.snapshot(with_states=False))
        if self.side:
            side = self.side
            for item in out:
                if item[0] == OUT and item[1] in side:
                    v = item[2]
                    yield side[item[1]], (v if isinstance(v, bytes) else self._json.encode(v)
                                          ).decode()
        if out:
            yield encode(out, wire)

def _fault(uid: str) -> tuple[int, Path] | None:
    spec = os.environ.get("STREAMQUANT_FLINK_FAULT")
    if not spec:
        return None
    target, element, path = spec.split(":", 2)
    return (int(element), Path(path)) if target == uid else (0, Path(path))
