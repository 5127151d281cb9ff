"""Indicator values at the end of a series, through the streaming operators' own indicators.

A Flink SQL ``OVER (PARTITION BY symbol ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND
CURRENT ROW)`` window hands an aggregate the whole history of a row; these functions run the
incremental indicators of ``operators.domain.indicators`` (bit-identical to TA-Lib) and the
regime filter of ``operators.domain.regime_filter`` over it and return the last value, so a
SQL column equals the pipeline's feature and TA-Lib's batch output. ``None`` during warm-up.
No pyflink import here: ``udfs.flink`` wraps these for the Table API.
"""

from __future__ import annotations

from collections.abc import Iterable

from operators.domain.indicators import Atr, Ema, Macd, Rsi
from operators.domain.regime_filter import HmmParams, RegimeFilter


def ema_last(values: Iterable[float], period: int) -> float | None:
    ema = Ema(period)
    out = None
    for x in values:
        out = ema.update(float(x))
    return out


def rsi_last(values: Iterable[float], period: int = 14) -> float | None:
    rsi = Rsi(period)
    out = None
    for x in values:
        out = rsi.update(float(x))
    return out


def macd_last(values: Iterable[float], fast: int = 12, slow: int = 26, signal: int = 9
              ) -> tuple[float | None, float | None, float | None]:
    """(MACD, signal, histogram) at the last value, TA-Lib's alignment."""
    macd = Macd.create(fast, slow, signal)
    out: tuple[float | None, float | None, float | None] = (None, None, None)
    for x in values:
        out = macd.update(float(x))
    return out


def atr_last(high: Iterable[float], low: Iterable[float], close: Iterable[float],
             period: int = 14) -> float | None:
    atr = Atr(period)
    out = None
    for h, lo, c in zip(high, low, close, strict=True):
        out = atr.update(float(h), float(lo), float(c))
    return out


def regime_posterior_last(values: Iterable[float], params: HmmParams) -> tuple[float, ...]:
    """P(regime | x_1..x_t) at the last observation (the filtered posterior, no look-ahead)."""
    f = RegimeFilter(params)
    state = f.new_state()
    probs = state.probs
    for x in values:
        state, probs = f.filter_step(state, float(x))
    return probs
