"""Offline training of the specialists: labels, split, ONNX parity with sklearn, versions.

Features are computed here with TA-Lib on real data (S&P 500 daily bars from ``arch`` and
E-mini 1-minute bars from the tick file), independently of the streaming features operator.
The helpers at the top are shared by the registry and infer tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import talib
from sklearn.metrics import roc_auc_score

from jobs.loaders.registry import ModelEntry, Registry
from jobs.training import (
    REGIMES,
    TrainParams,
    fit_specialist,
    forward_returns,
    prepare_training_set,
    train_specialists,
)
from topics.messages import FeatureVector

FEATURE_VERSION = "test-talib-1"
FAST = TrainParams(gbm_n_estimators=40)
"""Fewer boosting rounds than the default keep the suite at seconds on 2 shared cores."""


# --------------------------------------------------------------------------- shared helpers


def talib_features(bars: dict[str, np.ndarray]) -> np.ndarray:
    """The 13 FeatureVector.NAMES columns computed with TA-Lib (NaN during warm-up) from
    float64 arrays ``high``, ``low``, ``close``, ``volume``, ``vwap``."""
    h, lo, c, v, vwap = (bars[k] for k in ("high", "low", "close", "volume", "vwap"))
    ret_1 = talib.ROCR(c, 1) - 1.0
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    cols = {
        "ema_12": talib.EMA(c, 12),
        "ema_26": talib.EMA(c, 26),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "rsi_14": talib.RSI(c, 14),
        "atr_14": talib.ATR(h, lo, c, 14),
        "vol_20": talib.STDDEV(ret_1, 20),
        "ret_1": ret_1,
        "ret_5": talib.ROCR(c, 5) - 1.0,
        "ret_20": talib.ROCR(c, 20) - 1.0,
        "volume_ratio": v / talib.SMA(v, 20),
        "vwap_dist": c / vwap - 1.0,
    }
    return np.column_stack([cols[n] for n in FeatureVector.NAMES])


def regime_weights_for(X: np.ndarray) -> np.ndarray:
    """Soft (bull, bear, sideways) weights from trailing trend strength — a stand-in for the
    HMM posterior: a softmax over the 20-bar return measured in 20-bar volatilities."""
    names = FeatureVector.NAMES
    ret20 = X[:, names.index("ret_20")]
    vol = X[:, names.index("vol_20")]
    z = np.nan_to_num(ret20 / (vol * math.sqrt(20.0)), nan=0.0)
    logits = np.column_stack([2.0 * z, -2.0 * z, 1.0 - np.abs(z)])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sp500_bars() -> pd.DataFrame:
    from arch.data import sp500

    df = sp500.load()
    df.index = pd.DatetimeIndex(df.index).tz_localize("UTC")
    return df


def sp500_features() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, closes, ts_ns) for the S&P 500 daily bars; VWAP stands in as the typical price."""
    df = sp500_bars()
    bars = {k.lower(): df[k].to_numpy(np.float64) for k in ("High", "Low", "Close", "Volume")}
    bars["vwap"] = (bars["high"] + bars["low"] + bars["close"]) / 3.0
    return talib_features(bars), bars["close"], df.index.asi8.astype(np.int64)


def emini_bars(ticks_path: Path) -> pd.DataFrame:
    """1-minute OHLCV + VWAP bars of the E-mini ticks (Chicago local time -> UTC)."""
    ticks = pd.read_csv(ticks_path)
    ts = pd.to_datetime(ticks["DateTime"], format="%Y-%m-%d %H:%M:%S.%f")
    ticks.index = pd.DatetimeIndex(ts).tz_localize("America/Chicago").tz_convert("UTC")
    ticks["pv"] = ticks["Price"] * ticks["Volume"]
    g = ticks.resample("1min", label="left", closed="left")
    bars = g["Price"].ohlc()
    bars["volume"] = g["Volume"].sum()
    bars["vwap"] = g["pv"].sum() / bars["volume"]
    return bars.dropna(subset=["open"])


def emini_features(ticks_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = emini_bars(ticks_path)
    bars = {k: b[k].to_numpy(np.float64) for k in ("high", "low", "close", "volume", "vwap")}
    return talib_features(bars), bars["close"], b.index.asi8.astype(np.int64)


def to_vectors(
    X: np.ndarray, closes: np.ndarray, ts: np.ndarray, symbol: str, version: str = FEATURE_VERSION
) -> list[FeatureVector]:
    """FeatureVectors as the features operator emits them: None (never NaN) in warm-up."""
    out = []
    for row, c, t in zip(X, closes, ts, strict=True):
        pairs = zip(FeatureVector.NAMES, row, strict=True)
        vals = {n: (None if math.isnan(x) else float(x)) for n, x in pairs}
        out.append(
            FeatureVector(
                ts_event=int(t),
                symbol=symbol,
                timeframe="1m",
                feature_version=version,
                ts_closed=int(t),
                close=float(c),
                **vals,
            )
        )
    return out


def train_window(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    lo: int,
    hi: int,
    out_dir: Path,
    *,
    seed: int = 0,
    horizon: int = 1,
    params: TrainParams = FAST,
) -> list[ModelEntry]:
    """Train on rows [lo, hi) of (X, closes, ts); labels come from closes inside the window
    only, so no label peeks past the window end."""
    X, closes, ts = data
    return train_specialists(
        X[lo:hi],
        forward_returns(closes[lo:hi], horizon),
        regime_weights_for(X[lo:hi]),
        feature_names=FeatureVector.NAMES,
        feature_version=FEATURE_VERSION,
        window=(int(ts[lo]), int(ts[hi - 1])),
        out_dir=out_dir,
        seed=seed,
        horizon_bars=horizon,
        params=params,
    )


# --------------------------------------------------------------------------- fixtures

LO, HI, H = 0, 2000, 5


@pytest.fixture(scope="module")
def sp500() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return sp500_features()


@pytest.fixture(scope="module")
def trained(
    sp500: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[ModelEntry]]:
    out = tmp_path_factory.mktemp("models")
    return out, train_window(sp500, LO, HI, out, horizon=H)


# --------------------------------------------------------------------------- tests


def test_forward_returns_equal_pandas_pct_change_shifted_back(sp500: tuple) -> None:
    closes = sp500[1]
    for h in (1, 5, 20):
        expected = pd.Series(closes).pct_change(h).shift(-h).to_numpy()
        got = forward_returns(closes, h)
        np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
        assert np.isnan(got[-h:]).all() and not np.isnan(got[:-h]).any()


def test_six_specialists_named_by_regime_and_kind_are_registered(
    trained: tuple[Path, list[ModelEntry]],
) -> None:
    out, entries = trained
    assert [e.name for e in entries] == [f"{r}_{k}" for r in REGIMES for k in ("linear", "gbm")]
    reg = Registry.load(out)
    assert sorted(reg.entries, key=lambda e: e.name) == sorted(entries, key=lambda e: e.name)
    for e in entries:
        assert e.feature_names == FeatureVector.NAMES
        assert e.horizon_bars == H and e.created_by == "streamquant train"
        assert (e.linear is not None) == (e.kind == "linear")
        assert {"val_log_loss", "val_auc", "val_accuracy", "val_hit_rate"} <= set(e.metrics)


def test_onnx_models_reproduce_sklearn_predict_proba_on_held_out_rows(
    sp500: tuple, trained: tuple[Path, list[ModelEntry]]
) -> None:
    X, closes, _ = sp500
    out, entries = trained
    ts = prepare_training_set(
        X[LO:HI], forward_returns(closes[LO:HI], H), regime_weights_for(X[LO:HI]), horizon_bars=H
    )
    held_out = ts.X[ts.val]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    for e in entries:
        r = REGIMES.index(e.regime)
        est = fit_specialist(
            e.kind, ts.X[ts.train], ts.y[ts.train], ts.weights[ts.train, r], seed=0, params=FAST
        )
        expected = est.predict_proba(held_out)
        sess = ort.InferenceSession(str(out / e.path), so, providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].name == "features"
        label, probs = sess.run(["label", "probabilities"], {"features": held_out})
        assert probs.shape == (len(held_out), 2)
        np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(label, est.predict(held_out))


def test_validation_metrics_are_out_of_sample_scores_of_the_exported_model(
    sp500: tuple, trained: tuple[Path, list[ModelEntry]]
) -> None:
    X, closes, _ = sp500
    out, entries = trained
    ts = prepare_training_set(
        X[LO:HI], forward_returns(closes[LO:HI], H), regime_weights_for(X[LO:HI]), horizon_bars=H
    )
    for e in entries:
        w = ts.weights[ts.val, REGIMES.index(e.regime)]
        sess = ort.InferenceSession(str(out / e.path), providers=["CPUExecutionProvider"])
        p = sess.run(["probabilities"], {"features": ts.X[ts.val]})[0][:, 1]
        auc = roc_auc_score(ts.y[ts.val], p, sample_weight=w)
        assert e.metrics["val_auc"] == pytest.approx(auc, abs=1e-4)
        assert e.metrics["val_rows"] == len(ts.val)


def test_split_is_chronological_last_fifth_with_label_overlap_purged(sp500: tuple) -> None:
    X, closes, _ = sp500
    ts = prepare_training_set(
        X[LO:HI], forward_returns(closes[LO:HI], H), regime_weights_for(X[LO:HI]), horizon_bars=H
    )
    n_usable = len(ts.rows)
    assert len(ts.val) == math.ceil(0.2 * n_usable)
    assert ts.val[0] == n_usable - len(ts.val) and ts.val[-1] == n_usable - 1
    first_val_row = ts.rows[ts.val[0]]
    # every training label window (t, t+H] ends before validation starts, and no usable
    # row before validation is lost except those H purged ones
    assert ts.rows[ts.train].max() + H < first_val_row
    assert len(ts.train) == n_usable - len(ts.val) - H


def test_rows_with_a_missing_feature_or_label_are_dropped_and_counted(sp500: tuple) -> None:
    X, closes, _ = sp500
    X = X[LO:HI].copy()
    X[700, 3] = np.nan  # a gap mid-window, like a None from a feed hiccup
    fwd = forward_returns(closes[LO:HI], H)
    frame = pd.DataFrame(X)
    expected_dropped = int((frame.isna().any(axis=1) | pd.isna(fwd)).sum())
    prepared = prepare_training_set(X, fwd, regime_weights_for(X), horizon_bars=H)
    assert prepared.n_dropped == expected_dropped
    assert 700 not in prepared.rows and not np.isnan(prepared.X).any()


def test_versions_and_files_are_identical_for_two_trainings_with_the_same_seed(
    sp500: tuple, trained: tuple[Path, list[ModelEntry]], tmp_path: Path
) -> None:
    again = train_window(sp500, LO, HI, tmp_path, horizon=H)
    first = trained[1]
    assert [e.version for e in again] == [e.version for e in first]
    assert [e.sha256 for e in again] == [e.sha256 for e in first]
    assert (tmp_path / "registry.json").read_bytes() == (trained[0] / "registry.json").read_bytes()


def test_versions_change_when_the_window_or_seed_changes(
    sp500: tuple, trained: tuple[Path, list[ModelEntry]], tmp_path: Path
) -> None:
    first = {e.name: e.version for e in trained[1]}
    shifted = {e.name: e.version for e in train_window(sp500, LO + 20, HI + 20, tmp_path / "w")}
    reseeded = {e.name: e.version for e in train_window(sp500, LO, HI, tmp_path / "s", seed=1)}
    for name, v in first.items():
        assert shifted[name] != v and reseeded[name] != v
    # versions sort by training window end: the later window's versions sort after
    assert all(shifted[n] > v for n, v in first.items())


def test_invalid_inputs_are_rejected_with_clear_errors(sp500: tuple, tmp_path: Path) -> None:
    X, closes, ts = sp500
    fwd = forward_returns(closes[:300], 1)
    w = regime_weights_for(X[:300])
    common = {
        "feature_names": FeatureVector.NAMES,
        "feature_version": FEATURE_VERSION,
        "window": (int(ts[0]), int(ts[299])),
        "out_dir": tmp_path,
    }
    with pytest.raises(ValueError, match="regime_weights must have shape"):
        train_specialists(X[:300], fwd, w[:, :2], **common)
    with pytest.raises(ValueError, match="non-negative"):
        train_specialists(X[:300], fwd, -w, **common)
    with pytest.raises(ValueError, match="expected"):
        train_specialists(X[:300, :5], fwd, w, **common)
    with pytest.raises(ValueError, match="horizon"):
        forward_returns(closes, 0)
    assert not (tmp_path / "registry.json").exists()
