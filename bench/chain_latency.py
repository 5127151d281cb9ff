"""The whole chain on the E-mini replay: ticks/s, tick → order latency, time per stage.

normalize → window features → infer → regime blend → size → account (pre-trade check,
routing, paper broker), with the walk-forward bundle ``streamquant run`` trains (or
``--models DIR``):

- throughput: ``run_batch_ticks`` / ``run_event_ticks`` with the decision chain, from the CSV,
  topic files written to a temporary directory or not (interleaved rounds);
- latency, per-event path: the decision for a bar is made inside the ``feed()`` of the tick
  whose watermark closes it. Per such tick, the wall time from entering ``feed()`` to the
  ``features`` emit, the first ``orders`` emit and the ``audit.decisions`` emit it caused,
  stamped by a sink that records ``perf_counter_ns`` (records pre-loaded, no files);
- per stage: time inside each operator's ``process`` / ``on_timer`` (wrapped in this process
  only), the rest being the runner's dispatch and the sink, in a separate run.

Run: ``python -m bench.chain_latency [--models DIR] [--reps N] [--json PATH]``.
"""

from __future__ import annotations

import gc
import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench import emini
from bench.measure import (
    Row,
    Stats,
    add_models_arg,
    arg_parser,
    finish,
    fmt_rate,
    fmt_us,
    header,
    interleaved,
    percentiles_us,
)
from jobs.batch_replay import run_batch_ticks
from jobs.event_replay import run_event_ticks
from jobs.graph import Stage
from jobs.local_runner import LocalRunner
from jobs.progress import Progress
from jobs.sources import TickInput
from jobs.topic_sink import TopicSink
from jobs.topology import tick_graph
from operators.normalize import RawRecord

BENCH = "chain_latency"
KEEP = ("orders", "fills", "risk.rejects", "positions", "audit.decisions")  # as `run` keeps
WATCH = ("features", "orders", "audit.decisions")


def outputs(src: TickInput, chain: tuple[Stage, ...]) -> tuple[str, ...]:
    return tick_graph(emini.normalizer(src), emini.window_features(), chain).output_topics


def replay_chain(src: TickInput, models: Path, mode: str, topics_dir: Path | None) -> TopicSink:
    """``streamquant run --models DIR`` minus the report: the whole graph over the CSV."""
    chain = emini.chain(src, models)
    norm, feats = emini.normalizer(src), emini.window_features()
    sink = TopicSink(topics_dir, outputs(src, chain), capture=KEEP)
    fn = run_batch_ticks if mode == "batch" else run_event_ticks
    fn(src, norm, feats, chain, sink, 0, [], Progress("", None, enabled=False))
    sink.close()
    return sink


class StampTap:
    """A tap on the watched topics stamping the wall time of each of their messages (a tap,
    not a sink subclass: the other topics stay count-only, as in a run without files)."""

    name = "stamps"
    topics = frozenset(WATCH)

    def __init__(self) -> None:
        self.stamps: list[tuple[str, int]] = []

    def accept(self, topic: str, n: int, value: msgspec.Struct) -> None:
        self.stamps.append((topic, time.perf_counter_ns()))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"stamps": len(self.stamps)}


def latency_run(src: TickInput, models: Path, recs: list[RawRecord]) -> dict[str, Any]:
    """Feed pre-loaded records one by one; per feed that emitted watched topics, the delays."""
    chain = emini.chain(src, models)
    tap = StampTap()
    sink = TopicSink(None, outputs(src, chain), taps=(tap,))
    runner = LocalRunner(tick_graph(emini.normalizer(src), emini.window_features(), chain),
                         sink)
    stamps = tap.stamps
    feed = runner.feed
    pc = time.perf_counter_ns
    feed_ns = np.empty(len(recs), dtype=np.int64)
    hits: list[tuple[int, int, list[tuple[str, int]]]] = []  # (record, t_in, stamps)
    gc.collect()
    for i, rec in enumerate(recs):
        mark = len(stamps)
        t0 = pc()
        feed(rec)
        t1 = pc()
        feed_ns[i] = t1 - t0
        if len(stamps) > mark:
            hits.append((i, t0, stamps[mark:]))
    runner.end_of_stream()
    to: dict[str, list[int]] = {"features": [], "orders": [], "audit.decisions": []}
    closing = np.zeros(len(recs), dtype=bool)
    stray_orders = 0
    order_feeds: list[int] = []
    for i, t_in, st in hits:
        first: dict[str, int] = {}
        for topic, t in st:
            first.setdefault(topic, t)
        if "features" in first:
            closing[i] = True
        elif "orders" in first:
            stray_orders += 1
            continue
        if "orders" in first:
            order_feeds.append(i)
        for topic, t in first.items():
            to[topic].append(t - t_in)
    return {"to": to, "feed_ns": feed_ns, "closing": closing, "stray_orders": stray_orders,
            "order_feeds": order_feeds, "counts": dict(sink.counts)}


def stage_run(src: TickInput, models: Path, recs: list[RawRecord]) -> StageTimes:
    """Per-event run with every operator's ``process`` / ``on_timer`` timed per call.

    Besides every call's duration, each ``feed()`` that emitted an order keeps how long it
    spent in each operator: where a tick -> order delay goes.
    """
    chain = emini.chain(src, models)
    graph = tick_graph(emini.normalizer(src), emini.window_features(), chain)
    sink = TopicSink(None, graph.output_topics)
    times = StageTimes()
    pc = time.perf_counter_ns
    for st in graph.stages:
        op: Any = st.operator
        for method in ("process", "on_timer"):
            name = f"{st.uid}.{method}"
            times.calls[name] = []
            setattr(op, method, _timed(getattr(op, method), name, times, pc))
    runner = LocalRunner(graph, sink)
    counts = sink.counts
    per_feed = times.per_feed
    gc.collect()
    t0 = time.perf_counter()
    for rec in recs:
        before = counts["orders"]
        per_feed.clear()
        f0 = pc()
        runner.feed(rec)
        f1 = pc()
        if counts["orders"] != before:
            times.order_feeds.append((f1 - f0, dict(per_feed)))
    runner.end_of_stream()
    times.total_s = time.perf_counter() - t0
    return times


@dataclass(slots=True)
class StageTimes:
    calls: dict[str, list[int]] = field(default_factory=dict)
    per_feed: dict[str, int] = field(default_factory=dict)
    order_feeds: list[tuple[int, dict[str, int]]] = field(default_factory=list)
    total_s: float = 0.0


def _timed(fn: Callable[..., Any], name: str, times: StageTimes, pc: Callable[[], int]
           ) -> Callable[..., Any]:
    append = times.calls[name].append
    per_feed = times.per_feed

    def wrapper(*args: Any) -> Any:
        t0 = pc()
        r = fn(*args)
        dt = pc() - t0
        append(dt)
        per_feed[name] = per_feed.get(name, 0) + dt
        return r

    return wrapper


def orders_digest(sink: TopicSink) -> str:
    assert sink.captured is not None
    return hashlib.sha256(msgspec.json.encode(sink.captured["orders"])).hexdigest()[:12]


def run(models: Path | None, reps: int) -> list[Row]:
    header("whole chain on the E-mini replay: ticks/s, tick -> order latency, per stage")
    with tempfile.TemporaryDirectory(prefix="sq-bench-") as tmpdir:
        tmp = Path(tmpdir)
        tb = emini.trained_bundle(models, tmp)
        if tb.train_s:
            print(f"   trained the bundle in {tb.train_s:.1f} s")
        src = emini.source()
        recs = emini.records(src)
        n = len(recs)
        topics = tmp / "topics"
        sinks: dict[str, TopicSink] = {}

        written: dict[str, int] = {}

        def case(mode: str, files: bool) -> Callable[[], object]:
            def go() -> None:
                sinks[mode] = replay_chain(src, tb.models, mode, topics if files else None)
                if files:
                    written[mode] = sum(p.stat().st_size for p in topics.glob("*.jsonl"))
            return go

        t = interleaved({"batch": case("batch", False), "batch+files": case("batch", True),
                         "event": case("event", False), "event+files": case("event", True)},
                        reps, warmup=False, before=lambda: shutil.rmtree(topics, True))
        c = sinks["event"].counts
        same = orders_digest(sinks["batch"]) == orders_digest(sinks["event"])
        print(f"   {n:,} ticks -> {c['features']:,} feature vectors, {c['predictions']:,} "
              f"predictions, {c['audit.decisions']:,} decisions, {c['orders']:,} orders, "
              f"{c['fills']:,} fills, {c['risk.rejects']:,} rejects; batch and event orders "
              f"identical: {'yes' if same else 'NO'}; topic files "
              f"{written['event'] / 2**20:,.0f} MiB")

        print(f"\n-- throughput, whole chain from the CSV ({reps} rounds, interleaved)")
        rows: list[Row] = []
        stats = {k: Stats.of(v) for k, v in t.items()}
        for k, s in stats.items():
            print(f"   {k:<12} {s.median:7.3f} s  {n / s.median:>10,.0f} ticks/s  {s.spread()}")
            rows.append(Row(BENCH, f"whole chain, {k.replace('+files', ', topic files')}",
                            fmt_rate(n / s.median), s.spread(),
                            f"run_{k.split('+')[0]}_ticks with chain_stages, CSV read included"))
        r = [a / b for a, b in zip(t["event"], t["batch"], strict=True)]
        print(f"   batch path is {float(np.median(r)):.1f}x faster than the event path "
              "(per-round ratio, no files)")

        print(f"\n-- tick -> order latency, per-event path (records pre-loaded, no files; "
              f"{reps} runs pooled)")
        lats = [latency_run(src, tb.models, recs) for _ in range(reps)]
        lat = lats[0]
        closing = lat["closing"]
        print(f"   per run: {int(closing.sum()):,} bar-closing ticks; "
              f"{len(lat['to']['orders']):,} caused orders, "
              f"{len(lat['to']['audit.decisions']):,} a decision record; orders emitted "
              f"outside a bar-closing feed: {lat['stray_orders']}")
        print(f"   {'from feed() entry of the closing tick to':<44} {'p50':>10} {'p99':>10} "
              f"{'p99.9':>10} {'max':>10}  p50 spread")
        for topic, label in (("features", "its features emit"),
                             ("audit.decisions", "its audit.decisions emit"),
                             ("orders", "its first orders emit (tick -> order)")):
            pooled = np.concatenate([np.asarray(x["to"][topic], dtype=np.int64) for x in lats])
            p = percentiles_us(pooled)
            spread = Stats.of([float(np.median(x["to"][topic])) for x in lats]).spread()
            print(f"   {label:<44} {fmt_us(p['p50']):>10} {fmt_us(p['p99']):>10} "
                  f"{fmt_us(p['p99.9']):>10} {fmt_us(p['max']):>10}  {spread}")
            rows.append(Row(BENCH, f"tick -> {topic} (bar-closing ticks)",
                            f"p50 {fmt_us(p['p50'])}, p99 {fmt_us(p['p99'])}", spread,
                            f"event path, {len(pooled):,} closing ticks; perf_counter_ns "
                            "at feed() entry to the sink's emit"))
        feed_all = np.concatenate([x["feed_ns"] for x in lats])
        closing_all = np.concatenate([x["closing"] for x in lats])
        ordered_all = np.zeros(len(feed_all), dtype=bool)
        for j, x in enumerate(lats):
            ordered_all[np.asarray(x["order_feeds"], dtype=np.int64) + j * len(recs)] = True
        print(f"   {'whole feed() call':<44}")
        for label, sel in (("  bar-closing ticks", closing_all),
                           ("  closing ticks that caused an order", ordered_all),
                           ("  ticks closing no bar", ~closing_all)):
            p = percentiles_us(feed_all[sel])
            print(f"   {label:<44} {fmt_us(p['p50']):>10} {fmt_us(p['p99']):>10} "
                  f"{fmt_us(p['p99.9']):>10} {fmt_us(p['max']):>10}")
        p = percentiles_us(feed_all[~closing_all])
        rows.append(Row(BENCH, "feed() of a tick closing no bar", f"p50 {fmt_us(p['p50'])}, "
                        f"p99 {fmt_us(p['p99'])}", f"n={int((~closing_all).sum()):,}",
                        "event path, whole chain"))

        print("\n-- time inside each operator, per-event path (separate run, wrapped calls)")
        times = stage_run(src, tb.models, recs)
    total = times.total_s
    samples = times.calls
    inside = sum(sum(v) for v in samples.values()) / 1e9
    print(f"   run {total:.2f} s ({n / total:,.0f} ticks/s with the wrappers)")
    print(f"   {'operator.method':<26} {'calls':>9} {'total':>9} {'share':>6} {'p50':>9} "
          f"{'p99':>9}   in a feed() that caused an order (median)")
    feeds = times.order_feeds
    for name, v in samples.items():
        if not v:
            continue
        p = percentiles_us(v)
        tot = sum(v) / 1e9
        in_order = float(np.median([f.get(name, 0) for _, f in feeds])) / 1e3 if feeds else 0.0
        print(f"   {name:<26} {len(v):>9,} {tot:>8.2f}s {100 * tot / total:>5.1f}% "
              f"{fmt_us(p['p50']):>9} {fmt_us(p['p99']):>9}   {fmt_us(in_order)}")
        rows.append(Row(BENCH, f"stage {name}", f"p50 {fmt_us(p['p50'])}, p99 "
                        f"{fmt_us(p['p99'])}; {100 * tot / total:.0f}% of run",
                        f"n={len(v):,}", "event path, wrapped method"))
    rest = total - inside
    feed_med = float(np.median([t for t, _ in feeds])) / 1e3 if feeds else 0.0
    rest_med = float(np.median([t - sum(f.values()) for t, f in feeds])) / 1e3 if feeds else 0.0
    print(f"   {'runner + sink (the rest)':<26} {'':>9} {rest:>8.2f}s "
          f"{100 * rest / total:>5.1f}% {'':>9} {'':>9}   {fmt_us(rest_med)}")
    print(f"   {'whole feed() with an order':<26} {len(feeds):>9,} {'':>9} {'':>6} {'':>9} "
          f"{'':>9}   {fmt_us(feed_med)}")
    rows.append(Row(BENCH, "runner dispatch + sink (event path)", f"{100 * rest / total:.0f}% "
                    "of run", "", "run time minus time inside operators"))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = arg_parser("whole-chain throughput and latency", reps=2)
    add_models_arg(p)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.models, args.reps)
    finish(BENCH, rows, t0, args.json)


if __name__ == "__main__":
    main()
