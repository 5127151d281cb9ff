"""Offline fit of the regime HMM: Baum-Welch EM for a 1-D Gaussian HMM with a variance floor.

statsmodels' MarkovRegression (the filter's reference) fails on one-minute futures returns:
prices move in whole ticks, about 44 % of the E-mini's 1-minute returns are exactly zero, and
its optimizer drives one regime's variance to zero (a singular fit). EM with a floor on each
regime's variance (a fraction of the sample variance) stays well posed, is deterministic
(initialized from quantiles, no random restarts) and needs no extra dependency. The fitted
parameters feed the same online forward filter that is tested against statsmodels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from operators.domain.regime_filter import HmmParams, reorder_regimes, steady_state

F64 = npt.NDArray[np.float64]


def _normal_pdf(x: F64, mean: F64, var: F64) -> F64:
    d = x[:, None] - mean[None, :]
    out: F64 = np.exp(-0.5 * d * d / var[None, :]) / np.sqrt(2.0 * np.pi * var[None, :])
    return out


def fit_gaussian_hmm(
    returns: npt.ArrayLike,
    k: int = 3,
    *,
    scale: float = 1e4,
    max_iter: int = 500,
    tol: float = 1e-9,
    var_floor_frac: float = 0.05,
) -> HmmParams:
    """Fit means, variances and a row-stochastic transition matrix by EM; states ordered
    (bull, bear, sideways) for K=3. ``scale`` multiplies returns before fitting (basis points
    by default) and is kept in the params, so the filter takes raw returns."""
    y = scale * np.asarray(returns, dtype=np.float64)
    if y.ndim != 1 or y.size < 20 * k or not np.all(np.isfinite(y)):
        raise ValueError(f"need a 1-D finite series of at least {20 * k} returns")
    n = y.size
    total_var = float(np.var(y))
    if total_var <= 0:
        raise ValueError("returns have zero variance: nothing to fit")
    floor = var_floor_frac * total_var
    qs = np.linspace(0.1, 0.9, k)
    mean = np.quantile(y, qs)
    var = np.full(k, total_var)
    trans = np.full((k, k), 0.1 / (k - 1))
    np.fill_diagonal(trans, 0.9)
    init = np.full(k, 1.0 / k)
    prev_ll = -np.inf
    for _ in range(max_iter):
        b = np.maximum(_normal_pdf(y, mean, var), 1e-300)
        alpha = np.empty((n, k))
        c = np.empty(n)
        a = init * b[0]
        c[0] = a.sum()
        alpha[0] = a / c[0]
        for t in range(1, n):
            a = (alpha[t - 1] @ trans) * b[t]
            c[t] = a.sum()
            alpha[t] = a / c[t]
        beta = np.empty((n, k))
        beta[-1] = 1.0
        for t in range(n - 2, -1, -1):
            beta[t] = (trans @ (b[t + 1] * beta[t + 1])) / c[t + 1]
        gamma = alpha * beta
        gamma /= gamma.sum(axis=1, keepdims=True)
        xi = (alpha[:-1, :, None] * trans[None, :, :]
              * (b[1:] * beta[1:])[:, None, :]) / c[1:, None, None]
        ll = float(np.log(c).sum())
        w = gamma.sum(axis=0)
        mean = (gamma * y[:, None]).sum(axis=0) / w
        var = np.maximum((gamma * (y[:, None] - mean) ** 2).sum(axis=0) / w, floor)
        trans = xi.sum(axis=0)
        trans /= trans.sum(axis=1, keepdims=True)
        init = gamma[0]
        if abs(ll - prev_ll) < tol * max(1.0, abs(ll)):
            break
        prev_ll = ll
    rows = tuple(tuple(float(v) for v in row / row.sum()) for row in trans)
    params = HmmParams(means=tuple(float(v) for v in mean), variances=tuple(float(v) for v in var),
                       transition=rows, initial=steady_state(rows), scale=scale)
    return reorder_regimes(params) if k == 3 else params
