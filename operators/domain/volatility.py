"""One-step-ahead variance forecasts (EWMA / RiskMetrics and GARCH(1,1)) that follow ``arch``.

Sizing needs a volatility forecast per bar, computed online from the returns seen so far. The
recursion and its start are those of ``arch`` 8.0 (``arch.univariate.volatility``), so a model
fitted offline with ``arch`` forecasts the same numbers live:

- GARCH(1,1): ``sigma2[t] = omega + alpha * e[t-1]**2 + beta * sigma2[t-1]``;
- EWMA:       the same with ``omega = 0, alpha = 1 - lam, beta = lam`` (exactly how ``arch``
  runs ``EWMAVariance``);
- ``e[t] = scale * r[t] - mu`` (constant mean; ``mu = 0`` is ``arch``'s zero mean);
- the pre-sample ``e[-1]**2`` and ``sigma2[-1]`` are both the *backcast*: the 0.94**i-weighted
  (i = 0..tau-1, tau = min(75, n), weights normalised) mean of the first squared residuals of
  the fitting sample, the residuals being taken around the *starting* mean (the sample mean for
  a constant mean, zero for a zero mean), not the fitted ``mu``. An online forecaster cannot
  look ahead 75 observations, so the backcast is a config value taken from the fit.

Scale: ``arch`` optimises reliably only when the data's variance is O(1). Percent suits
daily returns, but one-minute futures returns in percent are ~0.015 % and the optimizer stops
at its starting values at once (it still reports convergence). ``fit_garch`` therefore picks
the power of ten that brings the sample's standard deviation into [1, 10) (``auto_scale``:
100 for daily equity returns, 10**4 — basis points — for one-minute E-mini returns) and reports
whether the fit left arch's starting values and beat their log-likelihood.
``VolConfig.scale`` multiplies every return fed to ``update`` before the recursion, so the
operator feeds plain fractional returns while ``mu``, ``omega`` and ``backcast`` stay in the
units ``arch`` reported them (scaled). ``VolState.sigma2`` and
``forecast_scaled`` are in those model units; ``forecast`` divides by ``scale**2`` and returns
the variance of the returns as fed. With ``scale=1`` returns are taken as already scaled.

``arch`` additionally clamps variances to loose data-dependent bounds during estimation (they
need the whole sample); the online recursion does not, which only matters for degenerate data.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

VolKind = Literal["ewma", "garch"]
MeanKind = Literal["constant", "zero"]

BACKCAST_DECAY = 0.94
BACKCAST_WINDOW = 75


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


class VolConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Frozen forecaster config; ``omega``/``alpha``/``beta`` for GARCH, ``lam`` for EWMA.

    ``mu``, ``omega`` and ``backcast`` are in model units (``scale`` x input returns).
    """

    kind: VolKind = "ewma"
    lam: float = 0.94
    omega: float = 0.0
    alpha: float = 0.0
    beta: float = 0.0
    mu: float = 0.0
    backcast: float
    scale: float = 100.0

    def __post_init__(self) -> None:
        for name in ("lam", "omega", "alpha", "beta", "mu", "backcast", "scale"):
            _finite(name, getattr(self, name))
        if self.kind == "ewma":
            if not 0.0 < self.lam < 1.0:
                raise ValueError(f"EWMA lam must be in (0, 1), got {self.lam}")
        elif self.kind == "garch":
            if self.omega <= 0.0:
                raise ValueError(f"GARCH omega must be > 0, got {self.omega}")
            if self.alpha < 0.0 or self.beta < 0.0:
                raise ValueError(f"GARCH alpha, beta must be >= 0, got {self.alpha}, {self.beta}")
            if self.alpha + self.beta >= 1.0:
                raise ValueError(
                    f"GARCH alpha + beta must be < 1 (stationary), got {self.alpha + self.beta}"
                )
        else:
            raise ValueError(f"kind must be 'ewma' or 'garch', got {self.kind!r}")
        if self.backcast <= 0.0:
            raise ValueError(f"backcast must be > 0, got {self.backcast}")
        if self.scale <= 0.0:
            raise ValueError(f"scale must be > 0, got {self.scale}")

    @property
    def coefficients(self) -> tuple[float, float, float]:
        """(omega, alpha, beta) of the recursion; EWMA maps to (0, 1 - lam, lam) like arch."""
        if self.kind == "ewma":
            return 0.0, 1.0 - self.lam, self.lam
        return self.omega, self.alpha, self.beta


class VolState(msgspec.Struct, kw_only=True):
    """Per-key forecaster state.

    ``sigma2`` is the conditional variance (model units) of the last observation absorbed, i.e.
    arch's ``conditional_volatility**2`` at that index; ``resid`` its residual ``scale*r - mu``;
    ``count`` the number of observations absorbed (0: nothing yet, ``sigma2``/``resid`` unused).
    """

    sigma2: float = 0.0
    resid: float = 0.0
    count: int = 0


class VolForecaster:
    """Online EWMA/GARCH(1,1) variance forecaster: ``update`` absorbs a return, ``forecast``
    reads the next period's variance. Pure: ``update`` returns a new state."""

    __slots__ = ("_alpha", "_beta", "_inv_scale2", "_mu", "_omega", "_scale", "_start", "config")

    def __init__(self, config: VolConfig) -> None:
        self.config = config
        self._omega, self._alpha, self._beta = config.coefficients
        self._mu = config.mu
        self._scale = config.scale
        self._inv_scale2 = 1.0 / (config.scale * config.scale)
        bc = config.backcast
        # arch's t = 0 term, in its order of operations: (omega + alpha*bc) + beta*bc.
        self._start = self._omega + self._alpha * bc + self._beta * bc

    def new_state(self) -> VolState:
        return VolState()

    def update(self, state: VolState, r: float) -> VolState:
        """Absorb one return (input units). Raises ValueError on a non-finite return, which
        would otherwise poison the state forever."""
        if not math.isfinite(r):
            raise ValueError(f"return must be finite, got {r!r}")
        if state.count == 0:
            sigma2 = self._start
        else:
            e = state.resid
            sigma2 = self._omega + self._alpha * (e * e) + self._beta * state.sigma2
        return VolState(sigma2=sigma2, resid=self._scale * r - self._mu, count=state.count + 1)

    def forecast_scaled(self, state: VolState) -> float:
        """Variance of the next return in model units (arch's ``forecast(horizon=1)``)."""
        if state.count == 0:
            return self._start
        e = state.resid
        return self._omega + self._alpha * (e * e) + self._beta * state.sigma2

    def forecast(self, state: VolState) -> float:
        """Variance of the next return in the units of the returns fed to ``update``."""
        return self.forecast_scaled(state) * self._inv_scale2

    def run(self, returns: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Offline convenience: conditional variances (model units) of every observation,
        through the same ``update`` as online, from a fresh state."""
        xs = _as_1d(returns)
        out = np.empty(xs.shape[0], dtype=np.float64)
        state = self.new_state()
        for i, x in enumerate(xs.tolist()):
            state = self.update(state, x)
            out[i] = state.sigma2
        return out


def _as_1d(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D sequence, got shape {arr.shape}")
    return arr


def backcast(resids: npt.ArrayLike) -> float:
    """arch's variance backcast: 0.94**i weights (i < min(75, n)), normalised, on squared resids.

    ``resids`` are residuals around the starting mean (``scale*r - mean(scale*r)`` for a constant
    mean, ``scale*r`` for a zero mean), in model units.
    """
    e = _as_1d(resids)
    if e.shape[0] == 0:
        raise ValueError("backcast needs at least one residual")
    tau = min(BACKCAST_WINDOW, e.shape[0])
    w = BACKCAST_DECAY ** np.arange(tau)
    w = w / sum(w)  # builtin sum, as arch does, for the same rounding
    return float(np.sum((e[:tau] ** 2.0) * w))


def backcast_from_returns(
    returns: npt.ArrayLike, *, scale: float = 100.0, mean: MeanKind = "constant"
) -> float:
    """The backcast arch would use for these returns: residuals around the sample mean (constant
    mean) or zero (zero mean), after scaling."""
    y = scale * _as_1d(returns)
    return backcast(y - y.mean() if mean == "constant" else y)


def auto_scale(returns: npt.ArrayLike) -> float:
    """The power of ten that brings the returns' standard deviation into [1, 10)."""
    sd = float(np.std(_clean_returns(returns)))
    if not sd > 0.0:
        raise ValueError("returns have zero variance: nothing to fit")
    return float(10.0 ** math.ceil(-math.log10(sd)))


MIN_MOVE = 1e-3
"""Relative change of alpha or beta below which a fit is taken not to have left its start."""


class GarchParams(msgspec.Struct, frozen=True, kw_only=True):
    """A GARCH(1,1) fit by arch; ``mu``, ``omega``, ``backcast`` in model units.

    ``start`` are arch's starting values (mu, omega, alpha, beta) and ``start_loglikelihood``
    the log-likelihood there: a fit that did not move from them learned nothing.
    """

    mu: float
    omega: float
    alpha: float
    beta: float
    backcast: float
    scale: float
    loglikelihood: float
    converged: bool
    start: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    start_loglikelihood: float = -math.inf
    iterations: int = 0

    @property
    def moved(self) -> bool:
        """Whether alpha or beta left the starting values (relatively, by ``MIN_MOVE``)."""
        _, _, a0, b0 = self.start
        return (abs(self.alpha - a0) > MIN_MOVE * max(abs(a0), 1e-12)
                or abs(self.beta - b0) > MIN_MOVE * max(abs(b0), 1e-12))

    @property
    def improved(self) -> bool:
        """Whether the fitted log-likelihood beats the starting point's."""
        return self.loglikelihood > self.start_loglikelihood

    @property
    def stationary(self) -> bool:
        return self.alpha + self.beta < 0.999

    @property
    def usable(self) -> bool:
        """Converged, moved, better than the start and stationary: worth trading with."""
        return self.converged and self.moved and self.improved and self.stationary

    def problem(self) -> str | None:
        """Why the fit is not usable (None when it is)."""
        if not self.converged:
            return "the optimizer did not converge"
        if not self.moved:
            return (f"alpha, beta stayed at arch's starting values {self.start[2]:g}, "
                    f"{self.start[3]:g}")
        if not self.improved:
            return "the log-likelihood did not improve on the starting values'"
        if not self.stationary:
            return f"alpha + beta = {self.alpha + self.beta:.4f} is not stationary"
        return None

    def to_config(self) -> VolConfig:
        return VolConfig(
            kind="garch",
            omega=self.omega,
            alpha=self.alpha,
            beta=self.beta,
            mu=self.mu,
            backcast=self.backcast,
            scale=self.scale,
        )


def _clean_returns(returns: npt.ArrayLike) -> npt.NDArray[np.float64]:
    y = _as_1d(returns)
    if y.shape[0] < 2 or not np.all(np.isfinite(y)):
        raise ValueError("fitting needs at least 2 returns, all finite")
    return y


def fit_garch(
    returns: npt.ArrayLike, *, scale: float | None = None, mean: MeanKind = "constant"
) -> GarchParams:
    """Fit GARCH(1,1) (normal errors) with ``arch`` on ``scale * returns``; offline only.

    ``returns`` are in input units (fractional); ``scale`` None picks ``auto_scale``. The
    result records arch's starting values and their log-likelihood next to the fit's.
    """
    from arch import arch_model

    if scale is None:
        scale = auto_scale(returns)
    y = scale * _clean_returns(returns)
    model = arch_model(
        y,
        mean="Constant" if mean == "constant" else "Zero",
        vol="GARCH",
        p=1,
        q=1,
        rescale=False,
    )
    res = model.fit(disp="off")
    # arch's own starting point: the mean's OLS values, then its GARCH grid search
    sv_mean = model.starting_values()
    sv_vol = model.volatility.starting_values(model.resids(sv_mean))
    sv = np.hstack([sv_mean, sv_vol])
    start_ll = float(model.fix(sv).loglikelihood)
    mu0 = float(sv_mean[0]) if mean == "constant" else 0.0
    params = res.params
    return GarchParams(
        mu=float(params["mu"]) if mean == "constant" else 0.0,
        omega=float(params["omega"]),
        alpha=float(params["alpha[1]"]),
        beta=float(params["beta[1]"]),
        backcast=backcast_from_returns(y, scale=1.0, mean=mean),
        scale=scale,
        loglikelihood=float(res.loglikelihood),
        converged=int(res.convergence_flag) == 0,
        start=(mu0, float(sv_vol[0]), float(sv_vol[1]), float(sv_vol[2])),
        start_loglikelihood=start_ll,
        iterations=int(getattr(res.optimization_result, "nit", 0)),
    )


def fit_ewma(
    returns: npt.ArrayLike, *, lam: float = 0.94, scale: float = 100.0, mean: MeanKind = "zero"
) -> VolConfig:
    """EWMA config for these returns: arch's backcast, and for a constant mean arch's MLE of mu
    (``ConstantMean`` + ``EWMAVariance(lam)``); the zero mean needs no estimation."""
    y = scale * _clean_returns(returns)
    mu = 0.0
    if mean == "constant":
        from arch.univariate import ConstantMean, EWMAVariance

        res = ConstantMean(y, volatility=EWMAVariance(lam), rescale=False).fit(disp="off")
        mu = float(res.params["mu"])
    return VolConfig(
        kind="ewma",
        lam=lam,
        mu=mu,
        backcast=backcast_from_returns(y, scale=1.0, mean=mean),
        scale=scale,
    )
