"""Sharpe, Sortino, drawdown, CAGR and volatility equal empyrical's, offline and online."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import empyrical
import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from arch.data import sp500

from operators.domain.performance import (
    PerfConfig,
    PerformanceTracker,
    PerfState,
    annual_return,
    annual_volatility,
    downside_risk,
    max_drawdown,
    returns_from_equity,
    sharpe_ratio,
    sortino_ratio,
)

RTOL = 1e-9
Returns = npt.NDArray[np.float64]
STATS = ("sharpe", "sortino", "downside_risk", "max_drawdown", "annual_return", "annual_vol")


@pytest.fixture(scope="module")
def sp500_close() -> Returns:
    close: Returns = sp500.load()["Adj Close"].to_numpy(dtype=np.float64)
    return close


@pytest.fixture(scope="module")
def emini_minute_close(emini_ticks_path: Path) -> Returns:
    """One-minute closes of the E-mini trade sample: last trade price per minute (CME time)."""
    ticks = pd.read_csv(emini_ticks_path, usecols=["DateTime", "Price"])
    ticks.index = pd.DatetimeIndex(pd.to_datetime(ticks.pop("DateTime")))
    close: Returns = ticks["Price"].resample("1min").last().dropna().to_numpy(dtype=np.float64)
    assert close.shape[0] > 2000
    return close


def _empyrical(r: Returns, ppy: float, rf: float, req: float) -> list[float]:
    return [
        float(empyrical.sharpe_ratio(r, risk_free=rf, annualization=ppy)),
        float(empyrical.sortino_ratio(r, required_return=req, annualization=ppy)),
        float(empyrical.downside_risk(r, required_return=req, annualization=ppy)),
        float(empyrical.max_drawdown(r)),
        float(empyrical.annual_return(r, annualization=ppy)),
        float(empyrical.annual_volatility(r, annualization=ppy)),
    ]


def _offline(r: Returns, ppy: float, rf: float, req: float) -> list[float]:
    return [
        sharpe_ratio(r, ppy, risk_free=rf),
        sortino_ratio(r, ppy, required_return=req),
        downside_risk(r, ppy, required_return=req),
        max_drawdown(r),
        annual_return(r, ppy),
        annual_volatility(r, ppy),
    ]


def _online(r: Returns, ppy: float, rf: float, req: float) -> list[float]:
    tracker = PerformanceTracker(
        PerfConfig(periods_per_year=ppy, risk_free=rf, required_return=req)
    )
    s = tracker.summary(tracker.run(r))
    assert s.n == r.shape[0]
    return [
        s.sharpe,
        s.sortino,
        s.downside_risk,
        s.max_drawdown,
        s.annual_return,
        s.annual_volatility,
    ]


Impl = Callable[[Returns, float, float, float], list[float]]
IMPLS = [pytest.param(_offline, id="offline"), pytest.param(_online, id="online")]


def _assert_same(ours: list[float], theirs: list[float]) -> None:
    for name, a, b in zip(STATS, ours, theirs, strict=True):
        if math.isnan(b) or math.isinf(b):
            assert (math.isnan(a) and math.isnan(b)) or a == b, f"{name}: {a} != {b}"
        else:
            assert a == pytest.approx(b, rel=RTOL, abs=1e-15), f"{name}: {a} != {b}"


def test_returns_from_equity_equals_empyrical_simple_returns(
    sp500_close: Returns, emini_minute_close: Returns
) -> None:
    for close in (sp500_close, emini_minute_close):
        expected = np.asarray(empyrical.simple_returns(close))
        assert np.array_equal(returns_from_equity(close), expected)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("ppy", "rf", "req"), [(252.0, 0.0, 0.0), (252.0, 1e-4, 2e-4), (52.0, 0.0, -1e-3)]
)
def test_sp500_daily_statistics_equal_empyrical(
    sp500_close: Returns, impl: Impl, ppy: float, rf: float, req: float
) -> None:
    r = returns_from_equity(sp500_close)
    _assert_same(impl(r, ppy, rf, req), _empyrical(r, ppy, rf, req))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ppy", [252.0 * 390, 252.0 * 1380, 98_280.5])
def test_emini_one_minute_statistics_equal_empyrical(
    emini_minute_close: Returns, impl: Impl, ppy: float
) -> None:
    """Minute returns: mostly tiny, many exactly zero, a mean near zero — a hard Sharpe case."""
    r = returns_from_equity(emini_minute_close)
    assert np.count_nonzero(r == 0.0) > 100
    _assert_same(impl(r, ppy, 0.0, 0.0), _empyrical(r, ppy, 0.0, 0.0))
    _assert_same(impl(r, ppy, 1e-6, -1e-6), _empyrical(r, ppy, 1e-6, -1e-6))


EDGE_CASES = {
    "empty": [],
    "single": [0.013],
    "two": [0.01, -0.02],
    "all_zero": [0.0] * 20,
    "constant_positive": [0.01] * 7,
    "constant_negative": [-0.004] * 7,
    "never_under_water": [0.01, 0.02, 0.005, 0.0],
    "total_loss": [0.1, -1.0, 0.2],
    "deep_loss_negative_cagr_base": [-0.5, -0.6, -1.5, 0.1],
    "all_nan": [math.nan] * 4,
    "one_present_among_nan": [math.nan, 0.02, math.nan],
    "nan_first_and_inside": [math.nan, 0.01, -0.03, math.nan, 0.02, 0.015],
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_follow_empyrical_conventions(impl: Impl, case: str) -> None:
    r = np.asarray(EDGE_CASES[case], dtype=np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empyrical's empty-slice and power warnings
        expected = _empyrical(r, 252.0, 0.0, 0.0)
    _assert_same(impl(r, 252.0, 0.0, 0.0), expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_sp500_with_missing_days_equals_empyrical(sp500_close: Returns, impl: Impl) -> None:
    r = returns_from_equity(sp500_close)
    r[::17] = math.nan
    _assert_same(impl(r, 252.0, 1e-4, 0.0), _empyrical(r, 252.0, 1e-4, 0.0))


def test_conventions_stated_in_the_docstring_hold() -> None:
    assert math.isnan(sharpe_ratio([0.0] * 5))  # 0 / 0
    assert sharpe_ratio([0.01] * 5) == math.inf  # zero dispersion, positive mean
    assert sortino_ratio([0.01, 0.02]) == math.inf  # no downside
    assert max_drawdown([0.01, 0.02]) == 0.0
    assert max_drawdown([-0.1]) == pytest.approx(-0.1, rel=1e-15)  # the start is a peak
    assert math.isnan(annual_volatility([0.01]))
    assert math.isnan(max_drawdown([]))


def test_online_snapshot_restored_state_continues_like_uninterrupted_run(
    sp500_close: Returns,
) -> None:
    r = returns_from_equity(sp500_close)
    tracker = PerformanceTracker(PerfConfig(periods_per_year=252.0, required_return=1e-4))
    full = tracker.run(r)
    state = tracker.run(r[:2500])
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=PerfState)
    for x in r[2500:].tolist():
        state = tracker.update(state, x)
    assert state == full


@pytest.mark.parametrize("ppy", [0.0, -252.0, math.inf, math.nan])
def test_invalid_annualization_is_rejected(ppy: float) -> None:
    with pytest.raises(ValueError, match="periods_per_year"):
        PerfConfig(periods_per_year=ppy)
    with pytest.raises(ValueError, match="periods_per_year"):
        sharpe_ratio([0.01, 0.02], ppy)
