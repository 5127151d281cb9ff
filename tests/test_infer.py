"""The infer operator on real E-mini 1-minute feature vectors: determinism, A/B arms,
feature-version guard, warm-up, batch path, linear explanations, providers and config checks."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import numpy as np
import onnxruntime as ort
import pytest

from jobs.loaders.registry import ModelEntry, Registry
from jobs.topology import infer_operator
from jobs.training import TrainParams, fit_specialist, forward_returns, prepare_training_set
from operators.contract import SimpleContext, stable_bucket
from operators.infer import (
    CPU,
    FeatureVersionError,
    Infer,
    InferConfig,
    InferState,
    arm_for,
    decision_id_for,
    linear_contributions,
)
from tests.test_training import (
    FEATURE_VERSION,
    emini_features,
    regime_weights_for,
    to_vectors,
    train_window,
)
from topics.messages import FeatureVector, Prediction
from topics.serde import encode_many

TRAIN_END = 1500
PARAMS = TrainParams(gbm_n_estimators=30)
LINEAR = ("bull_linear", "bear_linear", "sideways_linear")
GBM = ("bull_gbm", "bear_gbm", "sideways_gbm")


@pytest.fixture(scope="module")
def emini(emini_ticks_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return emini_features(emini_ticks_path)


@pytest.fixture(scope="module")
def registry_dir(emini: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("infer-reg")
    train_window(emini, 0, TRAIN_END, out, params=PARAMS)
    return out


@pytest.fixture(scope="module")
def vectors(emini: tuple) -> list[FeatureVector]:
    """The whole session as the features topic would carry it, warm-up included."""
    return to_vectors(*emini, symbol="ES")


def serving(registry_dir: Path, arm_a: tuple[str, ...], arm_b: tuple[str, ...] = (),
            split: float = 0.0) -> Infer:
    """``infer`` over the registry as a host builds it, opened (the test is its host)."""
    op = infer_operator(registry_dir, arm_a, arm_b, split)
    op.open()
    return op


def ab_serving(registry_dir: Path, split: float = 0.3) -> Infer:
    return serving(registry_dir, LINEAR, GBM, split)


def run(op: Infer, vectors: list[FeatureVector]) -> tuple[InferState, list[Prediction]]:
    state = op.new_state("ES")
    out: list[Prediction] = []
    for fv in vectors:
        state, emits = op.process(state, fv, SimpleContext())
        for e in emits:
            assert e.topic == "predictions" and e.key == fv.symbol
            assert isinstance(e.value, Prediction)
            out.append(e.value)
    return state, out


def test_two_operator_instances_emit_byte_identical_predictions(
    registry_dir: Path, vectors: list[FeatureVector]
) -> None:
    _, first = run(ab_serving(registry_dir), vectors)
    _, second = run(ab_serving(registry_dir), vectors)
    assert len(first) > 0
    assert encode_many(list(first)) == encode_many(list(second))


def test_each_decision_gets_a_stable_id_and_one_prediction_per_model_of_its_arm(
    registry_dir: Path, vectors: list[FeatureVector]
) -> None:
    op = ab_serving(registry_dir, 0.3)
    _, preds = run(op, vectors)
    by_decision: dict[str, list[Prediction]] = {}
    for p in preds:
        by_decision.setdefault(p.decision_id, []).append(p)
    complete = [fv for fv in vectors if fv.complete]
    assert len(by_decision) == len(complete)  # one decision per complete vector, ids unique
    for fv in complete:
        did = decision_id_for(fv)
        assert did.startswith(f"ES-{fv.ts_event}-") and len(did.rsplit("-", 1)[1]) == 12
        group = by_decision[did]
        variant = "B" if stable_bucket(did, 10_000) < 3_000 else "A"
        assert {p.variant for p in group} == {variant}
        assert tuple(p.model for p in group) == (GBM if variant == "B" else LINEAR)
        for p in group:
            assert p.ts_event == fv.ts_event
            assert p.model_version == op.models[p.model].version
            assert p.regime == op.models[p.model].regime == p.model.split("_")[0]
            assert (p.contributions is None) == (p.model in GBM)
            assert 0.0 < p.prob_up < 1.0 and p.score == 2.0 * p.prob_up - 1.0
    # the id does not depend on the close or the feature values, only on its causes
    fv = complete[0]
    assert decision_id_for(msgspec.structs.replace(fv, close=fv.close + 1)) == decision_id_for(fv)
    assert decision_id_for(msgspec.structs.replace(fv, feature_version="x")) != decision_id_for(fv)


def test_ab_split_proportion_is_close_to_the_configured_fraction() -> None:
    n = 40_000
    ids = [f"ES-{1_378_000_000_000_000_000 + i * 60_000_000_000}-{i:012x}" for i in range(n)]
    for split in (0.0, 0.1, 0.5, 0.9, 1.0):
        share_b = sum(arm_for(d, split) == "B" for d in ids) / n
        # binomial sd <= sqrt(0.25 / 40000) = 0.0025: 0.0125 is 5 sd
        assert abs(share_b - split) < 0.0125, (split, share_b)


def test_predictions_equal_onnxruntime_run_directly_on_the_model_files(
    registry_dir: Path, vectors: list[FeatureVector]
) -> None:
    op = ab_serving(registry_dir, 0.5)
    _, preds = run(op, vectors[-200:])
    sessions = {
        n: ort.InferenceSession(str(registry_dir / e.path), providers=[CPU])
        for n, e in op.models.items()
    }
    rows = {fv.ts_event: np.array([fv.values()], dtype=np.float32) for fv in vectors[-200:]}
    for p in preds:
        expected = sessions[p.model].run(["probabilities"], {"features": rows[p.ts_event]})[0]
        assert p.prob_up == pytest.approx(float(expected[0, 1]), abs=1e-6)


def test_a_feature_version_mismatch_raises_at_the_first_event(
    registry_dir: Path, vectors: list[FeatureVector]
) -> None:
    op = ab_serving(registry_dir)
    wrong = msgspec.structs.replace(vectors[-1], feature_version="v2-renamed-rsi")
    with pytest.raises(FeatureVersionError, match=r"'v2-renamed-rsi'.*trained on 'test-talib-1'"):
        op.process(op.new_state("ES"), wrong, SimpleContext())
    # a warm-up vector of the wrong version is refused too: the check comes first
    warm = msgspec.structs.replace(vectors[0], feature_version="v2-renamed-rsi")
    assert not warm.complete
    with pytest.raises(FeatureVersionError):
        op.process(op.new_state("ES"), warm, SimpleContext())


def test_warm_up_vectors_emit_nothing_and_are_counted(
    registry_dir: Path, vectors: list[FeatureVector]
) -> None:
    op = ab_serving(registry_dir)
    n_warm = sum(not fv.complete for fv in vectors)
    assert n_warm >= 33  # MACD signal: TA-Lib's first value at index 33
    state = op.new_state("ES")
    for fv in vectors[:n_warm]:
        state, emits = op.process(state, fv, SimpleContext())
        assert emits == []
    state, _ = run(op, vectors)
    assert state.warmup_skipped == n_warm
    assert state.decisions == len(vectors) - n_warm
    assert state.last_ts_event == vectors[-1].ts_event


def test_state_snapshot_round_trips_under_the_same_served_models(
    registry_dir: Path, vectors: list[FeatureVector]
) -> None:
    op = ab_serving(registry_dir)
    state, _ = run(op, vectors[:100])
    again = ab_serving(registry_dir)
    assert again.restore(op.snapshot(state)) == state


def test_predict_batch_equals_the_per_event_predictions_exactly(
    registry_dir: Path, emini: tuple, vectors: list[FeatureVector]
) -> None:
    op = ab_serving(registry_dir, 0.5)
    _, preds = run(op, vectors)
    X = emini[0]
    batch = op.predict_batch(X)
    index = {fv.ts_event: i for i, fv in enumerate(vectors)}
    for p in preds:
        assert batch[p.model][index[p.ts_event]] == p.prob_up
    warm = [i for i, fv in enumerate(vectors) if not fv.complete]
    assert all(np.isnan(batch[n][warm]).all() for n in batch)
    # a batch of one and a batch of 256 agree with the per-event path too
    last = [p for p in preds if p.ts_event == vectors[-1].ts_event]
    one = op.predict_batch(X[-1:])
    many = op.predict_batch(X[-256:])
    for p in last:
        assert one[p.model][0] == p.prob_up == many[p.model][-1]


def test_linear_contributions_plus_intercept_sum_to_the_model_logit(
    registry_dir: Path, emini: tuple, vectors: list[FeatureVector]
) -> None:
    X, closes, _ = emini
    op = serving(registry_dir, LINEAR)
    _, preds = run(op, vectors[-300:])
    fv_at = {fv.ts_event: fv for fv in vectors}
    for p in preds:
        entry = op.models[p.model]
        assert entry.linear is not None
        contrib = linear_contributions(entry, fv_at[p.ts_event])
        assert tuple(contrib) == FeatureVector.NAMES
        assert p.contributions == contrib  # what the operator attached to the prediction
        logit = sum(contrib.values()) + entry.linear.intercept
        assert logit == pytest.approx(math.log(p.prob_up / (1.0 - p.prob_up)), abs=2e-5)
    # and they are sklearn's decision function of the same fitted model
    ts = prepare_training_set(
        X[:TRAIN_END],
        forward_returns(closes[:TRAIN_END], 1),
        regime_weights_for(X[:TRAIN_END]),
        horizon_bars=1,
    )
    est = fit_specialist(
        "linear", ts.X[ts.train], ts.y[ts.train], ts.weights[ts.train, 0], seed=0, params=PARAMS
    )
    entry = op.models["bull_linear"]
    assert entry.linear is not None
    rows = X[-50:]
    # float32-rounded values (what the model sees), evaluated in float64 by sklearn
    expected = est.decision_function(rows.astype(np.float32).astype(np.float64))
    got = [sum(linear_contributions(entry, r).values()) + entry.linear.intercept for r in rows]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    gbm = op.models["bull_linear"]
    with pytest.raises(ValueError, match="without linear"):
        linear_contributions(msgspec.structs.replace(gbm, kind="gbm", linear=None), rows[0])


def test_sessions_run_on_cpu_with_one_thread_by_default(registry_dir: Path) -> None:
    op = ab_serving(registry_dir)
    assert op.providers == (CPU,)
    for name in LINEAR + GBM:
        sess = op.session(name)
        assert sess.get_providers() == [CPU]
        assert sess.get_session_options().intra_op_num_threads == 1


def test_config_is_validated_with_clear_messages(registry_dir: Path) -> None:
    reg = Registry.load(registry_dir)
    linear = reg.select(LINEAR)
    both = reg.select(LINEAR + GBM)
    base = {"models": linear, "arm_a": LINEAR}
    with pytest.raises(ValueError, match=r"ab_split must be in \[0, 1\]"):
        InferConfig(models=both, arm_a=LINEAR, arm_b=GBM, ab_split=1.5)
    with pytest.raises(ValueError, match="needs models in arm_b"):
        InferConfig(**base, ab_split=0.2)
    with pytest.raises(ValueError, match="arm_a must name"):
        InferConfig(models=linear, arm_a=())
    with pytest.raises(ValueError, match="intra_op_num_threads"):
        InferConfig(**base, intra_op_num_threads=0)
    with pytest.raises(ValueError, match="resolved"):
        InferConfig(**base, device="auto")  # type: ignore[arg-type]
    # the served set is exactly the arms' models, each once
    with pytest.raises(ValueError, match="not the arms' models"):
        InferConfig(models=both, arm_a=LINEAR)
    with pytest.raises(ValueError, match="not the arms' models"):
        InferConfig(models=linear, arm_a=LINEAR, arm_b=GBM, ab_split=0.5)
    with pytest.raises(ValueError, match="serve a name twice"):
        InferConfig(models=(*linear, linear[0]), arm_a=LINEAR)


def test_an_arm_needs_one_feature_version_and_one_model_per_regime(registry_dir: Path) -> None:
    reg = Registry.load(registry_dir)
    two_bulls = ("bull_linear", "bull_gbm")
    with pytest.raises(ValueError, match="arm_a serves two models for one regime"):
        InferConfig(models=reg.select(two_bulls), arm_a=two_bulls)
    odd: ModelEntry = msgspec.structs.replace(reg.get("bear_gbm"), feature_version="other")
    with pytest.raises(ValueError, match="disagree on features or feature_version"):
        InferConfig(models=(reg.get("bull_linear"), odd), arm_a=("bull_linear", "bear_gbm"))
    assert reg.get("bull_linear").feature_version == FEATURE_VERSION
