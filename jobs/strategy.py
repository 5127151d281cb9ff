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
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from jobs.loaders.registry import ModelEntry, Registry, write_atomic
from jobs.progress import format_seconds
from jobs.regime_fit import fit_gaussian_hmm
from jobs.training import forward_returns, matrix_from_vectors, train_specialists
from operators.domain.regime_filter import HmmParams, RegimeFilter
from operators.domain.volatility import VolConfig, backcast_from_returns, fit_garch
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


def fit_volatility(returns: npt.NDArray[np.float64]) -> VolConfig:
    """GARCH(1,1) when arch's fit converges to a stationary model; EWMA(0.94) otherwise."""
    try:
        g = fit_garch(returns)
        if g.converged and g.alpha + g.beta < 0.999:
            return g.to_config()
    except (RuntimeError, ValueError, np.linalg.LinAlgError):
        pass
    return VolConfig(kind="ewma", lam=0.94, backcast=backcast_from_returns(returns, mean="zero"))


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

    t0 = time.monotonic()

    def step(msg: str) -> None:
        say(f"  training: {msg} ({format_seconds(time.monotonic() - t0)} in)")

    say(f"training on {len(train):,} bars of {', '.join(symbols)} ...")
    step("step 1/3: fitting the regime HMM")
    hmm = fit_gaussian_hmm(rets)
    step("step 2/3: fitting the volatility model")
    vol = fit_volatility(rets)
    step("step 3/3: fitting and exporting 6 specialists")
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
        ab_split=ab_split, seed=seed, n_train_bars=len(train),
        models=tuple(ModelPin(name=e.name, version=e.version, sha256=e.sha256)
                     for e in sorted(entries, key=lambda e: e.name)))
    save_bundle(out_dir, bundle)
    for e in sorted(entries, key=lambda e: e.name):
        auc = e.metrics.get("val_auc", float("nan"))
        say(f"  {e.name:<16} {e.version}  n_train={e.n_train:,}  val AUC={auc:.3f}")
    return bundle
