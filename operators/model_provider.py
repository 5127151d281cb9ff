"""What a model-serving operator serves and where the bytes come from: the provider seam.

``infer`` never reads files. Its config lists the served entries (name, version, sha256,
features), so the served set is in the config fingerprint, the checkpoint envelope and the run
manifest; a :class:`ModelProvider` handed to the operator supplies the bytes of those entries
when the host opens it. The file-backed provider lives with the registry loader
(``jobs.loaders.registry.FileModelProvider``); a Kafka or Flink host can hand over a provider
that reads a model store instead, and ``infer`` cannot tell the difference — it checks every
model's bytes against the entry's sha256 itself.
"""

from __future__ import annotations

import hashlib
from typing import Literal, Protocol

import msgspec

Kind = Literal["linear", "gbm"]
RegimeName = Literal["bull", "bear", "sideways"]
ParamValue = str | int | float | bool | None

CREATED_BY = "streamquant train"


class ModelIntegrityError(RuntimeError):
    """A model's bytes are missing or their sha256 differs from the entry's."""


class LinearCoefficients(msgspec.Struct, frozen=True, kw_only=True):
    """A standardized logistic model in closed form, for per-feature contributions.

    ``logit(x) = intercept + sum(coef[i] * (x[i] - mean[i]) / scale[i])``.
    """

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float


class ModelEntry(msgspec.Struct, frozen=True, kw_only=True):
    """Metadata of one trained model file; ``path`` is relative to the registry directory."""

    name: str
    version: str
    kind: Kind
    regime: RegimeName
    path: str
    sha256: str
    feature_names: tuple[str, ...]
    feature_version: str
    train_start: int
    train_end: int
    horizon_bars: int
    metrics: dict[str, float]
    n_train: int
    n_dropped: int
    opset: int
    seed: int = 0
    params: dict[str, ParamValue] = msgspec.field(default_factory=dict)
    created_by: str = CREATED_BY
    linear: LinearCoefficients | None = None

    @property
    def ref(self) -> str:
        """``name@version``, the identifier used in logs and errors."""
        return f"{self.name}@{self.version}"


class ModelProvider(Protocol):
    """Where a serving operator's models come from (files, a model store, a test fixture)."""

    def entries(self) -> tuple[ModelEntry, ...]:
        """The served set, in serving order: what a host puts into the operator's config."""
        ...

    def load(self, entry: ModelEntry) -> bytes:
        """The model's ONNX bytes; raises :class:`ModelIntegrityError` if they are missing
        or do not match ``entry.sha256``."""
        ...


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verified(entry: ModelEntry, data: bytes, where: str = "") -> bytes:
    """``data`` if its sha256 is the entry's, else :class:`ModelIntegrityError`."""
    digest = sha256_bytes(data)
    if digest != entry.sha256:
        at = f" {where}" if where else ""
        raise ModelIntegrityError(
            f"model file of {entry.ref} does not match the registry:{at} has sha256 "
            f"{digest}, the registry expects {entry.sha256} (tampered or replaced file)"
        )
    return data
