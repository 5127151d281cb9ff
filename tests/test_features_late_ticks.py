"""Late ticks go to ``md.ticks.late`` exactly when ``ts < watermark``, are counted, and never
touch a bar.

The expected late set is computed here straight from the definition (watermark before an
event = max event time of the events before it - allowed lateness); bars are expected to equal
an independent OHLCV aggregation of the on-time ticks.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from jobs.accel.tick_columns import TickColumns
from operators.contract import MIN_WATERMARK
from operators.features import BARS_TOPIC, LATE_TOPIC, WindowFeatures
from tests._feature_driver import MINUTE_NS, SECOND_NS, emit_bytes, run_batches, run_events
from topics.messages import Bar, LateTick, Tick

T0 = 1_700_000_040 * SECOND_NS - (1_700_000_040 * SECOND_NS) % MINUTE_NS  # a minute boundary


def tick(sec: float, price: float, size: float = 1.0, symbol: str = "ES") -> Tick:
    return Tick(
        ts_event=T0 + int(sec * SECOND_NS), symbol=symbol, venue="CME", price=price, size=size
    )


def expected_late(ticks: list[Tick], lateness: int) -> list[tuple[int, int]]:
    """(index, watermark) of every late tick, by the definition."""
    out, max_seen = [], None
    for i, t in enumerate(ticks):
        wm = MIN_WATERMARK if max_seen is None else max_seen - lateness
        if t.ts_event < wm:
            out.append((i, wm))
        max_seen = t.ts_event if max_seen is None else max(max_seen, t.ts_event)
    return out


def independent_bars(ticks: list[Tick]) -> dict[tuple[str, int], tuple]:
    """OHLCV, VWAP and count per (symbol, minute) in arrival order, written from scratch."""
    acc: dict[tuple[str, int], list] = {}
    for t in ticks:
        k = (t.symbol, t.ts_event // MINUTE_NS * MINUTE_NS)
        if k not in acc:
            acc[k] = [t.price, t.price, t.price, t.price, 0.0, 0.0, 0]
        a = acc[k]
        a[1], a[2], a[3] = max(a[1], t.price), min(a[2], t.price), t.price
        a[4] += t.size
        a[5] += t.price * t.size
        a[6] += 1
    return {k: (o, h, lo, c, v, pv / v, n) for k, (o, h, lo, c, v, pv, n) in acc.items()}


def bars_of(emits: list) -> dict[tuple[str, int], tuple]:
    out = {}
    for e in emits:
        if e.topic == BARS_TOPIC:
            b: Bar = e.value
            assert (b.symbol, b.ts_event) not in out  # one bar per interval, never reopened
            out[(b.symbol, b.ts_event)] = (
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                b.vwap,
                b.trade_count,
            )
    return out


def check(ticks: list[Tick], lateness: int) -> list[LateTick]:
    """Run both paths; assert the late side output, counts and bars; return the late ticks."""
    op = WindowFeatures()
    emits, states = run_events(op, ticks, lateness)
    late = [e for e in emits if e.topic == LATE_TOPIC]
    want = expected_late(ticks, lateness)
    assert [(e.key, e.value) for e in late] == [
        (ticks[i].symbol, LateTick(ts_event=ticks[i].ts_event, tick=ticks[i], watermark=wm))
        for i, wm in want
    ]
    counts = Counter(ticks[i].symbol for i, _ in want)
    assert {s: st.late_count for s, st in states.items()} == {
        s: counts.get(s, 0) for s in {t.symbol for t in ticks}
    }
    late_idx = {i for i, _ in want}
    on_time = [t for i, t in enumerate(ticks) if i not in late_idx]
    assert bars_of(emits) == independent_bars(on_time)
    # Dropping the late ticks changes no bar and no feature.
    clean, _ = run_events(op, on_time, lateness)
    assert emit_bytes([e for e in emits if e.topic != LATE_TOPIC]) == emit_bytes(clean)
    # The batched path reports the same rows, in the same place of the sequence.
    cols = TickColumns.from_ticks(ticks)
    got, bstates = run_batches(op, cols, lateness, [*range(0, len(ticks), 3), len(ticks)])
    assert emit_bytes(got) == emit_bytes(emits)
    assert {s: st.late_count for s, st in bstates.items()} == {
        s: st.late_count for s, st in states.items()
    }
    return [e.value for e in late]


def test_out_of_order_tick_behind_the_watermark_is_late_without_lateness() -> None:
    ticks = [
        tick(10, 100.0),
        tick(70, 101.0),
        tick(65, 99.0),
        tick(70, 102.0),
        tick(130, 103.0),
        tick(59, 98.0),
    ]
    late = check(ticks, lateness=0)
    assert [lt.tick for lt in late] == [ticks[2], ticks[5]]
    assert [lt.watermark for lt in late] == [T0 + 70 * SECOND_NS, T0 + 130 * SECOND_NS]


def test_tick_exactly_at_the_watermark_is_on_time() -> None:
    ticks = [tick(10, 100.0), tick(40, 101.0), tick(40, 102.0), tick(39.999999999, 103.0)]
    late = check(ticks, lateness=0)
    assert [lt.tick for lt in late] == [ticks[3]]


def test_allowed_lateness_folds_stragglers_until_their_bar_has_closed() -> None:
    lateness = 30 * SECOND_NS
    ticks = [
        tick(10, 100.0, 2.0),
        tick(70, 101.0, 1.0),  # watermark 40s: bar [0, 60) still open
        tick(50, 99.0, 3.0),  # 50 >= 40: on time, folds into the first bar
        tick(95, 102.0, 1.0),  # watermark 65s: first bar closes
        tick(55, 98.0, 5.0),  # 55 < 65: late, the first bar is already out
        tick(61, 97.0, 1.0),  # 61 < 65 too: late, though its bar [60, 120) is open
    ]
    late = check(ticks, lateness)
    assert [lt.tick for lt in late] == [ticks[4], ticks[5]]
    emits, _ = run_events(WindowFeatures(), ticks, lateness)
    first = bars_of(emits)[("ES", T0)]
    assert first == (100.0, 100.0, 99.0, 99.0, 5.0, (200.0 + 297.0) / 5.0, 2)
    # The same straggler without allowed lateness is late.
    assert [lt.tick for lt in check(ticks, 0)] == [ticks[2], ticks[4], ticks[5]]


def test_watermark_is_shared_across_symbols_and_late_only_symbols_are_counted() -> None:
    ticks = [
        tick(10, 100.0, symbol="ES"),
        tick(200, 101.0, symbol="ES"),
        tick(100, 50.0, symbol="NQ"),
        tick(190, 51.0, symbol="NQ"),
        tick(185, 52.0, symbol="NQ"),
    ]
    op = WindowFeatures()
    late = check(ticks, lateness=10 * SECOND_NS)
    # ES at 200s moves the watermark to 190s for every symbol: NQ's 100s and 185s are late,
    # its 190s is exactly on time.
    assert [lt.tick for lt in late] == [ticks[2], ticks[4]]
    _, states = run_events(op, [tick(10, 1.0), tick(5, 1.0, symbol="YM")], lateness=0)
    assert states["YM"].late_count == 1 and not states["YM"].open_bars


@pytest.mark.parametrize("lateness", [0, 3 * SECOND_NS, 20 * SECOND_NS, 2 * MINUTE_NS])
def test_random_out_of_order_streams(lateness: int) -> None:
    rng = np.random.default_rng(lateness)
    n = 4_000
    ts = np.sort(rng.integers(0, 30 * MINUTE_NS, n)) + rng.normal(0, 8, n) * SECOND_NS
    symbols = rng.choice(["ES", "NQ", "CL"], n)
    ticks = [
        Tick(
            ts_event=T0 + int(t),
            symbol=str(s),
            venue="CME",
            price=float(rng.integers(4000, 4100)) / 4,
            size=float(rng.integers(1, 9)),
        )
        for t, s in zip(ts, symbols, strict=True)
    ]
    late = check(ticks, lateness)
    if lateness < MINUTE_NS:
        assert late  # the scenario exercises the side output
