"""Bars equal pandas' resampling and features equal TA-Lib, on real data.

- Daily S&P 500 and NASDAQ OHLCV (``arch``) through ``features_from_bars``.
- 500k E-mini trades through the per-event operator: its bars against bars built
  independently with pandas (CME local time -> UTC, left-closed left-labelled minutes, empty
  minutes dropped), its features against TA-Lib run on those pandas bars.

TA-Lib's warm-up NaN must be exactly where the operator says ``None``; values agree to
``rtol=1e-9``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from arch.data import nasdaq, sp500

from jobs.data import EMINI_SYMBOL, EMINI_TZ
from operators.domain.bars import format_duration, parse_duration
from operators.domain.indicators import fma
from operators.features import (
    BARS_TOPIC,
    FEATURES_TOPIC,
    FeaturesConfig,
    WindowFeatures,
    features_from_bars,
)
from tests._feature_driver import MINUTE_NS, emini_event_run, load_emini, run_batches
from topics.messages import Bar, FeatureVector

DAY_NS = 86_400_000_000_000
RTOL = 1e-9
# Every feature is computed with TA-Lib's own operation order, so on this pinned TA-Lib build
# (ta-lib==0.8.2) the values are identical to the bit, not just within RTOL.
BITWISE = FeatureVector.NAMES


def talib_features(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    vwap: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """The feature definitions written directly against TA-Lib's batch functions."""
    macd, signal, hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    ret_1 = talib.ROCP(close, timeperiod=1)
    return {
        "ema_12": talib.EMA(close, timeperiod=12),
        "ema_26": talib.EMA(close, timeperiod=26),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "rsi_14": talib.RSI(close, timeperiod=14),
        "atr_14": talib.ATR(high, low, close, timeperiod=14),
        "vol_20": talib.STDDEV(ret_1, timeperiod=20, nbdev=1.0),
        "ret_1": ret_1,
        "ret_5": talib.ROCP(close, timeperiod=5),
        "ret_20": talib.ROCP(close, timeperiod=20),
        "volume_ratio": volume / talib.SMA(volume, timeperiod=20),
        "vwap_dist": np.full(close.shape, np.nan) if vwap is None else close / vwap - 1.0,
    }


def assert_features_match(
    fvs: Sequence[FeatureVector], expected: dict[str, np.ndarray], *, bitwise: Sequence[str] = ()
) -> None:
    """None exactly where TA-Lib has NaN, values within ``RTOL``; ``bitwise`` names must
    match to the last bit (the operation-order claim of ``operators.domain.indicators``)."""
    assert set(expected) == set(FeatureVector.NAMES)
    for name in FeatureVector.NAMES:
        exp = expected[name]
        assert len(fvs) == len(exp)
        got_none = np.array([getattr(fv, name) is None for fv in fvs])
        np.testing.assert_array_equal(
            got_none, np.isnan(exp), err_msg=f"{name}: None where TA-Lib has no value"
        )
        got = np.array([v for fv in fvs if (v := getattr(fv, name)) is not None], dtype=float)
        np.testing.assert_allclose(got, exp[~np.isnan(exp)], rtol=RTOL, atol=0, err_msg=name)
        if name in bitwise:
            np.testing.assert_array_equal(got, exp[~np.isnan(exp)], err_msg=f"{name} bits")


# --------------------------------------------------------------------------- daily bars


def daily_bars(df: pd.DataFrame, symbol: str) -> list[Bar]:
    starts = df.index.tz_localize("UTC").asi8
    return [
        Bar(
            ts_event=int(t),
            symbol=symbol,
            timeframe="1d",
            ts_end=int(t) + DAY_NS,
            open=float(o),
            high=float(h),
            low=float(lo),
            close=float(c),
            volume=float(v),
            vwap=None,
            trade_count=0,
        )
        for t, o, h, lo, c, v in zip(
            starts, df["Open"], df["High"], df["Low"], df["Close"], df["Volume"], strict=True
        )
    ]


@pytest.mark.parametrize("loader,symbol", [(sp500.load, "SPX"), (nasdaq.load, "NDX")])
def test_daily_features_equal_talib(loader, symbol: str) -> None:
    df = loader()
    bars = daily_bars(df, symbol)
    fvs = features_from_bars(bars, FeaturesConfig.from_bar("1d"))
    arrays = [df[c].to_numpy(dtype=np.float64) for c in ("High", "Low", "Close", "Volume")]
    assert_features_match(fvs, talib_features(*arrays, vwap=None), bitwise=BITWISE)
    # The warm-ups TA-Lib documents, seen from our side (first value's bar index).
    first = {
        n: next(i for i, fv in enumerate(fvs) if getattr(fv, n) is not None)
        for n in ("ema_12", "macd", "macd_signal", "rsi_14", "atr_14", "vol_20")
    }
    assert first == {
        "ema_12": 11,
        "macd": 33,
        "macd_signal": 33,
        "rsi_14": 14,
        "atr_14": 14,
        "vol_20": 20,
    }
    assert [fv.ts_event for fv in fvs] == [bar.ts_end for bar in bars]
    assert {fv.symbol for fv in fvs} == {symbol}


def test_mixed_symbols_get_independent_indicator_state() -> None:
    spx = daily_bars(sp500.load(), "SPX")
    ndx = daily_bars(nasdaq.load(), "NDX")
    interleaved = [b for pair in zip(spx, ndx, strict=True) for b in pair]
    fvs = features_from_bars(interleaved)
    assert [fv for fv in fvs if fv.symbol == "SPX"] == features_from_bars(spx)
    assert [fv for fv in fvs if fv.symbol == "NDX"] == features_from_bars(ndx)


def test_features_from_bars_rejects_unordered_or_mismatched_bars() -> None:
    bars = daily_bars(sp500.load().iloc[:5], "SPX")
    with pytest.raises(ValueError, match="ascend"):
        features_from_bars([bars[1], bars[0]])
    with pytest.raises(ValueError, match="lasts"):
        features_from_bars(bars, FeaturesConfig.from_bar("1h"))


# --------------------------------------------------------------------------- E-mini minutes


def pandas_bars(path: Path, rule: str) -> pd.DataFrame:
    """Reference bars built without our code: CME local -> UTC, resample, drop empty bins."""
    df = pd.read_csv(path)
    when = pd.to_datetime(df["DateTime"], format="%Y-%m-%d %H:%M:%S.%f")
    df.index = pd.DatetimeIndex(when).tz_localize(EMINI_TZ).tz_convert("UTC")
    df["pv"] = df["Price"] * df["Volume"]
    r = df.resample(rule, label="left", closed="left")
    out = pd.DataFrame(
        {
            "open": r["Price"].first(),
            "high": r["Price"].max(),
            "low": r["Price"].min(),
            "close": r["Price"].last(),
            "volume": r["Volume"].sum().astype(float),
            "pv": r["pv"].sum(),
            "count": r["Price"].count(),
        }
    )
    return out[out["count"] > 0]


def assert_bars_equal_pandas(bars: Sequence[Bar], ref: pd.DataFrame, bar_ns: int) -> None:
    assert len(bars) == len(ref)
    starts = ref.index.asi8
    assert [b.ts_event for b in bars] == starts.tolist()
    assert [b.ts_end for b in bars] == (starts + bar_ns).tolist()
    for field, col in (
        ("open", "open"),
        ("high", "high"),
        ("low", "low"),
        ("close", "close"),
        ("volume", "volume"),
        ("trade_count", "count"),
    ):
        assert [getattr(b, field) for b in bars] == ref[col].tolist(), field
    # pandas sums price*size in its own order; E-mini values are exact binary fractions, but
    # the VWAP contract is the ratio, so compare it as a number.
    np.testing.assert_allclose(
        [b.vwap for b in bars], (ref["pv"] / ref["volume"]).to_numpy(), rtol=1e-12, atol=0
    )
    assert {b.symbol for b in bars} == {EMINI_SYMBOL}


@pytest.fixture(scope="module")
def emini_minute_run(emini_ticks_path: Path) -> tuple[list[Bar], list[FeatureVector]]:
    emits, _ = emini_event_run(emini_ticks_path, 0)
    bars = [e.value for e in emits if e.topic == BARS_TOPIC]
    fvs = [e.value for e in emits if e.topic == FEATURES_TOPIC]
    assert all(isinstance(b, Bar) for b in bars) and all(isinstance(f, FeatureVector) for f in fvs)
    return bars, fvs


def test_emini_minute_bars_equal_pandas_resample(emini_ticks_path: Path, emini_minute_run) -> None:
    bars, _ = emini_minute_run
    ref = pandas_bars(emini_ticks_path, "1min")
    assert len(ref) == 2264
    assert_bars_equal_pandas(bars, ref, MINUTE_NS)
    assert {b.timeframe for b in bars} == {"1m"}


def test_emini_minute_features_equal_talib_on_pandas_bars(
    emini_ticks_path: Path, emini_minute_run
) -> None:
    bars, fvs = emini_minute_run
    ref = pandas_bars(emini_ticks_path, "1min")
    expected = talib_features(
        ref["high"].to_numpy(),
        ref["low"].to_numpy(),
        ref["close"].to_numpy(),
        ref["volume"].to_numpy(),
        (ref["pv"] / ref["volume"]).to_numpy(),
    )
    assert_features_match(fvs, expected, bitwise=BITWISE)
    assert [fv.ts_event for fv in fvs] == [b.ts_end for b in bars]
    assert {fv.feature_version for fv in fvs} == {WindowFeatures().feature_version}
    assert sum(fv.complete for fv in fvs) == len(fvs) - 33


def test_five_minute_bars_from_a_bar_string_equal_pandas(emini_ticks_path: Path) -> None:
    op = WindowFeatures(FeaturesConfig.from_bar("5m"))
    emits, _ = run_batches(op, load_emini(emini_ticks_path))
    bars = [e.value for e in emits if e.topic == BARS_TOPIC]
    fvs = [e.value for e in emits if e.topic == FEATURES_TOPIC]
    ref = pandas_bars(emini_ticks_path, "5min")
    assert_bars_equal_pandas(bars, ref, 5 * MINUTE_NS)
    assert {b.timeframe for b in bars} == {"5m"}
    expected = talib_features(
        ref["high"].to_numpy(),
        ref["low"].to_numpy(),
        ref["close"].to_numpy(),
        ref["volume"].to_numpy(),
        (ref["pv"] / ref["volume"]).to_numpy(),
    )
    assert_features_match(fvs, expected, bitwise=BITWISE)


# --------------------------------------------------------------------------- bar spec


@pytest.mark.parametrize(
    "text,ns",
    [
        ("1m", 60 * 10**9),
        ("5m", 300 * 10**9),
        ("1h", 3600 * 10**9),
        ("1d", 86_400 * 10**9),
        ("15min", 900 * 10**9),
        ("250ms", 250 * 10**6),
        ("30s", 30 * 10**9),
        (" 2 h ", 7200 * 10**9),
        (1_000, 1_000),
    ],
)
def test_parse_duration_accepts_units_and_nanoseconds(text: str | int, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("bad", ["", "1", "m", "0m", "-1m", "1y", "1.5m", "1 m 2", 0, -5, True])
def test_parse_duration_rejects_bad_input_with_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize("ns", [60 * 10**9, 90 * 10**9, 3600 * 10**9, 86_400 * 10**9, 1500, 7])
def test_timeframe_label_round_trips(ns: int) -> None:
    assert parse_duration(format_duration(ns)) == ns


def test_config_is_validated_and_labelled() -> None:
    assert FeaturesConfig().bar_ns == 60 * 10**9
    assert FeaturesConfig().timeframe == "1m"
    assert FeaturesConfig.from_bar("90s").timeframe == "90s"
    for bad in (0, -1, 400 * 86_400 * 10**9):
        with pytest.raises(ValueError, match="bar_ns"):
            FeaturesConfig(bar_ns=bad)
    with pytest.raises(ValueError, match="bar_ns"):
        FeaturesConfig(bar_ns="1m")


def test_feature_version_is_stable_across_processes_and_tracks_the_bar() -> None:
    v1 = WindowFeatures().feature_version
    assert re.fullmatch(r"fv1-[0-9a-f]{8}", v1)
    assert WindowFeatures(FeaturesConfig.from_bar("5m")).feature_version != v1
    code = "from operators.features import WindowFeatures; print(WindowFeatures().feature_version)"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=Path(__file__).parents[1],
    )
    assert other.stdout.strip() == v1


def test_fma_equals_the_c_library_fma() -> None:
    """TA-Lib fuses some multiply-adds; our emulation must round like C's ``fma``."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    c_fma = libm.fma
    c_fma.restype = ctypes.c_double
    c_fma.argtypes = [ctypes.c_double] * 3
    rng = np.random.default_rng(42)
    exps = rng.integers(-60, 60, (20_000, 3))
    vals = rng.normal(size=(20_000, 3)) * np.exp2(exps)
    vals[::7, 2] = -vals[::7, 0] * vals[::7, 1]  # near-total cancellation
    vals[::11, 0] = 0.0
    for a, b, c in vals.tolist():
        assert fma(a, b, c).hex() == c_fma(a, b, c).hex()
    assert fma(float("inf"), 1.0, 1.0) == float("inf")
    assert np.isnan(fma(float("nan"), 1.0, 1.0))


def test_the_operator_does_not_need_talib() -> None:
    code = (
        "import sys, operators.features, operators.domain.indicators, operators.domain.bars; "
        "print('talib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    assert out.stdout.strip() == "False"
