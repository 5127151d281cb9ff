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

from jobs import data
from jobs.bar_files import iter_bars
from jobs.batch_replay import run_batch_ticks
from jobs.device import device_record, resolve_device
from jobs.errors import UsageError
from jobs.event_replay import run_event_ticks
from jobs.graph import Graph, Stage
from jobs.loaders.instruments import instrument_master, load_instruments
from jobs.loaders.risk_file import RiskFile, load_risk_file
from jobs.local_runner import LocalRunner
from jobs.manifest import (
    RunPaths,
    RunRecord,
    check_run_paths,
    code_version,
    input_paths,
    prepare_out,
    sha256_of,
)
from jobs.online_summary import online_figures, print_online
from jobs.options import ReplayOptions
from jobs.progress import Progress, data_lines
from jobs.report import (
    Report,
    SessionClock,
    build_report,
    periods_per_year_for,
    print_report,
    write_equity_csv,
)
from jobs.report_inputs import ReportInputs
from jobs.round_trips import write_trades_csv
from jobs.sinks.attach import RunContext, open_taps
from jobs.sinks.tap import Tap
from jobs.sources import (
    bar_tick,
    file_format,
    load_controls,
    normalize_config,
    resolve_ticks,
)
from jobs.strategy import BundleMismatchError, load_bundle
from jobs.summary import RunStats, build_summary, print_summary
from jobs.topic_sink import TopicSink
from jobs.topology import ChainOptions, chain_stages, opened, tick_graph
from jobs.train_job import train_models
from operators.bar_features import BarFeatures, BarFeaturesConfig
from operators.domain.bars import parse_duration
from operators.domain.timeparse import format_ns
from operators.features import (
    FeaturesConfig,
    WindowFeatures,
)
from operators.infer import Device, Infer
from operators.normalize import Normalize
from topics import names as tn
from topics.messages import (
    Control,
    DeadLetter,
    Decision,
    Fill,
    ModelUpdate,
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
    report: Report | None
    chain: ChainOptions | None = None
    inputs: ReportInputs | None = None


def _report_inputs(chain: tuple[Stage, ...], taps: list[Tap]
                   ) -> tuple[ReportInputs | None, list[Tap]]:
    """With a chain, the report's inputs, tapped off the sink (and the taps to give it)."""
    if not chain:
        return None, taps
    inputs = ReportInputs()
    return inputs, [*taps, inputs]


def _chain_for(opts: ReplayOptions, stats: RunStats, feature_version: str, bar_ns: int,
               tz: str | None, device: Device, child_ttl_ns: int | None = None
               ) -> ChainOptions | None:
    """The decision chain's options (training first when no --models), or None with
    --no-trade; training time is reported apart."""
    if opts.no_trade:
        return None
    t_train = time.perf_counter()
    chain_opts = chain_options(opts, feature_version, bar_ns, tz, device=device)
    if opts.models is None:
        stats.train_s = time.perf_counter() - t_train
    if child_ttl_ns is not None:
        chain_opts = dataclasses.replace(chain_opts, child_ttl_ns=child_ttl_ns)
    return chain_opts


def _finish_config(run: _Run, chain_opts: ChainOptions | None, chain: tuple[Stage, ...],
                   opts: ReplayOptions) -> None:
    if chain_opts is None:
        return
    assert run.inputs is not None
    run.report = _report(run.inputs.captured, chain_opts)
    run.chain = chain_opts
    run.config.update(models=str(chain_opts.models), algo=chain_opts.algo,
                      train_window_ns=[chain_opts.bundle.train_start,
                                       chain_opts.bundle.train_end])
    for st in chain:
        if isinstance(st.operator, Infer):  # the served set is config: record it
            cfg = st.operator.config
            run.config["served_models"] = [
                {"name": e.name, "version": e.version, "sha256": e.sha256} for e in cfg.models]
            run.config["infer_config_fingerprint"] = st.operator.config_fingerprint()


def _run_bars(opts: ReplayOptions, stats: RunStats, topics_dir: Path | None,
              device: Device, taps: list[Tap]) -> _Run:
    """A bar file: bar features, and the chain trading on each next bar's print."""
    assert opts.bars is not None
    items, bar_ns = iter_bars(opts.bars, bar_ns=parse_duration(opts.bar) if opts.bar else None,
                              tz=opts.tz, default_symbol=opts.symbol,
                              ohlc_tolerance=opts.ohlc_tolerance)  # read as the replay goes
    bf = BarFeatures(BarFeaturesConfig(bar_ns))
    # bar replays fill on the next bar's print: a child lives five bars (a long weekend of
    # daily bars)
    chain_opts = _chain_for(opts, stats, bf.feature_version, bar_ns, opts.tz, device,
                            child_ttl_ns=5 * bar_ns)
    chain = chain_stages(chain_opts) if chain_opts is not None else ()
    graph = Graph(tn.MD_BARS, (Stage(bf, (tn.MD_BARS,), (tn.FEATURES,)), *chain),
                  external=(tn.MD_TICKS, tn.CONTROL) if chain else ())
    inputs, sink_taps = _report_inputs(chain, taps)
    sink = TopicSink(topics_dir, (tn.MD_TICKS_DLQ, tn.MD_BARS, *graph.output_topics),
                     taps=sink_taps)
    runner = LocalRunner(graph, sink, lateness_ns=opts.lateness_ns,
                         watermark_topic=tn.MD_TICKS if chain else tn.MD_BARS)
    redis_record: dict[str, Any] = {}
    controls = _controls(opts, topics_dir, redis_record)
    with opened(graph.stages):
        t0 = time.perf_counter()  # the models are open: the replay starts
        for c in controls:
            runner.inject(tn.CONTROL, c)
        for item, _ in items:
            if isinstance(item, DeadLetter):
                sink.emit(tn.MD_TICKS_DLQ, item)
                continue
            sink.emit(tn.MD_BARS, item)
            runner.feed(item)
            stats.bars_in += 1
            if chain:
                runner.inject(tn.MD_TICKS, bar_tick(item))
                runner.advance_to_data()
        runner.end_of_stream()
        stats.replay_s += time.perf_counter() - t0
    run = _Run(sink, opts.bars, {"input": "bars", "bar_ns": bar_ns,
                                 "feature_version": bf.feature_version, **redis_record}, None,
               inputs=inputs)
    _finish_config(run, chain_opts, chain, opts)
    return run


def _run_ticks(opts: ReplayOptions, stats: RunStats, topics_dir: Path | None,
               device: Device, taps: list[Tap]) -> _Run:
    """A tick file (or the bundled sample) through the whole graph, batched or per event."""
    src = resolve_ticks(opts)
    bar_ns = parse_duration(opts.bar or "1m")
    norm = Normalize(normalize_config(src, opts.instruments,
                                      max_forward_jump_ns=opts.max_forward_jump_ns,
                                      dedupe_window_ns=opts.dedupe_window_ns))
    feats = WindowFeatures(FeaturesConfig(bar_ns=bar_ns, lateness_ns=opts.lateness_ns))
    chain_opts = _chain_for(opts, stats, feats.feature_version, bar_ns, src.tz, device)
    chain = chain_stages(chain_opts) if chain_opts is not None else ()
    redis_record: dict[str, Any] = {}
    controls = _controls(opts, topics_dir, redis_record)
    inputs, sink_taps = _report_inputs(chain, taps)
    sink = TopicSink(topics_dir, tick_graph(norm, feats, chain).output_topics, taps=sink_taps)
    mode = opts.mode
    if mode == "batch" and src.spec.fmt != "csv":
        mode = "event"  # the columnar loader reads CSV; JSONL takes the reference path
    if not opts.quiet:
        print(f"replaying {src.path} ({mode} path) ...", file=sys.stderr)
    progress = Progress("ticks", data_lines(src.path, header=src.spec.fmt == "csv"),
                        enabled=not opts.quiet)
    runner_fn = run_batch_ticks if mode == "batch" else run_event_ticks
    with opened(chain):  # the batch path's chain runner does not open its stages itself
        t0 = time.perf_counter()  # the models are open: the replay starts
        stats.ticks_in = runner_fn(src, norm, feats, chain, sink, opts.lateness_ns, controls,
                                   progress)
        stats.replay_s += time.perf_counter() - t0
    run = _Run(sink, src.path, {
        "input": "ticks", "bar_ns": bar_ns, "lateness_ns": opts.lateness_ns, "mode": mode,
        "tz": src.tz, "symbol": src.default_symbol, "venue": src.default_venue,
        "format": file_format(src.path), "feature_version": feats.feature_version,
        **redis_record}, None, inputs=inputs)
    _finish_config(run, chain_opts, chain, opts)
    return run


def _controls(opts: ReplayOptions, topics_dir: Path | None,
              record: dict[str, Any]) -> list[Control]:
    """``--control``'s commands; with ``--redis`` also the kill switches on in Redis, applied
    from the start (``jobs.sinks.redis_replay``), all written to ``topics/control.jsonl``."""
    controls = load_controls(opts.control)
    if opts.sinks.redis is not None:
        from jobs.sinks.redis_replay import replay_controls, write_control_file

        extra, record["kill_switch_from_redis"] = replay_controls(opts.sinks.redis,
                                                                  quiet=opts.quiet)
        controls = [*controls, *extra]
        if topics_dir is not None:
            write_control_file(topics_dir, controls)
    return controls


def run_paths(opts: ReplayOptions) -> RunPaths:
    """The files this run reads (never removed or overwritten) and where it writes."""
    bundled = data.emini_path() if opts.ticks is None and opts.bars is None else None
    return RunPaths(out=opts.out, inputs=input_paths((
        ("--ticks", opts.ticks), ("the bundled sample", bundled), ("--bars", opts.bars),
        ("--models", opts.models), ("--risk", opts.risk), ("--control", opts.control),
        ("--instruments", opts.instruments))), summary_json=opts.summary_json,
        trains=opts.models is None and not opts.no_trade)


def run_replay(opts: ReplayOptions) -> dict[str, Any]:
    """Run a replay end to end: output dir, training if needed, topics, report, summary.

    The manifest is written before anything else (status ``running``) and closed with
    ``complete``, ``interrupted`` (Ctrl-C, SIGTERM) or ``failed``.
    """
    if opts.mode not in ("batch", "event"):
        raise UsageError(f"--mode must be batch or event, got {opts.mode!r}")
    device = resolve_device(opts.device)  # once per run, before any work
    paths = run_paths(opts)
    check_run_paths(paths)
    _check_config_files(opts)
    prepare_out(paths, opts.force)
    record = RunRecord(paths, {"code_version": code_version(), "seed": opts.seed})
    try:
        summary = _replay(opts, record, device)
    except KeyboardInterrupt as exc:
        record.close("interrupted", error=str(exc) or type(exc).__name__)
        raise
    except BaseException as exc:
        record.close("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return summary


def _replay(opts: ReplayOptions, record: RunRecord, device: Device) -> dict[str, Any]:
    t0 = time.perf_counter()
    stats = RunStats()
    topics_dir = opts.out / "topics" if opts.write_topics else None
    with open_taps(opts.sinks, RunContext(out=opts.out, job=opts.out.name,
                                          quiet=opts.quiet)) as taps:
        run = (_run_bars if opts.bars is not None else _run_ticks)(opts, stats, topics_dir,
                                                                   device, taps)
        t_close = time.perf_counter()
        run.sink.close()
        stats.replay_s += time.perf_counter() - t_close
        stats.topic_files = topics_dir is not None
        stats.files_s = run.sink.files_s
    sink, report = run.sink, run.report
    stats.wall_s = time.perf_counter() - t0
    summary = build_summary(sink, stats, sink.dlq_reasons)
    if taps:
        summary["sinks"] = {t.name: t.stats() for t in taps}
    if report is not None:
        summary.update(report.figures)
        write_equity_csv(opts.out / "equity.csv", report.ts, report.equity)
        write_trades_csv(opts.out / "trades.csv", report.trips, report.open_trips)
        if opts.report_html:
            _write_html(opts, run, report)
    record.update(input={"path": str(run.input_path), "sha256": sha256_of(run.input_path)},
                  config=run.config, device=device_record(opts.device, device),
                  topics=sorted(sink.counts))
    if opts.summary_json is not None:
        opts.summary_json.parent.mkdir(parents=True, exist_ok=True)
        opts.summary_json.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    record.close("complete")
    if not opts.quiet:
        print_summary(summary, opts.out)
        if report is not None:
            print_report(summary)
            print_online(summary)
            print(f"  equity curve    {opts.out / 'equity.csv'}")
            print(f"  round trips     {opts.out / 'trades.csv'}")
            if opts.report_html and (opts.out / "report.html").exists():
                print(f"  report          {opts.out / 'report.html'}")
    return summary


def chain_options(opts: ReplayOptions, feature_version: str, bar_ns: int, tz: str | None,
                  device: Device = "cpu") -> ChainOptions:
    if opts.models is None:
        models = opts.out / "models"
        if not opts.quiet:
            print(f"no --models: training walk-forward into {models}", file=sys.stderr)
        bundle = train_models(opts, models)
    else:
        models = opts.models
        try:
            bundle = load_bundle(models)
        except (FileNotFoundError, BundleMismatchError) as exc:
            raise UsageError(f"--models {exc}") from None
        except msgspec.DecodeError as exc:
            raise UsageError(f"--models {models}: strategy.json is not a valid strategy file "
                             f"({exc}); train the bundle again") from None
    if bundle.feature_version != feature_version:
        raise UsageError(f"models in {models} expect features {bundle.feature_version}, this "
                         f"run computes {feature_version} (another --bar?)")
    if not opts.quiet:
        arms = f"A={','.join(bundle.arm_a)}"
        if bundle.arm_b:
            arms += f" B={','.join(bundle.arm_b)} (B share {bundle.ab_split:.0%})"
        print(f"models: {models} [{arms}]; trading from "
              f"{format_ns(bundle.train_end)}", file=sys.stderr)
    risk = _risk_file(opts)
    try:
        instruments = instrument_master(opts.instruments, bundle.symbols, opts.quiet)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--instruments {opts.instruments}: {exc}") from None
    for a in risk.accounts:
        unknown = [s for s in a.symbols if s not in instruments]
        if unknown:
            raise UsageError(f"--risk {opts.risk}: account {a.name!r} trades {unknown}, which "
                             "the instrument master does not list (pass --instruments)")
    return ChainOptions(models=models, bundle=bundle, instruments=instruments,
                        accounts=risk.accounts, execution=risk.execution,
                        algo=opts.algo,
                        periods_per_year=opts.periods_per_year or periods_per_year_for(bar_ns),
                        session_tz=tz or "UTC", device=device,
                        max_bar_age_ns=opts.max_bar_age_ns,
                        cost_gate=opts.cost_gate, edge_horizon_bars=opts.edge_horizon_bars,
                        online_learning=opts.online_learning)


def _risk_file(opts: ReplayOptions) -> RiskFile:
    try:
        return load_risk_file(opts.risk)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--risk {opts.risk}: {exc}") from None


def _check_config_files(opts: ReplayOptions) -> None:
    """``--risk`` and ``--instruments`` are read before the run starts: a mistake in them is
    a usage error before anything is written or trained."""
    if not opts.no_trade:
        _risk_file(opts)
    if opts.instruments is not None:
        try:
            load_instruments(opts.instruments)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--instruments {opts.instruments}: {exc}") from None


def _captured(captured: dict[str, list[msgspec.Struct]] | None, topic: str, kind: type[T]
              ) -> list[T]:
    return [v for v in (captured or {}).get(topic, []) if isinstance(v, kind)]


def _report(captured: dict[str, list[msgspec.Struct]], chain: ChainOptions) -> Report:
    """The first account's report; with several accounts each one's figures go under
    ``accounts`` (decision ids end in ``@account`` then)."""
    session = next((i.session_start for i in chain.instruments.values() if i.session_start),
                   "17:00")
    several = len(chain.accounts) > 1

    def belongs(v: object, account: str) -> bool:
        if not several:
            return True
        if isinstance(v, Decision):
            return v.decision_id.endswith(f"@{account}")
        return bool(getattr(v, "account", None) == account)

    def of(topic: str, kind: type[T], account: str) -> list[T]:
        return [v for v in _captured(captured, topic, kind) if belongs(v, account)]

    reports: dict[str, Report] = {}
    for a in chain.accounts:
        name = a.name
        audit = of(tn.AUDIT_DECISIONS, Decision, name)
        report = build_report(
            positions=of(tn.POSITIONS, Position, name), fills=of(tn.FILLS, Fill, name),
            orders=of(tn.ORDERS, Order, name), rejects=of(tn.RISK_REJECTS, RiskReject, name),
            decisions=audit, initial_equity=a.settings.initial_equity,
            multipliers={s: i.multiplier for s, i in chain.instruments.items()},
            periods_per_year=chain.periods_per_year, start_ts=chain.bundle.train_end,
            sessions=SessionClock(tz=chain.session_tz, start=session),
            slippage={s: chain.execution.slippage_ticks * i.tick_size
                      for s, i in chain.instruments.items()})
        # decisions on bars closed too late to trade (docs/decision-chain.md, "Stale bars")
        report.figures["stale_bars"] = sum(1 for d in audit if d.skipped == "stale_bar")
        # decisions whose added exposure the cost gate held back (docs/decision-chain.md)
        report.figures["cost_gated"] = sum(1 for d in audit
                                           if d.sizing.get("cost_gated") == 1.0)
        reports[name] = report
    first = reports[chain.accounts[0].name]
    if chain.online_learning:  # docs/online-learning.md
        first.figures.update(online_figures(_captured(captured, tn.MODELS_UPDATES, ModelUpdate)))
    if several:
        first.figures["accounts"] = {n: dict(r.figures) for n, r in reports.items()}
    return first


def _write_html(opts: ReplayOptions, run: _Run, report: Report) -> None:
    """``<out>/report.html`` after the replay (off its hot path); without plotly, a warning."""
    try:
        from jobs.html_report import write_report_html
    except ImportError:
        print("warning: plotly is not installed (pip install 'streamquant[report]'): no "
              "report.html", file=sys.stderr)
        return
    captured = run.inputs.captured if run.inputs is not None else None
    chain = run.chain
    assert chain is not None
    meta = {"input": run.input_path.name, "models": str(chain.models), "algo": chain.algo,
            "trading from": format_ns(chain.bundle.train_end), "chart times": "UTC"}
    write_report_html(opts.out / "report.html", figures=report.figures, ts=report.ts,
                      equity=report.equity,
                      positions=_captured(captured, tn.POSITIONS, Position),
                      decisions=_captured(captured, tn.AUDIT_DECISIONS, Decision),
                      fills=_captured(captured, tn.FILLS, Fill),
                      title=f"streamquant backtest: {run.input_path.name}", meta=meta)
