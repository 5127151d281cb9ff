"""The live path on Kafka (tansu on loopback): ticks/s, tick -> order latency, checkpoints and
restart after SIGKILL.

One broker (``jobs.live.broker.Broker``) per bench run, one topic prefix per scenario, topics
created from the catalog:

1. throughput on the full E-mini replay (500k ticks): ``produce_ticks`` unpaced first (its rate
   reported on its own), then ``KafkaHost`` consuming ``md.ticks.raw`` from the beginning until
   the end marks, timed from the host's construction to the end of stream (broker start,
   producing, graph building and model loading excluded): (a) normalize + features only,
   (b) the whole chain as ``streamquant run --bootstrap`` builds it; the embedded per-event
   runs of the same graphs from the CSV in the same rounds (interleaved) for the ratios;
2. tick -> order latency: a warm-up slice of the file produced unpaced, the live host
   (``python -m jobs.cli run --bootstrap ... --no-cost-gate``, its own process) caught up, then
   the night after the training end produced paced (``produce-ticks --rate``, its own process),
   once with produce-ticks' default heartbeats and once with a heartbeat round every 10 records.
   An order's closing tick is the first tick (in source order) whose running maximum event time
   reaches the order's ``ts_event`` (``Order.ts_event`` is the decision's time, the
   ``FeatureVector.ts_closed`` of its bar: the event time of the tick whose watermark closed it;
   with lateness 0 the watermark is the maximum event time seen). Latency = the order record's
   Kafka CreateTime minus that tick record's CreateTime (both set at ``produce()`` by the
   producers; milliseconds, so +-1 ms). Its parts: when a consumer in this process saw each
   tick (transport), when every other source partition had a later mark (the sequenced
   merge cannot release a tick before: the heartbeat floor), each tick's ``md.ticks`` copy
   (produced by the host as it processes the tick) and the closing tick's copy -> the order (the
   chain inside the host). And when consumers here saw the order, read_uncommitted and
   read_committed (the latter waits for the checkpoint's transaction commit);
3. checkpoint duration and size (``KafkaHost.stats``; the paced run's summary);
4. restart after SIGKILL: the live host killed after orders started and a checkpoint exists,
   restarted with the same command line; from the restart's ``Popen`` to the first order record
   produced by the new process (CreateTime), and to the first order with an id the killed
   process had not produced; split with the new process's stderr lines and summary.

Two shared cores host the broker, the producers, the live host and this process: every figure
here moves with the machine's load (printed in the header); nothing asserts on a time.

``--profile`` adds diagnostics (~1.5 min): where (a)'s time goes (the consumer alone, the
host's per-record decoding, ``SequencedRunner`` with a counting output, ``KafkaOutput``'s
encoding, each a separate run over the same records) and one live whole-chain run under
cProfile.

Run: ``python -m bench.live_broker [--models DIR] [--reps N] [--json PATH] [--profile]``.
"""

from __future__ import annotations

import cProfile
import dataclasses
import gc
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np

from bench import emini
from bench.chain_latency import replay_chain
from bench.measure import (
    Row,
    Stats,
    add_models_arg,
    arg_parser,
    finish,
    fmt_rate,
    header,
    interleaved,
)
from bench.pipeline_throughput import replay_ticks
from jobs.core.sequenced import DATA, END, HEARTBEAT, Element
from jobs.core.sequenced_runner import SequencedRunner
from jobs.graph import Graph
from jobs.live import wire
from jobs.live.admin import create_topics
from jobs.live.broker import Broker
from jobs.live.host import CHECKPOINT_FILE, KafkaHost, LiveStats
from jobs.live.kafka_client import KafkaSettings, ck
from jobs.live.kafka_output import KafkaOutput
from jobs.live.produce_ticks import ProduceStats, produce_ticks
from jobs.live.reading import TopicReader, headers_of
from jobs.live.run import build_live_graph, live_tz
from jobs.options import ReplayOptions
from jobs.sources import EMINI_COLUMN_MAP, TickInput
from jobs.topology import opened, tick_graph
from jobs.train_job import EMINI_TRAIN_END_NS
from operators.domain.bars import parse_duration
from operators.features import FeaturesConfig, WindowFeatures
from operators.normalize import Normalize, NormalizeConfig, RawRecord
from topics import names as tn
from topics.catalog import CATALOG
from topics.messages import Order, RawTick, SourceRef

BENCH = "live_broker"
TARGET_RATE = 300_000
TARGET_RATIO = 0.80
TARGET_P99_MS = 20.0
TARGET_RESTART_S = 2.0
PACED_RATE = 1_000.0
CHECKPOINT_WALL_S = 1.0
WARM_FROM = 40_000
"""First data line (0-based) of the paced scenarios, produced unpaced: 223 one-minute bars of
history, plenty for the features' warm-up (35 bars)."""
PACED_FROM = 53_800
"""First data line produced paced: ~2,000 ticks before the training end (2013-09-02 22:00 UTC,
line 55,799), so the live host is warm and in step when orders start."""
FIRST_PACED = PACED_FROM - WARM_FROM  # its index among the scenario's ticks
LATENCY_TO = 67_500  # the night session after the training end: a bar every ~24 ticks
RESTART_TO = 70_000
KILL_AFTER_ORDERS = 20
KILL_SETTLE_S = 1.5 * CHECKPOINT_WALL_S
"""After the orders above, so the live host is in step and has checkpointed since."""
LATENCY_RUNS = (("default heartbeats", None), ("heartbeat every 10 records", 10))
PROFILE_TOP = 25
CONSUME_BATCH = 10_000  # KafkaHost.run's consume(10_000, ...)

_ORDER_DEC = msgspec.json.Decoder(Order)
_TICK_DEC = msgspec.json.Decoder(RawTick)


# ----------------------------------------------------------------------------- inputs


def live_options(models: Path | None, out: Path) -> ReplayOptions:
    """What ``streamquant run --bootstrap --models M --quiet`` gets (the cost gate on, as in
    the embedded runs it is compared with)."""
    return ReplayOptions(out=out, quiet=True, models=models)


def front_end_graph() -> Graph:
    """normalize + window features configured as ``build_live_graph`` does, no chain."""
    opts = live_options(None, Path("unused"))
    norm = Normalize(NormalizeConfig(tz=live_tz(opts), default_symbol=opts.symbol,
                                     default_venue=opts.venue or "UNKNOWN",
                                     max_forward_jump_ns=opts.max_forward_jump_ns,
                                     dedupe_window_ns=opts.dedupe_window_ns))
    feats = WindowFeatures(FeaturesConfig(bar_ns=parse_duration(opts.bar or "1m"),
                                          lateness_ns=opts.lateness_ns))
    return tick_graph(norm, feats)


def slice_input(src: TickInput, lines: list[str], start: int, stop: int, path: Path
                ) -> TickInput:
    """Data lines ``[start, stop)`` of the E-mini file (with its header) as a tick input."""
    path.write_text(lines[0] + "".join(lines[1 + start:1 + stop]))
    return dataclasses.replace(src, path=path, label=path.name,
                               spec=dataclasses.replace(src.spec, path=path))


def topics_for(bootstrap: str, prefix: str) -> KafkaSettings:
    settings = KafkaSettings(bootstrap, topic_prefix=prefix)
    create_topics(settings)
    return settings


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    create_ms: int
    headers: dict[str, bytes]
    value: bytes


def read_all(settings: KafkaSettings, topic: str, *, committed: bool = False) -> list[Record]:
    """Every record of a catalog topic, all partitions, to their ends."""
    out: list[Record] = []
    kt = settings.topic(topic)
    with TopicReader(settings, kt, CATALOG[topic].partitions, read_committed=committed) as r:
        idle = time.monotonic()
        while not r.all_eof and time.monotonic() - idle < 30.0:
            batch = r.poll(0.2)
            if batch:
                idle = time.monotonic()
            for m in batch:
                if r.is_record(m):
                    out.append(Record(m.partition() or 0, m.offset() or 0, m.timestamp()[1],
                                      headers_of(m), m.value() or b""))
    return out


class Receipts(threading.Thread):
    """A consumer of one topic that notes when each record (by its ``key`` header: ``sq.id``
    of an output, ``sq.seq`` of a source record) first reached it.

    ``poll`` hands over each record as soon as librdkafka has it (a batch ``consume`` waits
    for its whole batch or the timeout), so the wall time noted is the record's arrival.
    """

    def __init__(self, settings: KafkaSettings, topic: str, *, committed: bool,
                 key: str = wire.ID) -> None:
        super().__init__(daemon=True, name=f"receipts-{topic}-{committed}")
        self.key = key
        self.seen: dict[bytes, tuple[int, int]] = {}
        """key -> (wall ns when first received, the record's CreateTime ms)"""
        self._stop_event = threading.Event()
        kt = settings.topic(topic)
        self._consumer = ck.Consumer(settings.consumer_conf(**{
            "group.id": f"bench.{topic}.{committed}",
            "isolation.level": "read_committed" if committed else "read_uncommitted"}))
        self._consumer.list_topics(kt, timeout=10.0)
        self._consumer.assign([ck.TopicPartition(kt, p, ck.OFFSET_BEGINNING)
                               for p in range(CATALOG[topic].partitions)])

    def run(self) -> None:
        poll = self._consumer.poll
        seen = self.seen
        clock = time.time_ns
        key = self.key
        try:
            while not self._stop_event.is_set():
                m = poll(0.05)
                if m is None or m.error() is not None:
                    continue
                now = clock()
                mid = headers_of(m).get(key)
                if mid is not None and mid not in seen:
                    seen[mid] = (now, m.timestamp()[1])
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10.0)


def wait_for_count(settings: KafkaSettings, topic: str, n: int, timeout_s: float) -> float:
    """Read ``topic`` (read_uncommitted) until it holds ``n`` records; the seconds waited."""
    t0 = time.monotonic()
    got = 0
    kt = settings.topic(topic)
    with TopicReader(settings, kt, CATALOG[topic].partitions, read_committed=False) as r:
        while got < n and time.monotonic() - t0 < timeout_s:
            got += sum(1 for m in r.poll(0.1) if r.is_record(m))
    if got < n:
        print(f"   (only {got:,} of {n:,} {topic} records after {timeout_s:.0f} s; going on)")
    return time.monotonic() - t0


# ----------------------------------------------------------------------------- processes


def live_command(settings: KafkaSettings, ckdir: Path, models: Path, summary: Path, *,
                 quiet: bool) -> list[str]:
    """``streamquant run --bootstrap`` as an operator starts it, with ``--no-cost-gate`` (many
    orders) and no event-time checkpoints: a paced replay runs the night's event clock ~2,500x
    faster than the wall clock, where a checkpoint per event minute would mean hundreds per
    second; live, the wall-time interval is the one that applies."""
    cmd = [sys.executable, "-m", "jobs.cli", "run", "--bootstrap", settings.bootstrap,
           "--topic-prefix", settings.topic_prefix, "--checkpoint-dir", str(ckdir),
           "--models", str(models), "--until-end", "--no-cost-gate",
           "--checkpoint-wall", str(CHECKPOINT_WALL_S), "--checkpoint-interval", "off",
           "--summary-json", str(summary)]
    return [*cmd, "--quiet"] if quiet else cmd


def produce_command(settings: KafkaSettings, src: TickInput, rate: float) -> list[str]:
    columns = ",".join(f"{f}={c}" for c, f in EMINI_COLUMN_MAP.items())
    return [sys.executable, "-m", "jobs.cli", "produce-ticks", "--bootstrap", settings.bootstrap,
            "--topic-prefix", settings.topic_prefix, "--ticks", str(src.path),
            "--columns", columns, "--tz", src.tz or "UTC", "--symbol", src.default_symbol or "",
            "--venue", src.default_venue, "--rate", f"{rate:g}", "--quiet"]


@contextmanager
def started(cmd: list[str], log: Path, *, stderr_lines: list[tuple[int, str]] | None = None
            ) -> Iterator[subprocess.Popen[str]]:
    """A child process (stdout to ``log``; stderr there too, or read line by line with the
    wall time each arrived); killed if still running when the block ends."""
    out: IO[str] = log.open("a")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT if stderr_lines is None else subprocess.PIPE,
                            text=True)
    reader: threading.Thread | None = None
    if stderr_lines is not None:
        reader = threading.Thread(target=_stamp_lines, args=(proc, stderr_lines, out),
                                  daemon=True)
        reader.start()
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if reader is not None:
            reader.join(5.0)
        out.close()


def _stamp_lines(proc: subprocess.Popen[str], lines: list[tuple[int, str]], log: IO[str]
                 ) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append((time.time_ns(), line.rstrip("\n")))
        log.write(line)


def _wait(proc: subprocess.Popen[str], timeout_s: float, what: str, log: Path) -> None:
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} did not finish within {timeout_s:.0f} s; log {log}") from None
    if code != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-8:])
        raise RuntimeError(f"{what} exited with {code}: {tail}")


# ----------------------------------------------------------------------------- 1: throughput


@dataclass(slots=True)
class LiveRun:
    seconds: float
    stats: LiveStats
    counts: dict[str, int]
    open_s: float
    """Opening the operators before the clock (the models load here)."""


def live_run(graph: Graph, settings: KafkaSettings, ckdir: Path, job_id: str,
             profile: cProfile.Profile | None = None) -> LiveRun:
    """One ``KafkaHost`` over the whole source topic, from an empty checkpoint directory."""
    t_open = time.perf_counter()
    with opened(graph.stages):
        open_s = time.perf_counter() - t_open
        gc.collect()
        t0 = time.perf_counter()
        host = KafkaHost(graph, settings, ckdir, until_end=True, progress=False, job_id=job_id)
        if profile is not None:
            profile.enable()
        stats = host.run()
        if profile is not None:
            profile.disable()
        seconds = time.perf_counter() - t0
        counts = dict(host.output.counts)
        host.producer.flush(10.0)
    del host  # the producer goes before the broker does (no disconnect noise at the end)
    gc.collect()
    return LiveRun(seconds, stats, counts, open_s)


def consume_only(settings: KafkaSettings) -> tuple[float, list[Any]]:
    """The source topic through a read_committed consumer configured as the host's, nothing
    done with the records: seconds and the messages."""
    kt = settings.topic(tn.MD_TICKS_RAW)
    out: list[Any] = []
    gc.collect()
    t0 = time.perf_counter()
    with TopicReader(settings, kt, CATALOG[tn.MD_TICKS_RAW].partitions) as r:
        while not r.all_eof:
            out += [m for m in r.poll(0.005) if r.is_record(m)]
    return time.perf_counter() - t0, out


def decode_elements(msgs: list[Any]) -> tuple[float, list[Element]]:
    """The host's per-record work before the merge (``KafkaHost._element``'s steps: headers,
    sequence mark, the record and its source coordinate); seconds and the elements."""
    hb = msgspec.json.Decoder(wire.Heartbeat)
    out: list[Element] = []
    gc.collect()
    t0 = time.perf_counter()
    for m in msgs:
        p, off = m.partition(), m.offset()
        seq, kind = wire.source_mark(wire.header_map(m.headers()))
        value = m.value() or b""
        if kind == "data":
            rec = RawRecord(payload=value.decode("utf-8", errors="replace"),
                            source=SourceRef(topic=tn.MD_TICKS_RAW, partition=p, offset=off))
            out.append(Element(seq, DATA, p, off, rec))
        elif kind == "heartbeat":
            out.append(Element(seq, HEARTBEAT, p, off, hb.decode(value).event_time))
        else:
            out.append(Element(seq, END, p, off, None))
    return time.perf_counter() - t0, out


class _Counts:
    """An output that only counts (what the embedded runs' ``TopicSink(None, ...)`` does)."""

    def __init__(self) -> None:
        self.counts: defaultdict[str, int] = defaultdict(int)

    def emit(self, topic: str, value: msgspec.Struct) -> None:
        self.counts[topic] += 1


def core_only(graph: Graph, elements: list[Element], *, encode: bool) -> float:
    """``SequencedRunner`` over consumed elements in the host's batches, no broker: outputs
    encoded as the host encodes them (``KafkaOutput``) but produced nowhere, or only counted."""
    output: KafkaOutput | _Counts = (
        KafkaOutput(lambda *_: None, lambda t: t, graph.output_topics) if encode else _Counts())
    with opened(graph.stages):
        runner = SequencedRunner(graph, output, partitions=CATALOG[tn.MD_TICKS_RAW].partitions)
        gc.collect()
        t0 = time.perf_counter()
        push, run_ready = runner.push, runner.run_ready
        for start in range(0, len(elements), CONSUME_BATCH):  # as the host's consume batches
            for e in elements[start:start + CONSUME_BATCH]:
                push(e)
            run_ready()
        dt = time.perf_counter() - t0
    return dt


@dataclass(slots=True)
class Throughput:
    produce: ProduceStats
    n: int
    seconds: dict[str, list[float]]
    runs: dict[str, list[LiveRun]] = field(default_factory=dict)
    embedded_orders: int = 0
    build_s: list[float] = field(default_factory=list)
    split: dict[str, float] = field(default_factory=dict)
    profile: cProfile.Profile | None = None


def throughput(bootstrap: str, src: TickInput, models: Path, tmp: Path, reps: int,
               profile: bool) -> Throughput:
    settings = topics_for(bootstrap, "lb.tput.")
    prod = produce_ticks(settings, src, rate=None, progress=False)
    print(f"   produce-ticks: {prod.records:,} ticks + {prod.heartbeats:,} heartbeats into "
          f"{settings.topic(tn.MD_TICKS_RAW)} in {prod.seconds:.2f} s "
          f"({prod.records / prod.seconds:,.0f} ticks/s, unpaced)")
    runs: dict[str, list[LiveRun]] = {"live (a)": [], "live (b)": []}
    embedded_orders: list[int] = []
    build_s: list[float] = []
    k = 0

    def live(which: str) -> Callable[[], object]:
        def go() -> None:
            nonlocal k
            k += 1
            if which == "live (a)":
                graph = front_end_graph()
            else:
                t0 = time.perf_counter()
                graph = build_live_graph(live_options(models, tmp / "out"))[0]
                build_s.append(time.perf_counter() - t0)
            runs[which].append(live_run(graph, settings, tmp / f"ck{k}", f"bench{k}"))
        return go

    def embedded_chain() -> None:
        sink = replay_chain(src, models, "event", None)
        embedded_orders.append(sink.counts["orders"])

    # The live cases build their graph (and load the models) untimed inside the case: the
    # host's own figure is LiveRun.seconds; the interleaving is for the embedded ones.
    times = interleaved({
        "live (a)": live("live (a)"),
        "embedded (a)": lambda: replay_ticks(src, "event", None),
        "live (b)": live("live (b)"),
        "embedded (b)": embedded_chain,
    }, reps, warmup=False)
    times["live (a)"] = [r.seconds for r in runs["live (a)"]]
    times["live (b)"] = [r.seconds for r in runs["live (b)"]]
    res = Throughput(prod, prod.records, times, runs, embedded_orders[0] if embedded_orders
                     else 0)
    res.build_s = [b + r.open_s for b, r in zip(build_s, runs["live (b)"], strict=True)]
    if profile:
        consume_s, msgs = consume_only(settings)
        decode_s, elements = decode_elements(msgs)
        del msgs
        core_s = core_only(front_end_graph(), elements, encode=False)
        res.split = {"consume": consume_s, "decode": decode_s, "core": core_s,
                     "encode": core_only(front_end_graph(), elements, encode=True) - core_s}
        del elements
        res.profile = cProfile.Profile()
        graph = build_live_graph(live_options(models, tmp / "out"))[0]
        live_run(graph, settings, tmp / "ck-profile", "bench-profile", res.profile)
    return res


# ----------------------------------------------------------------------------- 2: latency


@dataclass(slots=True)
class Latency:
    label: str
    heartbeat_every: int
    paced: int
    paced_rate: float
    orders: int
    to_order_ms: np.ndarray[Any, Any]
    to_visible_ms: np.ndarray[Any, Any]
    produce_to_visible_ms: np.ndarray[Any, Any]
    committed_delay_ms: np.ndarray[Any, Any]
    tick_to_copy_ms: np.ndarray[Any, Any]
    merge_floor_ms: np.ndarray[Any, Any]
    transport_ms: np.ndarray[Any, Any]
    copy_to_order_ms: np.ndarray[Any, Any]
    summary: dict[str, Any]
    catch_up_s: float


@dataclass(slots=True)
class SourceLog:
    """The source topic as written: data ticks in source order and the heartbeat rounds."""

    seq: np.ndarray[Any, Any]
    partition: np.ndarray[Any, Any]
    ts: np.ndarray[Any, Any]
    create_ms: np.ndarray[Any, Any]
    marks: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]
    """partition -> (seq, CreateTime ms) of its heartbeat and end records"""

    def merge_floor_ms(self, start: int) -> np.ndarray[Any, Any]:
        """Per data tick from ``start``: how long after it the last of the other partitions
        got a mark with a later sequence; the merge cannot release the tick before that."""
        seq, part = self.seq[start:], self.partition[start:]
        floor = np.full(len(seq), np.iinfo(np.int64).min, dtype=np.int64)
        for p, (mseq, mms) in self.marks.items():
            i = np.searchsorted(mseq, seq, side="right")
            ok = (i < len(mseq)) & (part != p)
            at = np.where(ok, mms[np.minimum(i, len(mseq) - 1)], np.iinfo(np.int64).min)
            floor = np.maximum(floor, at)
        out: np.ndarray[Any, Any] = (floor - self.create_ms[start:]).astype(np.float64)
        return out


def source_log(settings: KafkaSettings) -> SourceLog:
    data: list[tuple[int, int, int, int]] = []
    marks: dict[int, list[tuple[int, int]]] = {}
    for r in read_all(settings, tn.MD_TICKS_RAW):
        seq, kind = wire.source_mark(r.headers)
        if kind == "data":
            ts = _TICK_DEC.decode(r.value).ts
            if isinstance(ts, int):
                data.append((seq, r.partition, ts, r.create_ms))
        else:
            marks.setdefault(r.partition, []).append((seq, r.create_ms))
    data.sort()
    a = np.asarray(data, dtype=np.int64).reshape(-1, 4)
    m = {p: (np.asarray([x[0] for x in sorted(v)], dtype=np.int64),
             np.asarray([x[1] for x in sorted(v)], dtype=np.int64)) for p, v in marks.items()}
    return SourceLog(a[:, 0], a[:, 1], a[:, 2], a[:, 3], m)


def latency(bootstrap: str, src: TickInput, lines: list[str], models: Path, tmp: Path,
            label: str, heartbeat_every: int | None) -> Latency:
    """One paced live run (``heartbeat_every``: ``produce-ticks --heartbeat-every``; None:
    its default, a round every 2,000 records and every 50 ms)."""
    tag = f"lat{heartbeat_every or ''}"
    settings = topics_for(bootstrap, f"lb.{tag}.")
    warm = slice_input(src, lines, WARM_FROM, PACED_FROM, tmp / f"{tag}-warm.csv")
    paced = slice_input(src, lines, PACED_FROM, LATENCY_TO, tmp / f"{tag}-paced.csv")
    produce_ticks(settings, warm, rate=None, end=False, progress=False)
    summary_path = tmp / f"{tag}-summary.json"
    log = tmp / f"{tag}.log"
    unc = Receipts(settings, tn.ORDERS, committed=False)
    com = Receipts(settings, tn.ORDERS, committed=True)
    raw = Receipts(settings, tn.MD_TICKS_RAW, committed=False, key=wire.SEQ)
    for receipts in (unc, com, raw):
        receipts.start()
    pcmd = produce_command(settings, paced, PACED_RATE)
    if heartbeat_every is not None:
        pcmd += ["--heartbeat-every", str(heartbeat_every)]
    try:
        with started(live_command(settings, tmp / f"{tag}-ck", models, summary_path,
                                  quiet=True), log) as host:
            catch_up = wait_for_count(settings, tn.MD_TICKS, FIRST_PACED, 120.0)
            with started(pcmd, log) as prod:
                _wait(prod, 300.0, "produce-ticks (paced)", log)
            _wait(host, 120.0, "the live host", log)
        time.sleep(0.3)  # the last commit's records reach the read_committed consumer
    finally:
        for receipts in (unc, com, raw):
            receipts.stop()
    summary = json.loads(summary_path.read_text())
    sl = source_log(settings)

    create = sl.create_ms
    copies = sorted((int(r.headers[wire.ID].rsplit(b":", 1)[1]), r.create_ms)
                    for r in read_all(settings, tn.MD_TICKS))
    copy_ms = np.asarray([c for _, c in copies], dtype=np.int64)  # n-th tick's copy
    reach = np.maximum.accumulate(sl.ts)  # the watermark after each tick (lateness 0)
    trading = max(FIRST_PACED, int(np.searchsorted(reach, EMINI_TRAIN_END_NS)))
    got_raw = ((raw.seen.get(str(q).encode()), c)
               for q, c in zip(sl.seq[trading:].tolist(), create[trading:].tolist(), strict=True))
    transport = np.asarray([g[0] / 1e6 - c for g, c in got_raw if g is not None])
    to_order: list[int] = []
    copy_to_order: list[int] = []
    to_visible: list[float] = []
    p_to_v: list[float] = []
    com_delay: list[float] = []
    for r in read_all(settings, tn.ORDERS):
        order = _ORDER_DEC.decode(r.value)
        i = int(np.searchsorted(reach, order.ts_event, side="left"))
        if i >= len(reach) or i < FIRST_PACED:
            continue  # closed at the end of stream, or during the unpaced warm-up
        tick_ms = int(create[i])
        to_order.append(r.create_ms - tick_ms)
        if i < len(copy_ms):
            copy_to_order.append(r.create_ms - int(copy_ms[i]))
        mid = r.headers.get(wire.ID, b"")
        got = unc.seen.get(mid)
        if got is not None:
            to_visible.append(got[0] / 1e6 - tick_ms)
            p_to_v.append(got[0] / 1e6 - r.create_ms)
        got = com.seen.get(mid)
        if got is not None:
            com_delay.append(got[0] / 1e6 - r.create_ms)
    m = min(len(copy_ms), len(create))
    span = (int(create[-1]) - int(create[FIRST_PACED])) / 1e3
    n_paced = len(create) - FIRST_PACED
    return Latency(
        label, heartbeat_every or 2000, n_paced, n_paced / span if span > 0 else 0.0,
        len(to_order), np.asarray(to_order, dtype=np.float64), np.asarray(to_visible),
        np.asarray(p_to_v), np.asarray(com_delay),
        (copy_ms[trading:m] - create[trading:m]).astype(np.float64),
        sl.merge_floor_ms(trading), transport, np.asarray(copy_to_order, dtype=np.float64),
        summary, catch_up)


# ----------------------------------------------------------------------------- 4: restart


@dataclass(slots=True)
class Restart:
    killed_after_orders: int
    to_first_order_s: float | None
    to_first_new_order_s: float | None
    to_resume_line_s: float | None
    imports_s: float
    summary: dict[str, Any]
    replayed: int


def imports_seconds() -> float:
    """Interpreter start + the live run's imports, in a fresh process."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import jobs.cli, jobs.live.run, jobs.live.host"],
                   check=True)
    return time.perf_counter() - t0


def restart(bootstrap: str, src: TickInput, lines: list[str], models: Path, tmp: Path
            ) -> Restart:
    settings = topics_for(bootstrap, "lb.rst.")
    warm = slice_input(src, lines, WARM_FROM, PACED_FROM, tmp / "rst-warm.csv")
    paced = slice_input(src, lines, PACED_FROM, RESTART_TO, tmp / "rst-paced.csv")
    produce_ticks(settings, warm, rate=None, end=False, progress=False)
    ckdir = tmp / "rst-ck"
    summary_path = tmp / "rst-summary.json"
    log = tmp / "rst.log"
    cmd = live_command(settings, ckdir, models, summary_path, quiet=False)
    unc = Receipts(settings, tn.ORDERS, committed=False)
    unc.start()
    lines_after: list[tuple[int, str]] = []
    try:
        with started(produce_command(settings, paced, PACED_RATE), log) as prod:
            with started(cmd, log) as first:
                deadline = time.monotonic() + 120.0
                while (len(unc.seen) < KILL_AFTER_ORDERS
                       or not (ckdir / CHECKPOINT_FILE).exists()):
                    if time.monotonic() > deadline or first.poll() is not None:
                        raise RuntimeError(f"no orders and checkpoint from the live host; log "
                                           f"{log}")
                    time.sleep(0.02)
                time.sleep(KILL_SETTLE_S)
                os.kill(first.pid, signal.SIGKILL)
                first.wait()
            killed = len(unc.seen)
            t_restart = time.time_ns()
            with started(cmd, log, stderr_lines=lines_after) as second:
                _wait(second, 180.0, "the restarted live host", log)
            _wait(prod, 120.0, "produce-ticks (paced)", log)
    finally:
        unc.stop()
    summary = json.loads(summary_path.read_text())
    restart_ms = t_restart // 1_000_000
    records = read_all(settings, tn.ORDERS)
    old_ids = {r.headers.get(wire.ID) for r in records if r.create_ms < restart_ms}
    new = sorted((r.create_ms, r.headers.get(wire.ID) in old_ids) for r in records
                 if r.create_ms >= restart_ms)
    first_any = (new[0][0] - t_restart / 1e6) / 1e3 if new else None
    first_new = next(((ms - t_restart / 1e6) / 1e3 for ms, again in new if not again), None)
    resumed = next((t for t, line in lines_after if line.startswith("resuming from")), None)
    return Restart(killed, first_any, first_new,
                   (resumed - t_restart) / 1e9 if resumed is not None else None,
                   imports_seconds(), summary, sum(1 for _, again in new if again))


# ----------------------------------------------------------------------------- report


def _ms(a: np.ndarray[Any, Any]) -> str:
    if a.size == 0:
        return "n/a"
    p50, p99 = np.percentile(a, [50, 99])
    return f"p50 {p50:,.0f} ms, p99 {p99:,.0f} ms"


def _pct(a: np.ndarray[Any, Any]) -> str:
    if a.size == 0:
        return "(none)"
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return (f"p50 {p50:8,.1f}  p90 {p90:8,.1f}  p99 {p99:8,.1f}  max {a.max():8,.1f} ms  "
            f"n={a.size:,}")


def _cp(stats: list[LiveStats]) -> tuple[str, str]:
    cps = [s for st in stats for s in st.checkpoint_s]
    if not cps:
        return "n/a", ""
    return (f"p50 {np.median(cps) * 1e3:,.1f} ms, max {max(cps) * 1e3:,.0f} ms; "
            f"{stats[-1].checkpoint_bytes:,} B", f"n={len(cps)}")


def print_profile(prof: cProfile.Profile) -> None:
    st = pstats.Stats(prof)
    entries: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values())
    rows = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)
    print(f"   profiled run: {total:.1f} s of own time under cProfile (which inflates small "
          "calls); top own time:")
    print(f"   {'own s':>7} {'share':>6} {'cum s':>7} {'calls':>10}  function")
    for (path, line, fn), (_, calls, own, cum, _callers) in rows[:PROFILE_TOP]:
        where = path.split("/work/wt/livebench/")[-1] if path.startswith("/") else path
        print(f"   {own:7.2f} {100 * own / total:5.1f}% {cum:7.2f} {calls:>10,}  "
              f"{where}:{line}({fn})")
    live = [kv for kv in rows if "/jobs/live/" in kv[0][0] or "/jobs/core/sequenced" in kv[0][0]]
    print("   live-specific code (jobs/live/*, jobs/core/sequenced*), by own time:")
    for (path, line, fn), (_, calls, own, cum, _callers) in live[:12]:
        print(f"   {own:7.2f} {100 * own / total:5.1f}% {cum:7.2f} {calls:>10,}  "
              f"{path.split('/jobs/', 1)[-1]}:{line}({fn})")


def run(models: Path | None, reps: int, profile: bool) -> list[Row]:
    header("the live path on Kafka (tansu on 127.0.0.1, memory storage): throughput, "
           "latency, checkpoints, restart")
    print("   broker, producers, live host and this process share the cores above: figures "
          "move with the load")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sq-bench-live-") as tmpdir:
        tmp = Path(tmpdir)
        tb = emini.trained_bundle(models, tmp)
        if tb.train_s:
            print(f"   trained the bundle in {tb.train_s:.1f} s")
        src = emini.source()
        lines = src.path.read_text().splitlines(keepends=True)
        with Broker(log_path=tmp / "tansu.log") as broker:
            print(f"\n-- 1. throughput, full E-mini replay through the broker ({reps} round(s), "
                  "interleaved with the embedded per-event runs)")
            tp = throughput(broker.bootstrap, src, tb.models, tmp, reps, profile)
            rows += report_throughput(tp)
            print(f"\n-- 2. tick -> order latency, paced at {PACED_RATE:,.0f} ticks/s (lines "
                  f"{PACED_FROM:,}..{LATENCY_TO:,} after {WARM_FROM:,}..{PACED_FROM:,} "
                  f"unpaced), --no-cost-gate, checkpoint wall {CHECKPOINT_WALL_S:g} s")
            lats: list[Latency] = []
            for label, every in LATENCY_RUNS:
                lats.append(latency(broker.bootstrap, src, lines, tb.models, tmp, label, every))
                rows += report_latency(lats[-1])
            rows += report_checkpoints(tp, lats)
            print(f"\n-- 4. restart after SIGKILL (paced {PACED_RATE:,.0f} ticks/s, lines "
                  f"{PACED_FROM:,}..{RESTART_TO:,} after {WARM_FROM:,}..{PACED_FROM:,} unpaced)")
            rows += report_restart(restart(broker.bootstrap, src, lines, tb.models, tmp),
                                   float(np.median(tp.build_s)))
            gc.collect()  # clients in reference cycles go before the broker does
    if tp.profile is not None:
        print("\n-- profile: one live whole-chain run under cProfile")
        print_profile(tp.profile)
    return rows


def report_throughput(tp: Throughput) -> list[Row]:
    n = tp.n
    st = {k: Stats.of(v) for k, v in tp.seconds.items()}
    rate = {k: n / s.median for k, s in st.items()}
    for k, s in st.items():
        print(f"   {k:<14} {s.median:7.2f} s  {rate[k]:>9,.0f} ticks/s  {s.spread()}")
    ratio_b = [e / li for li, e in zip(tp.seconds["live (b)"], tp.seconds["embedded (b)"],
                                       strict=True)]
    ratio_a = [e / li for li, e in zip(tp.seconds["live (a)"], tp.seconds["embedded (a)"],
                                       strict=True)]
    rb, ra = float(np.median(ratio_b)), float(np.median(ratio_a))
    lb = tp.runs["live (b)"][0]
    print(f"   live (a) {rate['live (a)']:,.0f} ticks/s vs target {TARGET_RATE:,}: "
          f"{'met' if rate['live (a)'] >= TARGET_RATE else 'NOT met'} "
          f"({rate['live (a)'] / TARGET_RATE:.2f}x); live/embedded (a) {ra:.0%}")
    print(f"   live (b) / embedded (b) = {rb:.0%} (per-round ratio; target >= "
          f"{TARGET_RATIO:.0%}: {'met' if rb >= TARGET_RATIO else 'NOT met'}); orders "
          f"live {lb.counts.get(tn.ORDERS, 0):,}, embedded {tp.embedded_orders:,}")
    print(f"   build_live_graph + opening its operators (the models load; untimed above): "
          f"{float(np.median(tp.build_s)):.2f} s")
    split = tp.split
    rows: list[Row] = []
    if split:
        rest = st["live (a)"].median - sum(split.values())
        print(f"   where live (a)'s time goes (separate runs over the same records, no "
              f"profiler): consumer alone {split['consume']:.2f} s, the host's header/record "
              f"decoding {split['decode']:.2f} s, SequencedRunner + graph {split['core']:.2f} s, "
              f"KafkaOutput encoding {split['encode']:.2f} s, the rest (librdkafka produce, "
              f"transactions, host loop) {rest:.2f} s")
        rows.append(Row(BENCH, "(a) split", f"consume {split['consume']:.2f} s, decode "
                        f"{split['decode']:.2f} s, core {split['core']:.2f} s, encode "
                        f"{split['encode']:.2f} s, rest {rest:.2f} s", "n=1",
                        "separate runs over the same records (--profile)"))
    how = "KafkaHost construction to end of stream, 500k ticks from md.ticks.raw"
    prod = tp.produce
    return [
        Row(BENCH, f"(a) live normalize+features (target {TARGET_RATE // 1000}k)",
            fmt_rate(rate["live (a)"]), st["live (a)"].spread(), how),
        Row(BENCH, "(a) embedded per-event normalize+features", fmt_rate(rate["embedded (a)"]),
            st["embedded (a)"].spread(), "run_event_ticks from the CSV, same rounds"),
        Row(BENCH, "(b) live whole chain", fmt_rate(rate["live (b)"]), st["live (b)"].spread(),
            how + "; build_live_graph"),
        Row(BENCH, "(b) embedded per-event whole chain", fmt_rate(rate["embedded (b)"]),
            st["embedded (b)"].spread(), "run_event_ticks + chain from the CSV, same rounds"),
        Row(BENCH, f"(b) live / embedded (target {TARGET_RATIO:.0%})", f"{rb:.0%}",
            f"n={len(ratio_b)}", "per-round ratio of ticks/s"),
        Row(BENCH, "produce-ticks, unpaced", fmt_rate(prod.records / prod.seconds), "n=1",
            f"{prod.records:,} ticks + {prod.heartbeats:,} heartbeats, 8 partitions"),
        *rows,
    ]


def report_latency(lat: Latency) -> list[Row]:
    s = lat.summary
    print(f"\n   {lat.label}: warm-up caught up in {lat.catch_up_s:.1f} s; paced {lat.paced:,} "
          f"ticks at {lat.paced_rate:,.0f} ticks/s achieved; {lat.orders:,} orders closed by "
          f"paced ticks ({s['topics'].get(tn.ORDERS, 0):,} in the run); "
          f"{s['checkpoints']} checkpoints")
    print("   (Kafka CreateTimes are milliseconds: each difference is +-1 ms; ticks from the "
          "training end on)")
    for name, a in (("tick -> order produced (CreateTimes)", lat.to_order_ms),
                    ("tick -> order seen, read_uncommitted", lat.to_visible_ms),
                    ("order produced -> seen, read_uncommitted", lat.produce_to_visible_ms),
                    ("order produced -> seen, read_committed", lat.committed_delay_ms),
                    ("tick -> its md.ticks copy produced", lat.tick_to_copy_ms),
                    ("  tick -> seen by a consumer here (transport)", lat.transport_ms),
                    ("  tick -> next mark on every other partition", lat.merge_floor_ms),
                    ("closing tick's copy -> order produced", lat.copy_to_order_ms)):
        print(f"   {name:<46} {_pct(a)}")
    p99 = float(np.percentile(lat.to_order_ms, 99)) if lat.to_order_ms.size else float("nan")
    print(f"   tick -> order p99 {p99:,.0f} ms vs target {TARGET_P99_MS:g} ms: "
          f"{'met' if p99 <= TARGET_P99_MS else 'NOT met'}")
    how = (f"paced {lat.paced_rate:,.0f} ticks/s, heartbeat round every "
           f"{lat.heartbeat_every:,} records or 50 ms")
    tag = f" [{lat.label}]"
    return [
        Row(BENCH, f"tick -> order produced (target p99 {TARGET_P99_MS:g} ms){tag}",
            _ms(lat.to_order_ms), f"n={lat.to_order_ms.size:,}, +-1 ms",
            "order CreateTime - closing tick CreateTime; " + how),
        Row(BENCH, f"tick -> order seen read_uncommitted{tag}", _ms(lat.to_visible_ms),
            f"n={lat.to_visible_ms.size:,}", "consumer poll() in this process"),
        Row(BENCH, f"tick -> md.ticks copy produced{tag}", _ms(lat.tick_to_copy_ms),
            f"n={lat.tick_to_copy_ms.size:,}", "transport + sequenced merge + normalize"),
        Row(BENCH, f"tick -> seen by a consumer (transport){tag}", _ms(lat.transport_ms),
            f"n={lat.transport_ms.size:,}", "read_uncommitted poll() here - tick CreateTime"),
        Row(BENCH, f"heartbeat wait floor{tag}", _ms(lat.merge_floor_ms),
            f"n={lat.merge_floor_ms.size:,}", "next mark on every other partition - tick"),
        Row(BENCH, f"closing tick copy -> order{tag}", _ms(lat.copy_to_order_ms),
            f"n={lat.copy_to_order_ms.size:,}", "the chain inside the host"),
        Row(BENCH, f"order -> read_committed visible (wall {CHECKPOINT_WALL_S:g} s){tag}",
            _ms(lat.committed_delay_ms), f"n={lat.committed_delay_ms.size:,}",
            "seen by a read_committed consumer - order CreateTime"),
    ]


def report_checkpoints(tp: Throughput, lats: list[Latency]) -> list[Row]:
    out: list[Row] = []
    print("\n-- 3. checkpoints (commit of the outputs' transaction + snapshot file)")
    for k in ("live (a)", "live (b)"):
        fig, spread = _cp([r.stats for r in tp.runs[k]])
        print(f"   {k} full replay: {fig} ({spread})")
        out.append(Row(BENCH, f"checkpoint {k}, full replay", fig, spread,
                       "KafkaHost.stats: duration and last size"))
    for lat in lats:
        s = lat.summary
        fig = (f"p50 {s['checkpoint_ms_p50']:,.1f} ms, max {s['checkpoint_ms_max']:,.0f} ms; "
               f"{s['checkpoint_bytes']:,} B")
        print(f"   whole chain, paced [{lat.label}]: {fig} (n={s['checkpoints']})")
        out.append(Row(BENCH, f"checkpoint whole chain, paced [{lat.label}]", fig,
                       f"n={s['checkpoints']}", "summary JSON of the paced live run"))
    return out


def report_restart(rs: Restart, build_s: float) -> list[Row]:
    s = rs.summary
    fo = rs.to_first_order_s
    print(f"   killed after {rs.killed_after_orders} orders; restart -> first order produced "
          f"by the new process {_s(fo)} (target {TARGET_RESTART_S:g} s: "
          f"{'met' if fo is not None and fo <= TARGET_RESTART_S else 'NOT met'}); -> first "
          f"order with a new id {_s(rs.to_first_new_order_s)}; {rs.replayed} orders "
          "re-emitted (same ids)")
    host_first = s.get("first_order_s")
    before_host = (fo - host_first) if fo is not None and host_first is not None else None
    print(f"   split: start -> KafkaHost init {_s(before_host)} (first order - summary "
          f"first_order_s), of which interpreter + imports ~{rs.imports_s:.2f} s (a fresh "
          f"process importing the live run) and build_live_graph + open ~{build_s:.2f} s "
          f"(section 1); "
          f"start -> 'resuming from' line {_s(rs.to_resume_line_s)} (after init_transactions, "
          f"checkpoint restore, offset checks); KafkaHost init -> first order {_s(host_first)}")
    return [
        Row(BENCH, f"restart after SIGKILL -> first order (target {TARGET_RESTART_S:g} s)",
            _s(fo), "n=1", "Popen of the same command line to the new process's first "
            "order CreateTime"),
        Row(BENCH, "restart -> first order with a new id", _s(rs.to_first_new_order_s), "n=1",
            f"{rs.replayed} re-emitted orders first"),
        Row(BENCH, "restart split", f"to host init {_s(before_host)} (imports "
            f"{rs.imports_s:.2f} s, graph {build_s:.2f} s), resumed at "
            f"{_s(rs.to_resume_line_s)}, host init to order {_s(host_first)}", "n=1",
            "stderr line times; summary first_order_s"),
    ]


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} s"


def main(argv: list[str] | None = None) -> None:
    p = arg_parser("the live path on Kafka: throughput, latency, checkpoints, restart", reps=1)
    add_models_arg(p)
    p.add_argument("--profile", action="store_true",
                   help="also run the live whole chain once under cProfile and print its top")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.models, args.reps, args.profile)
    finish(BENCH, rows, t0, args.json)


if __name__ == "__main__":
    main()
