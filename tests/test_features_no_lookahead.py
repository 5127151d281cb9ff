"""No lookahead: what the operator says about time ``t`` never depends on ticks after ``t``.

Every tick at or after ``t`` is perturbed (prices, sizes, some dropped, extra ticks added);
every bar and feature vector whose bar ended by ``t`` must come out byte-identical, while
later ones visibly change.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from jobs.accel.tick_columns import TickColumns
from operators.features import (
    BARS_TOPIC,
    FEATURES_TOPIC,
    FeaturesConfig,
    WindowFeatures,
    features_from_bars,
)
from tests._feature_driver import (
    MINUTE_NS,
    SECOND_NS,
    emit_bytes,
    load_emini,
    run_batches,
    run_events,
    ticks_of,
)
from topics.messages import Bar, FeatureVector


def perturb_from(cols: TickColumns, t: int, seed: int) -> TickColumns:
    """Rewrite the future: ticks with ``ts >= t`` get new prices and sizes, a third vanish,
    and new ticks appear between them (all still at or after ``t``)."""
    rng = np.random.default_rng(seed)
    future = cols.ts >= t
    n_future = int(future.sum())
    price = cols.price.copy()
    size = cols.size.copy()
    price[future] = np.round(price[future] * rng.uniform(0.97, 1.03, n_future) * 4) / 4
    size[future] = rng.integers(1, 50, n_future).astype(np.float64)
    keep = ~future | (rng.random(len(cols)) > 0.33)
    extra_ts = np.sort(rng.integers(t, int(cols.ts.max()) + MINUTE_NS, 2_000)).astype(np.int64)
    ts = np.concatenate((cols.ts[keep], extra_ts))
    order = np.argsort(ts, kind="stable")
    n = len(ts)
    return TickColumns(
        ts=ts[order],
        price=np.concatenate((price[keep], rng.uniform(1500, 1700, 2_000).round()))[order],
        size=np.concatenate((size[keep], np.ones(2_000)))[order],
        symbol=np.zeros(n, dtype=np.int32),
        symbols=cols.symbols,
        venue=cols.venue,
        # the past keeps its source lines; invented ticks get lines past the file's end
        line=None if cols.line is None else np.concatenate(
            (cols.line[keep], 10**9 + np.arange(2_000, dtype=np.int64)))[order],
        source_file=cols.source_file,
    )


def known_by(emits: list, t: int) -> list:
    """Bars that ended by ``t``, then the feature vectors known (closed) before ``t``."""
    bars = [e for e in emits if e.topic == BARS_TOPIC and e.value.ts_end <= t]
    fvs = [e for e in emits if e.topic == FEATURES_TOPIC and e.value.ts_closed < t]
    return bars + fvs


def cut_points(cols: TickColumns) -> list[int]:
    lo, hi = int(cols.ts[0]), int(cols.ts[-1])
    inside = [lo + (hi - lo) * q // 100 for q in (20, 55, 90)]
    return [*inside, inside[1] - inside[1] % MINUTE_NS]  # also exactly on a bar boundary


@pytest.mark.parametrize("lateness", [0, 90 * SECOND_NS])
def test_perturbing_ticks_after_t_keeps_everything_known_by_t(
    emini_ticks_path: Path, lateness: int
) -> None:
    """Per-event path (the reference) on the first 60k E-mini ticks."""
    cols = load_emini(emini_ticks_path).slice(0, 60_000)
    op = WindowFeatures(FeaturesConfig(lateness_ns=lateness))
    base, _ = run_events(op, ticks_of(cols), lateness)
    for k, t in enumerate(cut_points(cols)):
        changed, _ = run_events(op, ticks_of(perturb_from(cols, t, seed=k)), lateness)
        past = known_by(base, t)
        assert len(past) > 20
        assert emit_bytes(known_by(changed, t)) == emit_bytes(past)
        assert emit_bytes(changed) != emit_bytes(base)  # the perturbation did reach the output


def test_perturbing_the_future_on_the_full_replay_batched(emini_ticks_path: Path) -> None:
    cols = load_emini(emini_ticks_path)
    op = WindowFeatures()
    base, _ = run_batches(op, cols)
    for k, t in enumerate(cut_points(cols)):
        changed, _ = run_batches(op, perturb_from(cols, t, seed=100 + k))
        assert emit_bytes(known_by(changed, t)) == emit_bytes(known_by(base, t))
        later = [e for e in changed if e.topic == FEATURES_TOPIC and e.value.ts_event > t]
        assert later and emit_bytes(later) != emit_bytes(
            [e for e in base if e.topic == FEATURES_TOPIC and e.value.ts_event > t]
        )


def test_feature_at_bar_k_is_a_function_of_bars_up_to_k(emini_ticks_path: Path) -> None:
    op = WindowFeatures()
    emits, _ = run_batches(op, load_emini(emini_ticks_path))
    bars: list[Bar] = [e.value for e in emits if e.topic == BARS_TOPIC]
    fvs: list[FeatureVector] = [e.value for e in emits if e.topic == FEATURES_TOPIC]
    for k in (0, 13, 14, 33, 34, 250, 1_000, len(bars) - 1):
        from_bars = features_from_bars(bars[: k + 1])[-1]
        # ts_closed records when the stream learned the bar (its closing tick), not a value
        assert fvs[k].ts_closed >= fvs[k].ts_event
        # ... and inputs which records built the bar (a bar file has no tick lines)
        assert msgspec.structs.replace(
            from_bars, ts_closed=fvs[k].ts_closed, inputs=fvs[k].inputs) == fvs[k]
        assert fvs[k].inputs[0].line <= fvs[k].inputs[1].line
        assert fvs[k].ts_event == bars[k].ts_end  # stamped when it becomes knowable
