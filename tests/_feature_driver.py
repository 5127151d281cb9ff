"""Test-local drivers for the window-features operator (the real runner lives in jobs/).

``EventDriver`` is the minimal per-event runtime the operator contract describes: the
watermark before an event is ``max event time seen - lateness`` over the events before it;
after each event, timers whose time the new watermark reached fire in ``(ts, key)`` order; at
the end the watermark jumps to ``END_OF_STREAM``. ``run_batches`` drives the batched path over
chunks. Both return the emitted messages so tests compare whole sequences.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd

from jobs.accel.features_columns import FeaturesColumns
from jobs.accel.tick_columns import TickColumns, bounded_watermarks
from jobs.data import EMINI_SYMBOL, EMINI_TZ, EMINI_VENUE
from operators.contract import END_OF_STREAM, MIN_WATERMARK, Emit, SimpleContext
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


@dataclass
class EventDriver:
    """Feeds events one by one; fires timers in ``(ts, key)`` order as the watermark passes."""

    op: WindowFeatures
    lateness: int = 0
    states: dict[str, FeatureState] = field(default_factory=dict)
    timers: list[tuple[int, str]] = field(default_factory=list)
    max_ts: int | None = None
    out: list[Emit] = field(default_factory=list)

    @property
    def watermark(self) -> int:
        return MIN_WATERMARK if self.max_ts is None else self.max_ts - self.lateness

    def feed(self, tick: Tick) -> None:
        key = self.op.key(tick)
        state = self.states.get(key)
        if state is None:
            state = self.op.new_state(key)
        ctx = SimpleContext(watermark=self.watermark)
        state, outs = self.op.process(state, tick, ctx)
        self.states[key] = state
        self.out.extend(outs)
        for ts in ctx.timers or ():
            if (ts, key) not in self.timers:
                heapq.heappush(self.timers, (ts, key))
        if self.max_ts is None or tick.ts_event > self.max_ts:
            self.max_ts = tick.ts_event
        self.advance(self.watermark)

    def advance(self, watermark: int) -> None:
        while self.timers and self.timers[0][0] <= watermark:
            ts, key = heapq.heappop(self.timers)
            ctx = SimpleContext(watermark=watermark)
            state, outs = self.op.on_timer(self.states[key], ts, ctx)
            self.states[key] = state
            self.out.extend(outs)

    def feed_all(self, ticks: Iterable[Tick]) -> EventDriver:
        for t in ticks:
            self.feed(t)
        return self

    def finish(self) -> list[Emit]:
        self.advance(END_OF_STREAM)
        return self.out

    def checkpoint(self) -> tuple[dict[str, bytes], list[tuple[int, str]], int | None]:
        """What a runtime persists: operator snapshots, its timers, its watermark input."""
        return state_bytes(self.op, self.states), list(self.timers), self.max_ts

    @classmethod
    def resume(
        cls,
        op: WindowFeatures,
        lateness: int,
        checkpoint: tuple[dict[str, bytes], list[tuple[int, str]], int | None],
    ) -> EventDriver:
        snaps, timers, max_ts = checkpoint
        states = {k: op.restore(v) for k, v in snaps.items()}
        return cls(op, lateness, states, list(timers), max_ts)


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
