"""The ``infer`` operator: specialist ONNX models scored per feature vector, with an A/B split.

Sessions are opened once per operator instance from the verified registry (construction and
:meth:`Infer.reload_if_changed` are the only places that touch files; ``process`` is pure
given the loaded models). State per symbol is a few counters.

Determinism: the reference provider is the CPU one with a fixed thread count. onnxruntime's
CPU GEMM takes a different code path for a single row than for two or more, which changes
the last bit of a linear model's output; every run therefore feeds at least two rows (a single
row is duplicated), so the per-event path and :meth:`Infer.predict_batch` give identical
numbers. The A/B arm comes from a stable hash of the decision id, never from ``hash()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from jobs.loaders.registry import ModelEntry, Registry, RegistryError
from operators.contract import Context, Emit, Operator, stable_bucket, stable_hash
from topics.messages import FeatureVector, Prediction

AB_BUCKETS = 10_000
PREDICTIONS_TOPIC = "predictions"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_QUIET = 3  # onnxruntime log severity: errors only (no warnings about missing providers)

Device = Literal["cpu", "auto", "cuda"]


class FeatureVersionError(ValueError):
    """A feature vector's version differs from the one the models were trained on."""


def decision_id_for(fv: FeatureVector) -> str:
    """Deterministic decision id: ``{symbol}-{ts_event}-{12 hex}`` of (symbol, ts, version)."""
    digest = stable_hash(fv.symbol, fv.ts_event, fv.feature_version)
    return f"{fv.symbol}-{fv.ts_event}-{digest[:12]}"


def arm_for(decision_id: str, ab_split: float) -> Literal["A", "B"]:
    """Arm B for the first ``ab_split`` fraction of 10,000 stable buckets, else arm A."""
    return "B" if stable_bucket(decision_id, AB_BUCKETS) < round(ab_split * AB_BUCKETS) else "A"


# --------------------------------------------------------------------------- providers


def _session_options(threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = _QUIET
    return so


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data: bytes = model.SerializeToString()
    return data


def cuda_available() -> bool:
    """True when the CUDA provider is built in *and* a real session runs on it.

    ``get_available_providers()`` lists CUDA for the GPU wheel even on a machine without a
    driver; only opening and running a session proves it works. The check stays quiet when
    the provider is not even listed (the common CPU-only case).
    """
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False
    try:
        so = _session_options(1)
        so.log_severity_level = 4  # fatal only: a failed probe is an answer, not an error
        sess = ort.InferenceSession(_probe_model(), so, providers=[CUDA])
        if sess.get_providers()[0] != CUDA:
            return False
        out = sess.run(None, {"x": np.full((1, 1), 1.5, dtype=np.float32)})[0]
        return bool(out[0, 0] == 3.0)
    except Exception:  # any failure to start CUDA means "not available"
        return False


def resolve_providers(device: Device) -> tuple[str, ...]:
    """Providers for a device request: ``cpu`` (reference), ``auto`` (CUDA if it works),
    ``cuda`` (CUDA or a clear error)."""
    if device == "cpu":
        return (CPU,)
    if cuda_available():
        return (CUDA, CPU)
    if device == "cuda":
        import onnxruntime as ort

        raise RuntimeError(
            "device='cuda' requested but CUDA is not usable by onnxruntime "
            f"(available providers: {ort.get_available_providers()}); use device='auto' or 'cpu'"
        )
    return (CPU,)


# --------------------------------------------------------------------------- config/state


@dataclass(frozen=True, slots=True)
class InferConfig:
    """Which models serve which arm, and how sessions run.

    ``arm_a``/``arm_b`` are model names in the registry (the latest version of each unless
    pinned in ``pins`` as ``(name, version)`` pairs); ``ab_split`` is the fraction of
    decisions served by arm B.
    """

    registry_dir: str
    arm_a: tuple[str, ...]
    arm_b: tuple[str, ...] = ()
    ab_split: float = 0.0
    pins: tuple[tuple[str, str], ...] = ()
    intra_op_num_threads: int = 1
    device: Device = "cpu"
    explain: bool = True  # attach per-feature contributions to linear models' predictions

    def __post_init__(self) -> None:
        if not self.registry_dir:
            raise ValueError("registry_dir must be set")
        if not self.arm_a:
            raise ValueError("arm_a must name at least one model")
        for arm_name, arm in (("arm_a", self.arm_a), ("arm_b", self.arm_b)):
            if len(set(arm)) != len(arm):
                raise ValueError(f"{arm_name} names a model twice: {arm}")
        if not (0.0 <= self.ab_split <= 1.0) or math.isnan(self.ab_split):
            raise ValueError(f"ab_split must be in [0, 1], got {self.ab_split}")
        if self.ab_split > 0 and not self.arm_b:
            raise ValueError("ab_split > 0 needs models in arm_b")
        pinned = [n for n, _ in self.pins]
        if len(set(pinned)) != len(pinned):
            raise ValueError(f"a model is pinned twice: {pinned}")
        stray = set(pinned) - set(self.model_names)
        if stray:
            raise ValueError(f"pins for models in neither arm: {sorted(stray)}")
        if self.intra_op_num_threads < 1:
            raise ValueError("intra_op_num_threads must be >= 1")
        if self.device not in ("cpu", "auto", "cuda"):
            raise ValueError(f"device must be 'cpu', 'auto' or 'cuda', got {self.device!r}")

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every served model once: arm A's order, then arm B's new names."""
        return self.arm_a + tuple(n for n in self.arm_b if n not in self.arm_a)


class InferState(msgspec.Struct, kw_only=True):
    """Per symbol: how many decisions were scored and how many warm-up vectors skipped."""

    decisions: int = 0
    warmup_skipped: int = 0
    last_ts_event: int | None = None


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A registry entry with its open onnxruntime session (and, for linear models, the
    closed form used to explain a prediction)."""

    entry: ModelEntry
    session: Any  # onnxruntime.InferenceSession
    output_index: int
    explainer: _LinearExplainer | None


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


# --------------------------------------------------------------------------- operator


class Infer(Operator[InferState, FeatureVector]):
    """``features`` -> ``predictions``: one Prediction per model of the decision's arm."""

    UID: ClassVar[str] = "infer"
    STATE_VERSION: ClassVar[int] = 1
    State = InferState

    def __init__(self, config: InferConfig, registry: Registry | None = None) -> None:
        self.config = config
        self._registry = registry if registry is not None else Registry.load(config.registry_dir)
        self._providers = resolve_providers(config.device)
        self._models: dict[str, LoadedModel] = {}
        self._open(self._select())

    # -- setup and reload (the only I/O, outside process) ----------------------------------
    def _select(self) -> tuple[ModelEntry, ...]:
        entries = self._registry.select(self.config.model_names, dict(self.config.pins))
        names = {e.feature_names for e in entries}
        versions = {e.feature_version for e in entries}
        if len(names) != 1 or len(versions) != 1:
            desc = ", ".join(
                f"{e.ref}: {e.feature_version} {list(e.feature_names)}" for e in entries
            )
            raise RegistryError(
                f"infer: served models disagree on features or feature_version ({desc})"
            )
        by_name = {e.name: e for e in entries}
        for arm_name, arm in (("arm_a", self.config.arm_a), ("arm_b", self.config.arm_b)):
            regimes = [by_name[n].regime for n in arm]
            if len(set(regimes)) != len(regimes):
                # downstream (regime blend) keys a decision's predictions by regime
                raise RegistryError(
                    f"infer: {arm_name} serves two models for one regime: "
                    f"{[(n, by_name[n].regime) for n in arm]}"
                )
        unknown = set(entries[0].feature_names) - set(FeatureVector.NAMES)
        if unknown:
            raise RegistryError(
                f"infer: models use features not in FeatureVector.NAMES: {sorted(unknown)}"
            )
        return entries

    def _load(self, entry: ModelEntry) -> LoadedModel:
        import onnxruntime as ort

        data = self._registry.read_model(entry)  # verified bytes, not a re-read path
        sess = ort.InferenceSession(
            data,
            _session_options(self.config.intra_op_num_threads),
            providers=list(self._providers),
        )
        inputs = sess.get_inputs()
        if len(inputs) != 1 or inputs[0].name != "features":
            raise RegistryError(f"{entry.ref}: expected one input named 'features'")
        outputs = [o.name for o in sess.get_outputs()]
        if "probabilities" not in outputs:
            raise RegistryError(f"{entry.ref}: no 'probabilities' output (outputs: {outputs})")
        explainer = _LinearExplainer(entry) if entry.linear is not None else None
        return LoadedModel(entry, sess, outputs.index("probabilities"), explainer)

    def _open(self, entries: Sequence[ModelEntry]) -> tuple[str, ...]:
        """Open sessions for entries whose version or file changed; return their names."""
        fresh = dict(self._models)
        changed: list[str] = []
        for e in entries:
            cur = fresh.get(e.name)
            if cur is None or (cur.entry.version, cur.entry.sha256) != (e.version, e.sha256):
                fresh[e.name] = self._load(e)
                changed.append(e.name)
        self._models = {e.name: fresh[e.name] for e in entries}
        first = entries[0]
        self._feature_names = first.feature_names
        self._feature_version = first.feature_version
        return tuple(changed)

    def reload_if_changed(self) -> tuple[str, ...]:
        """Re-read the registry if its file changed; re-open only the changed models.

        Called by the runtime between events (e.g. at a checkpoint barrier or on a control
        record) so every replica switches at the same point of the stream. On error the
        current models stay in service and the error is raised.
        """
        if not self._registry.reload_if_changed():
            return ()
        return self._open(self._select())

    # -- introspection ---------------------------------------------------------------------
    @property
    def providers(self) -> tuple[str, ...]:
        return self._providers

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._feature_names

    @property
    def feature_version(self) -> str:
        return self._feature_version

    @property
    def models(self) -> Mapping[str, ModelEntry]:
        """Served entries by model name."""
        return {n: m.entry for n, m in self._models.items()}

    def session(self, name: str) -> Any:
        return self._models[name].session

    def config_fingerprint(self) -> str:
        """State holds only counters, independent of the model set: keep snapshots valid
        across model and A/B changes."""
        return stable_hash(self.UID, "counters")[:16]

    # -- contract --------------------------------------------------------------------------
    def key(self, event: FeatureVector) -> str:
        return event.symbol

    def new_state(self, key: str) -> InferState:
        return InferState()

    def process(
        self, state: InferState, event: FeatureVector, ctx: Context
    ) -> tuple[InferState, list[Emit]]:
        if event.feature_version != self._feature_version:
            raise FeatureVersionError(
                f"infer: {event.symbol} at ts_event={event.ts_event} has feature_version "
                f"{event.feature_version!r} but the served models "
                f"({', '.join(m.entry.ref for m in self._models.values())}) were trained on "
                f"{self._feature_version!r}; deploy models for that feature version"
            )
        values = [getattr(event, n) for n in self._feature_names]
        if any(v is None for v in values):
            state.warmup_skipped += 1
            return state, []
        row = np.array(values, dtype=np.float32)
        if not np.all(np.isfinite(row)):
            raise ValueError(
                f"infer: non-finite feature in {event.symbol} at ts_event={event.ts_event} "
                "(features must be None, never NaN/inf)"
            )
        decision_id = decision_id_for(event)
        variant = arm_for(decision_id, self.config.ab_split)
        arm = self.config.arm_b if variant == "B" else self.config.arm_a
        batch = np.stack([row, row])  # >= 2 rows: same kernel as predict_batch
        x64 = row.astype(np.float64)  # explain the float32 values the model saw
        outputs: list[Emit] = []
        for name in arm:
            m = self._models[name]
            prob = float(m.session.run(None, {"features": batch})[m.output_index][0, 1])
            contributions = (
                m.explainer(x64) if self.config.explain and m.explainer is not None else None
            )
            outputs.append(
                Emit(
                    PREDICTIONS_TOPIC,
                    event.symbol,
                    Prediction(
                        ts_event=event.ts_event,
                        symbol=event.symbol,
                        decision_id=decision_id,
                        model=name,
                        model_version=m.entry.version,
                        variant=variant,
                        regime=m.entry.regime,
                        score=2.0 * prob - 1.0,
                        prob_up=prob,
                        contributions=contributions,
                    ),
                )
            )
        state.decisions += 1
        state.last_ts_event = event.ts_event
        return state, outputs

    def process_many(
        self,
        states: MutableMapping[str, InferState],
        events: Sequence[FeatureVector],
        ctx: Context,
    ) -> list[Emit]:
        """Vectors that closed together (one watermark step), one ``session.run`` per model.

        Same outputs, in the same order, as ``process`` on each event in turn (``states`` is
        updated the same way): the runtime calls this when several vectors arrive at once, e.g.
        many symbols' bars closing on one watermark.
        """
        pending: list[tuple[FeatureVector, InferState, str, str, npt.NDArray[np.float32]]] = []
        for ev in events:
            st = states.get(ev.symbol)
            if st is None:
                st = states[ev.symbol] = self.new_state(ev.symbol)
            if ev.feature_version != self._feature_version:
                self.process(st, ev, ctx)  # raises the same FeatureVersionError
            values = [getattr(ev, n) for n in self._feature_names]
            if any(v is None for v in values):
                st.warmup_skipped += 1
                continue
            row = np.array(values, dtype=np.float32)
            if not np.all(np.isfinite(row)):
                self.process(st, ev, ctx)  # raises the same error
            did = decision_id_for(ev)
            pending.append((ev, st, did, arm_for(did, self.config.ab_split), row))
        if not pending:
            return []
        probs: dict[tuple[int, str], float] = {}
        for name, m in self._models.items():
            idx = [i for i, p in enumerate(pending)
                   if name in (self.config.arm_b if p[3] == "B" else self.config.arm_a)]
            if not idx:
                continue
            rows = [pending[i][4] for i in idx]
            batch = np.stack(rows if len(rows) > 1 else rows * 2)  # >= 2 rows, as process()
            out = m.session.run(None, {"features": batch})[m.output_index]
            for j, i in enumerate(idx):
                probs[(i, name)] = float(out[j, 1])
        emits: list[Emit] = []
        for i, (ev, st, did, variant, row) in enumerate(pending):
            arm = self.config.arm_b if variant == "B" else self.config.arm_a
            x64 = row.astype(np.float64)
            for name in arm:
                m = self._models[name]
                prob = probs[(i, name)]
                contributions = (
                    m.explainer(x64) if self.config.explain and m.explainer is not None else None
                )
                emits.append(Emit(PREDICTIONS_TOPIC, ev.symbol, Prediction(
                    ts_event=ev.ts_event, symbol=ev.symbol, decision_id=did, model=name,
                    model_version=m.entry.version, variant=variant, regime=m.entry.regime,
                    score=2.0 * prob - 1.0, prob_up=prob, contributions=contributions)))
            st.decisions += 1
            st.last_ts_event = ev.ts_event
        return emits

    # -- batch path --------------------------------------------------------------------------
    def predict_batch(
        self, matrix: npt.ArrayLike, names: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[np.float64]]:
        """P(up) per served model for rows of ``feature_names`` (e.g. bars closing together).

        Rows with any NaN (warm-up) give NaN, matching the per-event path's "no prediction".
        Values equal the per-event ``prob_up`` exactly on the CPU provider.
        """
        X = np.asarray(matrix, dtype=np.float32)
        f = len(self._feature_names)
        if X.ndim != 2 or X.shape[1] != f:
            raise ValueError(f"matrix must be (n, {f}) in {self._feature_names}, got {X.shape}")
        valid = np.all(np.isfinite(X), axis=1)
        rows = X[valid]
        if len(rows) == 1:
            rows = np.concatenate([rows, rows])
        out: dict[str, npt.NDArray[np.float64]] = {}
        for name in names if names is not None else tuple(self._models):
            m = self._models[name]
            res = np.full(X.shape[0], np.nan)
            if valid.any():
                probs = m.session.run(None, {"features": rows})[m.output_index][:, 1]
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
