"""``streamquant run --engine faust``: the graph as a Faust worker in the foreground.

The graph is the live run's (``jobs.live.run.build_live_graph``: the same topology, models
and flags), hosted by ``jobs.faust.app``. The worker runs until SIGTERM/Ctrl-C or, with
``--until-end``, until every source partition ended; then the summary (``--summary-json``).
``faust -A jobs.faust.worker:app worker`` starts the same worker from environment variables.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from jobs.errors import UsageError
from jobs.faust.app import FaustConfig, build_app, parse_fault
from jobs.faust.pipeline import FaustPipeline
from jobs.live.host import FAULT_ENV, CheckpointPolicy
from jobs.options import ReplayOptions
from jobs.topology import opened
from operators.domain.bars import parse_duration
from topics import names as tn
from topics.catalog import CATALOG


def build_pipeline(config: FaustConfig, replay: ReplayOptions, *, quiet: bool = False
                   ) -> FaustPipeline:
    """The live run's graph in a Faust pipeline (checks the topics exist first)."""
    from jobs.live.admin import check_topics
    from jobs.live.kafka_client import KafkaSettings
    from jobs.live.run import build_live_graph

    if replay.models is None:
        raise UsageError("the Faust engine needs --models DIR (a bundle from 'streamquant "
                         "train'): it never trains from the stream")
    graph, _ = build_live_graph(replay)
    settings = KafkaSettings(config.bootstrap, config.topic_prefix)
    check_topics(settings, (tn.MD_TICKS_RAW, tn.CONTROL, tn.CONTROL_APPLIED,
                            *(t for t in graph.output_topics if not CATALOG[t].internal)))
    log = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    return FaustPipeline(graph, config.checkpoint_dir, kafka_topic=config.topic,
                         lateness_ns=replay.lateness_ns, policy=config.policy, log=log)


def run_worker(config: FaustConfig, pipeline: FaustPipeline, *, loglevel: str = "warning"
               ) -> dict[str, Any]:
    """Run the worker in the foreground until it stops; the summary."""
    import faust

    app, _ = build_app(config, pipeline)
    t0 = time.perf_counter()
    pipeline.resume()
    with opened(pipeline.graph.stages):
        worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
        worker.spinner = None  # its handler puts the root logger at DEBUG: ~30% of the time
        with contextlib.suppress(SystemExit):  # the worker exits through SystemExit
            worker.execute_from_commandline()
    logging.shutdown()
    return summary(pipeline, time.perf_counter() - t0)


def summary(pipeline: FaustPipeline, wall_s: float) -> dict[str, Any]:
    s, out = pipeline.stats, pipeline.output
    cps = sorted(s.checkpoint_s)
    released = pipeline.runner.records
    busy = (s.last_release_at - s.first_record_at
            if s.first_record_at is not None and s.last_release_at is not None else 0.0)
    return {
        "mode": "faust",
        "records_consumed": s.consumed,
        "ticks_released": released,
        "controls": s.controls,
        "dlq": sum(out.dlq_reasons.values()),
        "dlq_by_reason": dict(sorted(out.dlq_reasons.items())),
        "ended": pipeline.ended,
        "error": pipeline.error,
        "checkpoints": s.checkpoints,
        "checkpoint_bytes": s.checkpoint_bytes,
        "checkpoint_ms_p50": round(cps[len(cps) // 2] * 1e3, 2) if cps else None,
        "resumed": s.restored_from is not None,
        "wall_s": round(wall_s, 3),
        "ticks_per_s": round(released / wall_s, 1) if wall_s > 0 else 0.0,
        "processing_s": round(busy, 3),
        "processing_ticks_per_s": round(released / busy, 1) if busy > 0 else None,
        "first_order_s": (round(s.first_output_s, 3) if s.first_output_s is not None
                          else None),
        "topics": dict(sorted(out.counts.items())),
    }


def config_from_args(args: Any) -> FaustConfig:
    import os

    if args.checkpoint_dir is None:
        raise UsageError("--engine faust needs --checkpoint-dir DIR (where the worker keeps "
                         "its checkpoint; a restart resumes from it)")
    if args.kafka_config:
        raise UsageError("--kafka-config is for the librdkafka clients; the Faust engine "
                         "takes plaintext brokers only (docs/faust.md)")
    every_event = (None if args.checkpoint_interval in ("off", "none")
                   else parse_duration(args.checkpoint_interval))
    try:
        return FaustConfig(
            bootstrap=args.bootstrap, checkpoint_dir=Path(args.checkpoint_dir),
            topic_prefix=args.topic_prefix or "", job_id=args.job_id,
            until_end=args.until_end, web_host=args.web_host, web_port=args.web_port,
            policy=CheckpointPolicy(every_records=args.checkpoint_every,
                                    every_event_ns=every_event,
                                    every_wall_s=args.checkpoint_wall),
            fault=parse_fault(os.environ.get(FAULT_ENV, "")))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def main_faust(args: Any) -> int:
    """The CLI's ``run --engine faust`` entry point."""
    if args.bootstrap is None:
        raise UsageError("--engine faust needs --bootstrap HOST:PORT (the worker reads "
                         "md.ticks.raw and control from Kafka)")
    config = config_from_args(args)
    replay = ReplayOptions.from_args(args)
    sinks = replay.sinks
    asked = [f for f, on in (("--redis", sinks.redis is not None),
                             ("--metrics-port", sinks.metrics_port is not None),
                             ("--sink clickhouse / --dsn",
                              sinks.sink == "clickhouse" or sinks.dsn is not None)) if on]
    if asked:
        raise UsageError(f"{', '.join(asked)}: the Faust engine feeds no sinks yet (the live "
                         "host does: run --bootstrap without --engine)")
    pipeline = build_pipeline(config, replay, quiet=replay.quiet)
    result = run_worker(config, pipeline)
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    if replay.summary_json is not None:
        replay.summary_json.parent.mkdir(parents=True, exist_ok=True)
        replay.summary_json.write_text(text)
    if not replay.quiet:
        print(f"streamquant faust worker: {result['ticks_released']:,} ticks released "
              f"({result['ticks_per_s']:,.0f}/s), orders {result['topics'].get(tn.ORDERS, 0):,},"
              f" fills {result['topics'].get(tn.FILLS, 0):,}, checkpoints "
              f"{result['checkpoints']}, source ended: {'yes' if result['ended'] else 'no'}",
              file=sys.stderr)
    if result["error"]:
        print(f"streamquant: error: {result['error']}", file=sys.stderr)
        return 1
    return 0
