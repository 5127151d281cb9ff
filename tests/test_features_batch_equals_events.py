"""The batched path emits exactly what the per-event path emits, and both survive restarts.

The per-event path (driven like a runtime: watermark = max event time - lateness, timers in
``(ts, key)`` order after each event, END_OF_STREAM at the end) is the reference. Compared as
msgpack bytes, so every float bit and the message order count.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from jobs.accel.features_columns import FeaturesColumns
from jobs.accel.tick_columns import TickColumns, bounded_watermarks
from operators.contract import END_OF_STREAM, Emit, StateMismatchError
from operators.features import (
    BARS_TOPIC,
    LATE_TOPIC,
    FeaturesConfig,
    WindowFeatures,
)
from tests._feature_driver import (
    MINUTE_NS,
    SECOND_NS,
    EventDriver,
    chunk_bounds,
    emini_event_run,
    emit_bytes,
    load_emini,
    run_batches,
    run_events,
    state_bytes,
    ticks_of,
)
from topics.messages import Tick

ODD_CHUNKS = (1, 7, 65_537, 12_345, 2, 40_000)


def jittered(cols: TickColumns, n: int, max_shift_ns: int, seed: int) -> TickColumns:
    """The first ``n`` E-mini ticks with seeded timestamp noise: out-of-order, some late."""
    rng = np.random.default_rng(seed)
    head = cols.slice(0, n)
    shift = rng.integers(-max_shift_ns, max_shift_ns + 1, n) * (rng.random(n) < 0.02)
    return TickColumns(
        ts=head.ts + shift.astype(np.int64),
        price=head.price,
        size=head.size,
        symbol=head.symbol,
        symbols=head.symbols,
        venue=head.venue,
        line=head.line,
        source_file=head.source_file,
    )


def crafted_multi_symbol(seed: int, n: int = 30_000) -> list[Tick]:
    """Several symbols (names not in arrival order), fractional sizes, out-of-order times."""
    rng = np.random.default_rng(seed)
    symbols = ["ZN", "BTC-USD", "AAPL", "es", "EURUSD"]
    base = 1_700_000_000 * SECOND_NS
    ts = base + np.sort(rng.integers(0, 20 * MINUTE_NS, n))
    ts = ts + rng.integers(-20, 21, n) * SECOND_NS * (rng.random(n) < 0.1)
    sym = rng.choice(len(symbols), n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n))), 6) * (1 + sym)
    size = rng.gamma(0.7, 0.013, n)  # crypto-like fractional sizes: summation order shows
    return [
        Tick(
            ts_event=int(t),
            symbol=symbols[s],
            venue="X",
            price=float(p),
            size=float(q),
            trade_id=str(i),
        )
        for i, (t, s, p, q) in enumerate(zip(ts, sym, price, size, strict=True))
    ]


@pytest.mark.parametrize("lateness", [0, 90 * SECOND_NS])
@pytest.mark.parametrize("chunks", [None, (65_536,), ODD_CHUNKS], ids=["one", "64k", "odd"])
def test_batch_equals_events_on_emini_ticks(
    emini_ticks_path: Path, lateness: int, chunks: tuple[int, ...] | None
) -> None:
    cols = load_emini(emini_ticks_path)
    expected, expected_states = emini_event_run(emini_ticks_path, lateness)
    op = WindowFeatures()
    bounds = None if chunks is None else chunk_bounds(len(cols), chunks)
    got, states = run_batches(op, cols, lateness, bounds)
    assert sum(e.topic == BARS_TOPIC for e in got) == 2264
    assert emit_bytes(got) == emit_bytes(expected)
    assert state_bytes(op, states) == expected_states


@pytest.mark.parametrize("lateness", [0, 30 * SECOND_NS])
def test_batch_equals_events_with_out_of_order_emini_ticks(
    emini_ticks_path: Path, lateness: int
) -> None:
    cols = jittered(load_emini(emini_ticks_path), 80_000, 150 * SECOND_NS, seed=7)
    op = WindowFeatures()
    expected, expected_states = run_events(op, ticks_of(cols), lateness)
    got, states = run_batches(op, cols, lateness, chunk_bounds(len(cols), ODD_CHUNKS))
    assert sum(e.topic == LATE_TOPIC for e in expected) > 100
    assert emit_bytes(got) == emit_bytes(expected)
    assert state_bytes(op, states) == state_bytes(op, expected_states)


@pytest.mark.parametrize("lateness", [0, 5 * SECOND_NS, 25 * SECOND_NS])
@pytest.mark.parametrize("bar", ["10s", "1m"])
def test_batch_equals_events_on_crafted_multi_symbol_input(lateness: int, bar: str) -> None:
    ticks = crafted_multi_symbol(seed=11)
    op = WindowFeatures(FeaturesConfig.from_bar(bar))
    expected, expected_states = run_events(op, ticks, lateness)
    cols = TickColumns.from_ticks(ticks)
    got, states = run_batches(op, cols, lateness, chunk_bounds(len(cols), (333, 1, 4_097, 50)))
    assert emit_bytes(got) == emit_bytes(expected)
    assert state_bytes(op, states) == state_bytes(op, expected_states)
    # Not vacuous: late ticks exist, and several symbols close bars with the same end.
    assert any(e.topic == LATE_TOPIC for e in expected)
    ends = [e.value.ts_end for e in expected if e.topic == BARS_TOPIC]
    assert len(ends) > len(set(ends))


def test_bars_close_in_end_then_symbol_order_within_one_watermark_step() -> None:
    """One tick moves the watermark past several bars of several symbols at once."""
    base = 1_800_000_000 * SECOND_NS - (1_800_000_000 * SECOND_NS) % MINUTE_NS
    ticks = [
        Tick(ts_event=base + 5 * SECOND_NS, symbol="b", venue="X", price=1.0, size=1.0),
        Tick(ts_event=base + 65 * SECOND_NS, symbol="a", venue="X", price=2.0, size=1.0),
        Tick(ts_event=base + 10 * SECOND_NS, symbol="a", venue="X", price=3.0, size=1.0),
        Tick(ts_event=base + 70 * SECOND_NS, symbol="b", venue="X", price=4.0, size=1.0),
        Tick(ts_event=base + 500 * SECOND_NS, symbol="c", venue="X", price=5.0, size=1.0),
    ]
    op = WindowFeatures()
    expected, _ = run_events(op, ticks, lateness=200 * SECOND_NS)
    bars = [(e.value.ts_event, e.key) for e in expected if e.topic == BARS_TOPIC]
    assert bars == [
        (base, "a"),
        (base, "b"),
        (base + MINUTE_NS, "a"),
        (base + MINUTE_NS, "b"),
        (base + 8 * MINUTE_NS, "c"),
    ]
    got, _ = run_batches(op, TickColumns.from_ticks(ticks), 200 * SECOND_NS, [0, 2, 5])
    assert emit_bytes(got) == emit_bytes(expected)


RESTORE_LATENESS = 45 * SECOND_NS


@pytest.fixture(scope="module")
def restore_case(emini_ticks_path: Path) -> tuple[list[Tick], list[Emit], dict[str, bytes]]:
    """Out-of-order E-mini ticks and their uninterrupted per-event run."""
    ticks = ticks_of(jittered(load_emini(emini_ticks_path), 90_000, 60 * SECOND_NS, seed=3))
    op = WindowFeatures()
    whole, whole_states = run_events(op, ticks, RESTORE_LATENESS)
    return ticks, whole, state_bytes(op, whole_states)


@pytest.mark.parametrize("split", [12_345, 80_001])
def test_per_event_restore_mid_bar_equals_uninterrupted_run(
    restore_case: tuple[list[Tick], list[Emit], dict[str, bytes]], split: int
) -> None:
    ticks, whole, whole_states = restore_case
    lateness = RESTORE_LATENESS
    op = WindowFeatures()

    first = EventDriver(op, lateness).feed_all(ticks[:split])
    state = first.states["ES"]
    assert any(ob.count > 1 for ob in state.open_bars)  # really mid-bar
    assert sorted(op.pending_timers(state)) == sorted(t for t, _ in first.timers)
    prefix = list(first.out)
    resumed = EventDriver.resume(WindowFeatures(), lateness, first.checkpoint())
    resumed.feed_all(ticks[split:])
    assert emit_bytes(prefix + resumed.finish()) == emit_bytes(whole)
    assert state_bytes(op, resumed.states) == whole_states


def test_batch_restore_between_chunks_equals_uninterrupted_run(emini_ticks_path: Path) -> None:
    cols = load_emini(emini_ticks_path)
    lateness = 90 * SECOND_NS
    op = WindowFeatures()
    whole, whole_states = run_batches(op, cols, lateness, chunk_bounds(len(cols), (65_536,)))

    states: dict = {}
    out = []
    max_seen = None
    for a, b in ((0, 65_536), (65_536, 131_072)):
        chunk = cols.slice(a, b)
        before, after, max_seen = bounded_watermarks(chunk.ts, lateness, max_seen)
        out += FeaturesColumns(op).process(states, chunk, before, after).emits(chunk)
    assert len(states["ES"].open_bars) >= 1
    snaps = state_bytes(op, states)
    restored = {k: WindowFeatures().restore(v) for k, v in snaps.items()}
    rest = cols.slice(131_072, len(cols))
    before, after, _ = bounded_watermarks(rest.ts, lateness, max_seen)
    chunks = chunk_bounds(len(rest), (65_536,))
    for a, b in itertools.pairwise(chunks):
        out += FeaturesColumns(op).process(
            restored, rest.slice(a, b), before[a:b], int(before[b]) if b < len(rest) else after
        ).emits(rest.slice(a, b))
    out += FeaturesColumns(op).flush(restored, END_OF_STREAM).emits()
    assert emit_bytes(out) == emit_bytes(whole)
    assert state_bytes(op, restored) == state_bytes(op, whole_states)


def test_snapshot_from_another_bar_length_is_refused() -> None:
    op = WindowFeatures()
    snap = op.snapshot(op.new_state("ES"))
    with pytest.raises(StateMismatchError):
        WindowFeatures(FeaturesConfig.from_bar("5m")).restore(snap)


def test_the_columnar_twin_refuses_decreasing_watermarks() -> None:
    ticks = crafted_multi_symbol(seed=1, n=10)
    cols = TickColumns.from_ticks(ticks)
    before, after, _ = bounded_watermarks(cols.ts, 0)
    with pytest.raises(ValueError, match="decrease"):
        FeaturesColumns(WindowFeatures()).process({}, cols, before[::-1].copy(), after)
    with pytest.raises(ValueError, match="one entry per row"):
        FeaturesColumns(WindowFeatures()).process({}, cols, before[:-1], after)
