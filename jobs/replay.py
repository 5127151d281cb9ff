"""``streamquant run``: replay a tick or bar file through the graph on the embedded runner.

Two execution paths with one output:
- ``event``: every record through ``LocalRunner`` one at a time (the reference path,
  ``jobs.event_replay``);
- ``batch``: the columnar accelerator (``jobs.batch_replay``) for normalize and window
  features, the bar-rate stages behind it on the same runner. Topic files are byte-identical
  to the event path's (tested).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from jobs.bar_files import load_bars
from jobs.batch_replay import run_batch_ticks
from jobs.errors import UsageError
from jobs.event_replay import run_event_ticks
from jobs.graph import Graph, Stage
from jobs.loaders.instruments import instrument_master
from jobs.loaders.risk_file import load_risk_file
from jobs.local_runner import LocalRunner
from jobs.manifest import code_version, prepare_out, sha256_of
from jobs.options import ReplayOptions
from jobs.progress import Progress
from jobs.report import build_report, periods_per_year_for, print_report, write_equity_csv
from jobs.sources import (
    bar_tick,
    file_format,
    load_controls,
    normalize_config,
    resolve_ticks,
)
from jobs.strategy import load_bundle
from jobs.summary import RunStats, build_summary, print_summary
from jobs.topic_sink import TopicSink
from jobs.topology import ChainOptions, chain_stages, tick_graph
from jobs.train_job import train_models
from operators.bar_features import BarFeatures, BarFeaturesConfig
from operators.domain.bars import parse_duration
from operators.domain.timeparse import format_ns
from operators.features import (
    FeaturesConfig,
    WindowFeatures,
)
from operators.normalize import Normalize
from topics.messages import (
    DeadLetter,
    Decision,
    Fill,
    Order,
    Position,
    RiskReject,
)

T = TypeVar("T")


NS = 1_000_000_000


@dataclass(slots=True)
class _Run:
    """What one input path produced: the sink, the manifest's config and the report."""

    sink: TopicSink
    input_path: Path
    config: dict[str, Any]
    report: dict[str, Any] | None


_KEEP = ("orders", "fills", "risk.rejects", "positions", "audit.decisions")


def _chain_for(opts: ReplayOptions, stats: RunStats, feature_version: str, bar_ns: int,
               tz: str | None, child_ttl_ns: int | None = None) -> ChainOptions | None:
    """The decision chain's options (training first when no --models), or None with
    --no-trade; training time is reported apart."""
    if opts.no_trade:
        return None
    t_train = time.perf_counter()
    chain_opts = chain_options(opts, feature_version, bar_ns, tz)
    if opts.models is None:
        stats.train_s = time.perf_counter() - t_train
    if child_ttl_ns is not None:
        chain_opts = dataclasses.replace(chain_opts, child_ttl_ns=child_ttl_ns)
    return chain_opts


def _finish_config(run: _Run, chain_opts: ChainOptions | None, opts: ReplayOptions) -> None:
    if chain_opts is None:
        return
    assert run.sink.captured is not None
    run.report = _report(run.sink.captured, chain_opts, opts)
    run.config.update(models=str(chain_opts.models), algo=chain_opts.algo,
                      train_window_ns=[chain_opts.bundle.train_start,
                                       chain_opts.bundle.train_end])


def _run_bars(opts: ReplayOptions, stats: RunStats, topics_dir: Path | None) -> _Run:
    """A bar file: bar features, and the chain trading on each next bar's print."""
    assert opts.bars is not None
    items, bar_ns = load_bars(opts.bars, bar_ns=parse_duration(opts.bar) if opts.bar else None,
                              tz=opts.tz, default_symbol=opts.symbol)
    bf = BarFeatures(BarFeaturesConfig(bar_ns))
    # bar replays fill on the next bar's print: a child lives five bars (a long weekend of
    # daily bars)
    chain_opts = _chain_for(opts, stats, bf.feature_version, bar_ns, opts.tz,
                            child_ttl_ns=5 * bar_ns)
    chain = chain_stages(chain_opts) if chain_opts is not None else ()
    graph = Graph("md.bars", (Stage(bf, ("md.bars",), ("features",)), *chain),
                  external=("md.ticks", "control") if chain else ())
    sink = TopicSink(topics_dir, ("md.ticks.dlq", "md.bars", *graph.output_topics),
                     capture=_KEEP if chain else False)
    runner = LocalRunner(graph, sink, lateness_ns=opts.lateness_ns,
                         watermark_topic="md.ticks" if chain else "md.bars")
    for c in load_controls(opts.control):
        runner.inject("control", c)
    for item, _ in items:
        if isinstance(item, DeadLetter):
            sink.emit("md.ticks.dlq", item)
            continue
        sink.emit("md.bars", item)
        runner.feed(item)
        stats.bars_in += 1
        if chain:
            runner.inject("md.ticks", bar_tick(item))
            runner.advance_to_data()
    runner.end_of_stream()
    run = _Run(sink, opts.bars, {"input": "bars", "bar_ns": bar_ns,
                                 "feature_version": bf.feature_version}, None)
    _finish_config(run, chain_opts, opts)
    return run


def _run_ticks(opts: ReplayOptions, stats: RunStats, topics_dir: Path | None) -> _Run:
    """A tick file (or the bundled sample) through the whole graph, batched or per event."""
    src = resolve_ticks(opts)
    bar_ns = parse_duration(opts.bar or "1m")
    norm = Normalize(normalize_config(src, opts.instruments))
    feats = WindowFeatures(FeaturesConfig(bar_ns=bar_ns, lateness_ns=opts.lateness_ns))
    chain_opts = _chain_for(opts, stats, feats.feature_version, bar_ns, src.tz)
    chain = chain_stages(chain_opts) if chain_opts is not None else ()
    controls = load_controls(opts.control)
    sink = TopicSink(topics_dir, tick_graph(norm, feats, chain).output_topics,
                     capture=_KEEP if chain else False)
    mode = opts.mode
    if mode == "batch" and src.spec.fmt != "csv":
        mode = "event"  # the columnar loader reads CSV; JSONL takes the reference path
    if not opts.quiet:
        print(f"replaying {src.path} ({mode} path) ...", file=sys.stderr)
    progress = Progress("ticks", None, enabled=not opts.quiet)
    runner_fn = run_batch_ticks if mode == "batch" else run_event_ticks
    stats.ticks_in = runner_fn(src, norm, feats, chain, sink, opts.lateness_ns, controls,
                               progress)
    run = _Run(sink, src.path, {
        "input": "ticks", "bar_ns": bar_ns, "lateness_ns": opts.lateness_ns, "mode": mode,
        "tz": src.tz, "symbol": src.default_symbol, "venue": src.default_venue,
        "format": file_format(src.path), "feature_version": feats.feature_version}, None)
    _finish_config(run, chain_opts, opts)
    return run


def run_replay(opts: ReplayOptions) -> dict[str, Any]:
    """Run a replay end to end: output dir, training if needed, topics, report, summary."""
    if opts.mode not in ("batch", "event"):
        raise UsageError(f"--mode must be batch or event, got {opts.mode!r}")
    prepare_out(opts.out, opts.force)
    t0 = time.perf_counter()
    stats = RunStats()
    topics_dir = opts.out / "topics" if opts.write_topics else None
    run = (_run_bars if opts.bars is not None else _run_ticks)(opts, stats, topics_dir)
    sink, report = run.sink, run.report
    sink.close()
    stats.wall_s = time.perf_counter() - t0
    summary = build_summary(sink, stats, sink.dlq_reasons)
    if report is not None:
        ts, eq = report.pop("_curve")
        summary.update(report)
        write_equity_csv(opts.out / "equity.csv", ts, eq)
    manifest = {
        "command": "streamquant run",
        "code_version": code_version(),
        "seed": opts.seed,
        "input": {"path": str(run.input_path), "sha256": sha256_of(run.input_path)},
        "config": run.config,
        "topics": sorted(sink.counts),
    }
    (opts.out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if opts.summary_json is not None:
        opts.summary_json.parent.mkdir(parents=True, exist_ok=True)
        opts.summary_json.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if not opts.quiet:
        print_summary(summary, opts.out)
        if report is not None:
            print_report(summary)
            print(f"  equity curve    {opts.out / 'equity.csv'}")
    return summary


def chain_options(opts: ReplayOptions, feature_version: str, bar_ns: int, tz: str | None
                   ) -> ChainOptions:
    if opts.models is None:
        models = opts.out / "models"
        if not opts.quiet:
            print(f"no --models: training walk-forward into {models}", file=sys.stderr)
        bundle = train_models(opts, models)
    else:
        models = opts.models
        try:
            bundle = load_bundle(models)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
    if bundle.feature_version != feature_version:
        raise UsageError(f"models in {models} expect features {bundle.feature_version}, this "
                         f"run computes {feature_version} (another --bar?)")
    if not opts.quiet:
        arms = f"A={','.join(bundle.arm_a)}"
        if bundle.arm_b:
            arms += f" B={','.join(bundle.arm_b)} (B share {bundle.ab_split:.0%})"
        print(f"models: {models} [{arms}]; trading from "
              f"{format_ns(bundle.train_end)}", file=sys.stderr)
    try:
        risk = load_risk_file(opts.risk)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--risk {opts.risk}: {exc}") from None
    instruments = instrument_master(opts.instruments, bundle.symbols, opts.quiet)
    for a in risk.accounts:
        unknown = [s for s in a.symbols if s not in instruments]
        if unknown:
            raise UsageError(f"--risk {opts.risk}: account {a.name!r} trades {unknown}, which "
                             "the instrument master does not list (pass --instruments)")
    return ChainOptions(models=models, bundle=bundle, instruments=instruments,
                        accounts=risk.accounts, execution=risk.execution,
                        algo=opts.algo,
                        periods_per_year=opts.periods_per_year or periods_per_year_for(bar_ns),
                        session_tz=tz or "UTC")


def _report(captured: dict[str, list[msgspec.Struct]], chain: ChainOptions,
            opts: ReplayOptions) -> dict[str, Any]:
    """The first account's report (with several accounts, each one's under ``accounts``)."""
    several = len(chain.accounts) > 1

    def belongs(v: msgspec.Struct, account: str) -> bool:
        if not several:
            return True
        if isinstance(v, Decision):  # several accounts: decision ids end in @account
            return v.decision_id.endswith(f"@{account}")
        return bool(getattr(v, "account", None) == account)

    def of(topic: str, kind: type[T], account: str) -> list[T]:
        return [v for v in captured.get(topic, []) if isinstance(v, kind) and belongs(v, account)]

    reports: dict[str, dict[str, Any]] = {}
    curve: tuple[list[int], list[float]] = ([], [])
    for a in chain.accounts:
        name = a.name
        report, ts, eq = build_report(
            positions=of("positions", Position, name), fills=of("fills", Fill, name),
            orders=of("orders", Order, name), rejects=of("risk.rejects", RiskReject, name),
            decisions=of("audit.decisions", Decision, name),
            initial_equity=a.settings.initial_equity,
            multipliers={s: i.multiplier for s, i in chain.instruments.items()},
            periods_per_year=chain.periods_per_year, start_ts=chain.bundle.train_end)
        if not reports:
            curve = (ts, eq)
        reports[name] = report
    first = dict(reports[chain.accounts[0].name])
    if several:
        first["accounts"] = reports
    first["_curve"] = curve
    return first
