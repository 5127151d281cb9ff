"""The ``learn`` operator: River models that learn inside the stream from delayed labels.

Keyed by symbol on ``features``. Each bar's vector waits in the symbol's state until ``h``
more bars of that symbol have closed; the vector that closes bar ``t+h`` brings the label
(the sign of ``close[t+h] / close[t] - 1``), so a label is joined only when its bar has
closed in event time, never earlier, and the pending queue never holds more than ``h``
vectors. Before learning, the label scores the predictions made for bar ``t`` by the online
models and by the frozen ONNX champion (prequential: test, then train).

Each complete vector is then scored by the online models (their mean P(up)) and emitted on
``predictions`` as one more specialist (``regime="online"``) that the regime blend weights,
capped by the blend's ``online_cap`` (20 %) while its ``variant`` says ``challenger``,
until promoted. The champion is the served arm-A specialists' mean
P(up), recomputed here from the same frozen ONNX files (``Infer.predict_batch``: the exact
numbers ``infer`` emits), so no second input stream, and no join whose order could differ
between runtimes, decides what the learner does.

Safety: every ``batch_labels`` labels a stability check compares the rolling window with the
champion and with the last good snapshot. Worse than the champion by ``rollback_margin``, or
an ADWIN alarm on the error followed by lower accuracy than at the last good snapshot, rolls
the models back to that snapshot and pauses learning for ``cooldown_labels`` labels; a pass
makes the current models the new good snapshot, and ``promote_after`` passes in a row that
beat the champion promote the model (its cap lifted). PSI per feature against the training
window alerts above ``psi_threshold``. Each of these is a ``models.updates`` event whose
``update_id`` the following predictions carry as ``model_version``.

State (models, good snapshot, pending labels, windows, detectors) is one Python object per
symbol, encoded by :class:`~operators.domain.codecs.PickleCodec`; a restore continues
bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import ClassVar, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
from river import drift

from operators.contract import Context, Emit, Operator
from operators.domain.codecs import PickleCodec
from operators.domain.online_models import KINDS, ModelKind, make_model, prob_up
from operators.domain.prequential import Scored, hit, log_loss, window_metrics
from operators.domain.psi import PsiReference
from operators.infer import Infer, decision_id_for
from operators.regime_blend import PROMOTED
from topics import names as tn
from topics.messages import FeatureVector, ModelUpdate, Prediction, UpdateType

ONLINE_REGIME = "online"
"""The ``Prediction.regime`` of the online specialist (what the blend waits for)."""
ONLINE_MODEL = "online"
CHALLENGER = "challenger"
"""The online prediction's ``variant`` until promoted (then ``PROMOTED``): the blend caps a
challenger's share at its ``online_cap`` (default 20 %)."""


class LearnConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the online challenger learns, is checked and is weighted."""

    horizon_bars: int = 1
    models: tuple[ModelKind, ...] = KINDS
    seed: int = 0
    learning_rate: float = 0.01
    window: int = 200
    batch_labels: int = 50
    min_window: int = 100
    rollback_margin: float = 0.05
    promote_margin: float = 0.02
    promote_after: int = 3
    cooldown_labels: int = 100
    adwin_delta: float = 0.002
    psi_threshold: float = 0.25
    psi_bins: int = 10
    reference_until_ns: int | None = None
    """Vectors before this event time form the PSI reference (the training window); None:
    the first ``reference_max`` complete vectors."""
    reference_max: int = 2000
    champion_models: tuple[str, ...] = ()
    """``name@version`` of the champion's models (fingerprinted; empty: no champion)."""

    def __post_init__(self) -> None:
        if self.horizon_bars < 1:
            raise ValueError("horizon_bars must be >= 1")
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must name each kind once, got {self.models}")
        for k in self.models:
            if k not in KINDS:
                raise ValueError(f"unknown model kind {k!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError("learning_rate must be a positive number")
        if min(self.window, self.batch_labels, self.min_window, self.promote_after,
               self.psi_bins, self.reference_max) < 1 or self.cooldown_labels < 0:
            raise ValueError("window, batch_labels, min_window, promote_after, psi_bins and "
                             "reference_max must be >= 1; cooldown_labels >= 0")
        if self.min_window > self.window:
            raise ValueError("min_window must not exceed window")
        if not (0.0 < self.adwin_delta < 1.0) or self.psi_threshold <= 0:
            raise ValueError("adwin_delta must be in (0, 1), psi_threshold positive")


class _Bar(NamedTuple):
    """A bar waiting for its label: its close and, if complete, what was predicted for it."""

    ts: int
    close: float
    x: dict[str, float] | None
    online: float
    champion: float | None


class LearnState:
    """One symbol's online learner: everything a checkpoint must carry to continue exactly."""

    def __init__(self, config: LearnConfig, symbol: str) -> None:
        self.model_id = f"{ONLINE_MODEL}:{symbol}"
        self.models = [make_model(k, seed=config.seed, learning_rate=config.learning_rate)
                       for k in config.models]
        self.good = copy.deepcopy(self.models)
        self.pending: deque[_Bar] = deque()
        self.window: deque[Scored] = deque(maxlen=config.window)
        nf = len(FeatureVector.NAMES)
        # numpy buffers, not lists of tuples: a checkpoint writes them as one binary block
        self.recent_x = np.zeros((config.window, nf))
        self.recent_n = 0
        self.adwin = drift.ADWIN(delta=config.adwin_delta)  # type: ignore[no-untyped-call]
        self.reference_rows: npt.NDArray[np.float64] | None = np.zeros((config.reference_max, nf))
        self.reference_n = 0
        self.reference: PsiReference | None = None
        self.psi_alarm = False
        self.drift_flag = False
        self.cooldown = 0
        self.promoted = False
        self.passes = 0
        self.seq = 0
        self.version = f"{self.model_id}#0"
        self.good_metrics: dict[str, float] = {}
        self.batch_count = 0
        self.batch_start: int | None = None
        self.batch_end = 0
        # prequential totals over the whole run
        self.labels = 0
        self.learned = 0
        self.correct = 0
        self.ups = 0
        self.log_loss_sum = 0.0
        self.champion_correct = 0
        self.champion_scored = 0


class Learn(Operator[LearnState, FeatureVector]):
    """``features`` -> ``predictions`` (the online specialist) and ``models.updates``."""

    UID: ClassVar[str] = "learn"
    STATE_VERSION: ClassVar[int] = 1
    State = LearnState
    CODEC: ClassVar[PickleCodec[LearnState]] = PickleCodec(LearnState, version=1,
                                                           libraries=("river",))

    def __init__(self, config: LearnConfig, champion: Infer | None = None) -> None:
        refs = tuple(f"{e.name}@{e.version}" for e in champion.config.models
                     if e.name in champion.config.arm_a) if champion is not None else ()
        if refs != config.champion_models:
            raise ValueError(f"config names champion {config.champion_models}, the champion "
                             f"given serves {refs}")
        self.config = config
        self.champion = champion
        self._arm = champion.config.arm_a if champion is not None else ()

    # -- lifecycle -----------------------------------------------------------------------
    def open(self) -> None:
        if self.champion is not None:
            self.champion.open()

    def close(self) -> None:
        if self.champion is not None:
            self.champion.close()

    def state_codec(self) -> PickleCodec[LearnState]:
        return self.CODEC

    # -- contract ------------------------------------------------------------------------
    def key(self, event: FeatureVector) -> str:
        return event.symbol

    def new_state(self, key: str) -> LearnState:
        return LearnState(self.config, key)

    def process(self, state: LearnState, event: FeatureVector, ctx: Context
                ) -> tuple[LearnState, list[Emit]]:
        out: list[Emit] = []
        cfg = self.config
        if len(state.pending) >= cfg.horizon_bars:  # bar t+h closed: bar t's label is known
            self._label(state, state.pending.popleft(), event, out)
        x = self._features(event)
        online = 0.5
        champion: float | None = None
        if x is not None:
            self._observe(state, event, x)
            online = math.fsum(prob_up(m, x) for m in state.models) / len(state.models)
            champion = self._champion(x)
            out.append(Emit(tn.PREDICTIONS, event.symbol, Prediction(
                ts_event=event.ts_event, symbol=event.symbol, decision_id=decision_id_for(event),
                model=ONLINE_MODEL, model_version=state.version,
                variant=PROMOTED if state.promoted else CHALLENGER,
                regime=ONLINE_REGIME, score=2.0 * online - 1.0, prob_up=online)))
        state.pending.append(_Bar(ts=event.ts_event, close=event.close, x=x, online=online,
                                  champion=champion))
        return state, out

    # -- pieces --------------------------------------------------------------------------
    @staticmethod
    def _features(event: FeatureVector) -> dict[str, float] | None:
        values = event.values()
        if any(v is None for v in values):
            return None
        return {n: float(v) for n, v in zip(event.NAMES, values, strict=True)
                if v is not None}

    def _champion(self, x: dict[str, float]) -> float | None:
        if self.champion is None:
            return None
        row = [[x[n] for n in self.champion.feature_names]]
        probs = self.champion.predict_batch(row, self._arm)
        return math.fsum(float(probs[n][0]) for n in self._arm) / len(self._arm)

    def _observe(self, state: LearnState, event: FeatureVector, x: dict[str, float]) -> None:
        """Feed the PSI windows: the reference until it is frozen, the recent window always."""
        row = list(x.values())
        cfg = self.config
        state.recent_x[state.recent_n % cfg.window] = row
        state.recent_n += 1
        ref = state.reference_rows
        if ref is None:
            return
        until = cfg.reference_until_ns
        if (until is None or event.ts_event < until) and state.reference_n < cfg.reference_max:
            ref[state.reference_n] = row
            state.reference_n += 1
            return
        if state.reference_n >= cfg.psi_bins:
            state.reference = PsiReference(FeatureVector.NAMES, ref[:state.reference_n],
                                           cfg.psi_bins)
        state.reference_rows = None

    def _label(self, state: LearnState, bar: _Bar, now: FeatureVector, out: list[Emit]) -> None:
        """Bar ``t``'s label, known now that bar ``t+h`` (``now``) has closed."""
        if bar.x is None:
            return
        cfg = self.config
        fwd = now.close / bar.close - 1.0
        up = fwd > 0.0
        state.window.append(Scored(bar.online, bar.champion, fwd, up))
        state.labels += 1
        state.ups += up
        ok = hit(bar.online, up)
        state.correct += ok
        state.log_loss_sum += log_loss(bar.online, up)
        if bar.champion is not None:
            state.champion_scored += 1
            state.champion_correct += hit(bar.champion, up)
        state.adwin.update(0.0 if ok else 1.0)  # type: ignore[no-untyped-call]
        if state.adwin.drift_detected:
            state.drift_flag = True
            self._event(state, now, "drift", bar.ts, bar.ts, {
                "adwin_width": float(state.adwin.width),
                "error_estimate": float(state.adwin.estimation),
                "detections": float(state.adwin.n_detections)}, out)
        if state.cooldown > 0:
            state.cooldown -= 1
        else:
            for m in state.models:
                m.learn_one(bar.x, up)
            state.learned += 1
        if state.batch_start is None:
            state.batch_start = bar.ts
        state.batch_end = bar.ts
        state.batch_count += 1
        if state.batch_count >= cfg.batch_labels:
            self._check(state, now, out)

    def metrics(self, state: LearnState) -> dict[str, float]:
        """The rolling window's scores and the run's prequential totals for one symbol."""
        m = window_metrics(state.window)
        n = state.labels
        m.update(labels=float(n), learned=float(state.learned),
                 prequential_accuracy=state.correct / n if n else 0.0,
                 prequential_log_loss=state.log_loss_sum / n if n else 0.0,
                 prequential_majority=max(state.ups, n - state.ups) / n if n else 0.0)
        if state.champion_scored:
            m["prequential_champion_accuracy"] = state.champion_correct / state.champion_scored
        return m

    def _check(self, state: LearnState, now: FeatureVector, out: list[Emit]) -> None:
        """The stability check at the end of an update batch (see the module docstring)."""
        cfg = self.config
        start, end = state.batch_start or 0, state.batch_end
        state.batch_count, state.batch_start = 0, None
        after = self.metrics(state)
        self._psi(state, now, start, end, out)
        if len(state.window) < cfg.min_window or state.cooldown > 0:
            state.drift_flag = False
            if state.cooldown == 0:  # still filling the window: a plain update, checked later
                self._event(state, now, "incremental", start, end, after, out)
            return
        acc = after["online_accuracy"]
        champ = after.get("champion_accuracy")
        worse = champ is not None and acc < champ - cfg.rollback_margin
        decayed = state.drift_flag and acc < state.good_metrics.get("online_accuracy", 0.0)
        state.drift_flag = False
        if worse or decayed:
            state.models = copy.deepcopy(state.good)
            state.cooldown = cfg.cooldown_labels
            state.promoted, state.passes = False, 0
            self._event(state, now, "rollback", start, end, after, out,
                        check="failed_rollback")
            return
        state.good = copy.deepcopy(state.models)
        self._event(state, now, "incremental", start, end, after, out, check="passed")
        state.good_metrics = after
        beats = (champ is not None and acc >= champ + cfg.promote_margin
                 and after["online_log_loss"] <= after["champion_log_loss"])
        state.passes = state.passes + 1 if beats else 0
        if beats and not state.promoted and state.passes >= cfg.promote_after:
            state.promoted = True
            self._event(state, now, "promotion", start, end, after, out, check="passed")

    def _psi(self, state: LearnState, now: FeatureVector, start: int, end: int,
             out: list[Emit]) -> None:
        ref = state.reference
        cfg = self.config
        if ref is None or state.recent_n < cfg.min_window:
            return
        scores = ref.psi(state.recent_x[:min(state.recent_n, cfg.window)])
        high = {f"psi_{k}": v for k, v in scores.items() if v > self.config.psi_threshold}
        if high and not state.psi_alarm:
            self._event(state, now, "drift", start, end,
                        {"psi_max": max(scores.values()), **high}, out)
        state.psi_alarm = bool(high)

    def _event(self, state: LearnState, now: FeatureVector, kind: UpdateType, start: int,
               end: int, metrics: dict[str, float], out: list[Emit], *, check: str = "") -> None:
        state.seq += 1
        update_id = f"{state.model_id}#{state.seq}"
        if kind != "drift":  # the model in use changed (or was confirmed): predictions say so
            state.version = update_id
        out.append(Emit(tn.MODELS_UPDATES, state.model_id, ModelUpdate(
            ts_event=now.ts_closed, model_id=state.model_id, update_type=kind,
            window_start=start, window_end=end, metrics=metrics, update_id=update_id,
            metrics_before=state.good_metrics, stability_check=check)))


def learn_operator(config: LearnConfig, champion: Infer | None) -> Learn:
    """A learner whose config names the champion it is given (the fingerprint covers it)."""
    refs = tuple(f"{e.name}@{e.version}" for e in champion.config.models
                 if e.name in champion.config.arm_a) if champion is not None else ()
    return Learn(msgspec.structs.replace(config, champion_models=refs), champion)
