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

Hot paths may offer ``process_batch(state, events, ctx)``: one key's run of events with that
key's state, equal to calling ``process`` on each in turn (the shape Flink and Faust can host:
keyed state is per key). Operators that hold resources (ONNX sessions, River models) acquire
them in ``open`` and release them in ``close``; constructors do no I/O.

State is a small typed object per key, encoded by the operator's ``state_codec`` (msgpack of a
``msgspec.Struct`` by default; an explicit, versioned codec for opaque state such as a River
model). A checkpoint stores one ``OperatorEnvelope`` per operator (uid, state version, config
fingerprint — computed once) and each key's raw state bytes; ``snapshot``/``restore`` wrap one
key's state in its envelope for hosts that keep state per key (a Flink ``ValueState``).
Ownership passes with the call: ``process`` may
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

import msgspec

END_OF_STREAM = 2**63 - 1
"""Watermark value meaning "no more input": fires every pending timer."""

MIN_WATERMARK = -(2**63)


S = TypeVar("S")
E = TypeVar("E")


class Emit(NamedTuple):
    """An output message tagged with its topic and partitioning key.

    A named tuple rather than a frozen dataclass: it is built once per output message on the
    per-tick path, and a tuple is the cheapest immutable record CPython builds.
    """

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


class NotOpenError(RuntimeError):
    """An operator that holds resources was called before ``open`` (or after ``close``)."""


class StateMismatchError(RuntimeError):
    """A snapshot was taken by another operator, state version or config."""


class OperatorEnvelope(msgspec.Struct, frozen=True):
    """What identifies an operator's state: checked once per operator when state is restored."""

    uid: str
    state_version: int
    config_hash: str
    codec: str = "msgpack"


class StateCodec(Protocol[S]):  # type: ignore[misc]
    """Encodes one key's state; ``name`` goes into the envelope so a changed codec is refused."""

    name: str

    def encode(self, state: S) -> bytes: ...

    def decode(self, data: bytes) -> S: ...


class MsgpackCodec(Generic[S]):
    """The default codec: msgpack of a ``msgspec.Struct`` state (every float bit kept)."""

    name = "msgpack"

    __slots__ = ("_decoder", "_encoder")

    def __init__(self, state_type: type[S]) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(state_type)

    def encode(self, state: S) -> bytes:
        return self._encoder.encode(state)

    def decode(self, data: bytes) -> S:
        decoded: S = self._decoder.decode(data)
        return decoded


class _Snapshot(msgspec.Struct, frozen=True):
    envelope: OperatorEnvelope
    state: bytes


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

    def process_batch(
        self, state: S, events: Sequence[E], ctx: Context
    ) -> tuple[S, list[Emit]]:
        """One key's run of events with that key's state: the same as ``process`` on each.

        Override where a batch is cheaper (one ONNX call for several vectors); the result
        must equal the one-at-a-time calls (tested for every operator).
        """
        out: list[Emit] = []
        for ev in events:
            state, emits = self.process(state, ev, ctx)
            out.extend(emits)
        return state, out

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Acquire resources (model sessions) before the first call; idempotent.

        Hosts call it once before the first event (``jobs.topology.opened``); an operator
        that needs it raises :class:`NotOpenError` from ``process`` rather than opening
        lazily, so no I/O ever happens inside a state transition.
        """

    def close(self) -> None:
        """Release what ``open`` acquired; idempotent, and the operator may be opened again."""

    # -- state encoding ---------------------------------------------------------------
    def state_codec(self) -> StateCodec[S]:
        """How one key's state becomes bytes; override for opaque state (a River model)."""
        codec: StateCodec[S] | None = self.__dict__.get("_state_codec")
        if codec is None:
            codec = MsgpackCodec(self.State)
            self.__dict__["_state_codec"] = codec
        return codec

    def envelope(self) -> OperatorEnvelope:
        """This operator's identity in checkpoints (the config fingerprint is computed once)."""
        cached: tuple[type[Any], OperatorEnvelope] | None = self.__dict__.get("_envelope")
        if cached is not None and cached[0] is type(self):
            return cached[1]
        env = OperatorEnvelope(
            uid=self.UID,
            state_version=self.STATE_VERSION,
            config_hash=self.config_fingerprint(),
            codec=self.state_codec().name,
        )
        self.__dict__["_envelope"] = (type(self), env)
        return env

    def check_envelope(self, env: OperatorEnvelope) -> None:
        """Refuse state taken by another operator, state version, config or codec."""
        mine = self.envelope()
        if env.uid != mine.uid:
            raise StateMismatchError(f"snapshot of {env.uid!r} offered to {mine.uid!r}")
        if env.state_version != mine.state_version:
            raise StateMismatchError(
                f"{mine.uid}: snapshot state version {env.state_version}, "
                f"operator expects {mine.state_version}"
            )
        if env.config_hash != mine.config_hash:
            raise StateMismatchError(
                f"{mine.uid}: snapshot taken under another config "
                f"({env.config_hash} != {mine.config_hash})"
            )
        if env.codec != mine.codec:
            raise StateMismatchError(
                f"{mine.uid}: snapshot encoded with {env.codec!r}, operator uses {mine.codec!r}"
            )

    def encode_state(self, state: S) -> bytes:
        """One key's raw state (no envelope): what a checkpoint stores per key."""
        return self.state_codec().encode(state)

    def decode_state(self, data: bytes) -> S:
        return self.state_codec().decode(data)

    def snapshot(self, state: S) -> bytes:
        """One key's state with its envelope, self-describing (per-key state stores)."""
        return msgspec.msgpack.encode(_Snapshot(envelope=self.envelope(),
                                                state=self.encode_state(state)))

    def restore(self, data: bytes) -> S:
        snap = msgspec.msgpack.decode(data, type=_Snapshot)
        self.check_envelope(snap.envelope)
        return self.decode_state(snap.state)


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
