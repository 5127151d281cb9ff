"""The Faust host's adapter: Kafka records in, the graph through the runtime core, records out.

Faust-free on purpose: the agents in ``jobs.faust.app`` hand each consumed record to a
:class:`FaustPipeline` and send what it buffered; everything between (the sequenced merge,
watermarks, dispatch, checkpoints, message ids) is the live path's core
(``jobs.core.sequenced_runner.SequencedRunner``, ``jobs.live.kafka_output.KafkaOutput``), so a
Faust worker writes the bytes an embedded run writes.

Positions: the checkpoint file is authoritative. The worker's consumer group resumes at the
offsets committed after the last durable checkpoint, which are never ahead of it (a crash
between the checkpoint write and the commit leaves them behind), so records below the
checkpoint's position are skipped here; a group position *ahead* of the checkpoint would
silently drop data and stops the worker instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from jobs.core.checkpoint import write_checkpoint
from jobs.core.sequenced import DATA, END, HEARTBEAT, Element, SequenceError
from jobs.core.sequenced_runner import SequencedRunner
from jobs.graph import Graph
from jobs.live import wire
from jobs.live.host import (
    CHECKPOINT_FILE,
    JOURNAL_FILE,
    CheckpointPolicy,
    JournalEntry,
    read_journal,
)
from jobs.live.kafka_output import KafkaOutput
from operators.contract import END_OF_STREAM, MIN_WATERMARK
from operators.normalize import RawRecord
from topics import names as tn
from topics.catalog import CATALOG
from topics.dlq import DlqReason
from topics.messages import Control, DeadLetter, SourceRef

MIN_EVENT_CHECKPOINT_GAP_S = 0.2
"""The event-time trigger waits this long after the last checkpoint. Faust hands records over
in small batches, so on a backlog a minute of event time passes every few dozen records, and a
checkpoint (which waits for the broker's acknowledgements) per bar would stall the worker."""

Outgoing = tuple[str, bytes, bytes | None, wire.Headers]
"""A record to produce: Kafka topic, value, key, headers."""


class FaustHostError(RuntimeError):
    """The worker cannot go on safely (broken source contract, positions ahead of state)."""


@dataclass(slots=True)
class PipelineStats:
    consumed: int = 0
    skipped: int = 0  # records below the checkpoint's position (re-delivered)
    dead_letters: int = 0
    controls: int = 0
    checkpoints: int = 0
    checkpoint_s: list[float] = field(default_factory=list)
    checkpoint_bytes: int = 0
    restored_from: int | None = None
    first_output_s: float | None = None
    first_record_at: float | None = None  # perf_counter of the first source record taken
    last_release_at: float | None = None  # ... and of the last one that released records


class FaustPipeline:
    """One worker's whole graph over every partition of the source and ``control``."""

    def __init__(
        self,
        graph: Graph,
        checkpoint_dir: Path,
        *,
        kafka_topic: Callable[[str], str] = lambda t: t,
        lateness_ns: int = 0,
        policy: CheckpointPolicy | None = None,
        log: Callable[[str], None] = lambda s: None,
    ) -> None:
        self.graph = graph
        self.checkpoint_path = checkpoint_dir / CHECKPOINT_FILE
        self.journal_path = checkpoint_dir / JOURNAL_FILE
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.lateness_ns = lateness_ns
        self.policy = policy or CheckpointPolicy()
        self.kafka_topic = kafka_topic
        self.log = log
        self.partitions = CATALOG[graph.source_topic].partitions
        self.pending: list[Outgoing] = []
        self.output = KafkaOutput(self._buffer, kafka_topic,
                                  (*graph.output_topics, tn.CONTROL_APPLIED))
        self.runner = self._new_runner()
        self.stats = PipelineStats()
        self.error: str | None = None
        self._orders_topic = kafka_topic(tn.ORDERS)
        self._next = [0] * self.partitions  # per source partition: the next offset to take
        self._seen = [False] * self.partitions  # a record of the partition arrived (process)
        self._control_next = 0
        self._heartbeat_dec = msgspec.json.Decoder(wire.Heartbeat)
        self._control_dec = msgspec.json.Decoder(Control)
        self._t0 = time.perf_counter()
        self._since_cp = 0
        self._cp_wall = time.monotonic()
        self._cp_wm = MIN_WATERMARK

    def _new_runner(self) -> SequencedRunner:
        return SequencedRunner(self.graph, self.output, partitions=self.partitions,
                               lateness_ns=self.lateness_ns)

    def _buffer(self, topic: str, value: bytes, key: bytes | None, headers: wire.Headers
                ) -> None:
        self.pending.append((topic, value, key, headers))
        if self.stats.first_output_s is None and topic == self._orders_topic:
            self.stats.first_output_s = time.perf_counter() - self._t0

    # -- resume -------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the last checkpoint (if any) and re-apply journaled commands; whether one was
        found. Call once, before the first record."""
        found = self.checkpoint_path.exists()
        if found:
            data = self.checkpoint_path.read_bytes()
            self.runner = self._new_runner()
            self.output.restore(self.runner.restore(data))
            self.stats.restored_from = len(data)
            self._next = list(self.runner.merge.next_offsets)
            self._control_next = self.runner.control_offset
            self._cp_wm = self.runner.watermark
            self.log(f"resuming from {self.checkpoint_path} (watermark {fmt_wm(self.watermark)};"
                     f" {self.graph.source_topic} offsets "
                     f"{', '.join(f'{p}:{o}' for p, o in enumerate(self._next))}; control "
                     f"{self._control_next})")
        self._replay_journal()
        return found

    def _replay_journal(self) -> None:
        for e in read_journal(self.journal_path):
            if e.offset >= self.runner.control_offset:
                self.runner.control(e.control, e.offset, e.control.ts_event)
                self._control_next = e.offset + 1
                self.log(f"control {e.control.command} for {e.control.account} re-applied at "
                         "its recorded time")

    def positions(self) -> dict[tuple[str, int], int]:
        """Where the consumer should read from: the checkpoint's offsets (catalog names)."""
        out = {(self.graph.source_topic, p): o for p, o in enumerate(self._next)}
        out[(tn.CONTROL, 0)] = self._control_next
        return out

    # -- input --------------------------------------------------------------------------------
    def on_source(self, partition: int, offset: int, value: bytes | None,
                  headers: Any) -> int:
        """One record of the source topic; the number of data records released by it."""
        if offset < self._next[partition]:
            self.stats.skipped += 1
            return 0  # covered by the checkpoint (or re-delivered after a rebalance)
        if not self._seen[partition] and offset > self._next[partition]:
            raise self._fail(
                f"{self.kafka_topic(self.graph.source_topic)}[{partition}] starts at offset "
                f"{offset}, but the checkpoint resumes it at {self._next[partition]}: the "
                "consumer group's offsets are ahead of the checkpoint (another checkpoint "
                "directory, or data deleted). Refusing to skip records.")
        self._seen[partition] = True
        self._next[partition] = offset + 1
        stats = self.stats
        if stats.first_record_at is None:
            stats.first_record_at = time.perf_counter()
        stats.consumed += 1
        self._since_cp += 1
        e = self._element(partition, offset, value or b"", headers)
        if e is not None:
            try:
                self.runner.push(e)
            except SequenceError as exc:
                raise self._fail(f"{self.graph.source_topic}: {exc}") from None
        n = self.release()
        if n:
            stats.last_release_at = time.perf_counter()
        return n

    def release(self) -> int:
        before = self.runner.records
        try:
            self.runner.run_ready()
        except SequenceError as exc:
            raise self._fail(f"{self.graph.source_topic}: {exc}") from None
        return self.runner.records - before

    def _element(self, p: int, offset: int, value: bytes, headers: Any) -> Element | None:
        h = wire.header_map(list(headers) if headers else None)
        try:
            seq, kind = wire.source_mark(h)
            if kind == "data":
                rec = RawRecord(payload=value.decode("utf-8", errors="replace"),
                                source=SourceRef(topic=self.graph.source_topic, partition=p,
                                                 offset=offset))
                return Element(seq, DATA, p, offset, rec)
            if kind == "heartbeat":
                return Element(seq, HEARTBEAT, p, offset,
                               self._heartbeat_dec.decode(value).event_time)
            return Element(seq, END, p, offset, None)
        except wire.HeaderError as exc:
            reason = (DlqReason.UNKNOWN_SCHEMA if isinstance(exc, wire.UnknownSchemaError)
                      else DlqReason.BAD_HEADER)
            self._dead_letter(reason, str(exc), value, self.graph.source_topic, p, offset)
        except msgspec.DecodeError as exc:
            self._dead_letter(DlqReason.BAD_HEADER, f"heartbeat value: {exc}", value,
                              self.graph.source_topic, p, offset)
        return None

    def on_control(self, offset: int, value: bytes | None, headers: Any) -> None:
        """One command of ``control``: journaled, stamped with the watermark, applied."""
        if offset < self._control_next:
            return
        self._control_next = offset + 1
        self.stats.consumed += 1
        self._since_cp += 1
        raw = value or b""
        h = wire.header_map(list(headers) if headers else None)
        try:
            wire.check_schema(h)
            cmd = self._control_dec.decode(raw)
        except wire.HeaderError as exc:
            reason = (DlqReason.UNKNOWN_SCHEMA if isinstance(exc, wire.UnknownSchemaError)
                      else DlqReason.BAD_HEADER)
            self._dead_letter(reason, str(exc), raw, tn.CONTROL, 0, offset)
            self.runner.control_offset = offset + 1
            return
        except msgspec.DecodeError as exc:
            self._dead_letter(DlqReason.BAD_CONTROL, str(exc), raw, tn.CONTROL, 0, offset)
            self.runner.control_offset = offset + 1
            return
        self.stats.controls += 1
        stamp = self.runner.stamp()
        if stamp is None:
            self.runner.control_offset = offset + 1
            self.log(f"control {cmd.command} for {cmd.account} after the end of the stream: "
                     "ignored")
            return
        self._journal(JournalEntry(offset, msgspec.structs.replace(cmd, ts_event=stamp)))
        self.runner.control(cmd, offset, stamp)
        self.log(f"control {cmd.command} for {cmd.account} ({cmd.reason!r}) applied at "
                 f"watermark {fmt_wm(self.watermark)}")

    def _dead_letter(self, reason: DlqReason, detail: str, value: bytes, topic: str,
                     partition: int, offset: int) -> None:
        self.stats.dead_letters += 1
        self.output.emit(tn.MD_TICKS_DLQ, DeadLetter(
            reason=reason.value, detail=detail, payload=value.decode("utf-8", errors="replace"),
            source=SourceRef(topic=topic, partition=partition, offset=offset)))

    def _fail(self, message: str) -> FaustHostError:
        self.error = message
        return FaustHostError(message)

    # -- output -------------------------------------------------------------------------------
    def drain(self) -> list[Outgoing]:
        """What the graph produced since the last call, in emission order."""
        out, self.pending = self.pending, []
        return out

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        if not self._since_cp:
            self._cp_wall = time.monotonic()
            return False
        pol = self.policy
        if (self._since_cp >= pol.every_records
                or time.monotonic() - self._cp_wall >= pol.every_wall_s):
            return True
        wm, last = self.watermark, self._cp_wm
        return (pol.every_event_ns is not None and MIN_WATERMARK not in (wm, last)
                and wm - last >= pol.every_event_ns
                and time.monotonic() - self._cp_wall >= MIN_EVENT_CHECKPOINT_GAP_S)

    def snapshot(self) -> tuple[bytes, dict[tuple[str, int], int]]:
        """A consistent checkpoint between two records and the offsets it resumes at."""
        self._since_cp = 0
        self._cp_wall = time.monotonic()
        self._cp_wm = self.watermark
        return self.runner.checkpoint(dict(self.output.counts)), self.runner.source_offsets()

    def write(self, data: bytes, control_offset: int, fault_at_half: bool = False) -> None:
        """Make ``data`` the durable checkpoint (call once its outputs are acknowledged);
        ``control_offset`` is its control position (journal entries below it are covered)."""
        t = time.perf_counter()
        if fault_at_half:
            tmp = self.checkpoint_path.with_name(f".{self.checkpoint_path.name}.tmp")
            tmp.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), 9)
        write_checkpoint(self.checkpoint_path, data)
        self._prune_journal(control_offset)
        self.stats.checkpoints += 1
        self.stats.checkpoint_s.append(time.perf_counter() - t)
        self.stats.checkpoint_bytes = len(data)

    def _journal(self, entry: JournalEntry) -> None:
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, msgspec.json.encode(entry) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _prune_journal(self, covered: int) -> None:
        """Drop the journal entries the checkpoint just written covers."""
        if not self.journal_path.exists():
            return
        dec = msgspec.json.Decoder(JournalEntry)
        keep = []
        for line in self.journal_path.read_bytes().splitlines():
            try:
                if dec.decode(line).offset >= covered:
                    keep.append(line + b"\n")
            except msgspec.DecodeError:
                continue
        if keep:
            write_checkpoint(self.journal_path, b"".join(keep))
        else:
            self.journal_path.unlink()

    # -- status -------------------------------------------------------------------------------
    @property
    def watermark(self) -> int:
        return self.runner.watermark

    @property
    def ended(self) -> bool:
        return self.runner.ended

    def status(self) -> dict[str, Any]:
        """What the web endpoint serves: position, watermark and lag (event and records)."""
        wm = self.watermark
        el = time.perf_counter() - self._t0
        live = MIN_WATERMARK < wm < END_OF_STREAM
        return {
            "status": "failed" if self.error else ("ended" if self.ended else "running"),
            "error": self.error,
            "watermark_ns": wm if live else None,
            "watermark": fmt_wm(wm),
            "watermark_lag_s": round(time.time() - wm / 1e9, 3) if live else None,
            "buffered": self.runner.merge.buffered(),
            "consumed": self.stats.consumed,
            "released": self.runner.records,
            "ticks_per_s": round(self.runner.records / el, 1) if el > 0 else 0.0,
            "next_offsets": {str(p): o for p, o in enumerate(self._next)},
            "control_offset": self._control_next,
            "checkpoints": self.stats.checkpoints,
            "orders": self.output.counts.get(tn.ORDERS, 0),
            "fills": self.output.counts.get(tn.FILLS, 0),
        }


def fmt_wm(wm: int) -> str:
    from operators.domain.timeparse import format_ns

    if wm == MIN_WATERMARK:
        return "none yet"
    if wm >= END_OF_STREAM:
        return "end of stream"
    return format_ns(wm)
