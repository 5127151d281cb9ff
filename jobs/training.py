"""Offline training of the regime specialists, exported to ONNX and registered.

For each regime (bull, bear, sideways) two classifiers of P(forward return > 0) are trained
on the same rows, each row weighted by that regime's posterior weight: a standardized
logistic regression and a small gradient-boosted tree ensemble. The regime filter
gives soft weights, so every row teaches every specialist in proportion to how much it
belongs to that regime, instead of a hard split that would starve the rarer regimes.

Split: chronological inside the training window. The last ``validation_fraction`` of the
usable rows are held out for metrics; the last ``horizon_bars`` training rows are purged
because their labels look into the validation period. The model that is exported is the one
those metrics describe (it is not refitted on the validation rows). ``split_rows`` gives the
split before any weights exist, so the caller fits the regime model on the fit rows only.

Determinism: features are rounded to float32 before fitting (what onnxruntime sees), fits run
with BLAS/OpenMP limited to one thread and a fixed seed, and the ONNX graph gets a fixed name,
so the same inputs and seed give byte-identical model files and the same version strings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from jobs.loaders.registry import (
    CREATED_BY,
    Kind,
    LinearCoefficients,
    ModelEntry,
    ParamValue,
    RegimeName,
    Registry,
    sha256_bytes,
    write_atomic,
)
from operators.contract import stable_hash
from topics.messages import FeatureVector

REGIMES: tuple[RegimeName, ...] = ("bull", "bear", "sideways")
KINDS: tuple[Kind, ...] = ("linear", "gbm")
TARGET_OPSET = 17
"""Default ONNX domain opset of exported models (onnxruntime 1.31 supports up to 23)."""
ML_OPSET = 3
"""ai.onnx.ml opset ceiling (TreeEnsembleClassifier, LinearClassifier, Scaler)."""
INPUT_NAME = "features"
PROB_OUTPUT = "probabilities"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TrainParams:
    """Hyper-parameters; all of them enter the model version hash."""

    linear_c: float = 1.0
    linear_max_iter: int = 1000
    gbm_n_estimators: int = 100
    gbm_learning_rate: float = 0.05
    gbm_max_depth: int = 3
    gbm_min_samples_leaf: int = 40
    validation_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction}"
            )
        if self.linear_c <= 0 or self.gbm_learning_rate <= 0:
            raise ValueError("linear_c and gbm_learning_rate must be positive")
        if min(self.linear_max_iter, self.gbm_n_estimators, self.gbm_max_depth) < 1:
            raise ValueError("iteration counts and depth must be >= 1")
        if self.gbm_min_samples_leaf < 1:
            raise ValueError("gbm_min_samples_leaf must be >= 1")

    def for_kind(self, kind: Kind) -> dict[str, ParamValue]:
        """The parameters that shape one kind of model (recorded in its registry entry)."""
        prefix = "linear_" if kind == "linear" else "gbm_"
        out: dict[str, ParamValue] = {
            k[len(prefix) :]: v for k, v in asdict(self).items() if k.startswith(prefix)
        }
        out["validation_fraction"] = self.validation_fraction
        return out


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """Usable rows after dropping incomplete ones, and the chronological split."""

    X: npt.NDArray[np.float32]  # usable rows only, float32 (what inference sees)
    y: npt.NDArray[np.int64]  # 1 where the forward return > 0
    returns: FloatArray  # forward returns of the usable rows
    weights: FloatArray  # (n, 3) regime weights of the usable rows
    rows: npt.NDArray[np.int64]  # original row index of each usable row
    train: npt.NDArray[np.int64]  # positions (into the usable rows) used for fitting
    val: npt.NDArray[np.int64]  # positions held out for metrics
    n_dropped: int


def forward_returns(closes: npt.ArrayLike, h: int) -> FloatArray:
    """``close[t+h] / close[t] - 1``; NaN for the last ``h`` rows (their future is unknown)."""
    if h < 1:
        raise ValueError(f"horizon must be >= 1 bar, got {h}")
    c = np.asarray(closes, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError("closes must be one-dimensional")
    out = np.full(c.shape, np.nan)
    if len(c) > h:
        out[:-h] = c[h:] / c[:-h] - 1.0
    return out


def matrix_from_vectors(
    vectors: Sequence[FeatureVector], feature_names: Sequence[str] = FeatureVector.NAMES
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Feature matrix (None -> NaN), closes and event times of a feature-vector history."""
    X = np.array(
        [[np.nan if (v := getattr(fv, n)) is None else v for n in feature_names] for fv in vectors],
        dtype=np.float64,
    ).reshape(len(vectors), len(feature_names))
    closes = np.array([fv.close for fv in vectors], dtype=np.float64)
    ts = np.array([fv.ts_event for fv in vectors], dtype=np.int64)
    return X, closes, ts


def split_rows(
    X: npt.ArrayLike,
    fwd_returns: npt.ArrayLike,
    *,
    horizon_bars: int,
    validation_fraction: float = 0.2,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(usable rows, fit positions, validation positions) of the chronological split.

    Needs only features and labels, so the caller can fit the regime model on the fit rows
    before it computes the regime weights (``jobs.strategy.train_bundle``).
    """
    Xa = np.asarray(X, dtype=np.float64)
    r = np.asarray(fwd_returns, dtype=np.float64)
    if Xa.ndim != 2:
        raise ValueError(f"X must be (n, n_features), got shape {Xa.shape}")
    n = Xa.shape[0]
    if r.shape != (n,):
        raise ValueError(f"forward_returns must have shape ({n},), got {r.shape}")
    ok = np.all(np.isfinite(Xa), axis=1) & np.isfinite(r)
    rows = np.flatnonzero(ok).astype(np.int64)
    n_ok = len(rows)
    n_val = math.ceil(n_ok * validation_fraction)
    split = n_ok - n_val
    if split < 1 or n_val < 1:
        raise ValueError(f"too few usable rows ({n_ok} of {n}) for a validation split")
    first_val_row = rows[split]
    # purge: a training row's label spans (t, t+h]; it must end before validation starts
    train = np.flatnonzero(rows[:split] + horizon_bars < first_val_row).astype(np.int64)
    val = np.arange(split, n_ok, dtype=np.int64)
    if len(train) < 2:
        raise ValueError(f"too few training rows after the purge ({len(train)})")
    return rows, train, val


def prepare_training_set(
    X: npt.ArrayLike,
    fwd_returns: npt.ArrayLike,
    regime_weights: npt.ArrayLike,
    *,
    horizon_bars: int,
    validation_fraction: float = 0.2,
) -> TrainingSet:
    """Drop rows with a missing feature or label and split chronologically with a purge."""
    Xa = np.asarray(X, dtype=np.float64)
    r = np.asarray(fwd_returns, dtype=np.float64)
    W = np.asarray(regime_weights, dtype=np.float64)
    rows, train, val = split_rows(Xa, r, horizon_bars=horizon_bars,
                                  validation_fraction=validation_fraction)
    n = Xa.shape[0]
    if W.shape != (n, len(REGIMES)):
        raise ValueError(f"regime_weights must have shape ({n}, 3) for {REGIMES}, got {W.shape}")
    if not np.all(np.isfinite(W)) or np.any(W < 0):
        raise ValueError("regime_weights must be finite and non-negative")
    n_ok = len(rows)
    return TrainingSet(
        X=Xa[rows].astype(np.float32),
        y=(r[rows] > 0).astype(np.int64),
        returns=r[rows],
        weights=W[rows],
        rows=rows,
        train=train,
        val=val,
        n_dropped=n - n_ok,
    )


def build_estimator(kind: Kind, seed: int, params: TrainParams) -> Any:
    """An unfitted sklearn estimator of one kind (Pipeline or GradientBoostingClassifier).

    The exact (not histogram) boosting is used on purpose: its fit is single-threaded and,
    with sample weights, several times faster here than the histogram variant, whose binning
    computes a weighted percentile per bin edge.
    """
    if kind == "linear":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline(
            [
                ("scaler", StandardScaler()),
                (
                    "clf",
                    LogisticRegression(
                        C=params.linear_c,
                        max_iter=params.linear_max_iter,
                        solver="lbfgs",
                        random_state=seed,
                    ),
                ),
            ]
        )
    if kind == "gbm":
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(
            n_estimators=params.gbm_n_estimators,
            learning_rate=params.gbm_learning_rate,
            max_depth=params.gbm_max_depth,
            min_samples_leaf=params.gbm_min_samples_leaf,
            subsample=1.0,
            random_state=seed,
        )
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")


def fit_specialist(
    kind: Kind,
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    sample_weight: npt.ArrayLike,
    *,
    seed: int = 0,
    params: TrainParams | None = None,
) -> Any:
    """Fit one specialist on float32-rounded features, single-threaded for reproducibility."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    params = params or TrainParams()
    est = build_estimator(kind, seed, params)
    Xf = np.asarray(X, dtype=np.float32)
    w = np.asarray(sample_weight, dtype=np.float64)
    fit_kw = {"clf__sample_weight": w} if kind == "linear" else {"sample_weight": w}
    with threadpool_limits(1):
        est.fit(Xf, np.asarray(y), **fit_kw)
    return est


def export_onnx(
    estimator: Any, n_features: int, *, graph_name: str, opset: int = TARGET_OPSET
) -> bytes:
    """Serialize a fitted specialist to ONNX: float32 input ``features`` (n, f), outputs
    ``label`` and ``probabilities`` (n, 2) (no ZipMap, so a plain tensor comes back)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    clf = estimator[-1] if hasattr(estimator, "steps") else estimator
    model = convert_sklearn(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
        options={id(clf): {"zipmap": False}},
    )
    # skl2onnx names the graph with a random uuid: pin it so the bytes are reproducible
    model.graph.name = graph_name
    # ... and it lists opset imports in set order (salted per process): sort them
    imports = sorted(model.opset_import, key=lambda o: (o.domain, o.version))
    del model.opset_import[:]
    model.opset_import.extend(imports)
    data: bytes = model.SerializeToString()
    return data


def model_version(
    name: str,
    *,
    window: tuple[int, int],
    feature_version: str,
    feature_names: Sequence[str],
    params: dict[str, ParamValue],
    seed: int,
    horizon_bars: int,
    data_digest: str,
) -> str:
    """``<train_end UTC>-<12 hex>``: sorts by training window, changes with any cause."""
    h = stable_hash(
        name,
        window[0],
        window[1],
        feature_version,
        ",".join(feature_names),
        sorted(params.items()),
        seed,
        horizon_bars,
        data_digest,
    )
    stamp = datetime.fromtimestamp(window[1] // 1_000_000_000, tz=UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{h[:12]}"


def _weighted_metrics(
    p: FloatArray, y: npt.NDArray[np.int64], ret: FloatArray, w: FloatArray
) -> dict[str, float]:
    """Validation metrics weighted by the regime's weight (what the specialist is for)."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    out: dict[str, float] = {
        "val_rows": float(len(y)),
        "val_weight": float(w.sum()),
        "val_base_rate": float(np.average(y, weights=w)) if w.sum() > 0 else float("nan"),
    }
    if w.sum() <= 0:
        return {k: v for k, v in out.items() if math.isfinite(v)}
    out["val_log_loss"] = float(log_loss(y, p, sample_weight=w, labels=[0, 1]))
    out["val_accuracy"] = float(accuracy_score(y, (p > 0.5).astype(np.int64), sample_weight=w))
    moved = ret != 0
    if moved.any() and w[moved].sum() > 0:
        hit = np.sign(2.0 * p[moved] - 1.0) == np.sign(ret[moved])
        out["val_hit_rate"] = float(np.average(hit, weights=w[moved]))
    if len(np.unique(y)) == 2:
        out["val_auc"] = float(roc_auc_score(y, p, sample_weight=w))
    # JSON has no NaN: an undefined metric is absent rather than NaN
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _linear_coefficients(est: Any) -> LinearCoefficients:
    scaler, clf = est["scaler"], est["clf"]
    return LinearCoefficients(
        mean=tuple(float(v) for v in scaler.mean_),
        scale=tuple(float(v) for v in scaler.scale_),
        coef=tuple(float(v) for v in clf.coef_[0]),
        intercept=float(clf.intercept_[0]),
    )


def _data_digest(ts: TrainingSet) -> str:
    return sha256_bytes(
        ts.X.tobytes() + ts.returns.tobytes() + ts.weights.tobytes() + ts.rows.tobytes()
    )


def train_specialists(
    X: npt.ArrayLike,
    forward_returns: npt.ArrayLike,
    regime_weights: npt.ArrayLike,
    *,
    feature_names: Sequence[str],
    feature_version: str,
    window: tuple[int, int],
    out_dir: str | Path,
    seed: int = 0,
    horizon_bars: int = 1,
    params: TrainParams | None = None,
    opset: int = TARGET_OPSET,
) -> list[ModelEntry]:
    """Train, export and register the six specialists; return their entries.

    ``X`` rows are bars in time order inside ``window`` (``[ts_start_ns, ts_end_ns]``);
    ``forward_returns`` are the labels' returns (see :func:`forward_returns`; the caller makes
    sure they do not reach past the window end); ``regime_weights`` are (bull, bear,
    sideways) weights per row. Model files go to ``out_dir/models/`` and the entries into
    ``out_dir/registry.json`` (added to what is there).
    """
    params = params or TrainParams()
    names = tuple(feature_names)
    Xa = np.asarray(X, dtype=np.float64)
    if Xa.ndim != 2 or Xa.shape[1] != len(names):
        raise ValueError(f"X has shape {Xa.shape}, expected (n, {len(names)}) for {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate feature names in {names}")
    if window[0] > window[1]:
        raise ValueError(f"window start {window[0]} is after its end {window[1]}")
    if horizon_bars < 1:
        raise ValueError(f"horizon_bars must be >= 1, got {horizon_bars}")
    if not feature_version:
        raise ValueError("feature_version must be a non-empty string")

    ts = prepare_training_set(
        Xa,
        forward_returns,
        regime_weights,
        horizon_bars=horizon_bars,
        validation_fraction=params.validation_fraction,
    )
    digest = _data_digest(ts)
    registry = Registry.open(out_dir)
    entries: list[ModelEntry] = []
    for r_idx, regime in enumerate(REGIMES):
        w_train = ts.weights[ts.train, r_idx]
        if w_train.sum() <= 0:
            raise ValueError(f"regime {regime!r} has zero weight on every training row")
        for kind in KINDS:
            name = f"{regime}_{kind}"
            kind_params = params.for_kind(kind)
            version = model_version(
                name,
                window=window,
                feature_version=feature_version,
                feature_names=names,
                params=kind_params,
                seed=seed,
                horizon_bars=horizon_bars,
                data_digest=digest,
            )
            est = fit_specialist(
                kind, ts.X[ts.train], ts.y[ts.train], w_train, seed=seed, params=params
            )
            p_val = est.predict_proba(ts.X[ts.val])[:, 1].astype(np.float64)
            metrics = _weighted_metrics(
                p_val, ts.y[ts.val], ts.returns[ts.val], ts.weights[ts.val, r_idx]
            )
            data = export_onnx(est, len(names), graph_name=f"{name}-{version}", opset=opset)
            rel = f"models/{name}-{version}.onnx"
            entry = ModelEntry(
                name=name,
                version=version,
                kind=kind,
                regime=regime,
                path=rel,
                sha256=sha256_bytes(data),
                feature_names=names,
                feature_version=feature_version,
                train_start=window[0],
                train_end=window[1],
                horizon_bars=horizon_bars,
                metrics=metrics,
                n_train=len(ts.train),
                n_dropped=ts.n_dropped,
                opset=opset,
                seed=seed,
                params=kind_params,
                created_by=CREATED_BY,
                linear=_linear_coefficients(est) if kind == "linear" else None,
            )
            registry.add(entry)  # raises before any file is touched on a version conflict
            write_atomic(Path(out_dir) / rel, data)
            entries.append(entry)
    registry.save()  # last: readers never see an entry before its file
    return entries
