"""The online EWMA / GARCH(1,1) forecaster reproduces arch 8.0 on S&P 500 daily returns."""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from arch import arch_model
from arch.data import sp500
from arch.univariate import GARCH, ConstantMean, EWMAVariance, ZeroMean

from operators.domain.volatility import (
    VolConfig,
    VolForecaster,
    VolState,
    backcast,
    backcast_from_returns,
    fit_ewma,
    fit_garch,
)

RTOL = 1e-9


@pytest.fixture(scope="module")
def sp500_fractional() -> pd.Series:
    """Daily simple returns of the S&P 500 (fractions), 1999-2018."""
    close = sp500.load()["Adj Close"]
    return close.pct_change().dropna()


@pytest.fixture(scope="module")
def sp500_percent(sp500_fractional: pd.Series) -> pd.Series:
    """The same returns in percent, the scale arch is documented to fit best."""
    return 100 * sp500_fractional


def _online(
    forecaster: VolForecaster, xs: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], VolState]:
    state = forecaster.new_state()
    out = np.empty(xs.shape[0])
    for i, x in enumerate(xs.tolist()):
        state = forecaster.update(state, x)
        out[i] = state.sigma2
    return out, state


def _arch_last_forecast(res: object) -> float:
    fc = res.forecast(horizon=1, reindex=False)  # type: ignore[attr-defined]
    return float(fc.variance.iloc[-1, 0])


@pytest.mark.parametrize("mean", ["constant", "zero"])
def test_garch_online_recursion_reproduces_arch_fit(sp500_percent: pd.Series, mean: str) -> None:
    res = arch_model(
        sp500_percent, mean="Constant" if mean == "constant" else "Zero", vol="GARCH", p=1, q=1
    ).fit(disp="off")
    assert res.convergence_flag == 0
    y = sp500_percent.to_numpy()
    cfg = VolConfig(
        kind="garch",
        omega=float(res.params["omega"]),
        alpha=float(res.params["alpha[1]"]),
        beta=float(res.params["beta[1]"]),
        mu=float(res.params["mu"]) if mean == "constant" else 0.0,
        backcast=backcast_from_returns(y, scale=1.0, mean=mean),  # type: ignore[arg-type]
        scale=1.0,
    )
    ours, state = _online(VolForecaster(cfg), y)
    expected = np.asarray(res.conditional_volatility) ** 2
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=0)
    assert VolForecaster(cfg).forecast(state) == pytest.approx(_arch_last_forecast(res), rel=RTOL)


def test_ewma_zero_mean_reproduces_arch_riskmetrics(sp500_percent: pd.Series) -> None:
    res = ZeroMean(sp500_percent, volatility=EWMAVariance(0.94)).fit(disp="off")
    y = sp500_percent.to_numpy()
    cfg = VolConfig(kind="ewma", lam=0.94, backcast=backcast(y), scale=1.0)
    ours, state = _online(VolForecaster(cfg), y)
    np.testing.assert_allclose(ours, np.asarray(res.conditional_volatility) ** 2, rtol=RTOL)
    assert VolForecaster(cfg).forecast(state) == pytest.approx(_arch_last_forecast(res), rel=RTOL)


def test_ewma_constant_mean_backcast_centres_on_sample_mean_not_mu(
    sp500_percent: pd.Series,
) -> None:
    """arch's fix() with a mu far from the sample mean: the recursion uses y - mu, the backcast
    uses y - mean(y); matching both proves the centring rule."""
    mu = 0.5
    y = sp500_percent.to_numpy()
    res = ConstantMean(sp500_percent, volatility=EWMAVariance(0.94)).fix([mu])
    cfg = VolConfig(kind="ewma", lam=0.94, mu=mu, backcast=backcast(y - y.mean()), scale=1.0)
    ours, state = _online(VolForecaster(cfg), y)
    np.testing.assert_allclose(ours, np.asarray(res.conditional_volatility) ** 2, rtol=RTOL)
    assert VolForecaster(cfg).forecast(state) == pytest.approx(_arch_last_forecast(res), rel=RTOL)
    centred_on_mu = VolConfig(kind="ewma", lam=0.94, mu=mu, backcast=backcast(y - mu), scale=1.0)
    first = VolForecaster(centred_on_mu).update(VolState(), float(y[0])).sigma2
    assert abs(first / ours[0] - 1) > 1e-3


def test_fractional_returns_with_scale_100_forecast_in_fraction_units(
    sp500_fractional: pd.Series, sp500_percent: pd.Series
) -> None:
    """The operator feeds fractional returns; scale=100 makes the model arch's percent model and
    forecast() answers in fraction**2 while forecast_scaled() answers in percent**2."""
    params = fit_garch(sp500_fractional.to_numpy(), scale=100.0, mean="constant")
    res = arch_model(sp500_percent, mean="Constant", vol="GARCH", p=1, q=1).fit(disp="off")
    assert params.converged
    for fitted, theirs in [
        (params.mu, res.params["mu"]),
        (params.omega, res.params["omega"]),
        (params.alpha, res.params["alpha[1]"]),
        (params.beta, res.params["beta[1]"]),
        (params.loglikelihood, res.loglikelihood),
    ]:
        assert fitted == pytest.approx(float(theirs), rel=RTOL)
    forecaster = VolForecaster(params.to_config())
    ours, state = _online(forecaster, sp500_fractional.to_numpy())
    np.testing.assert_allclose(ours, np.asarray(res.conditional_volatility) ** 2, rtol=RTOL)
    last = _arch_last_forecast(res)
    assert forecaster.forecast_scaled(state) == pytest.approx(last, rel=RTOL)
    assert forecaster.forecast(state) == pytest.approx(last / 1e4, rel=RTOL)


def test_fit_ewma_constant_mean_matches_arch_mle(
    sp500_fractional: pd.Series, sp500_percent: pd.Series
) -> None:
    cfg = fit_ewma(sp500_fractional.to_numpy(), lam=0.94, scale=100.0, mean="constant")
    res = ConstantMean(sp500_percent, volatility=EWMAVariance(0.94)).fit(disp="off")
    assert cfg.mu == pytest.approx(float(res.params["mu"]), rel=1e-6)
    ours = VolForecaster(cfg).run(sp500_fractional.to_numpy())
    np.testing.assert_allclose(ours, np.asarray(res.conditional_volatility) ** 2, rtol=1e-6)


@pytest.mark.parametrize("n", [1, 10, 74, 75, 76, 500])
def test_backcast_equals_arch_backcast_for_short_and_long_samples(
    sp500_percent: pd.Series, n: int
) -> None:
    e = sp500_percent.to_numpy()[:n] - 0.03
    assert backcast(e) == pytest.approx(float(EWMAVariance(0.94).backcast(e)), rel=1e-12)
    assert backcast(e) == pytest.approx(float(GARCH(1, 0, 1).backcast(e)), rel=1e-12)


def test_snapshot_restored_state_continues_like_uninterrupted_run(
    sp500_fractional: pd.Series,
) -> None:
    xs = sp500_fractional.to_numpy()
    f = VolForecaster(fit_garch(xs[:2000]).to_config())
    full, _ = _online(f, xs)
    state = f.new_state()
    for x in xs[:1234].tolist():
        state = f.update(state, x)
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=VolState)
    tail = []
    for x in xs[1234:].tolist():
        state = f.update(state, x)
        tail.append(state.sigma2)
    assert np.array_equal(np.asarray(tail), full[1234:])


def test_future_returns_do_not_change_past_forecasts(sp500_fractional: pd.Series) -> None:
    xs = sp500_fractional.to_numpy()
    f = VolForecaster(fit_garch(xs[:2000]).to_config())
    base, _ = _online(f, xs)
    perturbed = xs.copy()
    perturbed[3000:] *= -3.0
    other, _ = _online(f, perturbed)
    assert np.array_equal(base[:3001], other[:3001])  # sigma2[t] uses returns up to t-1
    assert not np.array_equal(base[3001:], other[3001:])


def test_update_is_pure_and_new_state_forecasts_the_backcast() -> None:
    f = VolForecaster(VolConfig(kind="ewma", backcast=2.0, scale=1.0))
    s0 = f.new_state()
    assert f.forecast_scaled(s0) == pytest.approx(2.0, rel=1e-15)
    s1 = f.update(s0, 3.0)
    assert s0 == VolState() and s1.count == 1
    assert f.forecast_scaled(s1) == pytest.approx(0.94 * 2.0 + 0.06 * 9.0, rel=1e-15)
    with pytest.raises(ValueError, match="finite"):
        f.update(s1, float("nan"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "ewma", "lam": 1.0, "backcast": 1.0}, "lam"),
        ({"kind": "ewma", "lam": 0.0, "backcast": 1.0}, "lam"),
        ({"kind": "garch", "omega": 0.0, "alpha": 0.1, "beta": 0.8, "backcast": 1.0}, "omega"),
        ({"kind": "garch", "omega": 0.1, "alpha": -0.1, "beta": 0.8, "backcast": 1.0}, ">= 0"),
        ({"kind": "garch", "omega": 0.1, "alpha": 0.3, "beta": 0.7, "backcast": 1.0}, "< 1"),
        ({"kind": "ewma", "backcast": 0.0}, "backcast"),
        ({"kind": "ewma", "backcast": 1.0, "scale": -1.0}, "scale"),
        ({"kind": "ewma", "backcast": float("inf")}, "finite"),
        ({"kind": "egarch", "backcast": 1.0}, "kind"),
    ],
)
def test_invalid_config_is_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VolConfig(**kwargs)  # type: ignore[arg-type]
