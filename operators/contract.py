"""The operator contract every pipeline stage implements, engine-neutral and I/O-free.

An operator is a plain class with frozen, validated config. A runtime (the local runner,
PyFlink, later Faust) owns storage, partitioning, timers, watermarks, checkpoints and I/O and
drives the operator through four calls:

- ``key(event)``: the partitioning key (a string; hashed by the runtime with a stable hash);
- ``process(state, event, ctx) -> (state, outputs)``: one deterministic state transition;
- ``on_timer(state, ts, ctx) -> (state, outputs)``: an event-time timer the operator
  registered through ``ctx`` fired because the watermark reached ``ts``;
- ``snapshot(state) -> bytes`` / ``restore(bytes) -> state``: a versioned, self-describing
  encoding, so a changed operator, state schema or config is detected instead of silently
  mixed.

State is a small ``msgspec.Struct`` per key. Ownership passes with the call: ``process`` may
update the state object it is given and returns the state to keep (the Flink ``ValueState``
get/update/put pattern), which keeps the per-tick path free of copies. Events are frozen and
never mutated. Operators read no wall clock and do no I/O; ``ctx.now`` exists for runtimes
that need processing time for metrics and is never used for decisions.

Time is integer nanoseconds since the epoch, UTC. A watermark ``W`` promises that no more
events with ``ts < W`` will arrive on time; an event with ``ts < W`` is late. (Flink's
watermark is ``W - 1`` in this notation; the PyFlink wrapper converts.) Timers fire when the
watermark reaches their timestamp, in ``(ts, key)`` order; at end of stream the runtime
advances the watermark to ``END_OF_STREAM`` so every timer fires the same way everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import msgspec

END_OF_STREAM = 2**63 - 1
"""Watermark value meaning "no more input": fires every pending timer."""

MIN_WATERMARK = -(2**63)


S = TypeVar("S", bound=msgspec.Struct)
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Emit:
    """An output message tagged with its topic and partitioning key."""

    topic: str
    key: str
    value: msgspec.Struct


class Context(Protocol):
    """What a runtime gives an operator during a call."""

    @property
    def watermark(self) -> int:
        """The current input watermark (ns), before the event being processed."""
        ...

    @property
    def now(self) -> int:
        """Processing time from the runtime's injected clock; for metrics, never for logic."""
        ...

    def register_timer(self, ts: int) -> None:
        """Ask for ``on_timer(state, ts)`` of the current key when the watermark reaches ts."""
        ...


class StateMismatchError(RuntimeError):
    """A snapshot was taken by another operator, state version or config."""


class _Envelope(msgspec.Struct, frozen=True):
    uid: str
    state_version: int
    config_hash: str
    state: msgspec.Raw


class Operator(Generic[S, E]):
    """Base class: subclasses set ``UID``, ``STATE_VERSION``, ``State`` and implement logic.

    ``UID`` is the stable step id (Flink ``uid()``); it names the state in checkpoints, so it
    never changes once released. ``config_fingerprint`` folds the config that shapes state
    into snapshots: restoring under another config fails loudly.
    """

    UID: ClassVar[str]
    STATE_VERSION: ClassVar[int] = 1
    State: type[S]

    def config_fingerprint(self) -> str:
        """A stable digest of the config that shapes the state (override to narrow it)."""
        cfg = getattr(self, "config", None)
        raw = msgspec.json.encode(cfg, order="deterministic") if cfg is not None else b""
        return hashlib.sha256(raw).hexdigest()[:16]

    def key(self, event: E) -> str:
        raise NotImplementedError

    def new_state(self, key: str) -> S:
        raise NotImplementedError

    def process(self, state: S, event: E, ctx: Context) -> tuple[S, list[Emit]]:
        raise NotImplementedError

    def on_timer(self, state: S, ts: int, ctx: Context) -> tuple[S, list[Emit]]:
        """Default: operators without timers never get here."""
        return state, []

    # -- state encoding ---------------------------------------------------------------
    def snapshot(self, state: S) -> bytes:
        env = _Envelope(
            uid=self.UID,
            state_version=self.STATE_VERSION,
            config_hash=self.config_fingerprint(),
            state=msgspec.Raw(msgspec.msgpack.encode(state)),
        )
        return msgspec.msgpack.encode(env)

    def restore(self, data: bytes) -> S:
        env = msgspec.msgpack.decode(data, type=_Envelope)
        if env.uid != self.UID:
            raise StateMismatchError(f"snapshot of {env.uid!r} offered to {self.UID!r}")
        if env.state_version != self.STATE_VERSION:
            raise StateMismatchError(
                f"{self.UID}: snapshot state version {env.state_version}, "
                f"operator expects {self.STATE_VERSION}"
            )
        if env.config_hash != self.config_fingerprint():
            raise StateMismatchError(
                f"{self.UID}: snapshot taken under another config "
                f"({env.config_hash} != {self.config_fingerprint()})"
            )
        restored: S = msgspec.msgpack.decode(env.state, type=self.State)
        return restored


@dataclass(slots=True)
class SimpleContext:
    """A context for one call: a fixed watermark and clock, collecting timer requests.

    Runtimes may use it directly; tests use it to drive operators without a runtime.
    """

    watermark: int = MIN_WATERMARK
    now: int = 0
    timers: list[int] | None = None

    def register_timer(self, ts: int) -> None:
        if self.timers is None:
            self.timers = []
        self.timers.append(ts)


def stable_hash(*parts: Any) -> str:
    """A process-independent hex digest of its arguments (Python's ``hash()`` is salted)."""
    h = hashlib.blake2b(digest_size=12)
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\x1f")
    return h.hexdigest()


def stable_bucket(value: str, buckets: int) -> int:
    """Deterministic bucket in ``[0, buckets)`` for partitioning and A/B splits."""
    digest = hashlib.blake2b(value.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets
