"""The checkpoint: one versioned, self-describing snapshot of a host's position in the stream.

Laid out for a Kafka host (and readable by any other): per operator one ``OperatorEnvelope``
(uid, state version, config fingerprint, codec; validated once per operator on restore) and
each key's raw state bytes from the operator's codec; the stage's timers, its last watermark
and its event-time merge buffers; the source's per-partition watermark inputs; the source
offsets the host consumed up to (opaque integers the host supplies, e.g. Kafka offsets of the
next record to read); and the output positions (messages emitted so far per output topic, so a
restarted host knows what it already produced and can skip or dedupe).

Everything is sorted where order is not already defined, so the same position always encodes
to the same bytes. ``write_checkpoint`` replaces a file atomically (temp file, fsync, rename,
fsync of the directory): a crash leaves the old checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from operators.contract import OperatorEnvelope

CHECKPOINT_FORMAT = 1
"""Bumped whenever the layout below changes; a checkpoint of another format is refused."""


class CheckpointFormatError(ValueError):
    """The bytes are not a checkpoint of the format this code reads."""


class KeyState(msgspec.Struct, frozen=True, array_like=True):
    """One key's state as its operator's codec encoded it (no envelope: one per operator)."""

    key: str
    state: bytes


class BufferedInput(msgspec.Struct, frozen=True, array_like=True):
    """A multi-input stage's event waiting in the event-time merge (msgpack of the value)."""

    topic: str
    value: bytes


class MergeBuffer(msgspec.Struct, frozen=True, array_like=True):
    """One key's merge buffer, in arrival order (the order breaks the last ties)."""

    key: str
    entries: list[BufferedInput]


class OperatorCheckpoint(msgspec.Struct, frozen=True):
    """One stage: its envelope, last received watermark, keyed states, timers, merge buffers."""

    envelope: OperatorEnvelope
    watermark: int
    states: list[KeyState]
    timers: list[tuple[int, str]]
    merge: list[MergeBuffer] = []


class PartitionWatermark(msgspec.Struct, frozen=True, array_like=True):
    """One source partition's watermark inputs (see ``jobs.core.watermarks``)."""

    partition: int
    max_ts: int
    heartbeat: int
    ended: bool


class SourceOffset(msgspec.Struct, frozen=True, array_like=True):
    """Where the host resumes reading one source partition (opaque to the core)."""

    topic: str
    partition: int
    offset: int


class Checkpoint(msgspec.Struct, frozen=True):
    format: int
    watermark: int
    """The watermark the graph last received (what the stages' timers were fired up to)."""
    partitions: list[PartitionWatermark]
    operators: list[OperatorCheckpoint]
    source_offsets: list[SourceOffset] = []
    output_positions: dict[str, int] = {}
    host: dict[str, int] = {}
    """Integers a host keeps for itself (a sequenced source's merge position, ...)."""


class _Head(msgspec.Struct):
    format: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Checkpoint)


def make_checkpoint(
    *,
    watermark: int,
    partitions: list[PartitionWatermark],
    operators: list[OperatorCheckpoint],
    source_offsets: dict[tuple[str, int], int] | None = None,
    output_positions: dict[str, int] | None = None,
    host: dict[str, int] | None = None,
) -> Checkpoint:
    """A checkpoint of the current format, with offsets and positions in a canonical order."""
    offsets = [SourceOffset(t, p, o) for (t, p), o in sorted((source_offsets or {}).items())]
    positions = dict(sorted((output_positions or {}).items()))
    return Checkpoint(format=CHECKPOINT_FORMAT, watermark=watermark, partitions=partitions,
                      operators=operators, source_offsets=offsets, output_positions=positions,
                      host=dict(sorted((host or {}).items())))


def encode_checkpoint(cp: Checkpoint) -> bytes:
    return _encoder.encode(cp)


def decode_checkpoint(data: bytes) -> Checkpoint:
    """Decode a checkpoint, refusing other formats before reading anything else."""
    try:
        head = msgspec.msgpack.decode(data, type=_Head)
    except msgspec.DecodeError as exc:
        raise CheckpointFormatError(f"not a checkpoint: {exc}") from None
    if head.format != CHECKPOINT_FORMAT:
        raise CheckpointFormatError(
            f"checkpoint format {head.format}, this code reads format {CHECKPOINT_FORMAT}")
    return _decoder.decode(data)


def write_checkpoint(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename, fsync directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_checkpoint(path: Path) -> Checkpoint:
    return decode_checkpoint(path.read_bytes())
