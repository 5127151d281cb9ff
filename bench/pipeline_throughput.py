"""normalize + 1-minute bars + features over the 500k E-mini ticks, on one core.

Paths timed (interleaved repetitions, median and spread):

- (a) per event: ``LocalRunner`` with normalize and window features, source records already
  in memory (parsing a record is normalize's work, so it is timed);
- (b) batched, input pre-loaded: ``NormalizeColumns.validate`` + ``select`` +
  ``FeaturesColumns.process`` over
  65,536-row chunks + ``flush`` (columns loaded before the clock starts);
- (c) end to end from the CSV: ``run_batch_ticks`` / ``run_event_ticks`` as
  ``streamquant run --no-trade`` calls them (file reading and parsing included);
- (d) those with topic files written to a temporary directory and without;
- a bare per-tick Python loop (bars + EMA 12/26 + RSI 14, no validation, no messages) as an
  in-run yardstick for the quoted context figures.

Then where the batched path's time goes (phases timed by wrapping the replay job's own calls)
and memory: peak RSS of a fresh process per path and the tracemalloc peak of path (b).

Run: ``python -m bench.pipeline_throughput [--reps N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import emini
from bench.measure import (
    Row,
    Stats,
    arg_parser,
    current_rss_mib,
    finish,
    fmt_rate,
    header,
    interleaved,
    peak_rss_mib,
    ru_maxrss_mib,
)
from jobs import batch_replay, tick_files
from jobs.accel import tick_columns
from jobs.accel.features_columns import FeaturesColumns
from jobs.accel.normalize_columns import NormalizeColumns, RawTickColumns
from jobs.accel.tick_columns import TickColumns
from jobs.batch_replay import CHUNK, run_batch_ticks
from jobs.event_replay import run_event_ticks
from jobs.local_runner import LocalRunner
from jobs.progress import Progress
from jobs.sources import TickInput
from jobs.topic_sink import TopicSink
from jobs.topology import tick_graph
from operators.contract import END_OF_STREAM
from operators.normalize import RawRecord

BENCH = "pipeline_throughput"
TARGET = 1_500_000
CONTEXT = (
    ("Bytewax (same workload, earlier on this machine)", 370_000),
    ("NautilusTrader (same workload, earlier on this machine)", 360_000),
    ("bare per-tick Python loop (earlier on this machine)", 5_500_000),
)
OUTPUTS = ("md.ticks", "md.ticks.dlq", "md.bars", "features", "md.ticks.late")


def _quiet() -> Progress:
    return Progress("", None, enabled=False)


# ----------------------------------------------------------------------------- the paths


def event_preloaded(src: TickInput, records: list[RawRecord]) -> TopicSink:
    """(a) every record through the reference runner; nothing written, everything counted."""
    norm, feats = emini.normalizer(src), emini.window_features()
    sink = TopicSink(None, OUTPUTS)
    runner = LocalRunner(tick_graph(norm, feats), sink)
    feed = runner.feed
    for rec in records:
        feed(rec)
    runner.end_of_stream()
    return sink


@dataclass(slots=True)
class BatchOut:
    bars: int = 0
    features: int = 0
    late: int = 0
    dead: int = 0


def batch_preloaded(src: TickInput, cols: RawTickColumns) -> BatchOut:
    """(b) the batched front end over columns already in memory.

    The same calls ``run_batch_ticks`` makes for normalize and features; the outputs are the
    ``Bar`` / ``FeatureVector`` messages in each ``BatchResult`` (no sink).
    """
    norm, feats = NormalizeColumns(emini.normalizer(src)), FeaturesColumns(emini.window_features())
    result = norm.validate(cols)
    valid = cols.select(result.valid)
    bt = TickColumns(ts=valid.ts, price=valid.price, size=valid.size, symbol=valid.symbol_codes,
                  symbols=valid.symbol_names, venue=src.default_venue, line=valid.line,
                  source_file=src.label)
    out = BatchOut(dead=len(result.dead_letters))
    states: dict[str, Any] = {}
    max_seen: int | None = None
    for start in range(0, len(bt), CHUNK):
        chunk = bt.slice(start, start + CHUNK)
        before, after, max_seen = tick_columns.bounded_watermarks(chunk.ts, 0, max_seen)
        res = feats.process(states, chunk, before, after)
        out.bars += len(res.bars)
        out.features += len(res.features)
        out.late += len(res.late_rows)
    final = feats.flush(states, END_OF_STREAM)
    out.bars += len(final.bars)
    out.features += len(final.features)
    return out


def replay_ticks(src: TickInput, mode: str, topics_dir: Path | None) -> TopicSink:
    """(c)/(d) ``streamquant run --no-trade``'s tick replay, with or without topic files."""
    norm, feats = emini.normalizer(src), emini.window_features()
    sink = TopicSink(topics_dir, OUTPUTS)
    fn = run_batch_ticks if mode == "batch" else run_event_ticks
    fn(src, norm, feats, (), sink, 0, [], _quiet())
    sink.close()
    return sink


def bare_loop(ts: list[int], price: list[float], size: list[float], bar_ns: int
              ) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """A hand-written per-tick loop: 1-minute OHLCV + EMA 12/26 + Wilder RSI 14 per bar.

    No validation, no messages, no state objects: roughly the floor for pure Python.
    """
    k12, k26 = 2.0 / 13.0, 2.0 / 27.0
    cur = -1
    o = h = lo = c = v = 0.0
    ema12 = ema26 = 0.0
    prev = 0.0
    gain = loss = 0.0
    n = 0
    for t, p, s in zip(ts, price, size, strict=True):
        b = t - t % bar_ns
        if b != cur:
            if cur >= 0:
                n += 1
                if n == 1:
                    ema12 = ema26 = c
                else:
                    ema12 += k12 * (c - ema12)
                    ema26 += k26 * (c - ema26)
                    d = c - prev
                    gain = (gain * 13.0 + (d if d > 0.0 else 0.0)) / 14.0
                    loss = (loss * 13.0 + (-d if d < 0.0 else 0.0)) / 14.0
                prev = c
            cur = b
            o = h = lo = c = p
            v = s
        else:
            if p > h:
                h = p
            if p < lo:
                lo = p
            c = p
            v += s
    rsi = 100.0 - 100.0 / (1.0 + gain / loss) if loss else 100.0
    return n, (o, h, lo, c, v), (ema12, ema26, rsi)


# ----------------------------------------------------------------------------- phases


@dataclass(slots=True)
class Phases:
    """Seconds spent inside each wrapped call; nested calls are charged to the outermost."""

    seconds: dict[str, float] = field(default_factory=dict)
    depth: int = 0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
                self.depth -= 1

        return timed


PHASE_ORDER = ("load", "validate", "select", "ticks_from_columns", "watermarks",
               "fold+features", "emit+glue")


@contextmanager
def phase_probes(ph: Phases) -> Iterator[None]:
    """Wrap the calls ``run_batch_ticks`` makes (looked up at call time) for the duration."""
    patches: list[tuple[Any, str, Any]] = [
        (tick_files.TickCsvReader, "parse", ph.wrap("load", tick_files.TickCsvReader.parse)),
        (batch_replay, "bounded_watermarks",
         ph.wrap("watermarks", tick_columns.bounded_watermarks)),
        (tick_columns, "bounded_watermarks",
         ph.wrap("watermarks", tick_columns.bounded_watermarks)),
        (NormalizeColumns, "validate", ph.wrap("validate", NormalizeColumns.validate)),
        (NormalizeColumns, "ticks", ph.wrap("ticks_from_columns", NormalizeColumns.ticks)),
        (RawTickColumns, "select", ph.wrap("select", RawTickColumns.select)),
        (FeaturesColumns, "process", ph.wrap("fold+features", FeaturesColumns.process)),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, fn in patches:
            setattr(obj, name, fn)
        yield
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


def breakdown(src: TickInput, cols: RawTickColumns, tmp: Path, runs: dict[str, int]
              ) -> dict[str, dict[str, float]]:
    """Median seconds per phase for (b), (c) without files and (d) with files."""
    files = tmp / "phases"
    variants: dict[str, Callable[[], object]] = {
        "(b) pre-loaded": lambda: batch_preloaded(src, cols),
        "(c) CSV, no files": lambda: replay_ticks(src, "batch", None),
        "(d) CSV + topic files": lambda: replay_ticks(src, "batch", files),
    }
    out: dict[str, dict[str, float]] = {}
    for name, fn in variants.items():
        samples: list[dict[str, float]] = []
        for _ in range(runs[name]):
            _fresh(files)
            ph = Phases()
            gc.collect()
            with phase_probes(ph):
                t0 = time.perf_counter()
                fn()
                total = time.perf_counter() - t0
            ph.seconds["emit+glue"] = total - sum(ph.seconds.values())
            ph.seconds["total"] = total
            samples.append(ph.seconds)
        out[name] = {k: float(np.median([r.get(k, 0.0) for r in samples]))
                     for k in (*PHASE_ORDER, "total")}
    return out


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


# ----------------------------------------------------------------------------- memory

PROBES = ("batch-preloaded", "batch-csv", "event-csv")


def probe(name: str) -> dict[str, float]:
    """Run one path in this (fresh) process and report its memory."""
    res: dict[str, float] = {"rss_after_imports_mib": current_rss_mib()}
    src = emini.source()
    if name == "batch-preloaded":
        cols = emini.columns(src)
        gc.collect()
        res["rss_with_input_mib"] = current_rss_mib()
        tracemalloc.start()
        batch_preloaded(src, cols)
        res["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    elif name in ("batch-csv", "event-csv"):
        replay_ticks(src, name.split("-", maxsplit=1)[0], None)
    else:
        raise SystemExit(f"unknown probe {name!r} (one of {', '.join(PROBES)})")
    res["peak_rss_mib"] = peak_rss_mib()
    res["ru_maxrss_mib"] = ru_maxrss_mib()
    return res


def memory_probes() -> dict[str, dict[str, float]]:
    out = {}
    for name in PROBES:
        proc = subprocess.run([sys.executable, "-m", "bench.pipeline_throughput", "--probe", name],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"   memory probe {name} failed: {proc.stderr.strip()[-400:]}")
            continue
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# ----------------------------------------------------------------------------- main


def run(reps: int) -> list[Row]:
    header("pipeline throughput: normalize + 1m bars + features, E-mini 500k ticks, one core")
    # Memory first, while this process is small (children inherit ru_maxrss on Linux).
    mem = memory_probes()
    src = emini.source()
    t0 = time.perf_counter()
    cols = emini.columns(src)
    load_s = time.perf_counter() - t0
    recs = emini.records(src)
    n = len(recs)
    ts, price, size = cols.ts.tolist(), cols.price.tolist(), cols.size.tolist()
    print(f"   input {src.path} ({n:,} records; columns loaded in {load_s:.2f} s)")

    # -- (a), (b) and the bare loop, interleaved: ratios come from the same rounds
    sinks: list[TopicSink] = []
    t = interleaved({
        "a": lambda: sinks.append(event_preloaded(src, recs)),
        "b": lambda: batch_preloaded(src, cols),
        "bare": lambda: bare_loop(ts, price, size, emini.BAR_NS),
    }, reps, warmup=False)
    # the fast cases again, many more times, for their headline figures
    fast_reps = max(10, 5 * reps)
    fast = interleaved({
        "b": lambda: batch_preloaded(src, cols),
        "bare": lambda: bare_loop(ts, price, size, emini.BAR_NS),
    }, fast_reps, warmup=True)
    ev, ba = sinks[0].counts, batch_preloaded(src, cols)
    same = (ev["md.bars"], ev["features"], ev["md.ticks.dlq"], ev["md.ticks.late"]) == (
        ba.bars, ba.features, ba.dead, ba.late)
    print(f"   outputs: {ba.bars:,} bars, {ba.features:,} feature vectors, {ba.dead} dead letters, "
          f"{ba.late} late; per-event and batched agree: {'yes' if same else 'NO'}")
    sa, sb, sbare = Stats.of(t["a"]), Stats.of(fast["b"]), Stats.of(fast["bare"])
    rate = {k: n / s.median for k, s in (("a", sa), ("b", sb), ("bare", sbare))}
    print("\n-- (a) per event vs (b) batched, input pre-loaded; bare loop")
    print(f"   (a) per event      {sa.median:7.3f} s  {rate['a']:>12,.0f} ticks/s  {sa.spread()}")
    print(f"   (b) batched        {sb.median:7.3f} s  {rate['b']:>12,.0f} ticks/s  {sb.spread()}")
    print(f"   bare Python loop   {sbare.median:7.3f} s  {rate['bare']:>12,.0f} ticks/s  "
          f"{sbare.spread()}")
    print(f"   per-round ratios (median): (a)/(b) = {_ratio(t, 'a', 'b'):.1f}x, "
          f"(b)/bare = {_ratio(fast, 'b', 'bare'):.2f}x the time; target {TARGET:,} ticks/s "
          f"for (b): {'met' if rate['b'] >= TARGET else 'NOT met'} ({rate['b'] / TARGET:.1f}x)")

    print(f"\n-- (c) end to end from the CSV, (d) topic files on/off ({reps} reps, interleaved)")
    with tempfile.TemporaryDirectory(prefix="sq-bench-") as tmpdir:
        tmp = Path(tmpdir)
        topics = tmp / "topics"
        sizes: list[int] = []

        def with_files(mode: str) -> None:
            replay_ticks(src, mode, topics)
            sizes.append(sum(p.stat().st_size for p in topics.glob("*.jsonl")))

        e2e = interleaved({
            "batch": lambda: replay_ticks(src, "batch", None),
            "batch+files": lambda: with_files("batch"),
            "event": lambda: replay_ticks(src, "event", None),
            "event+files": lambda: with_files("event"),
        }, reps, warmup=False, before=lambda: _fresh(topics))
        written = max(sizes)
        e2e_stats = {k: Stats.of(v) for k, v in e2e.items()}
        for k, s in e2e_stats.items():
            print(f"   {k:<12} {s.median:7.3f} s  {n / s.median:>12,.0f} ticks/s  {s.spread()}")
        print(f"   topic files: {written / 2**20:,.0f} MiB per run; with them a run takes "
              f"{_ratio(e2e, 'batch+files', 'batch'):.2f}x (batch) and "
              f"{_ratio(e2e, 'event+files', 'event'):.2f}x (event) the time without")
        print(f"   batch/event speed-up end to end: {_ratio(e2e, 'event', 'batch'):.1f}x without "
              f"files, {_ratio(e2e, 'event+files', 'batch+files'):.1f}x with")
        phases = breakdown(src, cols, tmp, {"(b) pre-loaded": fast_reps, "(c) CSV, no files": 1,
                                            "(d) CSV + topic files": 1})
    print("\n-- where the batched path's time goes (seconds; (b) median of "
          f"{fast_reps} runs, (c)/(d) one run each)")
    names = list(phases)
    print("   " + "phase".ljust(20) + "".join(nm.rjust(24) for nm in names))
    for ph in (*PHASE_ORDER, "total"):
        cells = []
        for nm in names:
            v = phases[nm][ph]
            share = 100 * v / phases[nm]["total"]
            cells.append(f"{v:8.3f} ({share:5.1f}%)".rjust(24))
        print("   " + ph.ljust(20) + "".join(cells))
    print("   emit+glue = total minus the wrapped calls: encoding and writing the topics")
    print("   (md.ticks is most of the bytes) and the loop that feeds the sink")

    print("\n-- memory (a fresh process per path; peak = VmHWM)")
    for name, m in mem.items():
        extra = "".join(f", {k.removesuffix('_mib').replace('_', ' ')} {v:,.0f} MiB"
                        for k, v in m.items() if k != "peak_rss_mib")
        print(f"   {name:<16} peak RSS {m['peak_rss_mib']:,.0f} MiB{extra}")

    print("\n-- context (quoted, not re-measured; 1-minute bars + EMA/RSI)")
    for label, r in CONTEXT:
        print(f"   {label:<56} ~{r:>10,} ticks/s   ours (b) = {rate['b'] / r:.1f}x")
    print(f"   {'bare per-tick Python loop, this run':<56} {rate['bare']:>11,.0f} ticks/s")

    how_pre = "input in memory before the clock; median of interleaved reps"
    rows = [
        Row(BENCH, "(a) per event, normalize+features, pre-loaded", fmt_rate(rate["a"]),
            sa.spread(), "LocalRunner.feed per RawRecord; " + how_pre),
        Row(BENCH, "(b) batched, pre-loaded (target 1.5M)", fmt_rate(rate["b"]), sb.spread(),
            "NormalizeColumns.validate+select+FeaturesColumns.process chunks+flush; "
            + how_pre),
        Row(BENCH, "bare per-tick Python loop (yardstick)", fmt_rate(rate["bare"]),
            sbare.spread(), "1m bars+EMA+RSI over lists, same run"),
    ]
    for k, label in (("batch", "(c) batch, CSV end to end, no files"),
                     ("batch+files", "(d) batch, CSV end to end, topic files"),
                     ("event", "(c) event, CSV end to end, no files"),
                     ("event+files", "(d) event, CSV end to end, topic files")):
        s = e2e_stats[k]
        rows.append(Row(BENCH, label, fmt_rate(n / s.median), s.spread(),
                        f"run_{k.split('+')[0]}_ticks + TopicSink.close, file read included"))
    b_ph, f_ph = phases[names[0]], phases[names[2]]
    rows.append(Row(BENCH, "(b) time split", f"validate {b_ph['validate'] * 1e3:.0f} ms, select "
                    f"{b_ph['select'] * 1e3:.0f} ms, fold+features "
                    f"{b_ph['fold+features'] * 1e3:.0f} ms", "", "wrapped calls, median"))
    rows.append(Row(BENCH, "(d) batch+files time split",
                    f"load {f_ph['load']:.2f} s, ticks {f_ph['ticks_from_columns']:.2f} s, "
                    f"fold {f_ph['fold+features']:.2f} s, emit {f_ph['emit+glue']:.2f} s", "",
                    "wrapped calls, one run"))
    if "batch-preloaded" in mem:
        m = mem["batch-preloaded"]
        rows.append(Row(BENCH, "(b) memory", f"tracemalloc peak {m['tracemalloc_peak_mib']:.0f} "
                        f"MiB; peak RSS {m['peak_rss_mib']:.0f} MiB", "",
                        "fresh process; RSS includes loading the columns"))
    for name, label in (("batch-csv", "(c) batch"), ("event-csv", "(c) event")):
        if name in mem:
            rows.append(Row(BENCH, f"{label} peak RSS", f"{mem[name]['peak_rss_mib']:.0f} MiB",
                            "", "fresh process, VmHWM"))
    return rows


def _ratio(t: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ``t[a] / t[b]`` (both measured in the same round)."""
    return float(np.median([x / y for x, y in zip(t[a], t[b], strict=True)]))


def main(argv: list[str] | None = None) -> None:
    p = arg_parser(__doc__.splitlines()[0] if __doc__ else BENCH, reps=2)
    p.add_argument("--probe", choices=PROBES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe)))
        return
    t0 = time.perf_counter()
    rows = run(args.reps)
    finish(BENCH, rows, t0, args.json)


if __name__ == "__main__":
    main()
