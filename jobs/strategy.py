"""The strategy bundle: everything ``train`` fits offline and ``run`` trades with.

A bundle directory holds the specialists' ONNX files and ``registry.json`` (see
``jobs.loaders.registry``) plus ``strategy.json``: the regime HMM, the volatility model,
the training window and the A/B arms. The split is walk-forward and explicit: the models see
only bars that *end* before ``train_end``; labels (forward returns) are computed inside the
training window, so its last bars get none rather than peeking past it.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from jobs.loaders.registry import ModelEntry, Registry, write_atomic
from jobs.progress import format_seconds
from jobs.regime_fit import fit_gaussian_hmm
from jobs.training import (
    TrainParams,
    forward_returns,
    matrix_from_vectors,
    split_rows,
    train_specialists,
)
from operators.domain.regime_filter import HmmParams, RegimeFilter
from operators.domain.timeparse import format_ns
from operators.domain.volatility import VolConfig, auto_scale, backcast_from_returns, fit_garch
from topics.messages import FeatureVector

STRATEGY_FILE = "strategy.json"


class ModelPin(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One model a bundle serves: exactly this version and file."""

    name: str
    version: str
    sha256: str


class StrategyBundle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format_version: int = 2
    feature_version: str
    bar_ns: int
    train_start: int
    train_end: int
    symbols: tuple[str, ...]
    hmm: HmmParams
    vol: VolConfig
    horizon_bars: int = 1
    arm_a: tuple[str, ...]
    arm_b: tuple[str, ...] = ()
    ab_split: float = 0.0
    seed: int = 0
    n_train_bars: int = 0
    models: tuple[ModelPin, ...] = ()  # format 2: the exact models served; () in format 1

    @property
    def pins(self) -> tuple[tuple[str, str], ...]:
        """``(name, version)`` of every served model, for ``InferConfig.pins``."""
        return tuple((m.name, m.version) for m in self.models)


class BundleMismatchError(ValueError):
    """``strategy.json`` and ``registry.json`` of a bundle describe different models."""


def save_bundle(directory: Path, bundle: StrategyBundle) -> None:
    write_atomic(directory / STRATEGY_FILE, msgspec.json.format(msgspec.json.encode(bundle)))


def load_bundle(directory: Path) -> StrategyBundle:
    path = directory / STRATEGY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {STRATEGY_FILE} (train models with "
                                "'streamquant train' first)")
    bundle = msgspec.json.decode(path.read_bytes(), type=StrategyBundle)
    check_bundle(directory, bundle)
    return bundle


def check_bundle(directory: Path, bundle: StrategyBundle) -> None:
    """The registry holds exactly the models ``strategy.json`` names, from its window.

    Format 2 names every model's version and sha256; format 1 (no ``models``) is accepted
    when the latest version of every arm model was trained on the announced window.
    """
    if bundle.format_version not in (1, 2):
        raise BundleMismatchError(f"{directory}: strategy format {bundle.format_version} "
                                  "is not 1 or 2")
    reg = Registry.load(directory)
    served = set(bundle.arm_a) | set(bundle.arm_b)
    where = f"{directory}: strategy.json and registry.json disagree"
    if bundle.models:
        named = {(m.name, m.version): m for m in bundle.models}
        listed = {(e.name, e.version): e for e in reg.entries}
        if {n for n, _ in named} != served:
            raise BundleMismatchError(f"{where}: arms {sorted(served)} vs pinned models "
                                      f"{sorted(n for n, _ in named)}")
        missing = sorted(f"{n}@{v}" for n, v in set(named) - set(listed))
        extra = sorted(f"{n}@{v}" for n, v in set(listed) - set(named))
        if missing or extra:
            raise BundleMismatchError(
                f"{where}: missing {missing or 'none'}, not named {extra or 'none'} (a bundle "
                "is written whole by 'streamquant train'; retrain into a new directory)")
        for key, pin in named.items():
            if listed[key].sha256 != pin.sha256:
                raise BundleMismatchError(f"{where}: {pin.name}@{pin.version} sha256 "
                                          f"{listed[key].sha256} != pinned {pin.sha256}")
    entries = [reg.get(n, dict(bundle.pins).get(n)) for n in sorted(served)]
    for e in entries:
        if (e.train_start, e.train_end) != (bundle.train_start, bundle.train_end):
            raise BundleMismatchError(
                f"{where}: {e.ref} was trained on [{e.train_start}, {e.train_end}], the "
                f"strategy announces [{bundle.train_start}, {bundle.train_end}] (a merged "
                "bundle: its models may have seen the trading window)")


class VolFitWarning(UserWarning):
    """The GARCH fit was not usable and the bundle falls back to EWMA(0.94)."""


def fit_volatility(returns: npt.NDArray[np.float64], *, scale: float | None = None
                   ) -> tuple[VolConfig, str]:
    """GARCH(1,1) when arch's fit (on returns rescaled so their deviation is O(1)) converged,
    left its starting values, beat their log-likelihood and is stationary; EWMA(0.94) with a
    ``VolFitWarning`` otherwise. Returns the config and a one-line account of the choice."""
    try:
        g = fit_garch(returns, scale=scale)
        problem = g.problem()
        if problem is None:
            note = (f"GARCH(1,1) alpha={g.alpha:.4f} beta={g.beta:.4f} on returns x {g.scale:g}: "
                    f"converged in {g.iterations} iterations, log-likelihood {g.loglikelihood:.2f}"
                    f" vs {g.start_loglikelihood:.2f} at arch's starting values")
            return g.to_config(), note
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
        problem = f"the fit failed: {exc}"
    note = f"EWMA(0.94): GARCH(1,1) not usable ({problem})"
    warnings.warn(note, VolFitWarning, stacklevel=2)
    ewma_scale = scale if scale is not None else auto_scale(returns)
    return VolConfig(kind="ewma", lam=0.94, scale=ewma_scale,
                     backcast=backcast_from_returns(returns, scale=ewma_scale, mean="zero")), note


def regime_weights(hmm: HmmParams, seqs: Sequence[Sequence[FeatureVector]]
                   ) -> npt.NDArray[np.float64]:
    """Filtered (forward-only) regime posteriors of every bar, symbol by symbol, stacked."""
    filt = RegimeFilter(hmm)
    ws = []
    for seq in seqs:
        state = filt.new_state()
        w = np.empty((len(seq), 3))
        for i, fv in enumerate(seq):
            if fv.ret_1 is not None:
                state, _ = filt.filter_step(state, fv.ret_1)
            w[i] = state.probs
        ws.append(w)
    return np.vstack(ws)


def validation_start(
    seqs: Sequence[Sequence[FeatureVector]], *, horizon_bars: int, validation_fraction: float
) -> int:
    """Bar end time of the first validation row of the specialists' chronological split."""
    xs, fwds, ts = [], [], []
    for seq in seqs:
        X, closes, t = matrix_from_vectors(seq)
        xs.append(X)
        fwds.append(forward_returns(closes, horizon_bars))
        ts.append(t)
    rows, _, val = split_rows(np.vstack(xs), np.concatenate(fwds), horizon_bars=horizon_bars,
                              validation_fraction=validation_fraction)
    return int(np.concatenate(ts)[rows[val[0]]])


def bar_returns(vectors: Sequence[FeatureVector], before: int | None = None
                ) -> npt.NDArray[np.float64]:
    """One-bar returns of ``vectors`` (in their order), only of bars ending before ``before``."""
    return np.array([fv.ret_1 for fv in vectors if fv.ret_1 is not None
                     and (before is None or fv.ts_event < before)], dtype=np.float64)


def train_bundle(
    vectors: Sequence[FeatureVector],
    *,
    train_end: int,
    bar_ns: int,
    out_dir: Path,
    seed: int = 0,
    horizon_bars: int = 1,
    ab_split: float = 0.5,
    quiet: bool = False,
) -> StrategyBundle:
    """Fit HMM, volatility and specialists on vectors whose bar ended by ``train_end``.

    No validation leak through the regime model: the HMM whose posteriors weight the
    specialists' rows (for fitting and for the validation metrics) is fit on the returns of
    bars before the first validation row only. The bundle then trades an HMM and a volatility
    model refit on the whole training window. (The volatility model does not enter the
    validation metrics, which score the specialists' probabilities.)
    """
    train = [fv for fv in vectors if fv.ts_event <= train_end]
    if not train:
        raise ValueError("no bars in the training window")
    symbols = tuple(sorted({fv.symbol for fv in train}))
    rets = bar_returns(train)
    if rets.size < 100:
        raise ValueError(f"only {rets.size} returns in the training window; need >= 100")

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    t0 = time.monotonic()

    def step(msg: str) -> None:
        say(f"  training: {msg} ({format_seconds(time.monotonic() - t0)} in)")

    say(f"training on {len(train):,} bars of {', '.join(symbols)} ...")
    step("step 1/3: fitting the regime HMM on the returns before the validation period")
    seqs = [[fv for fv in train if fv.symbol == sym] for sym in symbols]
    val_from = validation_start(seqs, horizon_bars=horizon_bars,
                                validation_fraction=TrainParams().validation_fraction)
    fit_rets = bar_returns(train, before=val_from)
    hmm_fit = fit_gaussian_hmm(fit_rets)
    say(f"  regimes for the specialists and their validation: HMM on {fit_rets.size:,} returns "
        f"before the validation period ({format_ns(val_from)})")
    step("step 2/3: fitting and exporting 6 specialists")
    xs, fwds = [], []
    for seq in seqs:
        X, closes, _ = matrix_from_vectors(seq)
        xs.append(X)
        fwds.append(forward_returns(closes, horizon_bars))
    window = (min(fv.ts_event for fv in train) - bar_ns, train_end)
    entries: list[ModelEntry] = train_specialists(
        np.vstack(xs), np.concatenate(fwds), regime_weights(hmm_fit, seqs),
        feature_names=FeatureVector.NAMES, feature_version=train[0].feature_version,
        window=window, out_dir=out_dir, seed=seed, horizon_bars=horizon_bars)
    # the traded bundle: regime and volatility models refit on the whole training window
    step("step 3/3: refitting the regime HMM and the volatility model on the whole window")
    hmm = fit_gaussian_hmm(rets)
    vol, vol_note = fit_volatility(rets)
    say(f"  volatility: {vol_note}")
    names = sorted(e.name for e in entries)
    bundle = StrategyBundle(
        feature_version=train[0].feature_version, bar_ns=bar_ns, train_start=window[0],
        train_end=train_end, symbols=symbols, hmm=hmm, vol=vol, horizon_bars=horizon_bars,
        arm_a=tuple(n for n in names if n.endswith("_linear")),
        arm_b=tuple(n for n in names if n.endswith("_gbm")),
        ab_split=ab_split, seed=seed, n_train_bars=len(train),
        models=tuple(ModelPin(name=e.name, version=e.version, sha256=e.sha256)
                     for e in sorted(entries, key=lambda e: e.name)))
    save_bundle(out_dir, bundle)
    for e in sorted(entries, key=lambda e: e.name):
        auc = e.metrics.get("val_auc", float("nan"))
        say(f"  {e.name:<16} {e.version}  n_train={e.n_train:,}  val AUC={auc:.3f}")
    return bundle
