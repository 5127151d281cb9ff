"""Regime blend and size on the real E-mini replay, against offline recomputation.

The replay is the shared ``base`` run of ``tests/_replay_fixture.py`` (walk-forward bundle,
default limits). The regime posterior, the volatility forecast and the sizing arithmetic are
recomputed offline from the ``features`` topic and the bundle's ``strategy.json``: with the
operators' own classes run offline (the brief of the contract), and with independent numpy /
``arch`` recursions.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import numpy.typing as npt
import pytest
from arch.univariate import GARCH, EWMAVariance

from operators.contract import SimpleContext
from operators.domain.regime_filter import RegimeFilter
from operators.domain.volatility import VolConfig, VolForecaster
from operators.infer import decision_id_for
from operators.regime_blend import REGIMES, BlendConfig, RegimeBlend, validate_weights
from operators.size import SizeConfig
from tests._replay_fixture import Replay, ReplayPool, pool_fixture
from topics.messages import FeatureVector, OrderIntent, Prediction, Signal

replays = pool_fixture()
Array = npt.NDArray[np.float64]

ES_MULTIPLIER = 50.0
EQUITY = 1_000_000.0
DEFAULTS = SizeConfig(vol=VolConfig(backcast=1.0))  # the sizing defaults


@pytest.fixture(scope="module")
def base(replays: ReplayPool) -> Replay:
    return replays.get("base")


# ------------------------------------------------------------------------------ weights


def test_blend_weights_are_nonnegative_and_sum_to_one_on_every_decision(base: Replay) -> None:
    signals: list[Signal] = base.topic("signals")
    assert len(signals) == len(base.topic("features"))
    blended = 0
    for s in signals:
        if s.fallback == "warmup":
            assert s.weights == {} and s.signal == 0.0
            continue
        assert s.fallback is None, f"{s.decision_id}: unexpected fallback {s.fallback}"
        # the three regime specialists and the online challenger (on by default); its share
        # is min(cap, (1 + hit) / 4) with hit in [-1, 1]: at most half, even once promoted
        assert set(s.weights) == {f"{r}_specialist" for r in (*REGIMES, "online")}
        assert s.weights["online_specialist"] <= 0.5
        assert all(w >= 0.0 for w in s.weights.values())
        assert math.fsum(s.weights.values()) == pytest.approx(1.0, abs=1e-12)
        assert -1.0 <= s.signal <= 1.0 and s.signal == pytest.approx(2 * s.prob_up - 1, abs=1e-15)
        blended += 1
    assert blended > 2000


@pytest.mark.parametrize(("raw", "reason"), [
    ([0.2, math.nan, 0.3], "non_finite"),
    ([0.2, math.inf, 0.3], "non_finite"),
    ([0.5, -0.1, 0.6], "negative"),
    ([0.0, 0.0, 0.0], "zero_sum"),
])
def test_unusable_raw_weights_fall_back_to_equal_weights_with_a_reason(
        raw: list[float], reason: str) -> None:
    weights, why = validate_weights(raw)
    assert weights == [1 / 3, 1 / 3, 1 / 3]
    assert why == reason


def test_usable_raw_weights_are_normalized_without_a_fallback() -> None:
    weights, why = validate_weights([0.2, 0.0, 0.6])
    assert why is None
    assert weights == pytest.approx([0.25, 0.0, 0.75], abs=1e-15)


def _one_decision(base: Replay) -> tuple[FeatureVector, list[Prediction]]:
    preds: dict[str, list[Prediction]] = defaultdict(list)
    for p in base.topic("predictions"):
        if p.model != "online":  # the frozen specialists only: the blend below has no learner
            preds[p.decision_id].append(p)
    fv = next(fv for fv in base.topic("features")
              if fv.complete and fv.ret_1 and len(preds[decision_id_for(fv)]) == 3)
    return fv, preds[decision_id_for(fv)]


@pytest.mark.parametrize(("perf", "reason"), [([-1.0, -1.0, -1.0], "zero_sum"),
                                              ([0.0, math.nan, 0.0], "non_finite")])
def test_the_blend_counts_each_fallback_and_trades_equal_weights(
        base: Replay, replays: ReplayPool, perf: list[float], reason: str) -> None:
    """A specialist record of -1 everywhere (every call wrong) zeroes every raw weight."""
    fv, preds = _one_decision(base)
    blend = RegimeBlend(BlendConfig(hmm=replays.bundle.hmm))
    state = blend.new_state(fv.symbol)
    state.perf = list(perf)
    emits = []
    events: list[FeatureVector | Prediction] = [fv, *preds]
    for event in events:
        state, out = blend.process(state, event, SimpleContext())
        emits += out
    (signal,) = [e.value for e in emits if e.topic == "signals"]
    assert isinstance(signal, Signal)
    assert signal.fallback == reason
    assert state.fallbacks == {reason: 1}
    assert list(signal.weights.values()) == [1 / 3] * 3
    assert signal.prob_up == pytest.approx(sum(p.prob_up for p in preds) / 3, abs=1e-15)


# ------------------------------------------------------------------------------ regimes


def _forward_filter(means: Array, variances: Array, trans: Array, initial: Array, ys: Array
                    ) -> Array:
    """The HMM forward recursion in numpy: predict with the transition, weigh by the density."""
    p = initial.copy()
    out = np.empty((len(ys), len(p)))
    for t, y in enumerate(ys):
        pred = p @ trans
        dens = np.exp(-0.5 * (y - means) ** 2 / variances) / np.sqrt(2 * np.pi * variances)
        post = pred * dens
        p = post / post.sum()
        out[t] = p
    return out


def test_regime_probabilities_equal_the_filter_run_offline_on_the_features(
        base: Replay, replays: ReplayPool) -> None:
    hmm = replays.bundle.hmm
    fvs: list[FeatureVector] = base.topic("features")
    regimes = base.topic("regimes")
    assert [r.ts_event for r in regimes] == [fv.ts_event for fv in fvs]
    rets = np.array([fv.ret_1 for fv in fvs if fv.ret_1 is not None])
    offline, _ = RegimeFilter(hmm).run(rets)
    numpy_ref = _forward_filter(np.array(hmm.means), np.array(hmm.variances),
                                np.array(hmm.transition), np.array(hmm.initial),
                                hmm.scale * rets)
    probs = np.array(hmm.initial)
    i = 0
    for fv, r in zip(fvs, regimes, strict=True):
        if fv.ret_1 is not None:
            probs = offline[i]
            np.testing.assert_allclose(probs, numpy_ref[i], rtol=1e-9, atol=1e-12)
            i += 1
        got = (r.prob_bull, r.prob_bear, r.prob_sideways)
        assert got == tuple(probs.tolist())
        assert math.fsum(got) == pytest.approx(1.0, abs=1e-12)
        assert r.entropy == pytest.approx(-sum(p * math.log(p) for p in got if p > 0), abs=1e-12)
    assert i == len(rets) > 2000


# ------------------------------------------------------------------------------ size


def _bar_returns_through(base: Replay) -> tuple[list[float], dict[str, int]]:
    """Every bar's return in stream order, and per decision how many were seen by then."""
    rets: list[float] = []
    seen: dict[str, int] = {}
    for fv in base.topic("features"):
        if fv.ret_1 is not None:
            rets.append(fv.ret_1)
        seen[decision_id_for(fv)] = len(rets)
    return rets, seen


def test_sizing_sigma_equals_the_forecaster_and_arch_run_offline(base: Replay,
                                                                replays: ReplayPool) -> None:
    vol = replays.bundle.vol
    rets, seen = _bar_returns_through(base)
    fc = VolForecaster(vol)
    state = fc.new_state()
    sigma_after = [math.sqrt(fc.forecast(state))]
    for r in rets:
        state = fc.update(state, r)
        sigma_after.append(math.sqrt(fc.forecast(state)))
    # arch's own recursion on the same residuals, with the bundle's backcast
    e = vol.scale * np.asarray(rets) - vol.mu
    omega, alpha, beta = vol.coefficients
    n = len(e)
    sigma2 = np.empty(n)
    bounds = np.tile([0.0, np.inf], (n, 1))
    if vol.kind == "garch":
        GARCH().compute_variance(np.array([omega, alpha, beta]), e, sigma2, vol.backcast, bounds)
    else:
        EWMAVariance(vol.lam).compute_variance(np.array([]), e, sigma2, vol.backcast, bounds)
    arch_next = np.sqrt(omega + alpha * e**2 + beta * sigma2) / vol.scale
    intents: list[OrderIntent] = base.topic("orders.intents")
    assert len(intents) > 1000
    for it in intents:
        k = seen[it.decision_id]
        sigma = it.sizing["sigma_forecast"]
        assert sigma == sigma_after[k]
        assert sigma == pytest.approx(arch_next[k - 1], rel=1e-12)


def test_targets_stay_within_max_fraction_of_equity_in_whole_lots(base: Replay) -> None:
    cap = DEFAULTS.max_fraction * EQUITY
    intents: list[OrderIntent] = base.topic("orders.intents")
    prev = 0.0
    at_cap = 0
    banded = 0
    for it in intents:
        t = it.target_position
        assert t == round(t), f"{it.decision_id}: {t} is not a whole lot"
        assert abs(t) * it.reference_price * ES_MULTIPLIER <= cap
        assert abs(it.sizing["fraction"]) <= DEFAULTS.max_fraction
        at_cap += abs(it.sizing["fraction"]) == DEFAULTS.max_fraction
        # rounded toward zero from the raw contracts, never up
        raw = it.sizing["contracts_raw"]
        assert raw == pytest.approx(it.sizing["fraction"] * EQUITY
                                    / (it.reference_price * ES_MULTIPLIER), rel=1e-12)
        ideal = math.trunc(raw + math.copysign(1e-9, raw))
        assert it.sizing["ideal_position"] == ideal
        # the rebalance band keeps the previous target for a move of one lot on the same side
        cap_lots = math.trunc(DEFAULTS.max_fraction * EQUITY / (it.reference_price * ES_MULTIPLIER)
                              + 1e-9)
        kept = (abs(ideal - prev) <= DEFAULTS.rebalance_band_lots and ideal * prev > 0
                and abs(prev) <= cap_lots)
        assert t == (prev if kept else ideal)
        banded += kept and ideal != prev
        assert (it.quantity, it.side) == (abs(t - prev), "BUY" if t >= prev else "SELL")
        prev = t
    assert max(abs(it.target_position) for it in intents) >= 2
    assert at_cap > 0, "the max_fraction cap never bound"
    assert banded > 0, "the rebalance band never held a target"


def test_the_fraction_is_capped_kelly_scaled_by_regime_and_confidence(base: Replay) -> None:
    """Recompute each target from the signal, sigma and the documented formula."""
    signals = {s.decision_id: s for s in base.topic("signals")}
    bar_target = DEFAULTS.target_vol_annual / math.sqrt(DEFAULTS.periods_per_year)
    for it in base.topic("orders.intents"):
        s = signals[it.decision_id]
        sigma = it.sizing["sigma_forecast"]
        kelly = s.signal * math.sqrt(2 / math.pi) / sigma
        frac = math.copysign(min(DEFAULTS.kelly_fraction * abs(kelly), bar_target / sigma), kelly)
        scale = math.fsum(p * DEFAULTS.regime_scale.get(r, 1.0)
                          for r, p in s.regime_probs.items())
        frac *= scale * s.confidence
        frac = max(-DEFAULTS.max_fraction, min(DEFAULTS.max_fraction, frac))
        assert it.sizing["fraction"] == pytest.approx(frac, rel=1e-12, abs=1e-15)
        assert it.sizing["confidence"] == s.confidence
        assert it.reference_price == s.close
