"""The Faust worker (``run --engine faust``) against the live Kafka host and the embedded
runner, on the same E-mini ticks in one bench run: ticks/s, and tick -> order latency.

One broker (tansu on loopback), one topic prefix per scenario, topics from the catalog:

1. throughput: a slice of the E-mini trades (``--ticks N`` from line 40,000, default 20,000;
   Faust is slow enough that the whole file would take half an hour) produced unpaced, then
   - the Faust worker as an operator starts it (its own process, ``--until-end``), timed from
     the first source record it took to the last one that released ticks (its summary's
     ``processing_s``; the worker's start-up and group join excluded);
   - the live host (``KafkaHost`` in this process) over the same topic, timed from the host's
     construction to the end of stream (model loading excluded);
   - the embedded per-event run of the same file (in this process);
   and, to show where the Faust worker's ceiling is, a bare Faust agent that only counts the
   records (same topic, same batching);
2. latency: a warm-up slice produced unpaced, then the evening after the training end produced
   paced (``produce-ticks --rate``) while the worker runs with ``--no-cost-gate``. An order's
   closing tick is the first tick (in source order) whose running maximum event time reaches
   the order's ``ts_event``; latency = the order record's Kafka CreateTime minus that tick
   record's CreateTime (both set at ``produce()``, milliseconds).

Every process shares two cores with the broker: figures move with the machine's load.
Run: ``python -m bench.faust_worker [--models DIR] [--ticks N] [--json PATH]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench import emini
from bench.chain_latency import replay_chain
from bench.live_broker import (
    live_options,
    live_run,
    produce_command,
    read_all,
    slice_input,
    source_log,
    started,
    topics_for,
)
from bench.measure import Row, add_models_arg, arg_parser, finish, fmt_rate, header
from jobs.live.broker import Broker, free_port
from jobs.live.kafka_client import KafkaSettings
from jobs.live.produce_ticks import PACED_HEARTBEAT_S, produce_ticks
from jobs.live.run import build_live_graph
from jobs.sources import TickInput
from topics import names as tn
from topics.messages import Order

BENCH = "faust_worker"
FROM = 40_000
WARM_TO = 53_800
"""Latency: lines FROM..WARM_TO unpaced (feature warm-up), then paced from here."""
PACED_TO = 58_000
PACED_RATE = 150.0
"""Below the worker's capacity here, so the latency is the path's, not a queue's."""
_ORDER = msgspec.json.Decoder(Order)


def faust_command(settings: KafkaSettings, ckdir: Path, models: Path, summary: Path,
                  *extra: str, port: int | None = None) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", "run", "--engine", "faust",
            "--bootstrap", settings.bootstrap, "--topic-prefix", settings.topic_prefix,
            "--checkpoint-dir", str(ckdir), "--models", str(models), "--until-end",
            "--web-port", str(port or free_port()), "--summary-json", str(summary), "--quiet",
            *extra]


def run_faust(cmd: list[str], log: Path, summary: Path, timeout_s: float) -> dict[str, Any]:
    with started(cmd, log) as proc:
        code = proc.wait(timeout_s)
    if code != 0:
        raise RuntimeError(f"the Faust worker exited with {code}; log {log}")
    result: dict[str, Any] = json.loads(summary.read_text())
    return result


_BARE = """
import os, signal, sys, time, faust
bootstrap, topic, n, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
datadir = sys.argv[5]
app = faust.App("bare-" + topic, broker="kafka://" + bootstrap, broker_session_timeout=6,
                topic_allow_declare=False, topic_disable_leader=True, stream_wait_empty=False,
                key_serializer="raw", value_serializer="raw", web_port=port,
                store="memory://", autodiscover=False, consumer_auto_offset_reset="earliest",
                datadir=datadir)
seen = {"n": 0, "t0": 0.0}
@app.agent(app.topic(topic, key_type=bytes, value_type=bytes, partitions=8))
async def count(stream):
    async for events in stream.noack().take_events(2000, within=0.002):
        seen["t0"] = seen["t0"] or time.perf_counter()
        seen["n"] += len(events)
        if seen["n"] >= n:
            print(seen["n"] / (time.perf_counter() - seen["t0"]), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
w = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
w.spinner = None
try:
    w.execute_from_commandline()
except SystemExit:
    pass
"""


def bare_faust_rate(settings: KafkaSettings, n: int, datadir: Path) -> float:
    """Records/s of a Faust agent that only counts them (the framework's own ceiling)."""
    r = subprocess.run([sys.executable, "-c", _BARE, settings.bootstrap,
                        settings.topic(tn.MD_TICKS_RAW), str(n), str(free_port()), str(datadir)],
                       capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError(f"bare Faust agent: {r.stderr[-500:]}")
    return float(lines[-1])


def throughput(broker: Broker, src: TickInput, models: Path, tmp: Path) -> dict[str, float]:
    settings = topics_for(broker.bootstrap, "fw.tput.")
    prod = produce_ticks(settings, src, rate=None, progress=False)
    n = prod.records
    print(f"   {n:,} ticks + {prod.heartbeats:,} heartbeats produced in {prod.seconds:.2f} s")
    out: dict[str, float] = {}
    summary = run_faust(faust_command(settings, tmp / "ck-faust", models, tmp / "f.json"),
                        tmp / "faust.log", tmp / "f.json", 1800)
    out["faust"] = float(summary["processing_ticks_per_s"] or 0.0)
    out["faust_orders"] = float(summary["topics"].get(tn.ORDERS, 0))
    print(f"   faust worker: {fmt_rate(out['faust'])} over {summary['processing_s']:.1f} s "
          f"({summary['topics'].get(tn.ORDERS, 0)} orders, {summary['checkpoints']} "
          "checkpoints)")
    graph = build_live_graph(live_options(models, tmp / "out"))[0]
    lr = live_run(graph, settings, tmp / "ck-live", "bench-fw")
    out["live"] = n / lr.seconds
    out["live_orders"] = float(lr.counts.get(tn.ORDERS, 0))
    print(f"   live host:    {fmt_rate(out['live'])} over {lr.seconds:.1f} s "
          f"({lr.counts.get(tn.ORDERS, 0)} orders)")
    t0 = time.perf_counter()
    sink = replay_chain(src, models, "event", None)
    out["embedded"] = n / (time.perf_counter() - t0)
    out["embedded_orders"] = float(sink.counts[tn.ORDERS])
    print(f"   embedded:     {fmt_rate(out['embedded'])} ({sink.counts[tn.ORDERS]} orders)")
    out["bare"] = bare_faust_rate(settings, n + prod.heartbeats, tmp / "bare-data")
    print(f"   bare Faust agent (counting only): {fmt_rate(out['bare'], 'records/s')}")
    return out


def latency(broker: Broker, src: TickInput, lines: list[str], models: Path, tmp: Path
            ) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
    settings = topics_for(broker.bootstrap, "fw.lat.")
    warm = slice_input(src, lines, FROM, WARM_TO, tmp / "warm.csv")
    paced = slice_input(src, lines, WARM_TO, PACED_TO, tmp / "paced.csv")
    produce_ticks(settings, warm, rate=None, end=False, progress=False)
    port = free_port()
    cmd = faust_command(settings, tmp / "ck-lat", models, tmp / "lat.json", "--no-cost-gate",
                        "--checkpoint-interval", "off", port=port)
    with started(cmd, tmp / "lat.log") as worker:
        deadline = time.monotonic() + 600
        while _released(port) < WARM_TO - FROM:  # the warm-up is through the graph
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the Faust worker did not catch up; log {tmp / 'lat.log'}")
            time.sleep(1.0)
        with started(produce_command(settings, paced, PACED_RATE), tmp / "lat.log") as prod:
            t0, r0 = time.monotonic(), _released(port)
            while prod.poll() is None:  # how fast the worker keeps up with the paced feed
                time.sleep(1.0)
                t1, r1 = time.monotonic(), _released(port)
        if worker.wait(600) != 0:
            raise RuntimeError(f"the Faust worker failed; log {tmp / 'lat.log'}")
    summary: dict[str, Any] = json.loads((tmp / "lat.json").read_text())
    summary["paced_release_rate"] = (r1 - r0) / (t1 - t0) if t1 > t0 else 0.0
    sl = source_log(settings)
    reach = np.maximum.accumulate(sl.ts)  # the watermark after each tick (lateness 0)
    first = WARM_TO - FROM
    lat: list[float] = []
    for r in read_all(settings, tn.ORDERS):
        i = int(np.searchsorted(reach, _ORDER.decode(r.value).ts_event, side="left"))
        if first <= i < len(reach):
            lat.append(float(r.create_ms - int(sl.create_ms[i])))
    return np.asarray(lat), summary


def _released(port: int) -> int:
    """Ticks the worker released so far, from its status page (0 while it starts)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/streamquant/status/",
                                    timeout=2) as r:
            return int(json.loads(r.read())["released"])
    except OSError:
        return 0


def run(models: Path | None, n_ticks: int) -> list[Row]:
    header("the Faust worker vs the live host vs the embedded runner (tansu on 127.0.0.1)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sq-bench-faust-") as tmpdir:
        tmp = Path(tmpdir)
        tb = emini.trained_bundle(models, tmp)
        base = emini.source()
        lines = base.path.read_text().splitlines(keepends=True)
        src = slice_input(base, lines, FROM, FROM + n_ticks, tmp / "tput.csv")
        with Broker(log_path=tmp / "tansu.log") as broker:
            print(f"\n-- 1. throughput, E-mini lines {FROM:,}..{FROM + n_ticks:,}")
            tp = throughput(broker, src, tb.models, tmp)
            how = f"{n_ticks:,} E-mini ticks through tansu; whole chain, cost gate on"
            rows += [
                Row(BENCH, "faust worker, ticks/s", fmt_rate(tp["faust"]), "n=1",
                    how + "; first record taken -> last release"),
                Row(BENCH, "live host, ticks/s", fmt_rate(tp["live"]), "n=1",
                    how + "; host construction -> end of stream"),
                Row(BENCH, "embedded per-event, ticks/s", fmt_rate(tp["embedded"]), "n=1",
                    "same ticks from the CSV, in process"),
                Row(BENCH, "bare faust agent, records/s", fmt_rate(tp["bare"], "records/s"),
                    "n=1", "a noack agent that only counts: Faust's own ceiling here"),
            ]
            if not tp["faust_orders"] == tp["live_orders"] == tp["embedded_orders"]:
                print(f"   !! orders differ: faust {tp['faust_orders']:.0f}, live "
                      f"{tp['live_orders']:.0f}, embedded {tp['embedded_orders']:.0f}")
            print(f"\n-- 2. tick -> order latency, lines {WARM_TO:,}..{PACED_TO:,} paced at "
                  f"{PACED_RATE:g} ticks/s after {FROM:,}..{WARM_TO:,} unpaced, --no-cost-gate")
            lat, summary = latency(broker, base, lines, tb.models, tmp)
            if len(lat):
                p50, p99 = np.percentile(lat, [50, 99])
                kept = summary["paced_release_rate"]
                print(f"   {len(lat)} orders: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max "
                      f"{lat.max():.0f} ms ({summary['checkpoints']} checkpoints); the worker "
                      f"released {kept:,.0f} ticks/s while the feed sent {PACED_RATE:g}/s "
                      f"plus {8 / PACED_HEARTBEAT_S:.0f} heartbeat records/s"
                      + (" - it fell behind: the latency is mostly queueing"
                         if kept < 0.95 * PACED_RATE else ""))
                rows.append(Row(BENCH, "faust release rate, paced feed", fmt_rate(kept),
                                "n=1", f"feed {PACED_RATE:g} ticks/s + heartbeats"))
                rows += [Row(BENCH, "faust tick -> order p50", f"{p50:.0f} ms", f"n={len(lat)}",
                             f"paced {PACED_RATE:g}/s; Kafka CreateTime tick -> order"),
                         Row(BENCH, "faust tick -> order p99", f"{p99:.0f} ms", f"n={len(lat)}",
                             f"paced {PACED_RATE:g}/s; Kafka CreateTime tick -> order")]
            else:
                print("   no orders in the paced window")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = arg_parser("the Faust worker against the live host and the embedded runner", reps=1)
    add_models_arg(p)
    p.add_argument("--ticks", type=int, default=20_000,
                   help="E-mini ticks for the throughput scenario (default %(default)s)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.models, args.ticks)
    finish(BENCH, rows, t0, args.json)


if __name__ == "__main__":
    main()
