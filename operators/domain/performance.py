"""Performance statistics of per-period simple returns, with empyrical's conventions.

The meta-controller weights specialists by recent performance and the reports quote Sharpe,
Sortino and drawdown; both must agree with the library analysts check them against, so every
statistic follows ``empyrical`` (empyrical-reloaded 0.7) exactly, in plain numpy:

- ``periods_per_year`` is the annualisation factor (252 for daily bars, 252*390 for one-minute
  bars of a 6.5 h session, ...);
- NaN is a missing period: it counts in the length (the ``len < 2 -> NaN`` rules and the number
  of years in ``annual_return``) but is skipped by means and deviations, and compounds as 0;
- Sharpe = mean(r - rf) / std(r - rf, ddof=1) * sqrt(ppy); NaN for fewer than 2 returns; when
  every present return is equal the deviation is exactly 0, so the ratio is +-inf (0/0 = NaN);
- downside risk = sqrt(mean(min(r - required, 0)**2)) * sqrt(ppy), over ALL present returns;
- Sortino = mean(r - required) * ppy / downside risk (NaN for fewer than 2 returns, +inf with
  no downside and a positive mean);
- max drawdown = min over t of (W_t - peak_t) / peak_t, with W the compounded wealth starting at
  1 (the start counts as a peak), a negative fraction (0 if never under water); NaN if empty;
- annual return = CAGR = W_n ** (ppy / n) - 1; annual volatility = std(ddof=1) * ppy**0.5.

Statistics return NaN/inf as empyrical does; a message schema wanting ``None`` converts at the
edge. ``PerformanceTracker`` gives the same numbers incrementally (Welford mean/variance, running
wealth and peak), so an operator can keep them per key without storing the history.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import numpy.typing as npt

TRADING_DAYS = 252.0


def _as_1d(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of returns, got shape {arr.shape}")
    return arr


def _check_ppy(periods_per_year: float) -> None:
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be finite and > 0, got {periods_per_year}")


def _nanmean(x: npt.NDArray[np.float64]) -> float:
    present = x[~np.isnan(x)]
    return float(present.mean()) if present.size else math.nan


def _nanstd1(x: npt.NDArray[np.float64]) -> float:
    present = x[~np.isnan(x)]
    return float(present.std(ddof=1)) if present.size > 1 else math.nan


def _divide(num: float, den: float) -> float:
    """IEEE division (x/0 = +-inf, 0/0 = NaN) as numpy does it, without warnings."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(num) / np.float64(den))


def returns_from_equity(equity: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Simple returns ``(E[t] - E[t-1]) / E[t-1]`` of an equity (or price) curve; one fewer
    element. Computed as empyrical's ``simple_returns`` (difference, then divide)."""
    e = _as_1d(equity)
    out = np.diff(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(out, e[:-1], out=out)
    return out


def sharpe_ratio(
    returns: npt.ArrayLike, periods_per_year: float = TRADING_DAYS, risk_free: float = 0.0
) -> float:
    _check_ppy(periods_per_year)
    r = _as_1d(returns)
    if r.shape[0] < 2:
        return math.nan
    adj = r - risk_free
    std = _nanstd1(adj)
    present = adj[~np.isnan(adj)]
    if present.size and math.isfinite(std) and present.max() == present.min():
        std = 0.0  # identical values: exact zero, not the ~1e-18 residue of the mean
    return _divide(_nanmean(adj), std) * float(np.sqrt(periods_per_year))


def downside_risk(
    returns: npt.ArrayLike, periods_per_year: float = TRADING_DAYS, required_return: float = 0.0
) -> float:
    _check_ppy(periods_per_year)
    r = _as_1d(returns)
    if r.shape[0] < 1:
        return math.nan
    below = np.clip(r - required_return, -np.inf, 0.0)
    return math.sqrt(_nanmean(np.square(below))) * float(np.sqrt(periods_per_year))


def sortino_ratio(
    returns: npt.ArrayLike, periods_per_year: float = TRADING_DAYS, required_return: float = 0.0
) -> float:
    _check_ppy(periods_per_year)
    r = _as_1d(returns)
    if r.shape[0] < 2:
        return math.nan
    average_annual = _nanmean(r - required_return) * periods_per_year
    return _divide(average_annual, downside_risk(r, periods_per_year, required_return))


def max_drawdown(returns: npt.ArrayLike) -> float:
    r = _as_1d(returns)
    if r.shape[0] < 1:
        return math.nan
    wealth = np.empty(r.shape[0] + 1)
    wealth[0] = 100.0  # empyrical's anchor: the start is a peak
    np.add(np.where(np.isnan(r), 0.0, r), 1.0, out=wealth[1:])
    np.multiply(wealth[1:].cumprod(), 100.0, out=wealth[1:])
    peak = np.fmax.accumulate(wealth)
    drawdown = (wealth - peak) / peak
    return float(np.nanmin(drawdown[1:]))


def annual_return(returns: npt.ArrayLike, periods_per_year: float = TRADING_DAYS) -> float:
    _check_ppy(periods_per_year)
    r = _as_1d(returns)
    if r.shape[0] < 1:
        return math.nan
    ending = np.nanprod(r + 1.0)
    return _cagr(float(ending), r.shape[0], periods_per_year)


def _cagr(ending: float, n: int, periods_per_year: float) -> float:
    num_years = n / periods_per_year
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return float(np.float64(ending) ** (1 / num_years) - 1)


def annual_volatility(returns: npt.ArrayLike, periods_per_year: float = TRADING_DAYS) -> float:
    _check_ppy(periods_per_year)
    r = _as_1d(returns)
    if r.shape[0] < 2:
        return math.nan
    return _nanstd1(r) * math.pow(periods_per_year, 0.5)


# -- online -----------------------------------------------------------------------------------


class PerfConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Annualisation factor and the thresholds of Sharpe (``risk_free``) and Sortino
    (``required_return``), both per period."""

    periods_per_year: float = TRADING_DAYS
    risk_free: float = 0.0
    required_return: float = 0.0

    def __post_init__(self) -> None:
        _check_ppy(self.periods_per_year)
        if not (math.isfinite(self.risk_free) and math.isfinite(self.required_return)):
            raise ValueError("risk_free and required_return must be finite")


class PerfState(msgspec.Struct, kw_only=True):
    """Running sufficient statistics. ``n`` counts every period (NaN included), ``n_valid`` the
    present ones; ``mean``/``m2`` are Welford's over present returns; ``lo``/``hi`` their range
    (for the zero-dispersion rule); ``downside_sq`` = sum of min(r - required, 0)**2; ``wealth``
    and ``peak`` start at 1; ``max_drawdown`` is <= 0."""

    n: int = 0
    n_valid: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    downside_sq: float = 0.0
    wealth: float = 1.0
    peak: float = 1.0
    max_drawdown: float = 0.0


class PerfSummary(msgspec.Struct, frozen=True, kw_only=True):
    """Statistics of all returns seen so far (NaN/inf where empyrical gives them)."""

    n: int
    sharpe: float
    sortino: float
    downside_risk: float
    max_drawdown: float
    annual_return: float
    annual_volatility: float


class PerformanceTracker:
    """Incremental Sharpe / Sortino / drawdown / CAGR / volatility; ``update`` is pure."""

    __slots__ = ("_required", "config")

    def __init__(self, config: PerfConfig) -> None:
        self.config = config
        self._required = config.required_return

    def new_state(self) -> PerfState:
        return PerfState()

    def update(self, state: PerfState, r: float) -> PerfState:
        """Absorb one period's simple return; NaN is a missing period (counted, not used)."""
        if math.isnan(r):
            return msgspec.structs.replace(state, n=state.n + 1)
        k = state.n_valid + 1
        delta = r - state.mean
        mean = state.mean + delta / k
        below = min(r - self._required, 0.0)
        wealth = state.wealth * (r + 1.0)
        peak = max(state.peak, wealth)
        dd = (wealth - peak) / peak
        return PerfState(
            n=state.n + 1,
            n_valid=k,
            mean=mean,
            m2=state.m2 + delta * (r - mean),
            lo=r if k == 1 else min(state.lo, r),
            hi=r if k == 1 else max(state.hi, r),
            downside_sq=state.downside_sq + below * below,
            wealth=wealth,
            peak=peak,
            max_drawdown=min(state.max_drawdown, dd),
        )

    def summary(self, state: PerfState) -> PerfSummary:
        cfg = self.config
        ppy = cfg.periods_per_year
        k = state.n_valid
        mean = state.mean if k else math.nan
        std = math.sqrt(state.m2 / (k - 1)) if k > 1 else math.nan
        # identical values: Welford's m2 is already exactly 0, the rule is kept for clarity
        sharpe_std = 0.0 if k > 1 and state.lo == state.hi else std
        sharpe = (
            _divide(mean - cfg.risk_free, sharpe_std) * math.sqrt(ppy) if state.n >= 2 else math.nan
        )
        downside = math.sqrt(state.downside_sq / k) * math.sqrt(ppy) if k else math.nan
        sortino = (
            _divide((mean - cfg.required_return) * ppy, downside) if state.n >= 2 else math.nan
        )
        return PerfSummary(
            n=state.n,
            sharpe=sharpe,
            sortino=sortino,
            downside_risk=downside,
            max_drawdown=state.max_drawdown if state.n else math.nan,
            annual_return=_cagr(state.wealth, state.n, ppy) if state.n else math.nan,
            annual_volatility=std * math.pow(ppy, 0.5) if state.n >= 2 else math.nan,
        )

    def run(self, returns: npt.ArrayLike) -> PerfState:
        """Offline convenience: fold every return through ``update``."""
        state = self.new_state()
        for r in _as_1d(returns).tolist():
            state = self.update(state, r)
        return state


# -- inference on the Sharpe ratio -------------------------------------------------------------


class SharpeInterval(msgspec.Struct, frozen=True, kw_only=True):
    """A per-period Sharpe ratio (not annualized) with its confidence interval."""

    sharpe: float
    low: float
    high: float
    std_error: float
    lags: int
    n: int


def newey_west_lags(n: int) -> int:
    """Newey and West's (1994) rule of thumb: floor(4 (n / 100) ** (2 / 9))."""
    return math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)) if n > 0 else 0


def sharpe_interval(returns: npt.ArrayLike, *, lags: int | None = None,
                    z: float = 1.959963984540054) -> SharpeInterval:
    """The Sharpe ratio of per-period returns with Lo's (2002) autocorrelation-robust
    interval.

    Lo (2002, "The Statistics of Sharpe Ratios", eq. 15 ff.): with θ = (μ, σ²) estimated by
    GMM from the moments (r − μ, (r − μ)² − σ²), √T (SR̂ − SR) → N(0, V) where
    V = ∇g' Σ ∇g, g(θ) = μ/σ, ∇g = (1/σ, −μ / (2σ³)) and Σ is the long-run covariance of the
    moments, estimated with Newey–West (Bartlett) weights over ``lags`` lags (default
    :func:`newey_west_lags`). With ``lags=0`` and normal returns V = 1 + SR²/2 (the IID
    result). The point estimate is empyrical's (std with ddof=1, not annualized); NaN are
    skipped. The interval is SR ± z·√(V/T) (95 % by default).
    """
    r = _as_1d(returns)
    r = r[~np.isnan(r)]
    n = int(r.shape[0])
    q = newey_west_lags(n) if lags is None else int(lags)
    if q < 0:
        raise ValueError(f"lags must be >= 0, got {lags}")
    if n < 3 or q >= n:
        return SharpeInterval(sharpe=math.nan, low=math.nan, high=math.nan,
                              std_error=math.nan, lags=q, n=n)
    mu = float(r.mean())
    dev = r - mu
    var = float(np.mean(dev * dev))  # GMM (ddof=0) variance of the moment conditions
    sd = math.sqrt(var)
    point = sharpe_ratio(r, 1.0)
    if sd == 0.0:
        return SharpeInterval(sharpe=point, low=math.nan, high=math.nan, std_error=math.nan,
                              lags=q, n=n)
    phi = np.column_stack((dev, dev * dev - var))
    sigma = phi.T @ phi / n
    for j in range(1, q + 1):
        gamma = phi[j:].T @ phi[:-j] / n
        sigma += (1.0 - j / (q + 1.0)) * (gamma + gamma.T)
    grad = np.array([1.0 / sd, -mu / (2.0 * sd ** 3)])
    v = float(grad @ sigma @ grad)
    se = math.sqrt(max(v, 0.0) / n)
    return SharpeInterval(sharpe=point, low=point - z * se, high=point + z * se, std_error=se,
                          lags=q, n=n)
