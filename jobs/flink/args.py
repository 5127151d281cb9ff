"""``run --engine flink``'s command-line options (no pyflink import: the parser is built
for every command)."""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.errors import UsageError
from jobs.flink.settings import FlinkSettings
from operators.domain.bars import parse_duration


def add_flink_args(run: argparse.ArgumentParser) -> None:
    """``run --engine flink`` options."""
    g = run.add_argument_group("flink", "with --engine flink the replay runs as a PyFlink job "
                               "on a local MiniCluster (docs/flink.md)")
    g.add_argument("--flink-mode", choices=("thread", "process"), default="thread",
                   help="PyFlink Python execution mode (default: %(default)s)")
    g.add_argument("--flink-checkpoint-interval", default="2s", metavar="DURATION",
                   help="checkpoint interval, 0 for none (default: %(default)s)")
    g.add_argument("--flink-state-backend", choices=("hashmap", "rocksdb"), default="hashmap",
                   help="state backend (default: %(default)s)")
    g.add_argument("--flink-restarts", type=int, default=2, metavar="N",
                   help="fixed-delay restart attempts before the job fails (default: 2)")
    g.add_argument("--flink-block", type=int, default=512, metavar="N",
                   help="source records per stream element (default: %(default)s)")


def settings_from_args(args: argparse.Namespace, out: Path) -> FlinkSettings:
    interval = args.flink_checkpoint_interval
    try:
        interval_ns = 0 if interval in ("0", "0s") else parse_duration(interval)
    except ValueError as exc:
        raise UsageError(f"--flink-checkpoint-interval: {exc}") from None
    try:
        return FlinkSettings(mode=args.flink_mode, checkpoint_interval_ms=interval_ns // 1_000_000,
                             state_backend=args.flink_state_backend,
                             checkpoint_dir=out / "flink" / "checkpoints",
                             restart_attempts=args.flink_restarts, block=args.flink_block,
                             log_dir=out / "flink" / "log")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
