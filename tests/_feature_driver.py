"""Test-local drivers for the window-features operator (the real runner lives in jobs/).

``EventDriver`` drives the operator per event through the runtime core: the watermark before
an event is ``max event time seen - lateness`` over the events before it; after each event,
timers whose time the new watermark reached fire in ``(ts, key)`` order; at the end the
watermark jumps to ``END_OF_STREAM``. ``run_batches`` drives the batched path over
chunks. Both return the emitted messages so tests compare whole sequences.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd

from jobs.accel.features_columns import FeaturesColumns
from jobs.accel.tick_columns import TickColumns, bounded_watermarks
from jobs.core.checkpoint import decode_checkpoint, encode_checkpoint, make_checkpoint
from jobs.core.stage import StageHost
from jobs.core.watermarks import WatermarkTracker
from jobs.data import EMINI_SYMBOL, EMINI_TZ, EMINI_VENUE
from operators.contract import END_OF_STREAM, Emit
from operators.features import FeatureState, WindowFeatures
from topics.messages import Tick

MINUTE_NS = 60_000_000_000
SECOND_NS = 1_000_000_000


@cache
def load_emini(path: Path) -> TickColumns:
    """The E-mini trades as columns: CME local time (America/Chicago) to UTC ns, file order."""
    df = pd.read_csv(path)
    local = pd.to_datetime(df["DateTime"], format="%Y-%m-%d %H:%M:%S.%f")
    ts = local.dt.tz_localize(EMINI_TZ).dt.tz_convert("UTC").astype("int64")
    n = len(df)
    return TickColumns(
        ts=ts.to_numpy(dtype=np.int64),
        price=df["Price"].to_numpy(dtype=np.float64),
        size=df["Volume"].to_numpy(dtype=np.float64),
        symbol=np.zeros(n, dtype=np.int32),
        symbols=(EMINI_SYMBOL,),
        venue=EMINI_VENUE,
        line=np.arange(2, n + 2, dtype=np.int64),  # line 1 is the header
        source_file=path.name,
    )


def ticks_of(cols: TickColumns) -> list[Tick]:
    return [cols.tick(i) for i in range(len(cols))]


def emit_bytes(emits: Iterable[Emit]) -> list[tuple[str, str, bytes]]:
    """Emits as comparable bytes (msgpack keeps every float bit, -0.0 included)."""
    return [(e.topic, e.key, msgspec.msgpack.encode(e.value)) for e in emits]


def state_bytes(op: WindowFeatures, states: dict[str, FeatureState]) -> dict[str, bytes]:
    return {k: op.snapshot(v) for k, v in states.items()}


class EventDriver:
    """Feeds events one by one through the runtime core (``jobs.core``): one stage host and a
    one-partition watermark tracker, as a per-operator host (a Flink wrapper) drives a stage."""

    def __init__(self, op: WindowFeatures, lateness: int = 0) -> None:
        self.op = op
        self.lateness = lateness
        self.host = StageHost(op)
        self.tracker = WatermarkTracker(1, lateness_ns=lateness)
        self.out: list[Emit] = []

    @property
    def states(self) -> dict[str, FeatureState]:
        states: dict[str, FeatureState] = self.host.states  # type: ignore[assignment]
        return states

    @property
    def timers(self) -> list[tuple[int, str]]:
        """Pending ``(ts, key)`` timers, sorted."""
        return self.host.timers.snapshot()

    @property
    def watermark(self) -> int:
        return self.tracker.current

    def feed(self, tick: Tick) -> None:
        self.out += self.host.process(tick)
        wm = self.tracker.observe(0, tick.ts_event)
        if wm > self.host.watermark:
            self.out += self.host.fire(wm)

    def feed_all(self, ticks: Iterable[Tick]) -> EventDriver:
        for t in ticks:
            self.feed(t)
        return self

    def finish(self) -> list[Emit]:
        self.tracker.end(0)
        self.out += self.host.fire(END_OF_STREAM)
        return self.out

    def checkpoint(self) -> bytes:
        """The core's checkpoint of this one-stage host: states, timers, watermark inputs."""
        return encode_checkpoint(make_checkpoint(
            watermark=self.host.watermark, partitions=self.tracker.snapshot(),
            operators=[self.host.snapshot()]))

    @classmethod
    def resume(cls, op: WindowFeatures, lateness: int, checkpoint: bytes) -> EventDriver:
        cp = decode_checkpoint(checkpoint)
        driver = cls(op, lateness)
        driver.host.restore(cp.operators[0])
        driver.tracker.restore(cp.partitions)
        return driver


def run_events(
    op: WindowFeatures, ticks: Iterable[Tick], lateness: int = 0
) -> tuple[list[Emit], dict[str, FeatureState]]:
    driver = EventDriver(op, lateness).feed_all(ticks)
    return driver.finish(), driver.states


def chunk_bounds(n: int, sizes: Sequence[int]) -> list[int]:
    """Boundaries cycling through ``sizes`` until ``n`` rows are covered."""
    bounds, k = [0], 0
    while bounds[-1] < n:
        bounds.append(min(n, bounds[-1] + sizes[k % len(sizes)]))
        k += 1
    return bounds


def run_batches(
    op: WindowFeatures,
    cols: TickColumns,
    lateness: int = 0,
    bounds: Sequence[int] | None = None,
    states: dict[str, FeatureState] | None = None,
) -> tuple[list[Emit], dict[str, FeatureState]]:
    """The batched path over ``cols`` cut at ``bounds``, then the END_OF_STREAM flush."""
    bounds = [0, len(cols)] if bounds is None else bounds
    states = {} if states is None else states
    out: list[Emit] = []
    max_seen: int | None = None
    fc = FeaturesColumns(op)
    for a, b in itertools.pairwise(bounds):
        chunk = cols.slice(a, b)
        before, after, max_seen = bounded_watermarks(chunk.ts, lateness, max_seen)
        out += fc.process(states, chunk, before, after).emits(chunk)
    out += fc.flush(states, END_OF_STREAM).emits()
    return out, states


@cache
def emini_event_run(path: Path, lateness: int) -> tuple[list[Emit], dict[str, bytes]]:
    """The per-event E-mini replay, shared by the test modules (it takes seconds)."""
    op = WindowFeatures()
    emits, states = run_events(op, ticks_of(load_emini(path)), lateness)
    return emits, state_bytes(op, states)
