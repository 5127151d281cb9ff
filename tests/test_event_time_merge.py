"""The core's event-time merge: a multi-input stage sees its inputs in one order fixed by the data.

A small test operator (``Tape``) records every event and timer it is handed. It consumes real
E-mini ticks and the sized intents of the recorded chain replay (``tests._chain_fixture``),
keyed by the parity of the event's second so two keys interleave, and registers timers at each
intent's time and one second later. Whatever the arrival interleaving (random, per-stream order
kept, within the lateness), the tape equals the documented rule, computed independently here:
entries in ``(ts, key)`` order, at each the key's events by (ts, input rank, record key,
arrival within that key) and then its timer.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from jobs.core.checkpoint import (
    CheckpointFormatError,
    decode_checkpoint,
    encode_checkpoint,
    make_checkpoint,
)
from jobs.core.stage import StageHost
from jobs.core.watermarks import WatermarkTracker
from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from operators.contract import END_OF_STREAM, Context, Emit, Operator
from tests._chain_fixture import chain_run
from tests._interleavings import interleave
from topics.messages import OrderIntent, Tick

SECOND = 1_000_000_000
LATENESS = 2 * SECOND
WINDOW = 12_000
"""Messages of the recorded replay around its first intents (ticks and intents)."""
INPUTS = ("md.ticks", "orders.intents")
SEEDS = (1, 2, 3)


class Seen(msgspec.Struct, frozen=True):
    ts_event: int
    key: str
    what: str
    ident: str


class TapeState(msgspec.Struct):
    key: str
    events: int = 0
    timers: int = 0


class Tape(Operator[TapeState, Tick | OrderIntent]):
    """Emits one ``Seen`` per event and per timer, in the order the host hands them over."""

    UID = "tape"
    State = TapeState

    def __init__(self) -> None:
        self.config = None

    def key(self, event: Tick | OrderIntent) -> str:
        return "odd" if (event.ts_event // SECOND) % 2 else "even"

    def new_state(self, key: str) -> TapeState:
        return TapeState(key=key)

    def process(self, state: TapeState, event: Tick | OrderIntent, ctx: Context
                ) -> tuple[TapeState, list[Emit]]:
        state.events += 1
        key = self.key(event)
        if isinstance(event, OrderIntent):
            ctx.register_timer(event.ts_event)
            ctx.register_timer(event.ts_event + SECOND)
            seen = Seen(event.ts_event, key, "intent", event.decision_id)
        else:
            seen = Seen(event.ts_event, key, "tick", str(_line(event)))
        return state, [Emit("tape", key, seen)]

    def on_timer(self, state: TapeState, ts: int, ctx: Context) -> tuple[TapeState, list[Emit]]:
        state.timers += 1
        return state, [Emit("tape", state.key, Seen(ts, state.key, "timer", ""))]


def _line(t: Tick) -> int:
    assert t.source is not None and t.source.line is not None
    return t.source.line


@pytest.fixture(scope="module")
def streams() -> tuple[list[Tick], list[OrderIntent]]:
    consumed = chain_run().consumed(INPUTS)
    first = next(i for i, m in enumerate(consumed) if isinstance(m, OrderIntent))
    window = consumed[max(0, first - 200):][:WINDOW]
    ticks = [m for m in window if isinstance(m, Tick)]
    intents = [m for m in window if isinstance(m, OrderIntent)]
    assert len(intents) > 20 and len(ticks) > 5_000
    return ticks, intents


def expected_tape(ticks: list[Tick], intents: list[OrderIntent]) -> list[Seen]:
    """The rule written out: (ts, key) entries; events (ts, rank, record key, arrival), then
    the timer. Ticks keep file order (their arrival order within the symbol)."""
    tape = Tape()
    rows: list[tuple[Any, ...]] = []
    for seq, t in enumerate(ticks):
        k = tape.key(t)
        rows.append((t.ts_event, k, 0, 0, t.symbol, seq, Seen(t.ts_event, k, "tick",
                                                                 str(_line(t)))))
    for seq, i in enumerate(intents):
        k = tape.key(i)
        rows.append((i.ts_event, k, 0, 1, i.account, seq, Seen(i.ts_event, k, "intent",
                                                                  i.decision_id)))
    timers = {(ts, tape.key(i)) for i in intents for ts in (i.ts_event, i.ts_event + SECOND)}
    rows += [(ts, k, 1, 0, "", 0, Seen(ts, k, "timer", "")) for ts, k in timers]
    rows.sort(key=lambda r: r[:6])
    return [r[6] for r in rows]


class MergeHost:
    """The Tape on a core stage host with merged inputs, watermark from the ticks."""

    def __init__(self) -> None:
        self.host = StageHost(Tape(), merge_inputs=INPUTS)
        self.tracker = WatermarkTracker(1, lateness_ns=LATENESS)
        self.out: list[Seen] = []

    def deliver(self, topic: str, value: Tick | OrderIntent) -> None:
        assert not self.host.inlet(topic)(value)  # buffered, nothing emitted on arrival
        if topic == "md.ticks":
            wm = self.tracker.observe(0, value.ts_event)
            if wm > self.host.watermark:
                self._take(self.host.fire(wm))

    def finish(self) -> list[Seen]:
        self.tracker.end(0)
        self._take(self.host.fire(END_OF_STREAM))
        return self.out

    def _take(self, emits: list[Emit]) -> None:
        for e in emits:
            assert isinstance(e.value, Seen)
            self.out.append(e.value)


def test_merge_releases_in_the_documented_order_whatever_the_interleaving(
        streams: tuple[list[Tick], list[OrderIntent]]) -> None:
    ticks, intents = streams
    expected = expected_tape(ticks, intents)
    for seed in SEEDS:
        host = MergeHost()
        arrival = interleave((ticks, intents), LATENESS, seed)
        assert any(s == 1 for s, _ in arrival[: len(arrival) // 2])
        for s, value in arrival:
            host.deliver(INPUTS[s], value)
        assert host.finish() == expected, f"seed {seed}"


def test_merge_checkpoint_mid_stream_resumes_to_the_same_tape(
        streams: tuple[list[Tick], list[OrderIntent]]) -> None:
    ticks, intents = streams
    expected = expected_tape(ticks, intents)
    arrival = interleave((ticks, intents), LATENESS, seed=11)
    cut = len(arrival) // 2
    first = MergeHost()
    for s, value in arrival[:cut]:
        first.deliver(INPUTS[s], value)
    snap = first.host.snapshot()
    assert snap.merge, "the cut should leave events buffered"
    blob = encode_checkpoint(make_checkpoint(watermark=first.host.watermark,
                                             partitions=first.tracker.snapshot(),
                                             operators=[snap]))
    cp = decode_checkpoint(blob)
    second = MergeHost()
    second.host.restore(cp.operators[0])
    second.tracker.restore(cp.partitions)
    for s, value in arrival[cut:]:
        second.deliver(INPUTS[s], value)
    assert first.out + second.finish() == expected


def test_a_graph_stage_with_merged_inputs_gives_the_same_tape(
        streams: tuple[list[Tick], list[OrderIntent]]) -> None:
    """Through the local runner: ticks as the source, intents injected between them."""
    ticks, intents = streams
    graph = Graph("md.ticks", (Stage(Tape(), INPUTS, (), merge_inputs=True),),
                  external=("orders.intents",))
    sink = TopicSink(None, ("tape",), capture=True)
    runner = LocalRunner(graph, sink, lateness_ns=LATENESS)
    for s, value in interleave((ticks, intents), LATENESS, seed=5):
        if s == 0:
            runner.feed(value)
        else:
            runner.inject("orders.intents", value)
    runner.end_of_stream()
    assert sink.captured is not None
    assert sink.captured["tape"] == expected_tape(ticks, intents)


def test_checkpoint_of_another_format_is_refused() -> None:
    cp = make_checkpoint(watermark=0, partitions=WatermarkTracker(1).snapshot(), operators=[])
    data = msgspec.msgpack.encode(msgspec.structs.replace(cp, format=cp.format + 1))
    with pytest.raises(CheckpointFormatError):
        decode_checkpoint(data)
    with pytest.raises(CheckpointFormatError):
        decode_checkpoint(b"not a checkpoint")
