"""The whole chain on the batched path: ticks/s against the per-event path, in one run.

normalize → window features → infer → regime blend → size → account over the 500k E-mini
trades from the CSV, as ``streamquant run --models DIR`` runs it (report excluded), with the
walk-forward bundle (or ``--models DIR``). Cases, interleaved rounds:

- chain, batched: ``run_batch_ticks``, the account's quiet stretches over columns
  (``jobs.accel.account_columns``), without and with topic files;
- chain, batched front end with every trade per event into the chain (``columnar_chain=
  False``: the batched path before the account went columnar), without and with files;
- chain, batched, topic files with ``md.ticks`` encoded from ``Tick`` messages
  (``tick_text=False``: before the file was written as text from the columns);
- chain, per event: ``run_event_ticks``, without and with files;
- yardsticks in the same rounds: the bare per-tick Python loop and normalize + bars +
  features batched with input pre-loaded (``bench.pipeline_throughput``).

Then, one run each: which share of trades the stretches took with each algorithm (the
default cost-gated strategy, and ungated with IMMEDIATE / TWAP / VWAP / ICEBERG), whether
the topic files of the batched and per-event paths are the same bytes, and where the batched
chain's time goes (cProfile, cumulative seconds of the main calls).

Run: ``python -m bench.chain_batched [--models DIR] [--reps N] [--json PATH]``.
"""

from __future__ import annotations

import cProfile
import dataclasses
import hashlib
import pstats
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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
from bench.pipeline_throughput import bare_loop, batch_preloaded
from jobs.accel.account_columns import ChainStats
from jobs.batch_replay import run_batch_ticks
from jobs.event_replay import run_event_ticks
from jobs.graph import Stage
from jobs.progress import Progress
from jobs.sources import TickInput
from jobs.topic_sink import TopicSink
from jobs.topology import chain_stages, opened, tick_graph
from topics.messages import Algo

BENCH = "chain_batched"
KEEP = ("orders", "fills", "risk.rejects", "positions", "audit.decisions")  # as `run` keeps


def chain(src: TickInput, models: Path, algo: Algo | None = None) -> tuple[Stage, ...]:
    """The chain of ``run --models``; with ``algo``, that algorithm and no cost gate."""
    opts = emini.chain_options(src, models)
    if algo is not None:
        opts = dataclasses.replace(opts, algo=algo, cost_gate=False)
    return chain_stages(opts)


def replay(src: TickInput, stages: tuple[Stage, ...], mode: str, topics: Path | None,
           stats: ChainStats | None = None) -> TopicSink:
    """``streamquant run --models DIR`` minus the report: the whole graph over the CSV."""
    norm, feats = emini.normalizer(src), emini.window_features()
    sink = TopicSink(topics, tick_graph(norm, feats, stages).output_topics, capture=KEEP)
    quiet = Progress("", None, enabled=False)
    with opened(stages):
        if mode == "event":
            run_event_ticks(src, norm, feats, stages, sink, 0, [], quiet)
        else:
            run_batch_ticks(src, norm, feats, stages, sink, 0, [], quiet,
                            columnar_chain=mode != "batch-events",
                            tick_text=mode != "batch-messages", stats=stats)
    sink.close()
    return sink


def digests(topics: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(topics.glob("*.jsonl"))}


def run(models: Path | None, reps: int) -> list[Row]:
    header("whole chain, batched vs per event, from the CSV (E-mini sample)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sq-bench-") as tmpdir:
        tmp = Path(tmpdir)
        tb = emini.trained_bundle(models, tmp)
        src = emini.source()
        cols = emini.columns(src)
        n = len(cols)
        lists = (cols.ts.tolist(), cols.price.tolist(), cols.size.tolist())
        topics = tmp / "topics"

        def case(mode: str, files: bool) -> Callable[[], object]:
            return lambda: replay(src, chain(src, tb.models), mode, topics if files else None)

        cases: dict[str, Callable[[], object]] = {
            "bare Python loop (yardstick)": lambda: bare_loop(*lists, emini.BAR_NS),
            "features batched, pre-loaded (yardstick)": lambda: batch_preloaded(src, cols),
        }
        for mode, label in (("batch", "chain batched"),
                            ("batch-events", "chain batched front, account per event"),
                            ("event", "chain per event")):
            cases[label] = case(mode, False)
            cases[f"{label}, topic files"] = case(mode, True)
        # md.ticks encoded from Tick messages, as before NormalizeColumns.tick_lines
        cases["chain batched, topic files, md.ticks from messages"] = \
            case("batch-messages", True)
        t = interleaved(cases, reps, warmup=False, before=lambda: shutil.rmtree(topics, True))
        print(f"\n-- ticks/s over {n:,} trades ({reps} rounds, interleaved; wall time)")
        for k, v in t.items():
            s = Stats.of(v)
            print(f"   {k:<48} {s.median:7.3f} s  {n / s.median:>11,.0f} ticks/s  {s.spread()}")
            rows.append(Row(BENCH, k, fmt_rate(n / s.median), s.spread(),
                            "CSV read included" if k.startswith("chain") else "same rounds"))
        base = Stats.of(t["chain batched front, account per event"]).median
        now = Stats.of(t["chain batched"]).median
        print(f"   columnar account: {base / now:.1f}x the batched front end with every trade "
              "per event (no files)")
        msgs = Stats.of(t["chain batched, topic files, md.ticks from messages"]).median
        text = Stats.of(t["chain batched, topic files"]).median
        print(f"   md.ticks as text from the columns: {msgs / text:.1f}x md.ticks from Tick "
              "messages (topic files)")

        print("\n-- share of trades in columnar stretches, and same bytes as per event")
        for algo in (None, "IMMEDIATE", "TWAP", "VWAP", "ICEBERG"):
            stats = ChainStats()
            a, b = tmp / "a", tmp / "b"
            shutil.rmtree(a, True)
            shutil.rmtree(b, True)
            sink = replay(src, chain(src, tb.models, algo), "batch", a, stats)
            replay(src, chain(src, tb.models, algo), "event", b)
            same = digests(a) == digests(b)
            name = algo or "default (cost-gated)"
            print(f"   {name:<22} {stats.columnar_share:6.1%} of trades in "
                  f"{stats.stretches:,} stretches; {sink.counts['orders']:,} orders, "
                  f"{sink.counts['fills']:,} fills; topic files identical: "
                  f"{'yes' if same else 'NO'}")
            rows.append(Row(BENCH, f"trades in columnar stretches, {name}",
                            f"{stats.columnar_share:.1%}", "n=1",
                            f"topic files identical to per event: {'yes' if same else 'NO'}"))

        print("\n-- where the batched chain's time goes (cProfile, cumulative s; no files)")
        prof = cProfile.Profile()
        stages = chain(src, tb.models)
        prof.runcall(replay, src, stages, "batch", None)
        st = pstats.Stats(prof)
        table = st.stats  # type: ignore[attr-defined]
        total = max(v[3] for v in table.values())
        parts = {("local_runner.py", "inject_many"): "decision stages (features -> ... account)",
                 ("account_columns.py", "run"): "account stretches (columnar)",
                 ("features_columns.py", "process"): "window features (columnar)",
                 ("local_runner.py", "inject"): "per-event trades into the chain",
                 ("normalize_columns.py", "tick_fields"): "Tick fields for per-event rows",
                 ("normalize_columns.py", "tick_lines"): "md.ticks text from the columns"}
        found: dict[str, float] = {}
        for (file, _, fn), v in table.items():
            for (f, name), label in parts.items():
                if fn == name and file.endswith(f):
                    found[label] = found.get(label, 0.0) + v[3]
        found["the rest (read, normalize, glue)"] = total - sum(found.values())
        for label, sec in found.items():
            print(f"   {label:<48} {sec:6.2f} s  {sec / total:5.1%}")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = arg_parser("whole chain, batched vs per event", reps=3)
    add_models_arg(p)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.models, args.reps)
    finish(BENCH, rows, t0, args.json)


if __name__ == "__main__":
    main()
