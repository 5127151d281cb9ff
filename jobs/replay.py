"""``streamquant run``: replay a tick or bar file through the graph on the embedded runner.

Two execution paths with one output:
- ``event``: every record through ``LocalRunner`` one at a time (the reference path);
- ``batch``: normalize and window features over numpy columns in chunks
  (``Normalize.validate_columns``, ``WindowFeatures.process_batch``), the bar-rate stages
  behind them on the same ``LocalRunner`` fed in the per-event order. Topic files are
  byte-identical to the event path's (tested).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from jobs import data
from jobs.bar_files import load_bars
from jobs.errors import UsageError
from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.pipeline import ChainOptions, chain_stages, instrument_master, load_risk_file
from jobs.progress import Progress
from jobs.report import build_report, print_report, write_equity_csv
from jobs.sources import EMINI_COLUMN_MAP, TickFileSpec, file_format, inspect_tick_file
from jobs.strategy import StrategyBundle, load_bundle, train_bundle
from jobs.tick_files import load_tick_columns, read_lines
from jobs.topic_sink import TopicSink
from operators.bar_features import BarFeatures, BarFeaturesConfig
from operators.bars import TickColumns as BarTicks
from operators.bars import bounded_watermarks, parse_duration
from operators.contract import END_OF_STREAM, Emit, SimpleContext
from operators.features import (
    BatchResult,
    FeaturesConfig,
    WindowFeatures,
    features_from_bars,
)
from operators.instruments import known_symbols, load_instruments
from operators.normalize import Normalize, NormalizeConfig, RawRecord
from operators.timeparse import format_ns
from topics.messages import (
    Algo,
    Bar,
    Control,
    DeadLetter,
    Decision,
    FeatureVector,
    Fill,
    LateTick,
    Order,
    Position,
    RiskReject,
    SourceRef,
    Tick,
)

CHUNK = 65_536
T = TypeVar("T")
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class TickInput:
    """A resolved tick source: the file, how to read it and the defaults it needs."""

    path: Path
    label: str
    spec: TickFileSpec
    column_map: dict[str, str] | None
    tz: str | None
    default_symbol: str | None
    default_venue: str
    bundled: bool


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    out: Path
    ticks: Path | None = None
    bars: Path | None = None
    force: bool = False
    summary_json: Path | None = None
    bar: str | None = None
    lateness_ns: int = 0
    symbol: str | None = None
    venue: str | None = None
    tz: str | None = None
    instruments: Path | None = None
    mode: str = "batch"
    write_topics: bool = True
    quiet: bool = False
    models: Path | None = None
    train_fraction: float = 0.3
    risk: Path | None = None
    algo: Algo = "IMMEDIATE"
    periods_per_year: float | None = None  # None: from the bar length
    control: Path | None = None
    no_trade: bool = False
    seed: int = 0

    @classmethod
    def from_args(cls, args: Any) -> ReplayOptions:
        try:
            lateness = parse_duration(args.lateness) if args.lateness not in ("0", "0s") else 0
        except ValueError as exc:
            raise UsageError(f"--lateness: {exc}") from None
        if args.bar is not None:
            try:
                parse_duration(args.bar)
            except ValueError as exc:
                raise UsageError(f"--bar: {exc}") from None
        return cls(
            out=Path(args.out), ticks=Path(args.ticks) if args.ticks else None,
            bars=Path(args.bars) if args.bars else None, force=args.force,
            summary_json=Path(args.summary_json) if args.summary_json else None,
            bar=args.bar, lateness_ns=lateness, symbol=args.symbol, venue=args.venue,
            tz=args.tz, instruments=Path(args.instruments) if args.instruments else None,
            mode=args.mode, write_topics=not args.no_topic_files, quiet=args.quiet,
            models=Path(args.models) if getattr(args, "models", None) else None,
            train_fraction=getattr(args, "train_fraction", 0.3),
            risk=Path(args.risk) if getattr(args, "risk", None) else None,
            algo=getattr(args, "algo", "IMMEDIATE"),
            periods_per_year=getattr(args, "periods_per_year", None),
            control=Path(args.control) if getattr(args, "control", None) else None,
            no_trade=getattr(args, "no_trade", False), seed=getattr(args, "seed", 0))


# ------------------------------------------------------------------------------------ helpers


def prepare_out(out: Path, force: bool) -> None:
    """``--out`` must be new or empty unless ``--force`` (then it is cleared)."""
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()):
            if not force:
                raise UsageError(f"--out {out} is not empty (use --force to overwrite)")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def sha256_of(path: Path) -> str:
    return data.sha256_file(path)


def code_version() -> str:
    """The package version plus the git commit when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("streamquant")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, check=False, cwd=Path(__file__).parent, timeout=5)
        if rev.returncode == 0 and rev.stdout.strip():
            v += "+g" + rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return v


def resolve_ticks(opts: ReplayOptions) -> TickInput:
    """The tick file to replay: ``--ticks`` or the bundled E-mini sample."""
    if opts.ticks is None:
        path = data.fetch_emini(quiet=opts.quiet)
        spec = inspect_tick_file(path, column_map=EMINI_COLUMN_MAP, has_default_symbol=True)
        return TickInput(path=path, label=path.name, spec=spec, column_map=EMINI_COLUMN_MAP,
                         tz=opts.tz or data.EMINI_TZ,
                         default_symbol=opts.symbol or data.EMINI_SYMBOL,
                         default_venue=opts.venue or data.EMINI_VENUE, bundled=True)
    spec = inspect_tick_file(opts.ticks, has_default_symbol=opts.symbol is not None)
    return TickInput(path=opts.ticks, label=opts.ticks.name, spec=spec, column_map=None,
                     tz=opts.tz, default_symbol=opts.symbol,
                     default_venue=opts.venue or "UNKNOWN", bundled=False)


def normalize_config(src: TickInput, instruments: Path | None) -> NormalizeConfig:
    known: tuple[str, ...] | None = None
    if instruments is not None:
        if not instruments.is_file():
            raise UsageError(f"--instruments {instruments}: no such file")
        try:
            known = tuple(known_symbols(load_instruments(instruments)))
        except ValueError as exc:
            raise UsageError(f"--instruments {instruments}: {exc}") from None
    return NormalizeConfig(tz=src.tz, csv_columns=src.spec.columns,
                           default_symbol=src.default_symbol, default_venue=src.default_venue,
                           instruments=known)


def iter_records(src: TickInput) -> Iterator[RawRecord]:
    """One raw record per data line, with its file name and 1-based line number."""
    lines = read_lines(src.path)
    start = 1 if src.spec.fmt == "csv" else 0
    label = src.label
    for i in range(start, len(lines)):
        text = lines[i]
        if text.strip():
            yield RawRecord(payload=text, source=SourceRef(file=label, line=i + 1))


# ------------------------------------------------------------------------------ the graph


def tick_graph(norm: Normalize, feats: WindowFeatures, chain: tuple[Stage, ...] = ()) -> Graph:
    return Graph("md.ticks.raw", (
        Stage(norm, ("md.ticks.raw",), ("md.ticks", "md.ticks.dlq")),
        Stage(feats, ("md.ticks",), ("md.bars", "features", "md.ticks.late")),
        *chain,
    ), external=("control",) if chain else ())


# ------------------------------------------------------------------------------ summary


@dataclass(slots=True)
class RunStats:
    ticks_in: int = 0
    bars_in: int = 0
    wall_s: float = 0.0
    train_s: float = 0.0


def build_summary(sink: TopicSink, stats: RunStats, dlq: Counter[str]) -> dict[str, Any]:
    c = sink.counts
    ticks = c.get("md.ticks", 0)
    replay_s = stats.wall_s - stats.train_s
    return {
        "ticks_in": stats.ticks_in,
        "ticks_valid": ticks if stats.bars_in == 0 else 0,  # bar replays: derived prints only
        "dlq": sum(dlq.values()),
        "dlq_by_reason": dict(sorted(dlq.items())),
        "late_ticks": c.get("md.ticks.late", 0),
        "bars_in": stats.bars_in,
        "bars": c.get("md.bars", 0) if stats.bars_in == 0 else stats.bars_in,
        "features": c.get("features", 0),
        "wall_s": round(stats.wall_s, 3),
        "train_s": round(stats.train_s, 3),
        # replay throughput: training (when run trains first) is reported apart
        "ticks_per_s": round(stats.ticks_in / replay_s, 1) if replay_s > 0 else 0.0,
        "bars_per_s": round(stats.bars_in / replay_s, 1) if replay_s > 0 else 0.0,
        "topics": dict(c),
    }


def print_summary(summary: dict[str, Any], out: Path) -> None:
    print("streamquant run summary")
    if summary["bars_in"]:
        print(f"  bars in         {summary['bars_in']:>12,}")
    else:
        print(f"  ticks in        {summary['ticks_in']:>12,}")
        print(f"  ticks valid     {summary['ticks_valid']:>12,}")
    reasons = ", ".join(f"{k} {v:,}" for k, v in summary["dlq_by_reason"].items()) or "none"
    print(f"  dead letters    {summary['dlq']:>12,}   ({reasons})")
    if not summary["bars_in"]:
        print(f"  late ticks      {summary['late_ticks']:>12,}")
        print(f"  bars            {summary['bars']:>12,}")
    print(f"  feature vectors {summary['features']:>12,}")
    train = f", of which training {summary['train_s']:.1f} s" if summary["train_s"] else ""
    rate = (f"{summary['bars_per_s']:,.0f} bars/s" if summary["bars_in"]
            else f"{summary['ticks_per_s']:,.0f} ticks/s")
    print(f"  wall time       {summary['wall_s']:>12.3f} s   (replay {rate}{train})")
    print(f"  topics          {out / 'topics'}")


# ------------------------------------------------------------------------------ runs


def run_event_ticks(src: TickInput, norm: Normalize, feats: WindowFeatures,
                    chain: tuple[Stage, ...], sink: TopicSink, lateness_ns: int,
                    controls: list[Control], progress: Progress) -> int:
    """The reference path: one source record at a time through the whole graph."""
    runner = LocalRunner(tick_graph(norm, feats, chain), sink, lateness_ns=lateness_ns)
    for c in controls:
        runner.inject("control", c)
    n = 0
    for rec in iter_records(src):
        runner.feed(rec)
        n += 1
        if n & 0x3FFF == 0:
            progress.update(n)
    runner.end_of_stream()
    return n


def run_batch_ticks(src: TickInput, norm: Normalize, feats: WindowFeatures,
                    chain: tuple[Stage, ...], sink: TopicSink, lateness_ns: int,
                    controls: list[Control], progress: Progress) -> int:
    """Normalize + features over columns, the decision chain behind them per event.

    Writes the same topic files as ``run_event_ticks``: each tick reaches the chain, then the
    bars its watermark closes, then the watermark itself, exactly as the event path orders
    them.
    """
    cols = load_tick_columns(src.path, src.column_map, src.tz, src.default_symbol,
                             src.default_venue)
    cols = dataclasses.replace(cols, file=src.label)
    n = len(cols)
    result = norm.validate_columns(cols)
    for i, dl in enumerate(result.dead_letters):
        # The batch validator cannot quote an unparseable cell's text: re-derive the dead
        # letter through the per-event path so both paths write the same bytes.
        if dl.reason != "DUPLICATE":
            _, outs = norm.process(norm.new_state(""), RawRecord(payload=dl.payload,
                                                                 source=dl.source), SimpleContext())
            value = outs[0].value
            assert isinstance(value, DeadLetter)
            result.dead_letters[i] = value
    valid = cols.select(result.valid)
    need_ticks = bool(chain) or sink.writes("md.ticks") or sink.writes("md.ticks.late")
    ticks = norm.ticks_from_columns(valid, np.ones(len(valid), dtype=bool)) if need_ticks \
        else None
    for dl in result.dead_letters:
        sink.emit("md.ticks.dlq", dl)
    names = tuple(s.strip() for s in valid.symbol_names)
    codes = valid.symbol_codes
    if len(valid) and (codes < 0).any():  # rows without a symbol column take the default
        names = (*names, src.default_symbol or "")
        codes = np.where(codes < 0, len(names) - 1, codes).astype(np.int32)
    bt = BarTicks(ts=valid.ts, price=valid.price, size=valid.size, symbol=codes, symbols=names,
                  venue=src.default_venue, line=valid.line, source_file=src.label, ticks=ticks)
    runner: LocalRunner | None = None
    if chain:
        graph = Graph("md.ticks", chain, external=("features", "control"))
        runner = LocalRunner(graph, sink, lateness_ns=lateness_ns)
        for c in controls:
            runner.inject("control", c)
    elif ticks is not None:
        for t in ticks:
            sink.emit("md.ticks", t)
    else:
        sink.counts["md.ticks"] += len(valid)
    states: dict[str, Any] = {}
    max_seen: int | None = None
    for start in range(0, len(bt), CHUNK):
        chunk = bt.slice(start, start + CHUNK)
        before, after, max_seen = bounded_watermarks(chunk.ts, lateness_ns, max_seen)
        res = feats.process_batch(states, chunk, before, after)
        if runner is None:
            _emit_all(sink, res.emits(chunk))
        else:
            _drive_chain(runner, sink, res, chunk, before, after)
        progress.update(start + len(chunk))
    final = feats.flush(states, END_OF_STREAM)
    if runner is None:
        _emit_all(sink, final.emits())
    else:
        for bar in final.bars:
            sink.emit("md.bars", bar)
        if final.features:
            runner.inject_many("features", final.features)
        runner.end_of_stream()
    return n


def _drive_chain(runner: LocalRunner, sink: TopicSink, res: BatchResult, chunk: BarTicks,
                 before: npt.NDArray[np.int64], after: int) -> None:
    """Replay one batch's outputs into the chain in the per-event path's order."""
    assert chunk.ticks is not None
    ticks = chunk.ticks
    late = dict(zip(res.late_rows.tolist(), res.late_watermarks.tolist(), strict=True))
    close_after = res.close_after.tolist()
    wm_after = [*before[1:].tolist(), after]
    j = 0
    nb = len(close_after)
    inject = runner.inject
    def closing(row: int) -> None:  # the bars this step closes, delivered together
        nonlocal j
        k = j
        while j < nb and close_after[j] <= row:
            sink.emit("md.bars", res.bars[j])
            j += 1
        if j > k:
            runner.inject_many("features", res.features[k:j])

    closing(-1)  # closed by the watermark carried into this batch
    for i in range(len(chunk)):
        t = ticks[i]
        inject("md.ticks", t)
        w = late.get(i)
        if w is not None:
            sink.emit("md.ticks.late", LateTick(ts_event=t.ts_event, tick=t, watermark=w))
        if j < nb and close_after[j] == i:
            closing(i)
        wa = wm_after[i]
        if wa > runner.watermark:
            runner.advance_watermark(wa)


def _emit_all(sink: TopicSink, emits: list[Emit]) -> None:
    for e in emits:
        sink.emit(e.topic, e.value)


# Labor Day 2013: CME Globex halted at 12:00 CT on 2 September and reopened at 17:00 CT
# (22:00 UTC). The session before the halt trains; the rest of the sample trades.
EMINI_TRAIN_END_NS = 1_378_159_200_000_000_000


def features_pass(src: TickInput, norm: Normalize, bar_ns: int, lateness_ns: int
                  ) -> list[FeatureVector]:
    """Feature vectors of the whole input (batched, nothing written): the training data."""
    feats = WindowFeatures(FeaturesConfig(bar_ns=bar_ns, lateness_ns=lateness_ns))
    sink = TopicSink(None, ("md.ticks", "md.ticks.dlq", "md.bars", "features", "md.ticks.late"),
                     capture=("features",))
    if src.spec.fmt == "csv":
        run_batch_ticks(src, norm, feats, (), sink, lateness_ns, [], Progress("", None,
                                                                              enabled=False))
    else:
        run_event_ticks(src, norm, feats, (), sink, lateness_ns, [], Progress("", None,
                                                                              enabled=False))
    assert sink.captured is not None
    return [fv for fv in sink.captured["features"] if isinstance(fv, FeatureVector)]


def train_end_for(bundled: bool, vectors: list[FeatureVector], train_fraction: float) -> int:
    """The walk-forward split: the bundled sample's first session, else a fraction of bars."""
    if bundled:
        return EMINI_TRAIN_END_NS
    ends = sorted({fv.ts_event for fv in vectors})
    if len(ends) < 200:
        raise UsageError(f"only {len(ends)} bars: too few to train and trade; pass --models")
    return ends[max(0, int(len(ends) * train_fraction) - 1)]


def train_models(opts: ReplayOptions, out_dir: Path) -> StrategyBundle:
    """``streamquant train``: features over the input, then fit on the training window."""
    if opts.bars is not None:
        bars, bar_ns = _good_bars(opts)
        vectors = features_from_bars(bars, FeaturesConfig(bar_ns=bar_ns))
        train_end = train_end_for(False, vectors, opts.train_fraction)
    else:
        src = resolve_ticks(opts)
        norm = Normalize(normalize_config(src, opts.instruments))
        bar_ns = parse_duration(opts.bar or "1m")
        vectors = features_pass(src, norm, bar_ns, opts.lateness_ns)
        train_end = train_end_for(src.bundled, vectors, opts.train_fraction)
    return train_bundle(vectors, train_end=train_end, bar_ns=bar_ns, out_dir=out_dir,
                        seed=opts.seed, quiet=opts.quiet)


def _good_bars(opts: ReplayOptions) -> tuple[list[Bar], int]:
    assert opts.bars is not None
    items, bar_ns = load_bars(opts.bars, bar_ns=parse_duration(opts.bar) if opts.bar else None,
                              tz=opts.tz, default_symbol=opts.symbol)
    return [it for it, _ in items if isinstance(it, Bar)], bar_ns


def bar_tick(bar: Bar) -> Tick:
    """The trade a bar replay fills against: one print at the bar's close, at its end.

    A decision made on bar t (at its end) is filled by the next bar's print, at that bar's
    close: later than the decision by a whole bar, never on the bar that produced it.
    """
    return Tick(ts_event=bar.ts_end, symbol=bar.symbol, venue="BAR", price=bar.close,
                size=bar.volume)


def periods_per_year_for(bar_ns: int) -> float:
    """Annualization of per-bar returns: 252 trading days a year for daily bars, intraday bars
    of a 23-hour (Globex) day, calendar time for bars longer than a day (weekly: ~52)."""
    day = 86_400 * NS
    if bar_ns > day * 7 // 6:
        return 365.25 * day / bar_ns
    if bar_ns >= day * 5 // 6:
        return 252.0
    return 252.0 * 23 * 3600 * NS / bar_ns


def _load_controls(path: Path | None) -> list[Control]:
    if path is None:
        return []
    if not path.is_file():
        raise UsageError(f"--control {path}: no such file")
    out = []
    for n, line in enumerate(read_lines(path), 1):
        if line.strip():
            try:
                out.append(msgspec.json.decode(line, type=Control))
            except msgspec.DecodeError as exc:
                raise UsageError(f"--control {path}:{n}: {exc}") from None
    return out


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
    chain_opts = _chain_options(opts, feature_version, bar_ns, tz)
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
    for c in _load_controls(opts.control):
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
    controls = _load_controls(opts.control)
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


def _chain_options(opts: ReplayOptions, feature_version: str, bar_ns: int, tz: str | None
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
    return ChainOptions(models=models, bundle=bundle, instruments=instruments,
                        limits=risk.limits, account=risk.account, execution=risk.execution,
                        algo=opts.algo,
                        periods_per_year=opts.periods_per_year or periods_per_year_for(bar_ns),
                        session_tz=tz or "UTC")


def _report(captured: dict[str, list[msgspec.Struct]], chain: ChainOptions,
            opts: ReplayOptions) -> dict[str, Any]:
    def of(topic: str, kind: type[T]) -> list[T]:
        return [v for v in captured.get(topic, []) if isinstance(v, kind)]

    report, ts, eq = build_report(
        positions=of("positions", Position), fills=of("fills", Fill),
        orders=of("orders", Order), rejects=of("risk.rejects", RiskReject),
        decisions=of("audit.decisions", Decision), initial_equity=chain.account.initial_equity,
        multipliers={s: i.multiplier for s, i in chain.instruments.items()},
        periods_per_year=chain.periods_per_year, start_ts=chain.bundle.train_end)
    report["_curve"] = (ts, eq)
    return report


# ------------------------------------------------------------------------------ features CSV

FEATURE_CSV_COLUMNS = ("ts", "symbol", "ema_12", "ema_26", "macd", "macd_signal", "macd_hist",
                       "rsi_14", "atr_14", "vol_20", "ret_1", "ret_5", "ret_20", "volume_ratio")


def features_csv(bars_path: Path, out: Path, *, force: bool = False, bar: str | None = None,
                 tz: str | None = None) -> int:
    """``streamquant features``: one row per input bar, empty cells during warm-up."""
    if out.exists() and not force:
        raise UsageError(f"{out} exists (use --force to overwrite)")
    items, bar_ns = load_bars(bars_path, bar_ns=parse_duration(bar) if bar else None, tz=tz,
                              default_symbol=None)
    bad = [it for it, _ in items if isinstance(it, DeadLetter)]
    if bad:
        first = bad[0]
        raise UsageError(f"{bars_path}:{first.source.line}: {first.detail} "
                         f"({len(bad)} bad row(s))")
    bf = BarFeatures(BarFeaturesConfig(bar_ns))
    states: dict[str, Any] = {}
    rows = []
    for item, ts_text in items:
        assert isinstance(item, Bar)
        st = states.get(item.symbol) or bf.new_state(item.symbol)
        st, emits = bf.process(st, item, SimpleContext())
        states[item.symbol] = st
        fv = emits[0].value
        cells = [ts_text, item.symbol]
        for name in FEATURE_CSV_COLUMNS[2:]:
            v = getattr(fv, name)
            cells.append("" if v is None else repr(v))
        rows.append(",".join(cells))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(",".join(FEATURE_CSV_COLUMNS) + "\n" + "".join(r + "\n" for r in rows))
    return len(rows)
