"""The ClickHouse sink: insert rows/s, and what it costs the whole chain on the E-mini replay.

- insert: the sink alone (``ClickHouseTap`` into a fresh embedded database), the 500k
  ``md.ticks`` messages and the bar-rate decision records of one replay, accepted then closed
  (conversion to Arrow + ``insert_arrow``), and the conversion alone;
- chain, in this process: ``run_batch_ticks`` with the decision chain from the CSV, with the
  sink off / on without ``md_ticks`` (``--no-clickhouse-ticks``) / on with it, interleaved
  rounds; the sink's database is opened, filled and closed inside the timing;
- chain, as users run it: ``streamquant run --models DIR --quiet`` processes with ``--sink
  none`` / ``--no-clickhouse-ticks`` / the default, interleaved (the sink's imports — pyarrow,
  clickhouse-connect, chdb — and the embedded engine's start are paid there).

Figures only; the issue's target (≤ 15 % overhead without the raw ticks table) is for the
reader to compare. Run: ``python -m bench.sink_clickhouse [--models DIR] [--reps N]``.
"""

from __future__ import annotations

import gc
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

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
from jobs.progress import Progress
from jobs.sources import TickInput
from jobs.topic_sink import TopicSink
from jobs.topology import tick_graph

BENCH = "sink_clickhouse"
KEEP = ("orders", "fills", "risk.rejects", "positions", "audit.decisions")  # as `run` keeps
CASES = {"sink off": None, "sink on, no md_ticks": False, "sink on, with md_ticks": True}
CLI_FLAGS = {"sink off": ["--sink", "none"], "sink on, no md_ticks": ["--no-clickhouse-ticks"],
             "sink on, with md_ticks": []}


def _chain_run(src: TickInput, models: Path, ticks: bool | None, db: Path,
               captured: dict[str, list[msgspec.Struct]] | None = None) -> int:
    """The replay's graph over the CSV with or without the sink; the ticks it read."""
    from jobs.clickhouse.sink import ClickHouseTap, SinkConfig
    from jobs.clickhouse.target import Target

    chain = emini.chain(src, models)
    norm, feats = emini.normalizer(src), emini.window_features()
    taps = []
    if ticks is not None:
        shutil.rmtree(db, ignore_errors=True)
        taps.append(ClickHouseTap(Target(path=db), "bench",
                                  SinkConfig(ticks=ticks, batch_seconds=60.0), quiet=True))
    sink = TopicSink(None, tick_graph(norm, feats, chain).output_topics, capture=KEEP,
                     taps=taps)
    n = run_batch_ticks(src, norm, feats, chain, sink, 0, [], Progress("", None, enabled=False))
    sink.close()
    for t in taps:
        t.close()
    if captured is not None and sink.captured is not None:
        captured.update(sink.captured)
    return n


def _insert_rates(src: TickInput, models: Path, work: Path, reps: int) -> list[Row]:
    """The sink alone, on an open database: every message of one replay accepted, then the
    tap closed (conversion and inserts); a new job name per round, so nothing deduplicates."""
    from jobs.clickhouse.arrow_batch import BatchBuilder
    from jobs.clickhouse.database import connect, ensure_schema
    from jobs.clickhouse.schema import BY_TOPIC
    from jobs.clickhouse.sink import ClickHouseTap, SinkConfig
    from jobs.clickhouse.target import Target

    captured: dict[str, list[msgspec.Struct]] = {}
    _chain_run(src, models, None, work / "unused", captured)
    ticks = _ticks(src)
    decisions = {t: v for t, v in captured.items() if v}
    n_dec = sum(len(v) for v in decisions.values())
    target = Target(path=work / "ins")
    keeper = connect(target)  # keeps the engine up between the taps
    ensure_schema(keeper, "bench", embedded=True)
    seconds: dict[str, list[float]] = {"ticks": [], "decisions": [], "open": []}
    runs = 0
    try:
        for _ in range(reps):
            for case, feed in (("ticks", {"md.ticks": ticks}), ("decisions", decisions)):
                runs += 1
                t0 = time.perf_counter()
                tap = ClickHouseTap(target, f"bench{runs}", SinkConfig(batch_seconds=60.0),
                                    quiet=True)
                t1 = time.perf_counter()
                for topic, values in feed.items():
                    for i, v in enumerate(values):
                        tap.accept(topic, i, v)
                tap.close()
                seconds[case].append(time.perf_counter() - t1)
                seconds["open"].append(t1 - t0)
    finally:
        keeper.close()
    builder = BatchBuilder(BY_TOPIC["md.ticks"], "bench")
    chunk = 65_536

    def convert_ticks() -> None:
        for i in range(0, len(ticks), chunk):
            part = ticks[i:i + chunk]
            builder.build(range(i, i + len(part)), part)

    sc = Stats.of(interleaved({"convert": convert_ticks}, reps)["convert"])
    st, sd, so = (Stats.of(seconds[k]) for k in ("ticks", "decisions", "open"))
    print(f"  sink, md.ticks      {len(ticks) / st.median:>12,.0f} rows/s  ({st.spread()})")
    print(f"  sink, decision rows {n_dec / sd.median:>12,.0f} rows/s  ({n_dec:,} rows of "
          f"{len(decisions)} topics; {sd.spread()})")
    print(f"  Arrow conversion    {len(ticks) / sc.median:>12,.0f} rows/s  (md.ticks)")
    print(f"  open an existing database {so.median * 1e3:,.0f} ms")
    return [
        Row(BENCH, "sink insert, md.ticks (embedded)", fmt_rate(len(ticks) / st.median,
            "rows/s"), st.spread(), f"{len(ticks):,} Tick messages accepted, converted, "
            "inserted (insert_arrow), tap closed; database open"),
        Row(BENCH, "sink insert, decision records", fmt_rate(n_dec / sd.median, "rows/s"),
            sd.spread(), f"{n_dec:,} rows of {len(decisions)} topics of one replay (one batch "
            "per table: fixed costs dominate)"),
        Row(BENCH, "Arrow conversion of md.ticks", fmt_rate(len(ticks) / sc.median,
            "rows/s"), sc.spread(), "BatchBuilder.build per 65,536 ticks (no insert)"),
        Row(BENCH, "open the sink on an existing database", f"{so.median * 1e3:,.0f} ms",
            so.spread(), "ClickHouseTap(...): connect and check the schema"),
    ]


def _ticks(src: TickInput) -> list[msgspec.Struct]:
    from topics.names import MD_TICKS

    norm, feats = emini.normalizer(src), emini.window_features()
    sink = TopicSink(None, tick_graph(norm, feats).output_topics, capture=(MD_TICKS,))
    run_batch_ticks(src, norm, feats, (), sink, 0, [], Progress("", None, enabled=False))
    assert sink.captured is not None
    return sink.captured[MD_TICKS]


def _cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _chain_rows(src: TickInput, models: Path, work: Path, reps: int) -> list[Row]:
    """Interleaved rounds (the first a warm-up, dropped); wall and CPU seconds (all threads:
    the sink's writer and the embedded engine's included). On a shared machine the CPU
    figure is the steadier measure of what the sink costs."""
    walls: dict[str, list[float]] = {n: [] for n in CASES}
    cpus: dict[str, list[float]] = {n: [] for n in CASES}
    names = list(CASES)
    ticks = 0
    for r in range(reps + 1):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            t0, c0 = time.perf_counter(), _cpu_s()
            ticks = _chain_run(src, models, CASES[name], work / "chain-db")
            wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
            if r:
                walls[name].append(wall)
                cpus[name].append(cpu)
    base_w = Stats.of(walls["sink off"]).median
    base_c = Stats.of(cpus["sink off"]).median
    rows = []
    for name in names:
        w, c = Stats.of(walls[name]), Stats.of(cpus[name])
        note = "" if name == "sink off" else (f"; wall {100 * (w.median / base_w - 1):+.1f}%, "
                                              f"CPU {100 * (c.median / base_c - 1):+.1f}% vs off")
        print(f"  chain, {name:<24} {ticks / w.median:>10,.0f} ticks/s  ({w.spread()}; CPU "
              f"{c.median:.2f} s{note})")
        rows.append(Row(BENCH, f"whole chain, {name}", fmt_rate(ticks / w.median),
                        w.spread(), f"run_batch_ticks + decision chain in one process; CPU "
                        f"{c.median:.2f} s{note}"))
    return rows


def _cli_rows(models: Path, work: Path, reps: int) -> list[Row]:
    """``streamquant run`` processes: what a user waits for, imports included."""
    summaries: dict[str, list[float]] = {n: [] for n in CLI_FLAGS}
    walls: dict[str, list[float]] = {n: [] for n in CLI_FLAGS}
    cpus: dict[str, list[float]] = {n: [] for n in CLI_FLAGS}
    names = list(CLI_FLAGS)
    for r in range(reps + 1):  # the first round warms the page cache and is dropped
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out = work / "cli"
            summary = work / "summary.json"
            t0, c0 = time.perf_counter(), _cpu_s(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--out", str(out),
                            "--force", "--models", str(models), "--quiet",
                            "--summary-json", str(summary), *CLI_FLAGS[name]], check=True)
            wall, cpu = time.perf_counter() - t0, _cpu_s(resource.RUSAGE_CHILDREN) - c0
            if r:
                walls[name].append(wall)
                cpus[name].append(cpu)
                summaries[name].append(float(json.loads(summary.read_text())["wall_s"]))
    base = statistics.median(walls["sink off"])
    base_c = statistics.median(cpus["sink off"])
    rows = []
    for name in names:
        s = Stats.of(walls[name])
        c = statistics.median(cpus[name])
        inner = statistics.median(summaries[name])
        note = "" if name == "sink off" else (f"; wall {100 * (s.median / base - 1):+.1f}%, "
                                              f"CPU {100 * (c / base_c - 1):+.1f}% vs off")
        print(f"  streamquant run, {name:<24} {s.median:6.2f} s process  ({s.spread()}; CPU "
              f"{c:.2f} s{note}; run's own wall_s {inner:.2f} s)")
        rows.append(Row(BENCH, f"streamquant run, {name}", f"{s.median:.2f} s", s.spread(),
                        f"process wall, imports included; CPU {c:.2f} s; run wall_s "
                        f"{inner:.2f} s{note}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = arg_parser(__doc__ or BENCH, reps=3)
    add_models_arg(p)
    p.add_argument("--parts", default="insert,chain,cli",
                   help="comma-separated subset of insert, chain, cli (default: all)")
    args = p.parse_args(argv)
    parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    if not parts <= {"insert", "chain", "cli"}:
        p.error(f"--parts: unknown {sorted(parts - {'insert', 'chain', 'cli'})}")
    started = time.perf_counter()
    header("ClickHouse sink: insert rows/s and the chain with the sink off / on")
    with tempfile.TemporaryDirectory(prefix="sq-bench-ch-") as tmp:
        work = Path(tmp)
        src = emini.source()
        tb = emini.trained_bundle(args.models, work)
        rows: list[Row] = []
        if "insert" in parts:
            rows += _insert_rates(src, tb.models, work, args.reps)
        if "chain" in parts:
            rows += _chain_rows(src, tb.models, work, args.reps)
        if "cli" in parts:
            rows += _cli_rows(tb.models, work, args.reps)
    finish(BENCH, rows, started, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
