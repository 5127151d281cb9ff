"""Online regime posterior: a K-state Gaussian HMM run through the forward (Hamilton) filter.

A live system may only use the past, so this is the *filter* ``P(S_t | x_1..x_t)``, never a
smoother. It reproduces ``statsmodels``' ``MarkovRegression(x, k_regimes=K, trend="c",
switching_variance=True)`` filtered probabilities for the same parameters:

- emission: ``x_t | S_t = k ~ N(means[k], variances[k])`` with ``x_t = scale * input``;
- transition convention (row-stochastic, as in most HMM texts and hmmlearn):
  ``transition[i][j] = P(S_t = j | S_{t-1} = i)``; each *row* sums to 1. statsmodels stores the
  transpose (``regime_transition[i, j] = P(S_t = i | S_{t-1} = j)``, columns sum to 1);
  ``fit_regimes`` converts;
- ``initial`` is the regime distribution *before* the first observation: like statsmodels, the
  first step propagates it through the transition before weighing ``x_0``. statsmodels' default
  is the ergodic (steady-state) distribution of the transition matrix, which that step leaves
  unchanged; ``steady_state`` computes it the way statsmodels does.

Each step works in log space (log-sum-exp with the max factored out), so a far-out observation
cannot underflow every likelihood to zero. The state also accumulates the log-likelihood
``sum_t log f(x_t | x_1..x_{t-1})`` (statsmodels' ``llf``) for monitoring model fit online.

Entropy is in nats (natural log), from 0 (certain) to ``log K`` (uniform).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt

SUM_TOL = 1e-8
"""Tolerance on probability rows summing to one (statsmodels uses the same for initial probs)."""

_LOG_2PI = math.log(2.0 * math.pi)

BULL, BEAR, SIDEWAYS = "bull", "bear", "sideways"


def _check_distribution(name: str, probs: Sequence[float]) -> None:
    if any(not math.isfinite(p) or p < 0.0 or p > 1.0 for p in probs):
        raise ValueError(f"{name} must hold probabilities in [0, 1], got {tuple(probs)}")
    if abs(math.fsum(probs) - 1.0) > SUM_TOL:
        raise ValueError(f"{name} must sum to 1 (within {SUM_TOL}), sums to {math.fsum(probs)}")


class HmmParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Frozen, validated Gaussian-HMM parameters (plain tuples: hashable, JSON-encodable).

    ``means``/``variances`` are in the units of ``scale * x``; ``transition`` is row-stochastic
    (``transition[i][j] = P(S_t=j | S_{t-1}=i)``); ``initial`` is the distribution before the
    first observation.
    """

    means: tuple[float, ...]
    variances: tuple[float, ...]
    transition: tuple[tuple[float, ...], ...]
    initial: tuple[float, ...]
    scale: float = 1.0

    def __post_init__(self) -> None:
        k = len(self.means)
        if k < 1:
            raise ValueError("an HMM needs at least one regime")
        if len(self.variances) != k or len(self.initial) != k or len(self.transition) != k:
            raise ValueError(
                f"means, variances, initial and transition must all have K={k} entries"
            )
        if any(len(row) != k for row in self.transition):
            raise ValueError(f"transition must be {k}x{k}")
        if any(not math.isfinite(m) for m in self.means):
            raise ValueError(f"means must be finite, got {self.means}")
        if any(not (math.isfinite(v) and v > 0.0) for v in self.variances):
            raise ValueError(f"variances must be finite and > 0, got {self.variances}")
        for i, row in enumerate(self.transition):
            _check_distribution(f"transition row {i}", row)
        _check_distribution("initial", self.initial)
        if not (math.isfinite(self.scale) and self.scale > 0.0):
            raise ValueError(f"scale must be finite and > 0, got {self.scale}")

    @property
    def k(self) -> int:
        return len(self.means)


class HmmState(msgspec.Struct, kw_only=True):
    """Per-key filter state: ``probs`` = P(S_t | x_1..x_t) after ``count`` observations
    (``initial`` when ``count == 0``); ``loglik`` = sum of one-step predictive log densities."""

    probs: tuple[float, ...]
    loglik: float = 0.0
    count: int = 0


def entropy(probs: Sequence[float]) -> float:
    """Shannon entropy in nats, with 0 * log 0 = 0; 0 for a certain regime, log K for uniform."""
    return -math.fsum(p * math.log(p) for p in probs if p > 0.0)


class RegimeFilter:
    """Forward filter for one ``HmmParams``; derived constants are computed once here."""

    __slots__ = ("_half_log_norm", "_k", "_means", "_neg_half_inv_var", "_scale", "_t", "params")

    def __init__(self, params: HmmParams) -> None:
        self.params = params
        self._k = params.k
        self._means = params.means
        self._scale = params.scale
        self._neg_half_inv_var = tuple(-0.5 / v for v in params.variances)
        # statsmodels: -0.5 * resid**2 / var - 0.5 * log(2 * pi * var)
        self._half_log_norm = tuple(0.5 * math.log(2.0 * math.pi * v) for v in params.variances)
        # columns of the row-stochastic matrix: predicted[j] = sum_i p[i] * T[i][j]
        self._t = tuple(tuple(row[j] for row in params.transition) for j in range(self._k))

    def new_state(self) -> HmmState:
        return HmmState(probs=self.params.initial)

    def filter_step(self, state: HmmState, x: float) -> tuple[HmmState, tuple[float, ...]]:
        """Absorb one observation (input units); returns the new state and P(S_t | x_1..x_t).

        Raises ValueError on a non-finite observation (it would poison the posterior).
        """
        if not math.isfinite(x):
            raise ValueError(f"observation must be finite, got {x!r}")
        y = self._scale * x
        p = state.probs
        log_w: list[float] = []
        for j in range(self._k):
            col = self._t[j]
            pred = 0.0
            for i in range(self._k):
                pred += p[i] * col[i]
            if pred > 0.0:
                d = y - self._means[j]
                log_w.append(
                    math.log(pred) + d * d * self._neg_half_inv_var[j] - self._half_log_norm[j]
                )
            else:
                log_w.append(-math.inf)
        m = max(log_w)
        if m == -math.inf:  # unreachable with valid params: some predicted prob is > 0
            raise ValueError("every regime has zero predicted probability")
        w = [math.exp(v - m) for v in log_w]
        s = sum(w)
        probs = tuple(v / s for v in w)
        return HmmState(
            probs=probs, loglik=state.loglik + m + math.log(s), count=state.count + 1
        ), probs

    def run(self, xs: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], HmmState]:
        """Offline convenience: filtered probabilities (n, K) through the same ``filter_step``."""
        arr = np.asarray(xs, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"expected a 1-D sequence, got shape {arr.shape}")
        out = np.empty((arr.shape[0], self._k))
        state = self.new_state()
        for t, x in enumerate(arr.tolist()):
            state, probs = self.filter_step(state, x)
            out[t] = probs
        return out, state


def steady_state(transition: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """The ergodic distribution of a row-stochastic matrix, computed as statsmodels does
    (least squares on ``(I - P) pi = 0, sum(pi) = 1`` via a pseudo-inverse, floored at 1e-20)."""
    t = np.asarray(transition, dtype=np.float64)
    m = t.shape[0]
    p_sm = t.T  # statsmodels' column-stochastic convention
    a = np.c_[(np.eye(m) - p_sm).T, np.ones(m)].T
    pi = np.maximum(np.linalg.pinv(a)[:, -1], 1e-20)
    return tuple(float(v) for v in pi)


def fit_regimes(returns: npt.ArrayLike, k: int = 3, *, scale: float = 1.0) -> HmmParams:
    """Fit a K-regime switching-mean, switching-variance model with statsmodels; offline only.

    ``returns`` are in input units; the model is fit on ``scale * returns`` (daily percent
    returns, i.e. ``scale=100`` on fractions, fit most reliably). The returned ``initial`` is the
    steady state statsmodels' filter started from. Raises RuntimeError if the fit did not
    converge. The regime order is statsmodels'; see ``reorder_regimes``.
    """
    import warnings

    from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

    y = scale * np.asarray(returns, dtype=np.float64)
    if y.ndim != 1 or y.shape[0] < 10 * k or not np.all(np.isfinite(y)):
        raise ValueError(f"fit_regimes needs a 1-D finite series of at least {10 * k} values")
    model = MarkovRegression(y, k_regimes=k, trend="c", switching_variance=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' optimizer chatter; convergence checked
        res = model.fit(disp=False)
    if not res.mle_retvals.get("converged", False):
        raise RuntimeError(f"MarkovRegression (k={k}) did not converge: {res.mle_retvals}")
    return params_from_statsmodels(model, res.params, scale=scale)


def params_from_statsmodels(model: object, params: npt.ArrayLike, *, scale: float) -> HmmParams:
    """Map a fitted ``MarkovRegression``'s parameter vector to ``HmmParams``."""
    p = np.asarray(params, dtype=np.float64)
    k = int(model.k_regimes)  # type: ignore[attr-defined]
    names: list[str] = list(model.param_names)  # type: ignore[attr-defined]
    sm_t = model.regime_transition_matrix(p)[:, :, 0]  # type: ignore[attr-defined]
    initial = model.initial_probabilities(p, sm_t)  # type: ignore[attr-defined]
    return HmmParams(
        means=tuple(float(p[names.index(f"const[{i}]")]) for i in range(k)),
        variances=tuple(float(p[names.index(f"sigma2[{i}]")]) for i in range(k)),
        transition=tuple(tuple(float(v) for v in row) for row in sm_t.T),
        initial=tuple(float(v) for v in initial),
        scale=scale,
    )


def _regime_rank(params: HmmParams) -> list[int]:
    """Indices by ascending mean; ties: higher variance ranks lower (more bear-like), then
    lower index first — a total order, so labels are deterministic."""
    return sorted(range(params.k), key=lambda i: (params.means[i], -params.variances[i], i))


def label_regimes(params: HmmParams) -> tuple[str, ...]:
    """Names of the states in ``params``' order: highest mean = bull, lowest = bear, the
    remaining one (K=3) = sideways. K must be 2 or 3."""
    if params.k not in (2, 3):
        raise ValueError(f"labels are defined for 2 or 3 regimes, got {params.k}")
    rank = _regime_rank(params)
    labels = [SIDEWAYS] * params.k
    labels[rank[0]] = BEAR
    labels[rank[-1]] = BULL
    return tuple(labels)


def reorder_regimes(params: HmmParams) -> HmmParams:
    """The same model with states permuted into (bull, bear, sideways) order ((bull, bear) for
    K=2), so downstream code can index regimes by position."""
    labels = label_regimes(params)
    order = [labels.index(name) for name in (BULL, BEAR, SIDEWAYS)[: params.k]]
    return HmmParams(
        means=tuple(params.means[i] for i in order),
        variances=tuple(params.variances[i] for i in order),
        transition=tuple(tuple(params.transition[i][j] for j in order) for i in order),
        initial=tuple(params.initial[i] for i in order),
        scale=params.scale,
    )
