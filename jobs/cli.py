"""The ``streamquant`` command line.

Exit codes: 0 success, 2 usage errors (bad flags, missing or malformed input files), 1 failures
while running. Progress goes to stderr; results to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from jobs.errors import UsageError


def _version() -> str:
    try:
        return version("streamquant")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


def _cmd_topics(args: argparse.Namespace) -> int:
    from topics.catalog import CATALOG
    from topics.serde import json_schema

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


def _cmd_data(args: argparse.Namespace) -> int:
    from jobs.data import fetch_emini

    path = fetch_emini(Path(args.dir) if args.dir else None)
    print(path)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from jobs.options import ReplayOptions
    from jobs.replay import run_replay

    opts = ReplayOptions.from_args(args)
    summary = run_replay(opts)
    return 0 if summary is not None else 1


def _cmd_train(args: argparse.Namespace) -> int:
    from jobs.options import ReplayOptions
    from jobs.train_job import train_models

    if not 0.05 <= args.train_fraction <= 0.95:
        raise UsageError("--train-fraction must be in [0.05, 0.95]")
    opts = ReplayOptions(out=Path(args.out), ticks=Path(args.ticks) if args.ticks else None,
                         bars=Path(args.bars) if args.bars else None, bar=args.bar,
                         symbol=args.symbol, venue=args.venue, tz=args.tz,
                         train_fraction=args.train_fraction, seed=args.seed, quiet=args.quiet)
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
                   help="annualization of per-bar returns (default: from the bar length: 252 "
                        "for daily bars, 347760 for 1-minute bars of a 23-hour day)")
    p.add_argument("--seed", type=int, default=0, help="model seed (default: 0)")


def _cmd_features(args: argparse.Namespace) -> int:
    from jobs.features_csv import features_csv

    n = features_csv(Path(args.bars), Path(args.out), force=args.force)
    print(f"wrote {n} rows to {args.out}", file=sys.stderr)
    return 0


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
    run.add_argument("--out", metavar="DIR", default="out/run",
                     help="output directory, must be new or empty (default: %(default)s)")
    run.add_argument("--force", action="store_true", help="allow a non-empty --out (cleared)")
    run.add_argument("--summary-json", metavar="PATH", help="also write the summary as JSON")
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
    _trading_args(run)
    run.add_argument("--no-trade", action="store_true",
                     help="stop after features (no models, no orders)")
    run.add_argument("--control", metavar="PATH",
                     help="JSONL of control messages (kill switch, halts) to inject by event time")
    run.set_defaults(func=_cmd_run)

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
    train.set_defaults(func=_cmd_train)

    feat = sub.add_parser("features", help="compute the feature columns of a bar file",
                          description="One row per input bar with the TA-Lib-equivalent "
                          "features; empty cells during warm-up.")
    feat.add_argument("--bars", required=True, metavar="IN.csv")
    feat.add_argument("--out", required=True, metavar="OUT.csv")
    feat.add_argument("--force", action="store_true", help="overwrite OUT.csv")
    feat.set_defaults(func=_cmd_features)

    top = sub.add_parser("topics", help="the topic catalog and message schemas")
    tsub = top.add_subparsers(dest="topics_cmd", required=True, metavar="SUBCOMMAND")
    tsub.add_parser("list", help="list every topic with key, partitions and retention")
    sch = tsub.add_parser("schema", help="print a topic's JSON Schema")
    sch.add_argument("name")
    stz = tsub.add_parser("strimzi", help="print Strimzi KafkaTopic manifests for every topic")
    stz.add_argument("--cluster", default="streamquant", help="strimzi.io/cluster label")
    stz.add_argument("--replicas", type=int, default=3, help="replication factor (default: 3)")
    top.set_defaults(func=_cmd_topics)

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
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"streamquant: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streamquant: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"streamquant: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
