"""The online Gaussian-HMM forward filter reproduces statsmodels' MarkovRegression filter."""

from __future__ import annotations

import math
import warnings
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from arch.data import sp500
from scipy.stats import entropy as scipy_entropy
from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

from operators.domain.regime_filter import (
    HmmParams,
    HmmState,
    RegimeFilter,
    entropy,
    fit_regimes,
    label_regimes,
    params_from_statsmodels,
    reorder_regimes,
    steady_state,
)

ATOL = 1e-8
N_DAYS = 1000


@pytest.fixture(scope="module")
def sp500_fractional() -> npt.NDArray[np.float64]:
    """The last 1000 daily simple returns of the S&P 500 (to 2018-12-31)."""
    close = sp500.load()["Adj Close"]
    returns: npt.NDArray[np.float64] = close.pct_change().dropna().to_numpy()[-N_DAYS:]
    return returns


@pytest.fixture(scope="module")
def sp500_percent(sp500_fractional: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 100 * sp500_fractional


@pytest.fixture(scope="module")
def fitted(sp500_percent: npt.NDArray[np.float64]) -> dict[int, tuple[Any, Any]]:
    """statsmodels' own fits for 2 and 3 regimes, made once."""
    out = {}
    for k in (2, 3):
        model = MarkovRegression(sp500_percent, k_regimes=k, trend="c", switching_variance=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = model.fit(disp=False)
        assert res.mle_retvals["converged"]
        out[k] = (model, res)
    return out


@pytest.mark.parametrize("k", [2, 3])
def test_online_filter_reproduces_statsmodels_filtered_probabilities(
    sp500_percent: npt.NDArray[np.float64], fitted: dict[int, tuple[Any, Any]], k: int
) -> None:
    model, res = fitted[k]
    params = params_from_statsmodels(model, res.params, scale=1.0)
    f = RegimeFilter(params)
    state = f.new_state()
    expected = np.asarray(res.filtered_marginal_probabilities)
    assert expected.shape == (N_DAYS, k)
    for t, x in enumerate(sp500_percent.tolist()):
        state, probs = f.filter_step(state, x)
        np.testing.assert_allclose(probs, expected[t], rtol=0, atol=ATOL)
    assert state.count == N_DAYS
    assert state.loglik == pytest.approx(float(res.llf), rel=1e-9)


@pytest.mark.parametrize("k", [2, 3])
def test_transition_is_row_stochastic_transpose_of_statsmodels(
    fitted: dict[int, tuple[Any, Any]], k: int
) -> None:
    model, res = fitted[k]
    params = params_from_statsmodels(model, res.params, scale=1.0)
    sm = model.regime_transition_matrix(res.params)[:, :, 0]  # [i, j] = P(S_t=i | S_t-1=j)
    for i in range(k):
        for j in range(k):
            assert params.transition[i][j] == sm[j, i]
        assert math.fsum(params.transition[i]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(params.initial, model.initial_probabilities(res.params), atol=0)
    np.testing.assert_allclose(steady_state(params.transition), params.initial, atol=1e-12)


def test_fit_regimes_scales_fractional_returns_like_a_percent_fit(
    sp500_fractional: npt.NDArray[np.float64], fitted: dict[int, tuple[Any, Any]]
) -> None:
    model, res = fitted[2]
    ours = fit_regimes(sp500_fractional, k=2, scale=100.0)
    direct = params_from_statsmodels(model, res.params, scale=100.0)
    assert ours.scale == 100.0
    np.testing.assert_allclose(ours.means, direct.means, rtol=1e-9)
    np.testing.assert_allclose(ours.variances, direct.variances, rtol=1e-9)
    np.testing.assert_allclose(ours.transition, direct.transition, rtol=1e-9)
    probs, _ = RegimeFilter(ours).run(sp500_fractional)
    np.testing.assert_allclose(probs, res.filtered_marginal_probabilities, atol=ATOL)


def test_crash_sized_observations_match_statsmodels(
    sp500_percent: npt.NDArray[np.float64], fitted: dict[int, tuple[Any, Any]]
) -> None:
    """A -20 % day (October 1987 size) and a +15 % rebound, far outside the fitted regimes."""
    model, res = fitted[3]
    xs = sp500_percent.copy()
    xs[500], xs[501] = -20.0, 15.0
    shocked = MarkovRegression(xs, k_regimes=3, trend="c", switching_variance=True)
    expected = shocked.filter(res.params).filtered_marginal_probabilities
    probs, _ = RegimeFilter(params_from_statsmodels(model, res.params, scale=1.0)).run(xs)
    np.testing.assert_allclose(probs, expected, atol=ATOL)


def test_observation_beyond_double_underflow_stays_finite_where_statsmodels_gives_nan(
    sp500_percent: npt.NDArray[np.float64], fitted: dict[int, tuple[Any, Any]]
) -> None:
    """At -60 every regime's density underflows (exp(< -745)): statsmodels' filter turns
    non-finite (inf at the shock, NaN after it); ours factors the max out in log space and puts
    the mass on the widest regime."""
    model, res = fitted[3]
    xs = sp500_percent.copy()
    xs[500] = -60.0
    shocked = MarkovRegression(xs, k_regimes=3, trend="c", switching_variance=True)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = shocked.filter(res.params).filtered_marginal_probabilities
    params = params_from_statsmodels(model, res.params, scale=1.0)
    probs, state = RegimeFilter(params).run(xs)
    assert not np.isfinite(expected[500:]).any()
    np.testing.assert_allclose(probs[:500], expected[:500], atol=ATOL)
    assert np.all(np.isfinite(probs)) and math.isfinite(state.loglik)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    widest = int(np.argmax(params.variances))
    assert probs[500, widest] > 1 - 1e-12


def test_filter_is_causal_future_perturbation_leaves_past_unchanged(
    sp500_percent: npt.NDArray[np.float64], fitted: dict[int, tuple[Any, Any]]
) -> None:
    model, res = fitted[3]
    f = RegimeFilter(params_from_statsmodels(model, res.params, scale=1.0))
    base, _ = f.run(sp500_percent)
    perturbed = sp500_percent.copy()
    perturbed[700:] = -5.0 * perturbed[700:] + 3.0
    other, _ = f.run(perturbed)
    assert np.array_equal(base[:700], other[:700])
    assert not np.allclose(base[700:], other[700:])


def test_snapshot_restored_state_continues_like_uninterrupted_run(
    sp500_percent: npt.NDArray[np.float64], fitted: dict[int, tuple[Any, Any]]
) -> None:
    model, res = fitted[3]
    f = RegimeFilter(params_from_statsmodels(model, res.params, scale=1.0))
    full, full_state = f.run(sp500_percent)
    state = f.new_state()
    for x in sp500_percent[:437].tolist():
        state, _ = f.filter_step(state, x)
    blob = msgspec.msgpack.encode(state)
    state = msgspec.msgpack.decode(blob, type=HmmState)
    tail = []
    for x in sp500_percent[437:].tolist():
        state, probs = f.filter_step(state, x)
        tail.append(probs)
    assert np.array_equal(np.asarray(tail), full[437:])
    assert state == full_state


def test_reordered_params_filter_to_permuted_probabilities_in_bull_bear_sideways_order(
    sp500_percent: npt.NDArray[np.float64], fitted: dict[int, tuple[Any, Any]]
) -> None:
    model, res = fitted[3]
    params = params_from_statsmodels(model, res.params, scale=1.0)
    labels = label_regimes(params)
    assert sorted(labels) == ["bear", "bull", "sideways"]
    assert params.means[labels.index("bull")] == max(params.means)
    assert params.means[labels.index("bear")] == min(params.means)
    ordered = reorder_regimes(params)
    assert label_regimes(ordered) == ("bull", "bear", "sideways")
    perm = [labels.index(name) for name in ("bull", "bear", "sideways")]
    original, s1 = RegimeFilter(params).run(sp500_percent)
    permuted, s2 = RegimeFilter(ordered).run(sp500_percent)
    np.testing.assert_allclose(permuted, original[:, perm], atol=1e-12)
    assert s2.loglik == pytest.approx(s1.loglik, rel=1e-12)


def _params(means: tuple[float, ...], variances: tuple[float, ...]) -> HmmParams:
    k = len(means)
    row = tuple([1.0 / k] * k)
    return HmmParams(means=means, variances=variances, transition=tuple([row] * k), initial=row)


def test_labels_follow_mean_rank_with_deterministic_ties() -> None:
    assert label_regimes(_params((0.0, 0.1, -0.2), (1.0, 1.0, 1.0))) == (
        "sideways",
        "bull",
        "bear",
    )
    assert label_regimes(_params((-1.0, 1.0), (1.0, 1.0))) == ("bear", "bull")
    # equal means: the higher-variance state is the bear; full ties fall back to index order
    assert label_regimes(_params((0.0, 0.0, 0.0), (1.0, 4.0, 2.0))) == (
        "bull",
        "bear",
        "sideways",
    )
    assert label_regimes(_params((0.0, 0.0), (1.0, 1.0))) == ("bear", "bull")
    with pytest.raises(ValueError, match="2 or 3"):
        label_regimes(_params((0.0, 1.0, 2.0, 3.0), (1.0, 1.0, 1.0, 1.0)))


def test_entropy_is_natural_log_shannon_entropy() -> None:
    for probs in [(0.2, 0.3, 0.5), (1.0, 0.0, 0.0), (1 / 3, 1 / 3, 1 / 3), (0.9, 0.1)]:
        assert entropy(probs) == pytest.approx(float(scipy_entropy(probs)), abs=1e-15)
    assert entropy((1.0, 0.0, 0.0)) == 0.0
    assert entropy((1 / 3, 1 / 3, 1 / 3)) == pytest.approx(math.log(3), rel=1e-15)


def test_new_state_starts_from_initial_and_first_step_propagates_it() -> None:
    params = HmmParams(
        means=(0.0, 0.0),
        variances=(1.0, 1.0),
        transition=((0.9, 0.1), (0.3, 0.7)),
        initial=(1.0, 0.0),
    )
    f = RegimeFilter(params)
    assert f.new_state().probs == (1.0, 0.0)
    # identical emissions: the posterior is the prediction initial @ transition
    _, probs = f.filter_step(f.new_state(), 0.25)
    assert probs == pytest.approx((0.9, 0.1), abs=1e-15)
    with pytest.raises(ValueError, match="finite"):
        f.filter_step(f.new_state(), float("nan"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variances": (1.0, 0.0)}, "variances"),
        ({"variances": (1.0, -1.0)}, "variances"),
        ({"transition": ((0.9, 0.2), (0.5, 0.5))}, "sum to 1"),
        ({"transition": ((0.9, 0.1), (0.5, 0.5), (0.5, 0.5))}, "entries"),
        ({"transition": ((1.1, -0.1), (0.5, 0.5))}, r"\[0, 1\]"),
        ({"initial": (0.5, 0.6)}, "sum to 1"),
        ({"means": (0.0, float("nan"))}, "finite"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_invalid_params_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "means": (0.0, 1.0),
        "variances": (1.0, 2.0),
        "transition": ((0.9, 0.1), (0.2, 0.8)),
        "initial": (0.5, 0.5),
    }
    with pytest.raises(ValueError, match=message):
        HmmParams(**(base | kwargs))
