"""The online learner on real E-mini one-minute bars: honest scores, no lookahead, rollback.

Inputs are the feature vectors of one real replay of the E-mini prefix
(``tests._chain_fixture.chain_run``: 1,182 one-minute bars). The operator is driven directly
(one symbol, one state), so each test sees exactly which event produced which output.
Checkpoint/restore in the middle of learning is the contract suite's split-run test
(``tests/operator_cases.py``, case ``learn``); determinism across hash seeds is
``tests/test_determinism_across_processes.py`` (``models.updates`` and ``predictions``).
"""

from __future__ import annotations

import pickle

import msgspec

from operators.contract import Emit, SimpleContext
from operators.infer import decision_id_for
from operators.learn import CHALLENGER, ONLINE_MODEL, Learn, LearnConfig, LearnState
from tests._chain_fixture import MINUTE_NS, chain_run
from topics.messages import FeatureVector, ModelUpdate, Prediction


def _vectors() -> list[FeatureVector]:
    return [v for v in chain_run().consumed(("features",)) if isinstance(v, FeatureVector)]


def _drive(op: Learn, events: list[FeatureVector], state: LearnState | None = None
           ) -> tuple[LearnState, list[list[Emit]]]:
    """Every event through ``process``; the emits of each event apart."""
    st = state if state is not None else op.new_state(events[0].symbol)
    per_event = []
    for ev in events:
        st, out = op.process(st, ev, SimpleContext())
        per_event.append(out)
    return st, per_event


def _updates(per_event: list[list[Emit]]) -> list[ModelUpdate]:
    return [e.value for out in per_event for e in out if isinstance(e.value, ModelUpdate)]


def _encoded(out: list[Emit]) -> list[bytes]:
    return [msgspec.json.encode(e.value) for e in out]


def test_prequential_accuracy_equals_a_recomputation_from_the_emitted_predictions() -> None:
    """Real bars, horizon 1: the learner's prequential accuracy, log-loss inputs and the
    majority baseline equal a recomputation from what it emitted and the bars' closes."""
    h = 1
    vectors = _vectors()
    op = Learn(LearnConfig(horizon_bars=h))
    state, per_event = _drive(op, vectors)
    probs = {e.value.decision_id: e.value.prob_up for out in per_event for e in out
             if isinstance(e.value, Prediction)}
    hits = ups = n = 0
    for i, fv in enumerate(vectors[:-h]):
        if not fv.complete:
            continue
        up = vectors[i + h].close > fv.close
        p = probs[decision_id_for(fv)]
        hits += (p > 0.5) == up
        ups += up
        n += 1
    m = op.metrics(state)
    assert n > 1000 and m["labels"] == n
    assert m["prequential_accuracy"] == hits / n
    assert m["prequential_majority"] == max(ups, n - ups) / n
    print(f"\nE-mini 1-min, h={h}, {n} labels: online accuracy {hits / n:.4f}, "
          f"always-majority {max(ups, n - ups) / n:.4f}, log loss "
          f"{m['prequential_log_loss']:.4f}")


def test_prices_after_bar_t_plus_h_minus_1_cannot_change_earlier_updates() -> None:
    """Horizon 3. The whole perturbed stream goes in as one ``process_batch`` (the operator
    holds every future bar at once): perturbing every bar after index k leaves every
    prediction and update emitted up to k byte-identical. And a label is joined exactly
    when bar t+h closes: flipping the sign of bar k's return over bar k-3 changes the
    models learned by the time bar k is processed."""
    h = 3
    vectors = _vectors()
    op = Learn(LearnConfig(horizon_bars=h, batch_labels=20, min_window=40, window=80))
    base_state, base = _drive(op, vectors)
    assert _updates(base), "the stream must reach update events"

    def shifted(fv: FeatureVector, by: float) -> FeatureVector:
        return msgspec.structs.replace(fv, close=fv.close * by, ret_1=(fv.ret_1 or 0.0) + 0.01)

    for k in (400, 800):
        changed = [*vectors[: k + 1], *(shifted(v, 1.01) for v in vectors[k + 1:])]
        _, flat = op.process_batch(op.new_state("ES"), changed, SimpleContext())
        upto = [b for out in base[: k + 1] for b in _encoded(out)]
        got = _encoded(flat)
        assert got[: len(upto)] == upto
        assert got[len(upto):] != [b for out in base[k + 1:] for b in _encoded(out)], \
            "the perturbation must matter after k, or the test proves nothing"
        before, _ = _drive(op, vectors[:k])
        assert before.cooldown == 0, "pick a k outside a cooldown: the label must be learned"
        blob = op.snapshot(before)
        ref_k, _ = op.process(op.restore(blob), vectors[k], SimpleContext())
        up = vectors[k].close > vectors[k - h].close
        flipped = msgspec.structs.replace(vectors[k],
                                          close=vectors[k - h].close * (0.99 if up else 1.01))
        st_k, _ = op.process(op.restore(blob), flipped, SimpleContext())
        assert vectors[k - h].complete
        assert pickle.dumps(st_k.models) != pickle.dumps(ref_k.models)
        assert op.metrics(st_k)["learned"] == op.metrics(before)["learned"] + 1
    assert op.metrics(base_state)["labels"] == sum(1 for v in vectors[:-h] if v.complete)


class _Flip:
    """Bars that always close against the online model's previous call (horizon 1): the
    market turns on the model. Feature values are real (cycled from ``pool``); only the
    times and the closes are crafted."""

    def __init__(self, op: Learn, last: FeatureVector, pool: list[FeatureVector]) -> None:
        self.op, self.last, self.pool = op, last, pool
        self.prev_p: float | None = None
        self.i = 0

    def run(self, state: LearnState, n: int, until: str | None = None
            ) -> tuple[LearnState, list[list[Emit]]]:
        per_event: list[list[Emit]] = []
        for _ in range(n):
            src = self.pool[self.i % len(self.pool)]
            self.i += 1
            ts = self.last.ts_event + MINUTE_NS
            p = self.prev_p
            close = self.last.close * (1.0 if p is None else 0.999 if p > 0.5 else 1.001)
            fv = msgspec.structs.replace(src, ts_event=ts, ts_closed=ts + 1, close=close)
            state, out = self.op.process(state, fv, SimpleContext())
            per_event.append(out)
            self.last = fv
            self.prev_p = next(e.value.prob_up for e in out if isinstance(e.value, Prediction))
            if until is not None and any(u.update_type == until for u in _updates([out])):
                break
        return state, per_event


def test_regime_flip_fires_adwin_and_rolls_back_on_models_updates() -> None:
    """Real bars pass every check; then the market turns on the model: ADWIN fires on its
    error, the next check sees lower accuracy than at the last good snapshot and rolls back,
    learning pauses for the cooldown, and the predictions after it name the rollback."""
    vectors = _vectors()
    cooldown = 100
    op = Learn(LearnConfig(horizon_bars=1, cooldown_labels=cooldown))
    state, real = _drive(op, vectors)
    assert not [u for u in _updates(real) if u.update_type == "rollback"], \
        "the real bars alone should pass every check here"
    assert [u for u in _updates(real) if u.stability_check == "passed"], \
        "a good snapshot must exist before the flip"
    flip = _Flip(op, vectors[-1], [v for v in vectors if v.complete])
    state, flipped = flip.run(state, 400, until="rollback")
    updates = _updates(flipped)
    kinds = [u.update_type for u in updates]
    assert kinds[-1] == "rollback" and "drift" in kinds, kinds
    drift = next(u for u in updates if u.update_type == "drift")
    rollback = updates[-1]
    assert "adwin_width" in drift.metrics
    assert rollback.stability_check == "failed_rollback"
    assert rollback.metrics["online_accuracy"] < rollback.metrics_before["online_accuracy"]
    learned = op.metrics(state)["learned"]
    state, after = flip.run(state, cooldown // 2)
    assert op.metrics(state)["learned"] == learned, "learning pauses during the cooldown"
    assert state.cooldown == cooldown - cooldown // 2
    preds = [e.value for out in after for e in out if isinstance(e.value, Prediction)]
    assert len(preds) == cooldown // 2
    assert all(p.model_version == rollback.update_id for p in preds), \
        "decisions after the rollback must name it (their audit records carry model_version)"
    assert all(p.model == ONLINE_MODEL and p.variant == CHALLENGER for p in preds)
    print(f"\nflip: drift after {kinds.index('drift') + 1} update events, rollback "
          f"{rollback.update_id} after {len(flipped)} crafted bars")


def test_restore_mid_learning_continues_bit_for_bit_with_both_models() -> None:
    """Both River models (the contract suite's case runs the logistic one only): a snapshot
    taken mid-stream, restored into a fresh operator, continues exactly as the uninterrupted
    run: same predictions and updates, and the same state bytes at the end."""
    vectors = _vectors()
    cfg = LearnConfig(horizon_bars=2, batch_labels=25, min_window=50, window=100)
    whole_state, whole = _drive(Learn(cfg), vectors)
    for k in (450, 900):
        op = Learn(cfg)
        st, _ = _drive(op, vectors[:k])
        assert len(st.pending) == 2 and st.learned > 0  # labels are pending at the cut
        fresh = Learn(cfg)
        restored = fresh.restore(op.snapshot(st))
        end, rest = _drive(fresh, vectors[k:], restored)
        assert [_encoded(o) for o in rest] == [_encoded(o) for o in whole[k:]]
        assert fresh.encode_state(end) == Learn(cfg).encode_state(whole_state)
