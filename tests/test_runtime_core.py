"""The runtime core's parts on their own: watermarks, timers, keyed batches, checkpoints.

Real inputs throughout: E-mini trades (``emini_ticks_path``) for watermarks and checkpoints,
the recorded chain replay's feature vectors for keyed batches. Expected values are computed
independently from the documented rules (``docs/time.md``).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from jobs.core.checkpoint import decode_checkpoint, read_checkpoint, write_checkpoint
from jobs.core.timers import TimerService
from jobs.core.watermarks import WatermarkTracker
from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from jobs.topology import tick_graph
from operators.contract import (
    END_OF_STREAM,
    MIN_WATERMARK,
    Context,
    Emit,
    Operator,
    StateMismatchError,
    stable_bucket,
)
from operators.features import FeaturesConfig, WindowFeatures
from operators.normalize import Normalize, RawRecord
from tests._chain_fixture import chain_run
from tests._feature_driver import load_emini, ticks_of
from topics.messages import FeatureVector

SECOND = 1_000_000_000
MINUTE = 60 * SECOND


# ------------------------------------------------------------------------------ watermarks


def test_combined_watermark_is_the_minimum_over_partitions(emini_ticks_path: Path) -> None:
    """Trades spread over three partitions, a fourth silent one moved by heartbeats only."""
    ticks = ticks_of(load_emini(emini_ticks_path))[:30_000]
    lateness = 5 * SECOND
    tracker = WatermarkTracker(4, lateness_ns=lateness)
    seen: list[int | None] = [None, None, None]
    beat = MIN_WATERMARK
    for i, t in enumerate(ticks):
        p = stable_bucket(str(i), 3)
        got = tracker.observe(p, t.ts_event)
        seen[p] = t.ts_event if seen[p] is None else max(seen[p] or 0, t.ts_event)
        if i % 1_000 == 999:  # the silent partition reports time passing
            beat = t.ts_event - MINUTE
            got = tracker.heartbeat(3, beat)
        parts = [MIN_WATERMARK if s is None else s - lateness for s in seen] + [beat]
        assert got == tracker.current == min(parts)
    assert tracker.current > MIN_WATERMARK
    for p in range(4):
        before = tracker.current
        tracker.end(p)
        assert tracker.current >= before
    assert tracker.current == END_OF_STREAM


def test_a_partition_without_data_holds_the_watermark_back() -> None:
    tracker = WatermarkTracker(2)
    assert tracker.observe(0, 10 * SECOND) == MIN_WATERMARK
    assert tracker.observe(1, 4 * SECOND) == 4 * SECOND
    assert tracker.heartbeat(1, 2 * SECOND) == 4 * SECOND  # behind the data: no effect
    assert tracker.end(1) == 10 * SECOND
    restored = WatermarkTracker(2)
    restored.restore(tracker.snapshot())
    assert restored.current == tracker.current
    assert restored.snapshot() == tracker.snapshot()


# ------------------------------------------------------------------------------ timers


def test_timers_fire_once_each_in_ts_key_order_and_survive_a_snapshot() -> None:
    rng = np.random.default_rng(3)
    ts = rng.integers(0, 50, size=400).tolist()
    keys = [f"k{int(x)}" for x in rng.integers(0, 5, size=400)]
    timers = TimerService()
    for t, k in zip(ts, keys, strict=True):
        timers.register(t, k)
    expected = sorted(set(zip(ts, keys, strict=True)))
    copy = TimerService()
    copy.restore(timers.snapshot())
    assert copy.pop_due(END_OF_STREAM) == expected
    assert timers.pop_due(24) == [e for e in expected if e[0] <= 24]
    timers.register(10, "k0")  # fired already: registering again schedules it again
    assert timers.pop_due(END_OF_STREAM) == [(10, "k0")] + [e for e in expected if e[0] > 24]
    assert not timers.due(END_OF_STREAM)


# ------------------------------------------------------------------------------ keyed batches


class RunState(msgspec.Struct):
    runs: int = 0


class RunSeen(msgspec.Struct, frozen=True):
    symbol: str
    size: int
    first_ts: int


class Runs(Operator[RunState, FeatureVector]):
    """Reports each keyed run it is handed (a run of one arrives through ``process``)."""

    UID = "runs"
    State = RunState

    def __init__(self) -> None:
        self.config = None

    def key(self, event: FeatureVector) -> str:
        return event.symbol

    def new_state(self, key: str) -> RunState:
        return RunState()

    def process(self, state: RunState, event: FeatureVector, ctx: Context
                ) -> tuple[RunState, list[Emit]]:
        return self.process_batch(state, [event], ctx)

    def process_batch(self, state: RunState, events: object, ctx: Context
                      ) -> tuple[RunState, list[Emit]]:
        evs = list(events)  # type: ignore[call-overload]
        state.runs += 1
        return state, [Emit("tape", evs[0].symbol, RunSeen(evs[0].symbol, len(evs),
                                                            evs[0].ts_event))]


def test_a_step_delivers_each_keys_run_in_one_process_batch_call() -> None:
    vectors = chain_run().consumed(("features",))[:6]
    other = [msgspec.structs.replace(v, symbol="EX") for v in vectors]
    step = [vectors[0], other[0], vectors[1], vectors[2], other[1], other[2]]
    graph = Graph("features", (Stage(Runs(), ("features",), ()),))
    sink = TopicSink(None, ("tape",), capture=True)
    runner = LocalRunner(graph, sink, watermark_topic="features")
    runner.inject_many("features", step)
    runner.inject_many("features", [vectors[3]])
    assert sink.captured is not None
    assert sink.captured["tape"] == [
        RunSeen("ES", 3, vectors[0].ts_event), RunSeen("EX", 3, other[0].ts_event),
        RunSeen("ES", 1, vectors[3].ts_event)]


# ------------------------------------------------------------------------------ checkpoints


def _tick_runner(bar_ns: int = MINUTE) -> tuple[LocalRunner, TopicSink, list[RawRecord]]:
    """Normalize and window features over the first E-mini records of the recorded replay."""
    norm = Normalize(chain_run().operators["normalize"].config)  # type: ignore[attr-defined]
    graph = tick_graph(norm, WindowFeatures(FeaturesConfig(bar_ns=bar_ns)))
    sink = TopicSink(None, graph.output_topics, capture=("md.ticks",))
    return LocalRunner(graph, sink), sink, list(chain_run().records[:5_000])


def test_a_checkpoint_holds_offsets_watermarks_positions_and_one_envelope_per_operator(
        tmp_path: Path) -> None:
    runner, sink, records = _tick_runner()
    for rec in records:
        runner.feed(rec)
    path = tmp_path / "run.ckpt"
    write_checkpoint(path, runner.checkpoint())
    write_checkpoint(path, runner.checkpoint())  # replaced in place
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]
    cp = read_checkpoint(path)
    assert [(o.topic, o.partition, o.offset) for o in cp.source_offsets] == [
        ("md.ticks.raw", 0, len(records))]
    assert cp.output_positions["md.ticks"] == sink.counts["md.ticks"] == len(records)
    assert cp.output_positions["features"] == sink.counts["features"] > 0
    assert sink.captured is not None
    newest = max(t.ts_event for t in sink.captured["md.ticks"])  # type: ignore[attr-defined]
    assert cp.partitions[0].max_ts == newest and cp.watermark == newest
    assert [oc.envelope for oc in cp.operators] == [h.operator.envelope()
                                                    for h in runner.graph.stages]
    feats = cp.operators[1]
    assert [k.key for k in feats.states] == ["ES"] and feats.timers

    resumed, _, _ = _tick_runner()
    resumed.restore(path.read_bytes())
    assert resumed.offset == len(records)
    assert resumed.output_positions == cp.output_positions
    assert decode_checkpoint(resumed.checkpoint()).operators == cp.operators


def test_restoring_under_another_config_or_graph_is_refused() -> None:
    runner, _, records = _tick_runner()
    for rec in records[:500]:
        runner.feed(rec)
    blob = runner.checkpoint()
    five_minute, _, _ = _tick_runner(5 * MINUTE)
    with pytest.raises(StateMismatchError):
        five_minute.restore(blob)
    norm = Normalize(chain_run().operators["normalize"].config)  # type: ignore[attr-defined]
    other = LocalRunner(Graph("md.ticks.raw", (Stage(norm, ("md.ticks.raw",),
                                                     ("md.ticks", "md.ticks.dlq")),)),
                        TopicSink(None, ()))
    with pytest.raises(ValueError, match="do not match the graph"):
        other.restore(blob)
