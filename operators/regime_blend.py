"""Regime blend: the online regime posterior and the meta-controller that weights specialists.

Two inputs, joined per decision: the bar's ``FeatureVector`` (its ``ret_1`` drives the HMM
filter) and the specialists' ``Prediction``s for it. A decision is complete when its feature
vector and one prediction per regime are in (warm-up vectors expect none); complete decisions
are released in bar order, so the result does not depend on which input arrived first — the
property a Flink two-input operator needs.

Weights: ``w_k ∝ P(regime k | past) × (1 + hit_k)`` where ``hit_k`` is an EWMA of the sign
agreement between specialist k's last score and the realized next-bar return (in [-1, 1]).
Validated: any non-finite or negative weight, or a zero sum, falls back to equal weights and is
counted by reason, never silently.
"""

from __future__ import annotations

import math

import msgspec

from operators.contract import Context, Emit, Operator
from operators.domain.regime_filter import HmmParams, HmmState, RegimeFilter, entropy
from topics import names as tn
from topics.messages import DecisionTrace, FeatureVector, Prediction, Regime, Signal

REGIMES = ("bull", "bear", "sideways")
PROMOTED = "promoted"
"""The ``variant`` of an online challenger's prediction once promoted (its cap lifted)."""


class BlendConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """HMM parameters in (bull, bear, sideways) order and the specialists' performance memory."""

    hmm: HmmParams
    perf_halflife_bars: float = 20.0
    online_regime: str | None = None
    """The ``regime`` tag of an online challenger's predictions (``operators.learn``): with
    it, a complete decision also waits for that prediction and blends it in at a share of
    ``min(cap, (1 + hit) / (1 + K))`` (hit: its EWMA sign agreement, K specialists; cap:
    ``online_cap``, or 1 once the learner marks it ``variant="promoted"``); None: the
    specialists only."""
    online_cap: float = 0.2

    def __post_init__(self) -> None:
        if self.hmm.k != len(REGIMES):
            raise ValueError(f"the blend needs a {len(REGIMES)}-state HMM, got {self.hmm.k}")
        if not (self.perf_halflife_bars > 0 and math.isfinite(self.perf_halflife_bars)):
            raise ValueError("perf_halflife_bars must be a positive number")
        if not (0.0 <= self.online_cap <= 1.0):
            raise ValueError("online_cap must be in [0, 1]")


class Pending(msgspec.Struct, kw_only=True):
    """A decision waiting for its feature vector and predictions."""

    ts: int
    features: FeatureVector | None = None
    predictions: list[Prediction] = []


class BlendState(msgspec.Struct, kw_only=True):
    hmm: HmmState
    perf: list[float]
    last_scores: list[float] | None = None
    perf_online: float = 0.0
    last_online_score: float | None = None
    pending: dict[str, Pending] = {}
    fallbacks: dict[str, int] = {}
    decisions: int = 0


def validate_weights(raw: list[float]) -> tuple[list[float], str | None]:
    """Normalize weights; equal weights and a reason when they are unusable."""
    n = len(raw)
    if any(not math.isfinite(w) for w in raw):
        return [1.0 / n] * n, "non_finite"
    if any(w < 0 for w in raw):
        return [1.0 / n] * n, "negative"
    total = math.fsum(raw)
    if total <= 0.0:
        return [1.0 / n] * n, "zero_sum"
    return [w / total for w in raw], None


class RegimeBlend(Operator[BlendState, FeatureVector | Prediction]):
    """Keyed by symbol; emits ``regimes`` per bar and ``signals`` per decision."""

    UID = "regime_blend"
    STATE_VERSION = 1
    State = BlendState

    def __init__(self, config: BlendConfig) -> None:
        self.config = config
        self._filter = RegimeFilter(config.hmm)
        self._alpha = 1.0 - 0.5 ** (1.0 / config.perf_halflife_bars)
        self._log_k = math.log(len(REGIMES))
        self._expected = len(REGIMES) + (config.online_regime is not None)

    def key(self, event: FeatureVector | Prediction) -> str:
        return event.symbol

    def new_state(self, key: str) -> BlendState:
        return BlendState(hmm=self._filter.new_state(), perf=[0.0] * len(REGIMES))

    def process(
        self, state: BlendState, event: FeatureVector | Prediction, ctx: Context
    ) -> tuple[BlendState, list[Emit]]:
        from operators.infer import decision_id_for

        if isinstance(event, FeatureVector):
            did = decision_id_for(event)
            p = state.pending.get(did)
            if p is None:
                p = state.pending[did] = Pending(ts=event.ts_event)
            p.features = event
        else:
            did = event.decision_id
            p = state.pending.get(did)
            if p is None:
                p = state.pending[did] = Pending(ts=event.ts_event)
            p.predictions.append(event)
        return state, self._release(state)

    def _complete(self, p: Pending) -> bool:
        if p.features is None:
            return False
        expected = self._expected if p.features.complete else 0
        return len(p.predictions) >= expected

    def _release(self, state: BlendState) -> list[Emit]:
        out: list[Emit] = []
        while state.pending:
            did, p = min(state.pending.items(), key=lambda kv: (kv[1].ts, kv[0]))
            if not self._complete(p):
                break
            del state.pending[did]
            out.extend(self._decide(state, did, p))
        return out

    def _decide(self, state: BlendState, did: str, p: Pending) -> list[Emit]:
        fv = p.features
        assert fv is not None
        ret = fv.ret_1
        if ret is not None:
            state.hmm, probs = self._filter.filter_step(state.hmm, ret)
            if state.last_scores is not None:
                a = self._alpha
                sgn = (ret > 0) - (ret < 0)
                state.perf = [
                    (1 - a) * h + a * (((s > 0) - (s < 0)) * sgn)
                    for h, s in zip(state.perf, state.last_scores, strict=True)
                ]
            so = state.last_online_score
            if so is not None:
                a = self._alpha
                sgn = (ret > 0) - (ret < 0)
                state.perf_online = (1 - a) * state.perf_online + a * (((so > 0) - (so < 0)) * sgn)
        else:
            probs = state.hmm.probs
        ent = entropy(probs)
        regime_probs = dict(zip(REGIMES, probs, strict=True))
        # Decide when the bar became known (its closing tick): an earlier stamp would let
        # orders fill on ticks the decision could not have seen, a later one trades stale bars.
        decided_at = fv.ts_closed
        out = [
            Emit(
                tn.REGIMES,
                fv.symbol,
                Regime(
                    ts_event=fv.ts_event,
                    symbol=fv.symbol,
                    prob_bull=probs[0],
                    prob_bear=probs[1],
                    prob_sideways=probs[2],
                    entropy=ent,
                ),
            ),
        ]
        confidence = max(0.0, 1.0 - ent / self._log_k)
        features: dict[str, float | None] = {"close": fv.close}
        features.update(zip(fv.NAMES, fv.values(), strict=True))
        preds: list[Prediction] = []
        weights: list[float] = []
        fallback: str | None = "warmup"
        prob_up = 0.5
        state.last_scores = None
        state.last_online_score = None
        online: Prediction | None = None
        share = 0.0
        if p.predictions:  # warm-up vectors have none: a flat signal that still warms sizing
            by_regime = {pr.regime: pr for pr in p.predictions}
            missing = [r for r in REGIMES if r not in by_regime]
            if missing:
                raise ValueError(f"decision {did}: no specialist prediction for {missing}")
            preds = [by_regime[r] for r in REGIMES]
            raw = [pk * (1.0 + h) for pk, h in zip(probs, state.perf, strict=True)]
            weights, fallback = validate_weights(raw)
            if fallback is not None:
                state.fallbacks[fallback] = state.fallbacks.get(fallback, 0) + 1
            prob_up = math.fsum(w * pr.prob_up for w, pr in zip(weights, preds, strict=True))
            state.last_scores = [pr.score for pr in preds]
            if self.config.online_regime is not None:
                online = by_regime[self.config.online_regime]
                cap = 1.0 if online.variant == PROMOTED else self.config.online_cap
                share = min(cap, (1.0 + state.perf_online) / (1 + len(REGIMES)))
                prob_up = (1.0 - share) * prob_up + share * online.prob_up
                weights = [(1.0 - share) * w for w in weights]
                state.last_online_score = online.score
            state.decisions += 1
        contributions: dict[str, float] = {}
        for w, pr in zip(weights, preds, strict=True):
            for name, c in (pr.contributions or {}).items():
                contributions[name] = contributions.get(name, 0.0) + w * c
        weight_map = {f"{pr.regime}_specialist": w for pr, w in zip(preds, weights, strict=True)}
        if online is not None:  # the challenger's output and version go to the audit record
            preds = [*preds, online]
            weight_map[f"{online.regime}_specialist"] = share
        trace = DecisionTrace(
            bar_ts=fv.ts_event,
            close=fv.close,
            features=features,
            feature_version=fv.feature_version,
            model_outputs={pr.model: pr.prob_up for pr in preds},
            model_versions={pr.model: pr.model_version for pr in preds},
            variant=preds[0].variant if preds else "",
            regime_probs=regime_probs,
            strategy_weights=weight_map,
            contributions=contributions,
            inputs=fv.inputs,
            device=preds[0].device if preds else msgspec.UNSET,
        )
        out.append(Emit(tn.SIGNALS, fv.symbol, Signal(
            ts_event=decided_at, symbol=fv.symbol, decision_id=did, signal=2.0 * prob_up - 1.0,
            prob_up=prob_up, confidence=confidence, close=fv.close, bar_return=ret,
            weights=weight_map, regime_probs=regime_probs, fallback=fallback, trace=trace)))
        return out
