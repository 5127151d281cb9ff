"""What Prometheus metrics cost the whole chain: ticks/s with metrics off and on, same run.

The E-mini replay through the whole graph (``run_batch_ticks`` / ``run_event_ticks`` with the
decision chain, as ``streamquant run --models DIR`` calls them; CSV read included, no topic
files, no other sink), interleaved rounds of:

- ``off``: no tap; ``off-again``: the same, a second time (the A/A pair: how far two
  identical runs differ here, the floor under any on/off difference);
- ``metrics``: the metrics tap bound to the runner (bar-rate handlers, sampled operator
  timing), endpoint up but never scraped;
- ``metrics+scrape``: the same, scraped over HTTP every ``--scrape-interval`` seconds (1 s by
  default: 15x Prometheus' usual rate, so the scrape's share is an upper bound).

The overhead is the per-round ratio on / off (median), in wall and in CPU time: only the
metrics' share, the other sinks are off. On a shared two-core machine both swing by several
per cent between rounds, so the benchmark also *attributes* the metrics' own time, which
depends less on the neighbours: the tap's handlers (every message the run handed the tap,
handed to a fresh tap again with the collector paused: timing them inside the run also
charges them the garbage collections the chain's allocations trigger), the sampled calls
(count x the stand-in's cost per call, measured on a trivial operator) and one scrape
(``generate_latest`` on the finished run's registry) x the scrapes a Prometheus would take at
``--scrape-interval`` and at 15 s. Orders with metrics on are checked identical to orders
without.

Run: ``python -m bench.metrics_overhead [--models DIR] [--reps N] [--json PATH]``.
"""

from __future__ import annotations

import gc
import hashlib
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
from prometheus_client import generate_latest

from bench import emini
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
from jobs.batch_replay import run_batch_ticks
from jobs.core.dispatch import GraphDispatcher
from jobs.event_replay import run_event_ticks
from jobs.graph import Graph, Stage
from jobs.metrics.sampler import OperatorSampler
from jobs.metrics.serve import MetricsEndpoint, serve
from jobs.metrics.tap import MetricsTap
from jobs.progress import Progress
from jobs.sources import TickInput
from jobs.topic_sink import TopicSink
from jobs.topology import tick_graph
from operators.contract import Context, Emit, Operator
from topics import names as tn

BENCH = "metrics_overhead"
KEEP = ("orders",)


class Scraper:
    """GETs an endpoint every ``interval`` seconds on a thread (as Prometheus would)."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.scrapes = 0
        self.seconds = 0.0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            t0 = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=10) as r:
                self.bytes = len(r.read())
            self.seconds += time.perf_counter() - t0
            self.scrapes += 1


@dataclass(slots=True)
class CaseResult:
    orders: str = ""
    n_orders: int = 0
    windows: int | None = None
    timed: int = 0
    accepted: int = 0
    handlers_s: float = 0.0
    scrape_cpu_s: float = 0.0  # one generate_latest on the finished registry
    scrape: tuple[int, float, int] | None = None  # scrapes, seconds in them, last size


class RecordingTap(MetricsTap):
    """The metrics tap, keeping what it was handed (to time the handlers again, alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[tuple[str, int, msgspec.Struct]] = []

    def accept(self, topic: str, n: int, value: msgspec.Struct, /) -> None:
        self.handed.append((topic, n, value))
        super().accept(topic, n, value)


def handlers_s(handed: list[tuple[str, int, msgspec.Struct]]) -> float:
    """Seconds a fresh tap's handlers take for ``handed`` (collector paused, best of 3)."""
    best = float("inf")
    for _ in range(3):
        tap = MetricsTap()
        gc.disable()
        try:
            t0 = time.perf_counter_ns()
            for topic, n, value in handed:
                tap.accept(topic, n, value)
            best = min(best, (time.perf_counter_ns() - t0) * 1e-9)
        finally:
            gc.enable()
    return best


class _Noop(Operator[int, int]):
    UID = "noop"
    State = int

    def key(self, event: int) -> str:
        return "k"

    def new_state(self, key: str) -> int:
        return 0

    def process(self, state: int, event: int, ctx: Context) -> tuple[int, list[Emit]]:
        return state, []


def stand_in_cost_ns(calls: int = 200_000) -> float:
    """Extra ns per operator call while the sampler's stand-in times it (best of 5 each)."""
    def per_call(timed: bool) -> float:
        graph = Graph(tn.MD_TICKS, (Stage(_Noop(), (tn.MD_TICKS,), ()),))
        d = GraphDispatcher(graph, TopicSink(None, ()), watermark_topic=tn.MD_TICKS)
        if timed:
            OperatorSampler(calls=10 * calls, min_gap_s=0).arm(d)
        process = d.hosts[0].process
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for i in range(calls):
                process(i)
            best = min(best, (time.perf_counter_ns() - t0) / calls)
        return best
    return per_call(True) - per_call(False)


def replay(src: TickInput, models: Path, mode: str, metrics: str, scrape_s: float,
           out: CaseResult, tap_type: type[MetricsTap] = MetricsTap) -> None:
    chain = emini.chain(src, models)
    norm, feats = emini.normalizer(src), emini.window_features()
    tap = tap_type() if not metrics.startswith("off") else None
    ep: MetricsEndpoint | None = serve(0, tap=tap) if tap is not None else None
    sink = TopicSink(None, tick_graph(norm, feats, chain).output_topics, capture=KEEP,
                     taps=[tap] if tap is not None else [])
    fn = run_batch_ticks if mode == "batch" else run_event_ticks

    def go() -> None:
        fn(src, norm, feats, chain, sink, 0, [], Progress("", None, enabled=False))

    try:
        if ep is not None and metrics == "metrics+scrape":
            with Scraper(ep.url, scrape_s) as s:
                go()
            out.scrape = (s.scrapes, s.seconds, s.bytes)
        else:
            go()
    finally:
        if tap is not None:
            tap.close()
        if ep is not None:
            ep.stop()
    sink.close()
    assert sink.captured is not None
    out.orders = hashlib.sha256(msgspec.json.encode(sink.captured["orders"])).hexdigest()
    out.n_orders = len(sink.captured["orders"])
    if tap is not None and ep is not None:
        out.windows = tap.sampler.windows
        out.timed = sum(h.count for h in tap.sampler.hists.values())
        if isinstance(tap, RecordingTap):
            out.accepted = len(tap.handed)
            out.handlers_s = handlers_s(tap.handed)
        t0 = time.process_time()
        for _ in range(10):
            generate_latest(ep.registry)
        out.scrape_cpu_s = (time.process_time() - t0) / 10


def run(models: Path | None, reps: int, modes: tuple[str, ...], scrape_s: float) -> list[Row]:
    header("metrics overhead: the whole chain with Prometheus metrics off and on")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sq-bench-") as tmpdir:
        tb = emini.trained_bundle(models, Path(tmpdir))
        if tb.train_s:
            print(f"   trained the bundle in {tb.train_s:.1f} s")
        src = emini.source()
        n = sum(1 for _ in src.path.open()) - 1
        results: dict[str, CaseResult] = {}

        def case(mode: str, metrics: str) -> Callable[[], object]:
            key = f"{mode} {metrics}"
            results[key] = CaseResult()
            return lambda: replay(src, tb.models, mode, metrics, scrape_s, results[key])

        cases = {f"{mode} {mt}": case(mode, mt) for mode in modes
                 for mt in ("off", "off-again", "metrics", "metrics+scrape")}
        cpu: dict[str, list[float]] = {k: [] for k in cases}

        def timed_cpu(key: str, fn: Callable[[], object]) -> Callable[[], object]:
            def go() -> None:
                c0 = time.process_time()
                fn()
                cpu[key].append(time.process_time() - c0)
            return go

        t = interleaved({k: timed_cpu(k, fn) for k, fn in cases.items()}, reps, warmup=False)
        print(f"\n-- {n:,} ticks, whole chain from the CSV, no files ({reps} rounds, "
              f"interleaved; scrape every {scrape_s:g} s)")
        for key, v in t.items():
            s = Stats.of(v)
            r = results[key]
            extra = ""
            if r.windows is not None:
                extra = f"  {r.windows:,} sampling windows, {r.timed:,} calls timed"
            if r.scrape is not None:
                k, secs, size = r.scrape
                if k:
                    extra += (f"; {k} scrapes, {1e3 * secs / k:.1f} ms and "
                              f"{size / 1024:.0f} KiB each")
            c = Stats.of(cpu[key])
            print(f"   {key:<22} {s.median:7.3f} s {n / s.median:>10,.0f} ticks/s  "
                  f"{s.spread()}; cpu {c.median:.3f} s {c.spread()}{extra}")
            rows.append(Row(BENCH, f"whole chain, {key}", fmt_rate(n / s.median), s.spread(),
                            f"run_{key.split()[0]}_ticks + chain, CSV read, no files"))
        for mode in modes:
            same = all(results[f"{mode} {mt}"].orders == results[f"{mode} off"].orders
                       for mt in ("metrics", "metrics+scrape"))
            print(f"   {mode}: orders with metrics identical to orders without: "
                  f"{'yes' if same else 'NO'} ({results[f'{mode} off'].n_orders} orders)")
            for mt in ("off-again", "metrics", "metrics+scrape"):
                for clock, series in (("wall", t), ("cpu", cpu)):
                    ratio = [a / b - 1.0 for a, b in zip(series[f"{mode} {mt}"],
                                                         series[f"{mode} off"], strict=True)]
                    med = float(np.median(ratio))
                    spread = f"rounds {', '.join(f'{100 * x:+.1f}%' for x in ratio)}"
                    print(f"   {mode}: {mt} costs {100 * med:+.1f}% {clock} time ({spread})")
                    rows.append(Row(BENCH, f"metrics overhead, {mode} path, {mt} ({clock})",
                                    f"{100 * med:+.1f}%", spread,
                                    f"per-round {clock} time ratio on/off - 1, median"))
        print(f"\n-- the metrics' own time, attributed (a scrape per {scrape_s:g} s and per 15 s)")
        per_call_ns = stand_in_cost_ns()
        handed = CaseResult()  # one more run (untimed) that keeps what the tap is handed
        replay(src, tb.models, modes[0], "metrics", scrape_s, handed, RecordingTap)
        print(f"   the sampler's stand-in adds {per_call_ns:,.0f} ns to a timed call")
        for mode in modes:
            r = results[f"{mode} metrics"]
            run_cpu = float(np.median(cpu[f"{mode} off"]))
            run_wall = float(np.median(t[f"{mode} off"]))
            sampled = r.timed * per_call_ns * 1e-9
            handled = handed.handlers_s
            for every in (scrape_s, 15.0):
                scrapes = run_wall / every * r.scrape_cpu_s
                own = handled + sampled + scrapes
                print(f"   {mode}, scrape every {every:g} s: handlers {1e3 * handled:.0f} ms "
                      f"({handed.accepted:,} messages), sampled calls {1e3 * sampled:.0f} ms "
                      f"({r.timed:,}), scrapes {1e3 * scrapes:.0f} ms "
                      f"({1e3 * r.scrape_cpu_s:.1f} ms each) = {1e3 * own:.0f} ms, "
                      f"{100 * own / run_cpu:.2f}% of the run's {run_cpu:.1f} s CPU")
                rows.append(Row(BENCH, f"metrics' own time, {mode} path, scrape every "
                                f"{every:g} s", f"{100 * own / run_cpu:.2f}%",
                                f"handlers {1e3 * handled:.0f} ms, sampling "
                                f"{1e3 * sampled:.0f} ms, scrapes {1e3 * scrapes:.0f} ms",
                                "attributed: measured inside the run, not a difference"))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = arg_parser("the metrics' share of the whole chain's time", reps=3)
    add_models_arg(p)
    p.add_argument("--modes", default="batch,event", help="replay paths (batch,event)")
    p.add_argument("--scrape-interval", type=float, default=1.0,
                   help="seconds between scrapes in the metrics+scrape case (default 1)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    modes = tuple(m for m in args.modes.split(",") if m)
    rows = run(args.models, args.reps, modes, args.scrape_interval)
    finish(BENCH, rows, t0, args.json)


if __name__ == "__main__":
    main()
