"""The stage host: one operator's runtime, the same in every engine.

It owns what the operator contract leaves to the runtime for one stage: keyed state access
through a small ``StateStore`` (a dict locally; a Flink ``ValueState`` or a Faust table
later), the stage's timers (``jobs.core.timers``), the watermark the stage last received, the
``Context`` handed to the operator (the host itself: ``watermark``, ``now``,
``register_timer`` for the current key) and, for a multi-input stage, the event-time merge of
its inputs (``jobs.core.merge``).

Calls:

- ``process(value)``: one event of its key, outputs returned (the caller dispatches them);
- ``process_run(key, values)``: one key's run of events, one ``process_batch`` call (the keyed
  batch contract: the shape Flink and Faust can host);
- ``fire(watermark)``: the watermark reached the stage: due timers fire in ``(ts, key)`` order
  (interleaved with the merge's releases, events first at equal ``(ts, key)``), outputs
  returned together;
- ``snapshot()`` / ``restore()``: the stage's part of a checkpoint, one envelope per operator.

The per-event path is kept lean: no allocation beyond what the operator returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from operator import itemgetter
from typing import Any, Protocol

from jobs.core.checkpoint import KeyState, OperatorCheckpoint
from jobs.core.merge import EventTimeMerge
from jobs.core.timers import TimerService
from operators.contract import MIN_WATERMARK, Emit, Operator

_KEY = itemgetter(0)


class StateStore(Protocol):
    """Keyed state as a host stores it; a ``dict`` is one."""

    def get(self, key: str, /) -> Any:
        """The key's state, or None if the key has none yet."""
        ...

    def __setitem__(self, key: str, state: Any, /) -> None: ...

    def items(self) -> Iterable[tuple[str, Any]]: ...

    def clear(self) -> None: ...


class EncodedStore:
    """Each key's state kept as its codec's bytes between calls (Flink ``ValueState[bytes]``,
    a Faust table): proves an operator keeps nothing but what its codec encodes."""

    __slots__ = ("_data", "_decode", "_encode")

    def __init__(self, op: Operator[Any, Any]) -> None:
        self._data: dict[str, bytes] = {}
        self._encode = op.encode_state
        self._decode = op.decode_state

    def get(self, key: str, /) -> Any:
        raw = self._data.get(key)
        return None if raw is None else self._decode(raw)

    def __setitem__(self, key: str, state: Any, /) -> None:
        self._data[key] = self._encode(state)

    def items(self) -> Iterable[tuple[str, Any]]:
        return [(k, self._decode(v)) for k, v in self._data.items()]

    def clear(self) -> None:
        self._data.clear()


class StageHost:
    """One operator with its keyed state, timers, watermark and merge (see module doc)."""

    __slots__ = ("_clock", "heap", "merge", "merge_heap", "op",
                 "register_timer", "states", "timers", "uid", "watermark")

    def __init__(
        self,
        op: Operator[Any, Any],
        *,
        store: StateStore | None = None,
        merge_inputs: Sequence[str] | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.op = op
        self.uid = op.UID
        self.states: StateStore = {} if store is None else store
        self.timers = TimerService()
        self.heap = self.timers.heap
        self.merge = EventTimeMerge(merge_inputs) if merge_inputs else None
        self.merge_heap: list[tuple[int, str]] = (
            self.merge.timers.heap if self.merge is not None else [])
        self.watermark = MIN_WATERMARK
        self._clock = clock
        self.register_timer: Callable[[int], None] = self.timers.register_timer
        """``Context.register_timer``: a timer at ts for the key being processed."""

    # -- Context ------------------------------------------------------------------------------
    @property
    def now(self) -> int:
        return self._clock()

    @property
    def key(self) -> str:
        """The key of the call in progress (timers registered now are this key's)."""
        return self.timers.current_key

    @key.setter
    def key(self, key: str) -> None:
        self.timers.current_key = key

    # -- events -------------------------------------------------------------------------------
    def inlet(self, topic: str) -> Callable[[Any], list[Emit]]:
        """How events of ``topic`` enter: processed at once, or buffered by the merge."""
        if self.merge is None:
            return self.process
        if topic not in self.merge.inputs:
            raise ValueError(f"{self.uid}: {topic!r} is not one of its merged inputs")
        return partial(self._buffer, topic)

    def process(self, value: Any) -> list[Emit]:
        # Method calls go through ``self.op`` rather than bound methods kept in slots: CPython
        # specializes ``op.process(...)`` but not a call of a callable stored in a slot.
        op = self.op
        key = op.key(value)
        self.timers.current_key = key
        states = self.states
        state = states.get(key)
        if state is None:
            state = op.new_state(key)
        state, outs = op.process(state, value, self)
        states[key] = state
        return outs

    def process_run(self, key: str, values: list[Any]) -> list[Emit]:
        """One key's run of events (a single event goes through ``process``)."""
        op = self.op
        self.timers.current_key = key
        state = self.states.get(key)
        if state is None:
            state = op.new_state(key)
        if len(values) == 1:
            state, outs = op.process(state, values[0], self)
        else:
            state, outs = op.process_batch(state, values, self)
        self.states[key] = state
        return outs

    def runs(self, values: Iterable[Any]) -> dict[str, list[Any]]:
        """``values`` split per key, keys in order of first appearance, each run in order."""
        key_of = self.op.key
        groups: dict[str, list[Any]] = {}
        for v in values:
            k = key_of(v)
            run = groups.get(k)
            if run is None:
                groups[k] = [v]
            else:
                run.append(v)
        return groups

    def _buffer(self, topic: str, value: Any) -> list[Emit]:
        assert self.merge is not None
        self.merge.add(self.op.key(value), topic, value)
        return []

    # -- time ---------------------------------------------------------------------------------
    def fire(self, watermark: int) -> list[Emit]:
        """The stage receives ``watermark``: everything due, in order; the outputs together."""
        self.watermark = watermark
        out: list[Emit] = []
        heap = self.heap
        if self.merge is None:
            op, timers, states = self.op, self.timers, self.states
            while heap and heap[0][0] <= watermark:
                ts, key = timers.pop()
                timers.current_key = key
                state = states.get(key)
                if state is None:
                    state = op.new_state(key)
                state, outs = op.on_timer(state, ts, self)
                states[key] = state
                out += outs
            return out
        merge = self.merge
        mheap = self.merge_heap
        mtimers, timers = merge.timers, self.timers
        while True:
            if mheap and mheap[0][0] <= watermark and not (heap and heap[0] < mheap[0]):
                ts, key = mtimers.pop()  # events at (ts, key) before the timer at (ts, key)
                events = merge.release(key, ts)
                if events:
                    out += self.process_run(key, events)
            elif heap and heap[0][0] <= watermark:
                ts, key = timers.pop()
                out += self._timer(key, ts)
            else:
                return out

    def _timer(self, key: str, ts: int) -> list[Emit]:
        op = self.op
        self.timers.current_key = key
        state = self.states.get(key)
        if state is None:
            state = op.new_state(key)
        state, outs = op.on_timer(state, ts, self)
        self.states[key] = state
        return outs

    # -- checkpoints --------------------------------------------------------------------------
    def snapshot(self, *, with_states: bool = True) -> OperatorCheckpoint:
        """``with_states=False``: without the keyed states (a host keeping them per key)."""
        enc = self.op.encode_state
        return OperatorCheckpoint(
            envelope=self.op.envelope(),
            watermark=self.watermark,
            states=([KeyState(k, enc(v)) for k, v in sorted(self.states.items(), key=_KEY)]
                    if with_states else []),
            timers=self.timers.snapshot(),
            merge=self.merge.snapshot() if self.merge is not None else [],
        )

    def restore(self, cp: OperatorCheckpoint) -> None:
        """Load this stage's part of a checkpoint; the envelope is checked once."""
        op = self.op
        op.check_envelope(cp.envelope)
        self.states.clear()
        dec = op.decode_state
        for ks in cp.states:
            self.states[ks.key] = dec(ks.state)
        self.timers.restore(cp.timers)
        if self.merge is not None:
            self.merge.restore(cp.merge)
        elif cp.merge:
            raise ValueError(f"{self.uid}: checkpoint has merge buffers, the stage merges none")
        self.watermark = cp.watermark
