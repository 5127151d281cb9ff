"""Where the local runner's topics go: JSON-lines files, one message value per line.

The files hold the same bytes a Kafka consumer would see as record values (``topics.serde``),
so a replay's ``orders.jsonl`` can be diffed byte for byte against a Flink run's topic dump.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec
import msgspec.inspect as mi

from jobs.sinks.tap import Tap, routes
from topics.catalog import CATALOG
from topics.dlq import DLQ_TOPIC

_FLUSH_AT = 1 << 20
_BATCH = 2048
"""Messages of a topic encoded together (``Encoder.encode_lines``): one C call per batch."""

_LEAVES = (mi.IntType, mi.FloatType, mi.StrType, mi.BoolType, mi.NoneType, mi.LiteralType,
           mi.BytesType, mi.EnumType)


def _immutable(t: mi.Type) -> bool:
    """Whether a value of this type can never change (frozen structs, tuples and scalars all
    the way down): its encoding may wait, since it gives the same bytes later."""
    if isinstance(t, _LEAVES):
        return True
    if isinstance(t, mi.UnionType):
        return all(_immutable(u) for u in t.types)
    if isinstance(t, mi.TupleType):
        return all(_immutable(u) for u in t.item_types)
    if isinstance(t, mi.VarTupleType):
        return _immutable(t.item_type)
    if isinstance(t, mi.StructType):
        return bool(t.cls.__struct_config__.frozen) and all(
            _immutable(f.type) for f in t.fields)
    return False


def _batched(topic: str) -> bool:
    spec = CATALOG.get(topic)
    return spec is not None and _immutable(mi.type_info(spec.schema))


class TopicSink:
    """Counts every message per topic; optionally writes files and keeps messages in memory.

    Without ``write``, every topic but the catalog's internal ones (re-keyed copies of other
    topics) gets a file. ``taps`` (``jobs.sinks.tap``) receive the topics they ask for with
    each message's position on its topic.

    Messages of a written topic whose schema is immutable all the way down (ticks, bars,
    feature vectors, dead letters) are encoded in batches; the others (records holding dicts
    an operator might still change) at once. ``files_s`` is the time spent encoding and
    writing files, measured per batch: what the run would save without topic files.
    """

    def __init__(
        self,
        directory: Path | None,
        topics: tuple[str, ...],
        *,
        capture: bool | tuple[str, ...] = False,
        write: tuple[str, ...] | None = None,
        taps: Sequence[Tap] = (),
    ) -> None:
        # a defaultdict, not a Counter: it is bumped once per message, and a Counter (a
        # Python-level dict subclass) makes that ~3x slower
        self.counts: defaultdict[str, int] = defaultdict(int, {t: 0 for t in topics})
        self.dlq_reasons: Counter[str] = Counter()  # dead letters by reason code
        kept = topics if capture is True else (capture or ())
        self.captured: dict[str, list[msgspec.Struct]] | None = (
            {t: [] for t in kept} if kept else None
        )
        self._enc = msgspec.json.Encoder()
        self._bufs: dict[str, bytearray] = {}
        self._files: dict[str, IO[bytes]] = {}
        self._pending: dict[str, list[Any]] = {}
        self.files_s = 0.0
        """Seconds spent encoding and writing topic files so far."""
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            kept_files = write if write is not None else tuple(
                t for t in topics if t not in CATALOG or not CATALOG[t].internal)
            for t in kept_files:
                self._files[t] = (directory / f"{t}.jsonl").open("wb")
                self._bufs[t] = bytearray()
                if _batched(t):
                    self._pending[t] = []
        self.taps = tuple(taps)
        self._taps = routes(self.taps)
        # topics that are only counted (most of them in a replay): one set lookup per message
        self._count_only = frozenset(
            t for t in topics
            if t != DLQ_TOPIC and t not in self._bufs and t not in self._taps
            and (self.captured is None or t not in self.captured))

    def emit(self, topic: str, value: msgspec.Struct) -> None:
        if topic in self._count_only:
            self.counts[topic] += 1
            return
        n = self.counts[topic]
        self.counts[topic] = n + 1
        taps = self._taps.get(topic)
        if taps is not None:
            for tap in taps:
                tap.accept(topic, n, value)
        if topic == DLQ_TOPIC:
            self.dlq_reasons[value.reason] += 1  # type: ignore[attr-defined]
        if self.captured is not None:
            kept = self.captured.get(topic)
            if kept is not None:
                kept.append(value)
        pending = self._pending.get(topic)
        if pending is not None:
            pending.append(value)
            if len(pending) >= _BATCH:
                self._encode_pending(topic, pending)
            return
        buf = self._bufs.get(topic)
        if buf is not None:
            t0 = time.perf_counter()
            self._enc.encode_into(value, buf, len(buf))
            buf += b"\n"
            if len(buf) >= _FLUSH_AT:
                self._files[topic].write(buf)
                buf.clear()
            self.files_s += time.perf_counter() - t0

    def _encode_pending(self, topic: str, pending: list[Any]) -> None:
        t0 = time.perf_counter()
        buf = self._bufs[topic]
        buf += self._enc.encode_lines(pending)
        pending.clear()
        if len(buf) >= _FLUSH_AT:
            self._files[topic].write(buf)
            buf.clear()
        self.files_s += time.perf_counter() - t0

    def counted_only(self) -> tuple[frozenset[str], dict[str, int]]:
        """The topics whose messages are only counted, and the counts (``jobs.core.dispatch``
        bumps them itself); no topics for a subclass that overrides ``emit`` (it sees all)."""
        if type(self).emit is not TopicSink.emit:
            return frozenset(), self.counts
        return self._count_only, self.counts

    def writes(self, topic: str) -> bool:
        return topic in self._bufs

    def needs_messages(self, topic: str) -> bool:
        """Whether each message of ``topic`` is used (a file, a tap or the capture), not
        only counted: a producer may skip building messages nobody reads."""
        return topic not in self._count_only

    def take_lines(self, topic: str) -> Callable[[bytes], None] | None:
        """Let a producer write ``topic``'s file as encoded text (whole JSON lines, in
        order); the sink then only counts the topic's messages. None when the topic has no
        file or another reader (a tap, the capture) that needs the messages themselves."""
        if topic not in self._bufs or topic in self._taps or topic == DLQ_TOPIC or \
                (self.captured is not None and topic in self.captured):
            return None
        buf, file = self._bufs[topic], self._files[topic]
        self._count_only = self._count_only | {topic}

        def write(lines: bytes) -> None:
            buf.extend(lines)
            if len(buf) >= _FLUSH_AT:
                file.write(buf)
                buf.clear()
        return write

    def close(self) -> None:
        """Write what is buffered and close the files (the taps are closed by their owner)."""
        if not self._files:
            return
        for t, pending in self._pending.items():
            if pending:
                self._encode_pending(t, pending)
        t0 = time.perf_counter()
        for t, f in self._files.items():
            f.write(self._bufs[t])
            self._bufs[t].clear()
            f.close()
        self._files.clear()
        self._bufs.clear()
        self._pending.clear()
        self.files_s += time.perf_counter() - t0
