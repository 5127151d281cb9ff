"""``streamquant run --engine flink``: the replay of a tick file as a PyFlink job.

Same inputs as the embedded replay (the bundled sample or ``--ticks``, ``--models``,
``--risk``, ``--control``, ...), same graph (``jobs.topology``), same ``<out>/topics/*.jsonl``:
the job's output items are written by the driver through the same ``TopicSink`` (JSON encoded
in Python, never by the JDK). The job runs on a local MiniCluster (thread mode by default;
``--flink-mode process``), with checkpoints, a state backend and a bounded restart strategy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from jobs.device import resolve_device
from jobs.errors import UsageError
from jobs.flink.args import settings_from_args
from jobs.flink.job import build_pipeline, environment
from jobs.flink.settings import FlinkSettings
from jobs.flink.wire import out_messages, reached_end
from jobs.graph import Graph
from jobs.manifest import RunRecord, check_run_paths, code_version, prepare_out, sha256_of
from jobs.options import ReplayOptions
from jobs.replay import chain_options, run_paths
from jobs.sources import TickInput, iter_records, load_controls, normalize_config, resolve_ticks
from jobs.topic_sink import TopicSink
from jobs.topology import ChainOptions, chain_stages, tick_graph
from operators.domain.bars import parse_duration
from operators.features import FeaturesConfig, WindowFeatures
from operators.normalize import Normalize, NormalizeConfig, RawRecord
from topics import names as tn
from topics.serde import decode as decode_topic


@dataclass(frozen=True, slots=True)
class TickGraphSpec:
    """What builds the tick graph: each Flink task calls it to build its own operators (they
    hold codecs and models that are not shipped pickled)."""

    normalize: NormalizeConfig
    features: FeaturesConfig
    chain: ChainOptions | None

    def __call__(self) -> Graph:
        chain = chain_stages(self.chain) if self.chain is not None else ()
        return tick_graph(Normalize(self.normalize), WindowFeatures(self.features), chain)


@dataclass(frozen=True, slots=True)
class TickRecords:
    """The source's records, read in the source task (the job graph carries only the path)."""

    src: TickInput

    def __call__(self) -> list[RawRecord]:
        return list(iter_records(self.src))


def main_flink(args: argparse.Namespace) -> int:
    """``run --engine flink`` (``jobs.cli._cmd_run`` dispatches here)."""
    if getattr(args, "bootstrap", None) is not None:
        raise UsageError("--engine flink reads files only for now (no --bootstrap)")
    opts = ReplayOptions.from_args(args)
    if opts.bars is not None:
        raise UsageError("--engine flink replays tick files (--ticks or the bundled sample)")
    summary = run_flink(opts, settings_from_args(args, opts.out))
    if not summary["end_of_stream"]:
        print("streamquant: the Flink job stopped before the end of its input (a savepoint "
              "stop?): the topic files hold the outputs up to there", file=sys.stderr)
        return 3
    return 0


def run_flink(opts: ReplayOptions, settings: FlinkSettings) -> dict[str, Any]:
    """The replay as a Flink job; the manifest is opened first and closed with the status."""
    device = resolve_device(opts.device)
    paths = run_paths(opts)
    check_run_paths(paths)
    prepare_out(paths, opts.force)
    record = RunRecord(paths, {"code_version": code_version(), "seed": opts.seed,
                               "engine": "flink", "flink_mode": settings.mode})
    try:
        summary = _run(opts, settings, device, record)
    except BaseException as exc:
        record.close("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    # a job stopped with a savepoint ends without the end of stream: its outputs stop there
    record.close("complete" if summary["end_of_stream"] else "stopped")
    return summary


def _run(opts: ReplayOptions, settings: FlinkSettings, device: Any,
         record: RunRecord) -> dict[str, Any]:
    t0 = time.perf_counter()
    src = resolve_ticks(opts)
    bar_ns = parse_duration(opts.bar or "1m")
    feats = FeaturesConfig(bar_ns=bar_ns, lateness_ns=opts.lateness_ns)
    chain = None if opts.no_trade else chain_options(
        opts, WindowFeatures(feats).feature_version, bar_ns, src.tz, device=device)
    spec = TickGraphSpec(normalize_config(src, opts.instruments,
                                          max_forward_jump_ns=opts.max_forward_jump_ns,
                                          dedupe_window_ns=opts.dedupe_window_ns), feats, chain)
    graph = spec()
    n = sum(1 for _ in iter_records(src))
    controls = load_controls(opts.control)
    topics_dir = opts.out / "topics" if opts.write_topics else None
    sink = TopicSink(topics_dir, graph.output_topics)
    if settings.log_dir is not None:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("FLINK_LOG_DIR", str(settings.log_dir))
    if not opts.quiet:
        print(f"flink ({settings.mode} mode): {n} records of {src.path} through "
              f"{len(graph.stages)} stages ...", file=sys.stderr)
    env = environment(settings)
    out, _side = build_pipeline(env, spec, n_records=n, load=TickRecords(src),
                                injected=[(tn.CONTROL, c) for c in controls],
                                lateness_ns=opts.lateness_ns, watermark_topic=tn.MD_TICKS,
                                block=settings.block)
    t_job = time.perf_counter()
    first: float | None = None
    ended = False
    with out.execute_and_collect(f"streamquant {src.path.name}") as it:
        for items in it:
            if first is None:
                first = time.perf_counter()
            for topic, payload in out_messages(items):
                sink.emit(topic, decode_topic(topic, payload))
            ended = ended or reached_end(items)
    sink.close()
    t_end = time.perf_counter()
    summary: dict[str, Any] = {
        "engine": "flink", "flink_mode": settings.mode, "ticks_in": n,
        "end_of_stream": ended,
        "wall_s": round(t_end - t0, 3), "job_s": round(t_end - t_job, 3),
        "first_output_s": round((first or t_end) - t_job, 3),
        "ticks_per_s": round(n / max(t_end - t_job, 1e-9), 1),
        "topics": {t: c for t, c in sorted(sink.counts.items()) if c}}
    record.update(input={"path": str(src.path), "sha256": sha256_of(src.path)},
                  config={"bar_ns": bar_ns, "lateness_ns": opts.lateness_ns,
                          "models": str(chain.models) if chain is not None else None,
                          "checkpoint_interval_ms": settings.checkpoint_interval_ms,
                          "state_backend": settings.state_backend},
                  topics=sorted(sink.counts), summary=summary)
    if not opts.quiet:
        print(f"flink run: {n} ticks in {summary['job_s']} s ({summary['ticks_per_s']} "
              f"ticks/s); " + ", ".join(f"{t} {c}" for t, c in summary["topics"].items()),
              file=sys.stderr)
    return summary
