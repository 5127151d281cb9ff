"""The Kafka host: the graph on a broker, with checkpoints, transactions and crash recovery.

A thin adapter around ``jobs.core.sequenced_runner.SequencedRunner``: a confluent-kafka
consumer reads every partition of ``md.ticks.raw`` and ``control`` (``assign``, no group
rebalances), a transactional producer writes every output topic (``jobs.live.kafka_output``).

Delivery (``docs/live.md``): the **checkpoint file is authoritative**. Outputs are produced in a
transaction that spans one checkpoint interval. A checkpoint (1) snapshots the runner - every
operator's state, timers, the partition watermarks, the merge position (source offsets), the
control offset and the output positions; (2) sends the source offsets to the transaction and
commits it; (3) writes the snapshot atomically; (4) opens the next transaction. A crash before
(2) completes aborts the transaction (the restarted producer fences it); a crash between (2)
and (3) leaves outputs committed that the old checkpoint will produce again. Either way the
restart replays from the last checkpoint file, so no tick, command or fill is applied twice to
state, no output is lost, and every re-emitted message has its first copy's id and bytes
(consumers drop duplicates by id; tansu's ``read_committed`` also shows aborted records).
The offsets committed with the transaction are for monitoring only and never read back.

Outages: librdkafka reconnects by itself; the host says on stderr that the broker is not
answering, keeps its transaction, retries commits with backoff, and resumes when the broker
answers. A broker that lost topics or data (a topic missing, or a checkpoint offset beyond a
partition's log) stops the host with ``LiveError``: a silent reset would drop or repeat data.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from jobs.core.checkpoint import write_checkpoint
from jobs.core.sequenced import DATA, END, HEARTBEAT, Element, SequenceError
from jobs.core.sequenced_runner import SequencedRunner
from jobs.graph import Graph
from jobs.live import wire
from jobs.live.kafka_client import KafkaSettings, ck
from jobs.live.kafka_output import KafkaOutput
from jobs.sinks.tap import Tap
from operators.contract import END_OF_STREAM, MIN_WATERMARK
from operators.domain.timeparse import format_ns
from operators.normalize import RawRecord
from topics import names as tn
from topics.catalog import CATALOG
from topics.dlq import DlqReason
from topics.messages import Control, DeadLetter, SourceRef

CHECKPOINT_FILE = "checkpoint.msgpack"
JOURNAL_FILE = "control.journal"


class JournalEntry(msgspec.Struct, frozen=True):
    """A command as applied (stamped), written before it takes effect (``_control``)."""

    offset: int
    control: Control


def read_journal(path: Path) -> Iterator[JournalEntry]:
    """The journal's entries in order; a torn last line (a crash mid-write) was never applied
    and is skipped. One reader for every host that journals commands (live, Faust)."""
    if not path.exists():
        return
    dec = msgspec.json.Decoder(JournalEntry)
    for line in path.read_bytes().splitlines():
        try:
            yield dec.decode(line)
        except msgspec.DecodeError:
            continue
FAULT_ENV = "STREAMQUANT_FAULT"
"""Fault injection for the recovery tests: ``checkpoint-write:N`` kills the process with
SIGKILL half-way through writing the N-th checkpoint file; ``after-commit:N`` right after the
N-th transaction commit, before its checkpoint is written."""


class LiveError(RuntimeError):
    """The live run cannot go on safely (lost topics or data, a fenced producer...): exit 1."""


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """When to checkpoint (and so commit the outputs' transaction): whichever comes first."""

    every_records: int = 50_000
    every_event_ns: int | None = 60_000_000_000
    every_wall_s: float = 1.0

    def __post_init__(self) -> None:
        if self.every_records < 1:
            raise ValueError("checkpoint every_records must be >= 1")
        if self.every_event_ns is not None and self.every_event_ns <= 0:
            raise ValueError("checkpoint every_event_ns must be > 0")
        if not self.every_wall_s > 0:
            raise ValueError("checkpoint every_wall_s must be > 0")


@dataclass(slots=True)
class LiveStats:
    consumed: int = 0
    released: int = 0
    dead_letters: int = 0
    controls: int = 0
    checkpoints: int = 0
    checkpoint_s: list[float] = field(default_factory=list)
    checkpoint_bytes: int = 0
    restored_from: int | None = None  # bytes of the checkpoint this process started from
    first_output_s: float | None = None  # start -> first order produced (restart latency)


class KafkaHost:
    """Runs ``graph`` against a broker until the source ends (``until_end``) or a signal."""

    def __init__(
        self,
        graph: Graph,
        settings: KafkaSettings,
        checkpoint_dir: Path,
        *,
        lateness_ns: int = 0,
        policy: CheckpointPolicy | None = None,
        job_id: str = "streamquant",
        until_end: bool = False,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        taps: Sequence[Tap] = (),
    ) -> None:
        self.graph = graph
        self.settings = settings
        self.checkpoint_path = checkpoint_dir / CHECKPOINT_FILE
        self.journal_path = checkpoint_dir / JOURNAL_FILE
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.lateness_ns = lateness_ns
        self.policy = policy or CheckpointPolicy()
        self.job_id = job_id
        self.until_end = until_end
        self.progress = progress
        self._log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.partitions = CATALOG[graph.source_topic].partitions
        self.src_topic = settings.topic(graph.source_topic)
        self.control_topic = settings.topic(tn.CONTROL)
        self._orders_topic = settings.topic(tn.ORDERS)
        self.stats = LiveStats()
        self.read_ns: int | None = None
        """``perf_counter_ns`` when the batch being handled was consumed (tick → order
        latency in metrics counts from there)."""
        self._stop = False
        self._fault = _parse_fault(os.environ.get(FAULT_ENV, ""))
        self._outage_since: float | None = None
        self._last_error_log = 0.0
        self._eof: set[tuple[str, int]] = set()
        self._t0 = time.perf_counter()
        self._heartbeat_dec = msgspec.json.Decoder(wire.Heartbeat)
        self._control_dec = msgspec.json.Decoder(Control)
        self._ck = ck
        self.producer = ck.Producer(settings.producer_conf(**{
            "transactional.id": f"{job_id}.{settings.topic_prefix or 'default'}",
            "error_cb": self._on_error,
        }))
        self.output = KafkaOutput(self._produce, settings.topic,
                                  (*graph.output_topics, tn.CONTROL_APPLIED), taps=taps)
        self.consumer = ck.Consumer(settings.consumer_conf(**{
            "group.id": job_id, "isolation.level": "read_committed",
            "error_cb": self._on_error,
        }))
        self.runner = self._new_runner()

    # -- lifecycle ----------------------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        """SIGTERM / SIGINT: finish the current batch, checkpoint, exit 0."""
        self._stop = True

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> LiveStats:
        """Consume, process and produce until the end (``until_end``) or a stop request."""
        self._retry("initialize transactions",
                    lambda: self.producer.init_transactions(10.0))  # fences an old instance
        self._retry("begin transaction", self.producer.begin_transaction)
        self._resume()  # may re-apply journaled commands: inside the transaction
        last_cp_wall = time.monotonic()
        last_cp_wm = self.runner.watermark
        since_cp = 0
        last_progress = time.monotonic()
        consume, poll = self.consumer.consume, self.consumer.poll
        try:
            while not self._stop:
                # drain what is queued without waiting; when nothing is, block for one record
                # (consume(n, t) would wait all of t for fewer than n records)
                msgs = consume(10_000, 0)
                if not msgs:
                    first = poll(0.05)
                    if first is not None:
                        msgs = [first, *consume(10_000, 0)]
                if msgs:
                    since_cp += self._handle(msgs)
                if self.until_end and self.runner.ended:
                    break
                now = time.monotonic()
                wm = self.runner.watermark
                if since_cp and self._due(since_cp, now - last_cp_wall, last_cp_wm, wm):
                    self.checkpoint()
                    since_cp, last_cp_wall, last_cp_wm = 0, now, wm
                elif not since_cp:
                    last_cp_wall = now
                if self.progress and now - last_progress >= 2.0:
                    last_progress = now
                    self._log(self._progress_line())
            self.checkpoint()
            if self.progress:
                self._log(self._progress_line() + (" - source ended" if self.runner.ended
                                                   else " - stopped"))
        finally:
            self.consumer.close()
        return self.stats

    def _due(self, records: int, wall_s: float, last_wm: int, wm: int) -> bool:
        """A checkpoint is due (records read, wall time or event time since the last one)."""
        pol = self.policy
        if records >= pol.every_records or wall_s >= pol.every_wall_s:
            return True
        return (pol.every_event_ns is not None and MIN_WATERMARK not in (wm, last_wm)
                and wm - last_wm >= pol.every_event_ns)

    # -- resume -------------------------------------------------------------------------------
    def _new_runner(self) -> SequencedRunner:
        return SequencedRunner(self.graph, self.output, partitions=self.partitions,
                               lateness_ns=self.lateness_ns)

    def _resume(self) -> None:
        """Restore the last checkpoint (if any) and assign the consumer where it left off."""
        ck = self._ck
        if self.checkpoint_path.exists():
            data = self.checkpoint_path.read_bytes()
            self.runner = self._new_runner()
            self.output.restore(self.runner.restore(data))
            self.stats.restored_from = len(data)
            self._replay_journal()
            offsets = self.runner.source_offsets()
            self._verify_offsets(offsets)
            where = ", ".join(f"{p}:{o}" for (t, p), o in sorted(offsets.items())
                              if t == self.graph.source_topic)
            self._log(f"resuming from {self.checkpoint_path} (watermark "
                      f"{_fmt_wm(self.runner.watermark)}; {self.graph.source_topic} offsets "
                      f"{where}; control {offsets[(tn.CONTROL, 0)]})")
            tps = [ck.TopicPartition(self.settings.topic(t), p, o)
                   for (t, p), o in sorted(offsets.items())]
        else:  # a first start, or a crash before the first checkpoint
            self._replay_journal()
            tps = [ck.TopicPartition(self.src_topic, p, ck.OFFSET_BEGINNING)
                   for p in range(self.partitions)]
            ctl = self.runner.control_offset
            tps.append(ck.TopicPartition(self.control_topic, 0, ctl or ck.OFFSET_BEGINNING))
        self._eof.clear()
        for t in {tp.topic for tp in tps}:  # leaders known before the first fetch
            self.consumer.list_topics(t, timeout=10.0)
        self.consumer.assign(tps)

    def _replay_journal(self) -> None:
        """Commands applied after the checkpoint, before a crash: applied again with their
        recorded stamps (so the replay after the checkpoint is the run that was lost) and not
        read again."""
        for e in read_journal(self.journal_path):
            if e.offset >= self.runner.control_offset:
                self.runner.control(e.control, e.offset, e.control.ts_event)
                self._log(f"control {e.control.command} for {e.control.account} re-applied "
                          "at its recorded time")

    def _journal(self, entry: JournalEntry) -> None:
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, msgspec.json.encode(entry) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _prune_journal(self) -> None:
        """Drop the entries the checkpoint just written covers."""
        if not self.journal_path.exists():
            return
        keep = [line for line in self.journal_path.read_bytes().splitlines()
                if _journal_offset(line) >= self.runner.control_offset]
        if keep:
            write_checkpoint(self.journal_path, b"".join(line + b"\n" for line in keep))
        else:
            self.journal_path.unlink()

    def _verify_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        """Every offset the checkpoint resumes at must be within the partition's log: the
        record just before it must still exist. Otherwise the broker lost data."""
        ck = self._ck
        probe = ck.Consumer(self.settings.consumer_conf(**{"group.id": f"{self.job_id}.probe"}))
        try:
            for (topic, p), off in sorted(offsets.items()):
                if off <= 0:
                    continue
                kt = self.settings.topic(topic)
                probe.assign([ck.TopicPartition(kt, p, off - 1)])
                deadline = time.monotonic() + 15.0
                found = False
                while time.monotonic() < deadline and not found:
                    m = probe.poll(0.5)
                    if m is None:
                        continue
                    if m.error() is None:
                        found = m.offset() == off - 1
                        break
                    if m.error().code() != ck.KafkaError._PARTITION_EOF:
                        break
                    break
                if not found:
                    raise LiveError(
                        f"the checkpoint resumes {kt}[{p}] at offset {off}, but the broker has "
                        f"no record at offset {off - 1}: it lost data (a broker restarted with "
                        "memory storage, or a recreated topic). Refusing to reset silently; "
                        f"start over with an empty --checkpoint-dir if that is intended.")
        finally:
            probe.close()

    # -- consuming ----------------------------------------------------------------------------
    def _handle(self, msgs: list[Any]) -> int:
        """One consumed batch: source records into the merge, commands applied; released
        source records are processed. Returns the number of records read."""
        self.read_ns = time.perf_counter_ns()
        runner = self.runner
        src, ctl = self.src_topic, self.control_topic
        n = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                self._on_consume_error(m, err)
                continue
            n += 1
            topic = m.topic()
            p = m.partition()
            self._eof.discard((topic, p))
            if topic == src:
                e = self._element(m, p)
                if e is not None:
                    runner.push(e)
            elif topic == ctl:
                try:
                    runner.run_ready()  # the command acts on the newest watermark
                except SequenceError as exc:
                    raise LiveError(f"{self.src_topic}: {exc}") from None
                self._control(m)
        if self._outage_since is not None and n:
            self._log(f"broker answering again after {time.monotonic() - self._outage_since:.1f}"
                      " s; resuming")
            self._outage_since = None
        self.stats.consumed += n
        try:
            runner.run_ready()
        except SequenceError as exc:
            raise LiveError(f"{self.src_topic}: {exc}") from None
        self.stats.released = runner.records
        self.producer.poll(0)  # serve delivery reports and error callbacks
        return n

    def _element(self, m: Any, p: int) -> Element | None:
        raw = m.headers()
        h = dict(raw) if raw else {}  # C speed; a null value reads as a missing header
        value: bytes = m.value() or b""
        try:
            seq, kind = wire.source_mark(h)
            if kind == "data":
                rec = RawRecord(payload=value.decode("utf-8", errors="replace"),
                                source=SourceRef(topic=self.graph.source_topic, partition=p,
                                                 offset=m.offset()))
                return Element(seq, DATA, p, m.offset(), rec)
            if kind == "heartbeat":
                hb = self._heartbeat_dec.decode(value)
                return Element(seq, HEARTBEAT, p, m.offset(), hb.event_time)
            return Element(seq, END, p, m.offset(), None)
        except wire.HeaderError as exc:
            reason = (DlqReason.UNKNOWN_SCHEMA if isinstance(exc, wire.UnknownSchemaError)
                      else DlqReason.BAD_HEADER)
            self._dead_letter(reason, str(exc), value, self.graph.source_topic, p, m.offset())
        except msgspec.DecodeError as exc:
            self._dead_letter(DlqReason.BAD_HEADER, f"heartbeat value: {exc}", value,
                              self.graph.source_topic, p, m.offset())
        return None

    def _control(self, m: Any) -> None:
        h = wire.header_map(m.headers())
        value: bytes = m.value() or b""
        try:
            wire.check_schema(h)
            cmd = self._control_dec.decode(value)
        except wire.HeaderError as exc:
            reason = (DlqReason.UNKNOWN_SCHEMA if isinstance(exc, wire.UnknownSchemaError)
                      else DlqReason.BAD_HEADER)
            self._dead_letter(reason, str(exc), value, tn.CONTROL,
                              m.partition(), m.offset())
            self.runner.control_offset = m.offset() + 1
            return
        except msgspec.DecodeError as exc:
            self._dead_letter(DlqReason.BAD_CONTROL, str(exc), value, tn.CONTROL,
                              m.partition(), m.offset())
            self.runner.control_offset = m.offset() + 1
            return
        stamp = self.runner.stamp()
        stamped = None
        if stamp is not None:  # recorded before it acts: a restart re-applies it as it was
            self._journal(JournalEntry(m.offset(), msgspec.structs.replace(cmd, ts_event=stamp)))
            stamped = self.runner.control(cmd, m.offset(), stamp)
        else:
            self.runner.control_offset = m.offset() + 1
        self.stats.controls += 1
        if stamped is None:
            self._log(f"control {cmd.command} for {cmd.account} after the end of the stream: "
                      "ignored")
        else:
            self._log(f"control {cmd.command} for {cmd.account} ({cmd.reason!r}) applied at "
                      f"watermark {_fmt_wm(self.runner.watermark)}")

    def _dead_letter(self, reason: DlqReason, detail: str, value: bytes, topic: str,
                     partition: int, offset: int) -> None:
        self.stats.dead_letters += 1
        self.output.emit(tn.MD_TICKS_DLQ, DeadLetter(
            reason=reason.value, detail=detail, payload=value.decode("utf-8", errors="replace"),
            source=SourceRef(topic=topic, partition=partition, offset=offset)))

    def _on_consume_error(self, m: Any, err: Any) -> None:
        ck = self._ck
        code = err.code()
        if code == ck.KafkaError._PARTITION_EOF:
            self._eof.add((m.topic(), m.partition()))
            return
        where = f"{m.topic()}[{m.partition()}]" if m.topic() else "consumer"
        if code in (ck.KafkaError.UNKNOWN_TOPIC_OR_PART, ck.KafkaError._UNKNOWN_TOPIC,
                    ck.KafkaError._UNKNOWN_PARTITION):
            raise LiveError(f"{where}: {err.str()} - the broker lost its topics? Run "
                            "'streamquant topics create' only if starting over is intended.")
        if code in (ck.KafkaError.OFFSET_OUT_OF_RANGE, ck.KafkaError._AUTO_OFFSET_RESET):
            raise LiveError(f"{where}: {err.str()} - the position to resume from is not in "
                            "the partition's log (the broker lost data); refusing to reset")
        if err.fatal():
            raise LiveError(f"{where}: fatal Kafka error: {err.str()}")
        self._on_error(err)

    def _on_error(self, err: Any) -> None:
        """librdkafka's error callback: transport trouble is an outage we wait out."""
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        if now - self._last_error_log >= 5.0:
            self._last_error_log = now
            self._log(f"kafka: {err.str()} (broker {self.settings.bootstrap}); waiting and "
                      "retrying")

    # -- producing ----------------------------------------------------------------------------
    def _produce(self, topic: str, value: bytes, key: bytes | None,
                 headers: wire.Headers) -> None:
        produce = self.producer.produce
        while True:
            try:
                produce(topic, value, key, headers=headers)
                break
            except BufferError:  # the local queue is full: let deliveries drain
                self.producer.poll(0.05)
        if self.stats.first_output_s is None and topic == self._orders_topic:
            self.stats.first_output_s = time.perf_counter() - self._t0

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Commit the open transaction with the source offsets, then write the snapshot."""
        ck = self._ck
        t = time.perf_counter()
        data = self.runner.checkpoint(dict(self.output.counts))
        offsets = [ck.TopicPartition(self.settings.topic(topic), p, o)
                   for (topic, p), o in sorted(self.runner.source_offsets().items())]
        meta = self.consumer.consumer_group_metadata()
        self._retry("commit the transaction", lambda: self._commit(offsets, meta))
        self.stats.checkpoints += 1
        n = self.stats.checkpoints
        if self._fault == ("after-commit", n):
            os.kill(os.getpid(), signal.SIGKILL)
        if self._fault == ("checkpoint-write", n):
            tmp = self.checkpoint_path.with_name(f".{self.checkpoint_path.name}.tmp")
            tmp.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        write_checkpoint(self.checkpoint_path, data)
        self._prune_journal()
        for tap in self.output.taps:  # sinks are idempotent by position: push what is buffered
            tap.flush()
        self.stats.checkpoint_s.append(time.perf_counter() - t)
        self.stats.checkpoint_bytes = len(data)
        self._retry("begin transaction", self.producer.begin_transaction)

    def _commit(self, offsets: list[Any], meta: Any) -> None:
        self.producer.send_offsets_to_transaction(offsets, meta, 10.0)
        self.producer.commit_transaction(10.0)

    def _retry(self, what: str, fn: Callable[[], None]) -> None:
        """Run a transactional call, waiting out a broker outage with backoff."""
        ck = self._ck
        delay = 0.2
        waited = 0.0
        while True:
            try:
                fn()
                if waited:
                    self._log(f"{what}: done after {waited:.1f} s")
                return
            except ck.KafkaException as exc:
                err = exc.args[0]
                if err.fatal():
                    raise LiveError(f"{what}: {err.str()} (another instance with job id "
                                    f"{self.job_id!r} took over?)") from None
                if err.txn_requires_abort():
                    raise LiveError(f"{what}: {err.str()}: the transaction must be aborted; "
                                    "restart to resume from the last checkpoint") from None
                if not err.retriable() and err.code() != ck.KafkaError._TIMED_OUT:
                    raise LiveError(f"{what}: {err.str()}") from None
                self._log(f"{what}: {err.str()}; broker {self.settings.bootstrap} not "
                          f"answering, retrying in {delay:.1f} s")
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)

    # -- progress -----------------------------------------------------------------------------
    def _progress_line(self) -> str:
        s = self.stats
        src_eof = sum(1 for t, _ in self._eof if t == self.src_topic)
        lag = ("caught up" if src_eof == self.partitions
               else f"{src_eof}/{self.partitions} partitions at their end")
        el = time.perf_counter() - self._t0
        return (f"live: consumed {s.consumed:,}, released {s.released:,} "
                f"({s.released / el:,.0f}/s), buffered {self.runner.merge.buffered():,}, "
                f"watermark {_fmt_wm(self.runner.watermark)}, orders "
                f"{self.output.counts.get(tn.ORDERS, 0):,}, fills "
                f"{self.output.counts.get(tn.FILLS, 0):,}, checkpoints {s.checkpoints}, {lag}")


def _journal_offset(line: bytes) -> int:
    try:
        return msgspec.json.decode(line, type=JournalEntry).offset
    except msgspec.DecodeError:
        return -1


def _fmt_wm(wm: int) -> str:
    if wm == MIN_WATERMARK:
        return "none yet"
    if wm >= END_OF_STREAM:
        return "end of stream"
    return format_ns(wm)


def _parse_fault(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    kind, _, n = spec.partition(":")
    if kind not in ("checkpoint-write", "after-commit") or not n.isdigit():
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected checkpoint-write:N or after-commit:N")
    return kind, int(n)
