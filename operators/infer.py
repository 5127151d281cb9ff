"""The ``infer`` operator: specialist ONNX models scored per feature vector, with an A/B split.

Served models are config, not instance state: ``InferConfig.models`` lists every served entry
(name, version, sha256, features), so the served set is in the config fingerprint (a checkpoint
taken under other models is refused), in the run manifest and, through ``model_version``, in
every prediction. The bytes come from a :class:`~operators.model_provider.ModelProvider`
handed to the constructor; the constructor does no I/O. ``open()`` loads the bytes, checks
them against each entry's sha256 and starts the onnxruntime sessions; ``close()`` drops them.
``process`` before ``open`` raises :class:`~operators.contract.NotOpenError` (no lazy open:
hosts open through ``jobs.topology.opened``, so no I/O happens inside a state transition).
Serving other models means a new config and a new operator that the host swaps in at a point
of the stream; nothing inside ``process`` changes what is served.

The execution device is config too (``cpu``, the reference, or ``cuda``), resolved once per
run by the host (``jobs.device``); predictions of a non-CPU run say so in ``device``.

Determinism: the reference provider is the CPU one with a fixed thread count. onnxruntime's
CPU GEMM takes a different code path for a single row than for two or more, which changes
the last bit of a linear model's output; every run therefore feeds at least two rows (a single
row is duplicated), so the per-event path, :meth:`Infer.process_batch` and
:meth:`Infer.predict_batch` give identical numbers. The A/B arm comes from a stable hash of the
decision id, never from ``hash()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt

from operators.contract import (
    Context,
    Emit,
    NotOpenError,
    Operator,
    stable_bucket,
    stable_hash,
)
from operators.model_provider import ModelEntry, ModelProvider, verified
from topics import names as tn
from topics.messages import ExecutionDevice, FeatureVector, Prediction

AB_BUCKETS = 10_000
PREDICTIONS_TOPIC = tn.PREDICTIONS
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_QUIET = 3  # onnxruntime log severity: errors only (no warnings about missing providers)

Device = ExecutionDevice
_PROVIDERS: dict[str, tuple[str, ...]] = {"cpu": (CPU,), "cuda": (CUDA, CPU)}


class FeatureVersionError(ValueError):
    """A feature vector's version differs from the one the models were trained on."""


def decision_id_for(fv: FeatureVector) -> str:
    """Deterministic decision id: ``{symbol}-{ts_event}-{12 hex}`` of (symbol, ts, version)."""
    digest = stable_hash(fv.symbol, fv.ts_event, fv.feature_version)
    return f"{fv.symbol}-{fv.ts_event}-{digest[:12]}"


def arm_for(decision_id: str, ab_split: float) -> Literal["A", "B"]:
    """Arm B for the first ``ab_split`` fraction of 10,000 stable buckets, else arm A."""
    return "B" if stable_bucket(decision_id, AB_BUCKETS) < round(ab_split * AB_BUCKETS) else "A"


def providers_for(device: Device) -> tuple[str, ...]:
    """onnxruntime providers of a resolved device (CUDA keeps CPU for unsupported nodes)."""
    return _PROVIDERS[device]


def _session_options(threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = _QUIET
    return so


# --------------------------------------------------------------------------- config/state


@dataclass(frozen=True, slots=True)
class InferConfig:
    """The served models, which arm serves which, and how sessions run.

    ``models`` is the served set (a provider's ``entries()``, selected by the host: latest or
    pinned per name), every model in exactly one place; ``arm_a``/``arm_b`` name models of it;
    ``ab_split`` is the fraction of decisions served by arm B. ``device`` is the resolved
    execution device (``jobs.device.resolve_device``), never "auto".
    """

    models: tuple[ModelEntry, ...]
    arm_a: tuple[str, ...]
    arm_b: tuple[str, ...] = ()
    ab_split: float = 0.0
    intra_op_num_threads: int = 1
    device: Device = "cpu"
    explain: bool = True  # attach per-feature contributions to linear models' predictions

    def __post_init__(self) -> None:
        if not self.arm_a:
            raise ValueError("arm_a must name at least one model")
        for arm_name, arm in (("arm_a", self.arm_a), ("arm_b", self.arm_b)):
            if len(set(arm)) != len(arm):
                raise ValueError(f"{arm_name} names a model twice: {arm}")
        if not (0.0 <= self.ab_split <= 1.0) or math.isnan(self.ab_split):
            raise ValueError(f"ab_split must be in [0, 1], got {self.ab_split}")
        if self.ab_split > 0 and not self.arm_b:
            raise ValueError("ab_split > 0 needs models in arm_b")
        if self.intra_op_num_threads < 1:
            raise ValueError("intra_op_num_threads must be >= 1")
        if self.device not in _PROVIDERS:
            raise ValueError(f"device must be 'cpu' or 'cuda' (resolved), got {self.device!r}")
        self._check_models()

    def _check_models(self) -> None:
        served = [e.name for e in self.models]
        if len(set(served)) != len(served):
            raise ValueError(f"models serve a name twice: {served}")
        if set(served) != set(self.model_names):
            raise ValueError(f"models {served} are not the arms' models {list(self.model_names)}")
        if len({(e.feature_names, e.feature_version) for e in self.models}) != 1:
            desc = ", ".join(
                f"{e.ref}: {e.feature_version} {list(e.feature_names)}" for e in self.models
            )
            raise ValueError(f"served models disagree on features or feature_version ({desc})")
        by_name = {e.name: e for e in self.models}
        for arm_name, arm in (("arm_a", self.arm_a), ("arm_b", self.arm_b)):
            regimes = [by_name[n].regime for n in arm]
            if len(set(regimes)) != len(regimes):
                # downstream (regime blend) keys a decision's predictions by regime
                raise ValueError(
                    f"{arm_name} serves two models for one regime: "
                    f"{[(n, by_name[n].regime) for n in arm]}"
                )
        unknown = set(self.models[0].feature_names) - set(FeatureVector.NAMES)
        if unknown:
            raise ValueError(f"models use features not in FeatureVector.NAMES: {sorted(unknown)}")

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every served model once: arm A's order, then arm B's new names."""
        return self.arm_a + tuple(n for n in self.arm_b if n not in self.arm_a)


class InferState(msgspec.Struct, kw_only=True):
    """Per symbol: how many decisions were scored and how many warm-up vectors skipped."""

    decisions: int = 0
    warmup_skipped: int = 0
    last_ts_event: int | None = None


class _Session(NamedTuple):
    """An open onnxruntime session and where its ``probabilities`` output is."""

    run: Any  # InferenceSession.run
    session: Any
    output_index: int


class _LinearExplainer:
    """Precomputed ``coef / scale`` and ``mean`` so explaining an event is two array ops."""

    __slots__ = ("_names", "mean", "weight")

    def __init__(self, entry: ModelEntry) -> None:
        lin = entry.linear
        if lin is None:
            raise ValueError(f"{entry.ref} is a {entry.kind} model without linear coefficients")
        self._names = entry.feature_names
        self.mean = np.array(lin.mean, dtype=np.float64)
        self.weight = np.array(lin.coef, dtype=np.float64) / np.array(lin.scale, dtype=np.float64)

    def __call__(self, x: npt.NDArray[np.float64]) -> dict[str, float]:
        contrib = (x - self.mean) * self.weight
        return dict(zip(self._names, contrib.tolist(), strict=True))


class _Scored(NamedTuple):
    event: FeatureVector
    decision_id: str
    variant: Literal["A", "B"]
    row: npt.NDArray[np.float32]


# --------------------------------------------------------------------------- operator


class Infer(Operator[InferState, FeatureVector]):
    """``features`` -> ``predictions``: one Prediction per model of the decision's arm."""

    UID: ClassVar[str] = "infer"
    STATE_VERSION: ClassVar[int] = 1
    State = InferState

    def __init__(self, config: InferConfig, models: ModelProvider) -> None:
        self.config = config
        self.model_provider = models
        self._entries = {e.name: e for e in config.models}
        first = config.models[0]
        self._feature_names = first.feature_names
        self._feature_version = first.feature_version
        self._arms = {"A": config.arm_a, "B": config.arm_b}
        self._variants = {e.name: frozenset(v for v, arm in self._arms.items() if e.name in arm)
                          for e in config.models}
        self._explainers = {
            e.name: _LinearExplainer(e)
            for e in config.models
            if config.explain and e.linear is not None
        }
        self._device: Device | msgspec.UnsetType = (
            msgspec.UNSET if config.device == "cpu" else config.device
        )
        self._sessions: dict[str, _Session] | None = None
        self._primed: dict[int, tuple[_Scored, dict[str, float]]] = {}

    # -- lifecycle (the only I/O, outside process) ------------------------------------------
    def open(self) -> None:
        """Load every served model through the provider, verify it, start its session."""
        if self._sessions is not None:
            return
        self._sessions = {e.name: self._start(e) for e in self.config.models}

    def close(self) -> None:
        self._sessions = None

    @property
    def is_open(self) -> bool:
        return self._sessions is not None

    def _start(self, entry: ModelEntry) -> _Session:
        import onnxruntime as ort

        wanted = self.providers[0]
        if wanted not in ort.get_available_providers():  # a device is never swapped silently
            raise RuntimeError(
                f"infer: device {self.config.device!r} needs {wanted}, which this onnxruntime "
                f"lacks (available: {', '.join(ort.get_available_providers())})"
            )
        data = verified(entry, self.model_provider.load(entry))
        sess = ort.InferenceSession(
            data,
            _session_options(self.config.intra_op_num_threads),
            providers=list(self.providers),
        )
        if sess.get_providers()[0] != wanted:
            raise RuntimeError(
                f"infer: {entry.ref} runs on {sess.get_providers()[0]}, not on {wanted} of "
                f"device {self.config.device!r}"
            )
        inputs = sess.get_inputs()
        if len(inputs) != 1 or inputs[0].name != "features":
            raise ValueError(f"{entry.ref}: expected one input named 'features'")
        outputs = [o.name for o in sess.get_outputs()]
        if "probabilities" not in outputs:
            raise ValueError(f"{entry.ref}: no 'probabilities' output (outputs: {outputs})")
        return _Session(sess.run, sess, outputs.index("probabilities"))

    def _live(self) -> dict[str, _Session]:
        sessions = self._sessions
        if sessions is None:
            raise NotOpenError(
                "infer: call open() before process (it starts the model sessions); hosts open "
                "every stage through jobs.topology.opened"
            )
        return sessions

    # -- introspection ---------------------------------------------------------------------
    @property
    def providers(self) -> tuple[str, ...]:
        return providers_for(self.config.device)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._feature_names

    @property
    def feature_version(self) -> str:
        return self._feature_version

    @property
    def models(self) -> Mapping[str, ModelEntry]:
        """Served entries by model name (from the config: known before ``open``)."""
        return self._entries

    def session(self, name: str) -> Any:
        return self._live()[name].session

    # -- contract --------------------------------------------------------------------------
    def key(self, event: FeatureVector) -> str:
        return event.symbol

    def new_state(self, key: str) -> InferState:
        return InferState()

    def process(
        self, state: InferState, event: FeatureVector, ctx: Context
    ) -> tuple[InferState, list[Emit]]:
        sessions = self._live()
        hit = self._primed.pop(id(event), None)
        if hit is not None and hit[0].event is event:  # scored by ``prime``
            scored, probs = hit
        else:
            admitted = self._admit(state, event)
            if admitted is None:
                return state, []
            scored = admitted
            feeds = {"features": np.stack([scored.row, scored.row])}  # process_batch's kernel
            probs = {}
            for name in self._arms[scored.variant]:
                sess = sessions[name]
                probs[name] = float(sess.run(None, feeds)[sess.output_index][0, 1])
        outputs: list[Emit] = []
        self._predict(state, scored, probs, outputs)
        return state, outputs

    def process_batch(
        self, state: InferState, events: Sequence[FeatureVector], ctx: Context
    ) -> tuple[InferState, list[Emit]]:
        """One key's run of vectors, one ``session.run`` per model for the whole run.

        Equal (outputs, order and state) to ``process`` on each vector in turn: the runtime
        calls it when several vectors of one symbol arrive on one watermark step.
        """
        sessions = self._live()
        scored = [s for ev in events if (s := self._admit(state, ev)) is not None]
        if not scored:
            return state, []
        batches: dict[tuple[int, ...], npt.NDArray[np.float32]] = {}
        probs: dict[str, dict[int, float]] = {}
        for name, sess in sessions.items():
            variants = self._variants[name]
            idx = tuple(i for i, s in enumerate(scored) if s.variant in variants)
            if not idx:
                continue
            batch = batches.get(idx)
            if batch is None:  # models of one arm share the stacked rows
                rows = [scored[i].row for i in idx]
                batch = batches[idx] = np.stack(rows if len(rows) > 1 else rows * 2)  # >= 2
            out = sess.run(None, {"features": batch})[sess.output_index]
            probs[name] = dict(zip(idx, out[:, 1].tolist(), strict=False))  # pad row dropped
        emits: list[Emit] = []
        for i, sc in enumerate(scored):
            self._predict(state, sc, {n: p[i] for n, p in probs.items() if i in p}, emits)
        return state, emits

    def prime(self, events: Sequence[FeatureVector]) -> None:
        """Score vectors known ahead of their ``process`` calls, one ``session.run`` per
        model for all of them (a batched replay knows a chunk's vectors at once).

        ``process`` of one of these very objects then takes its primed checks and
        probabilities instead of its own ``session.run``: equal values (the batch kernel
        ``process_batch`` uses, tested equal to one at a time), and state changes only in
        ``process``. Vectors ``process`` would refuse or count as warm-up are not primed (it
        handles them itself). Replaces what an earlier call primed and was not used.
        """
        sessions = self._live()
        self._primed = {}
        scored = [s for ev in events if (s := self._peek(ev)) is not None]
        if not scored:
            return
        probs: dict[str, dict[int, float]] = {}
        for name, sess in sessions.items():
            variants = self._variants[name]
            idx = [i for i, sc in enumerate(scored) if sc.variant in variants]
            if not idx:
                continue
            rows = [scored[i].row for i in idx]
            out = sess.run(None, {"features": np.stack(rows if len(rows) > 1 else rows * 2)}
                           )[sess.output_index]
            probs[name] = dict(zip(idx, out[:, 1].tolist(), strict=False))  # pad row dropped
        for i, sc in enumerate(scored):
            self._primed[id(sc.event)] = (sc, {n: probs[n][i] for n in self._arms[sc.variant]})

    def _peek(self, event: FeatureVector) -> _Scored | None:
        """``_admit`` without its state or its errors: what ``prime`` may score."""
        if event.feature_version != self._feature_version:
            return None
        values = [getattr(event, n) for n in self._feature_names]
        if any(v is None for v in values):
            return None
        row = np.array(values, dtype=np.float32)
        if not np.all(np.isfinite(row)):
            return None
        decision_id = decision_id_for(event)
        return _Scored(event, decision_id, arm_for(decision_id, self.config.ab_split), row)

    def _predict(self, state: InferState, scored: _Scored, probs: Mapping[str, float],
                 out: list[Emit]) -> None:
        """One decision's predictions (its arm's models, in arm order) and its state update."""
        ev = scored.event
        x64 = scored.row.astype(np.float64)  # explain the float32 values the model saw
        for name in self._arms[scored.variant]:
            entry = self._entries[name]
            prob = probs[name]
            explainer = self._explainers.get(name)
            out.append(Emit(PREDICTIONS_TOPIC, ev.symbol, Prediction(
                ts_event=ev.ts_event, symbol=ev.symbol, decision_id=scored.decision_id,
                model=name, model_version=entry.version, variant=scored.variant,
                regime=entry.regime, score=2.0 * prob - 1.0, prob_up=prob,
                contributions=explainer(x64) if explainer is not None else None,
                device=self._device)))
        state.decisions += 1
        state.last_ts_event = ev.ts_event

    def _admit(self, state: InferState, event: FeatureVector) -> _Scored | None:
        """Check one vector; count it as warm-up (None) or return what to score."""
        if event.feature_version != self._feature_version:
            raise FeatureVersionError(
                f"infer: {event.symbol} at ts_event={event.ts_event} has feature_version "
                f"{event.feature_version!r} but the served models "
                f"({', '.join(e.ref for e in self.config.models)}) were trained on "
                f"{self._feature_version!r}; deploy models for that feature version"
            )
        values = [getattr(event, n) for n in self._feature_names]
        if any(v is None for v in values):
            state.warmup_skipped += 1
            return None
        row = np.array(values, dtype=np.float32)
        if not np.all(np.isfinite(row)):
            raise ValueError(
                f"infer: non-finite feature in {event.symbol} at ts_event={event.ts_event} "
                "(features must be None, never NaN/inf)"
            )
        decision_id = decision_id_for(event)
        return _Scored(event, decision_id, arm_for(decision_id, self.config.ab_split), row)

    # -- batch path --------------------------------------------------------------------------
    def predict_batch(
        self, matrix: npt.ArrayLike, names: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[np.float64]]:
        """P(up) per served model for rows of ``feature_names`` (e.g. bars closing together).

        Rows with any NaN (warm-up) give NaN, matching the per-event path's "no prediction".
        Values equal the per-event ``prob_up`` exactly on the CPU provider.
        """
        sessions = self._live()
        X = np.asarray(matrix, dtype=np.float32)
        f = len(self._feature_names)
        if X.ndim != 2 or X.shape[1] != f:
            raise ValueError(f"matrix must be (n, {f}) in {self._feature_names}, got {X.shape}")
        valid = np.all(np.isfinite(X), axis=1)
        rows = X[valid]
        if len(rows) == 1:
            rows = np.concatenate([rows, rows])
        out: dict[str, npt.NDArray[np.float64]] = {}
        for name in names if names is not None else tuple(sessions):
            sess = sessions[name]
            res = np.full(X.shape[0], np.nan)
            if valid.any():
                probs = sess.run(None, {"features": rows})[sess.output_index][:, 1]
                res[valid] = probs[: int(valid.sum())].astype(np.float64)
            out[name] = res
        return out


# --------------------------------------------------------------------------- explanations


def linear_contributions(
    entry: ModelEntry, x: FeatureVector | Sequence[float] | npt.ArrayLike
) -> dict[str, float]:
    """Per-feature contribution to a linear model's logit: ``(x - mean) * coef / scale``.

    The contributions plus ``entry.linear.intercept`` sum to the logit of the model's
    ``prob_up``; ``x`` is a FeatureVector or values in ``entry.feature_names`` order.
    """
    explain = _LinearExplainer(entry)
    if isinstance(x, FeatureVector):
        raw = [getattr(x, n) for n in entry.feature_names]
        if any(v is None for v in raw):
            raise ValueError(f"feature vector of {x.symbol} at {x.ts_event} is still warming up")
        vals = np.array(raw, dtype=np.float32).astype(np.float64)
    else:
        # the model sees float32 features: explain exactly those values
        vals = np.asarray(x, dtype=np.float32).astype(np.float64).reshape(-1)
    if vals.shape != (len(entry.feature_names),):
        raise ValueError(f"expected {len(entry.feature_names)} values, got {vals.shape}")
    return explain(vals)
