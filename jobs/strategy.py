"""The strategy bundle: everything ``train`` fits offline and ``run`` trades with.

A bundle directory holds the specialists' ONNX files and ``registry.json`` (see
``jobs.loaders.registry``) plus ``strategy.json``: the regime HMM, the volatility model,
the training window and the A/B arms. The split is walk-forward and explicit: the models see
only bars that *end* before ``train_end``; labels (forward returns) are computed inside the
training window, so its last bars get none rather than peeking past it.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from jobs.loaders.registry import ModelEntry, write_atomic
from jobs.regime_fit import fit_gaussian_hmm
from jobs.training import forward_returns, matrix_from_vectors, train_specialists
from operators.domain.regime_filter import HmmParams, RegimeFilter
from operators.domain.volatility import VolConfig, auto_scale, backcast_from_returns, fit_garch
from topics.messages import FeatureVector

STRATEGY_FILE = "strategy.json"


class StrategyBundle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format_version: int = 1
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


def save_bundle(directory: Path, bundle: StrategyBundle) -> None:
    write_atomic(directory / STRATEGY_FILE, msgspec.json.format(msgspec.json.encode(bundle)))


def load_bundle(directory: Path) -> StrategyBundle:
    path = directory / STRATEGY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {STRATEGY_FILE} (train models with "
                                "'streamquant train' first)")
    return msgspec.json.decode(path.read_bytes(), type=StrategyBundle)


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
    """Fit HMM, volatility and specialists on vectors whose bar ended by ``train_end``."""
    train = [fv for fv in vectors if fv.ts_event <= train_end]
    if not train:
        raise ValueError("no bars in the training window")
    symbols = tuple(sorted({fv.symbol for fv in train}))
    rets = np.array([fv.ret_1 for fv in train if fv.ret_1 is not None], dtype=np.float64)
    if rets.size < 100:
        raise ValueError(f"only {rets.size} returns in the training window; need >= 100")

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    say(f"training on {len(train):,} bars of {', '.join(symbols)} ...")
    hmm = fit_gaussian_hmm(rets)
    vol, vol_note = fit_volatility(rets)
    say(f"  volatility: {vol_note}")
    filt = RegimeFilter(hmm)
    xs, fwds, ws = [], [], []
    for sym in symbols:
        seq = [fv for fv in train if fv.symbol == sym]
        X, closes, _ = matrix_from_vectors(seq)
        state = filt.new_state()
        w = np.empty((len(seq), 3))
        for i, fv in enumerate(seq):
            if fv.ret_1 is not None:
                state, _ = filt.filter_step(state, fv.ret_1)
            w[i] = state.probs
        xs.append(X)
        fwds.append(forward_returns(closes, horizon_bars))
        ws.append(w)
    window = (min(fv.ts_event for fv in train) - bar_ns, train_end)
    entries: list[ModelEntry] = train_specialists(
        np.vstack(xs), np.concatenate(fwds), np.vstack(ws),
        feature_names=FeatureVector.NAMES, feature_version=train[0].feature_version,
        window=window, out_dir=out_dir, seed=seed, horizon_bars=horizon_bars)
    names = sorted(e.name for e in entries)
    bundle = StrategyBundle(
        feature_version=train[0].feature_version, bar_ns=bar_ns, train_start=window[0],
        train_end=train_end, symbols=symbols, hmm=hmm, vol=vol, horizon_bars=horizon_bars,
        arm_a=tuple(n for n in names if n.endswith("_linear")),
        arm_b=tuple(n for n in names if n.endswith("_gbm")),
        ab_split=ab_split, seed=seed, n_train_bars=len(train))
    save_bundle(out_dir, bundle)
    for e in sorted(entries, key=lambda e: e.name):
        auc = e.metrics.get("val_auc", float("nan"))
        say(f"  {e.name:<16} {e.version}  n_train={e.n_train:,}  val AUC={auc:.3f}")
    return bundle
