"""The taps a run asked for, opened together and closed together."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jobs.sinks.options import SinkOptions
from jobs.sinks.tap import Tap


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the taps need to know about the run that feeds them."""

    out: Path | None
    """The run's output directory (the embedded database goes under it)."""
    job: str
    """The job's id: one database can hold several jobs' rows apart."""
    quiet: bool = False


@contextlib.contextmanager
def open_taps(opts: SinkOptions, ctx: RunContext) -> Iterator[list[Tap]]:
    """The run's taps; all are closed (flushed) on the way out, in reverse order."""
    taps: list[Tap] = []
    try:
        if opts.sink != "none":  # ClickHouse (jobs.clickhouse.run_tap)
            from jobs.clickhouse.run_tap import open_clickhouse_tap

            ch = open_clickhouse_tap(opts, ctx.out, ctx.job, quiet=ctx.quiet)
            if ch is not None:
                taps.append(ch)
        if opts.redis is not None:  # feature store and latest positions (docs/redis.md)
            from jobs.sinks.redis_store import RedisStoreConfig, RedisTap

            taps.append(RedisTap(RedisStoreConfig(opts.redis,
                                                  feature_ttl_s=opts.feature_ttl_s)))
        if opts.metrics_port is not None:  # Prometheus endpoint (docs/observability.md)
            from jobs.metrics.serve import serve

            taps.append(serve(opts.metrics_port, linger_s=opts.metrics_linger_s,
                              siblings=taps).tap)
        yield taps
    finally:
        for tap in reversed(taps):
            try:
                tap.close()
            except Exception as exc:  # one tap's failure must not hide the others' rows
                print(f"warning: closing the {tap.name} sink failed: {exc}", file=sys.stderr)
