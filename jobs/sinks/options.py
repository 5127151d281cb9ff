"""What ``run`` was asked to feed besides the topics: ClickHouse, Redis, Prometheus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.errors import UsageError

SINK_CHOICES = ("auto", "clickhouse", "none")


@dataclass(frozen=True, slots=True)
class SinkOptions:
    """The sinks and the metrics endpoint of one run (validated here, once)."""

    sink: str = "auto"
    """``auto``: ClickHouse when its extra is installed; ``clickhouse``: required; ``none``."""
    dsn: str | None = None
    """ClickHouse target (``chdb://DIR`` or ``clickhouse://[user[:pw]@]host:port[/db]``);
    None: the embedded database under ``<out>/clickhouse``."""
    clickhouse_ticks: bool = True
    """Whether the raw ``md.ticks`` table is filled (the largest table by far)."""
    redis: str | None = None
    """Redis URL for the feature store, latest positions and the kill switch; None: off."""
    feature_ttl_s: int = 3600
    """TTL of the feature-store keys."""
    metrics_port: int | None = None
    """Port of the Prometheus endpoint (0: a free one, printed); None: off."""
    metrics_linger_s: float = 0.0
    """After the run, serve the final values until one scrape has read them, at most this
    long (a batch job scraped by Prometheus); 0: stop with the run."""

    def __post_init__(self) -> None:
        if self.sink not in SINK_CHOICES:
            raise UsageError(f"--sink must be one of {', '.join(SINK_CHOICES)}, got "
                             f"{self.sink!r}")
        if self.dsn is not None and self.sink == "none":
            raise UsageError("--dsn names a ClickHouse target; it cannot go with --sink none")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise UsageError(f"--metrics-port must be 0..65535, got {self.metrics_port}")
        if not 0.0 <= self.metrics_linger_s <= 86_400.0:
            raise UsageError(f"--metrics-linger must be 0..86400 seconds, got "
                             f"{self.metrics_linger_s}")
        if self.metrics_linger_s and self.metrics_port is None:
            raise UsageError("--metrics-linger keeps the metrics endpoint up: it needs "
                             "--metrics-port")
        if self.feature_ttl_s <= 0:
            raise UsageError(f"--feature-ttl must be positive, got {self.feature_ttl_s}s")
        if self.redis is not None and not self.redis.startswith(
                ("redis://", "rediss://", "unix://")):
            from jobs.sinks.redis_client import redact

            raise UsageError(f"--redis must be a redis:// (or rediss://, unix://) URL, got "
                             f"{redact(self.redis)!r}")

    @classmethod
    def from_args(cls, args: Any) -> SinkOptions:
        ttl = getattr(args, "feature_ttl", None)
        ttl_s = 3600
        if ttl is not None:
            from operators.domain.bars import parse_duration

            try:
                ttl_s = max(1, parse_duration(ttl) // 1_000_000_000)
            except ValueError as exc:
                raise UsageError(f"--feature-ttl: {exc}") from None
        return cls(sink=getattr(args, "sink", "auto") or "auto",
                   dsn=getattr(args, "dsn", None),
                   clickhouse_ticks=not getattr(args, "no_clickhouse_ticks", False),
                   redis=getattr(args, "redis", None), feature_ttl_s=ttl_s,
                   metrics_port=getattr(args, "metrics_port", None),
                   metrics_linger_s=getattr(args, "metrics_linger", None) or 0.0)


def sink_args(p: Any) -> None:
    """The run's sink and observability flags (an argparse parser or group)."""
    g = p.add_argument_group("sinks and observability (docs/analysts.md, docs/observability.md)")
    g.add_argument("--sink", choices=SINK_CHOICES, default="auto",
                   help="ClickHouse tables for analysts: auto = on when the clickhouse extra "
                        "is installed, clickhouse = required, none = off (default: auto)")
    g.add_argument("--dsn", metavar="DSN",
                   help="ClickHouse target: chdb://DIR (in-process engine) or "
                        "clickhouse://[USER[:PASSWORD]@]HOST:PORT[/DB] (a server) "
                        "(default: chdb://<out>/clickhouse)")
    g.add_argument("--no-clickhouse-ticks", action="store_true",
                   help="leave the raw md.ticks table empty (bars and everything after are "
                        "still written)")
    g.add_argument("--redis", metavar="URL",
                   help="Redis for the feature store, latest positions and the kill switch, "
                        "e.g. redis://127.0.0.1:6379/0 (default: off)")
    g.add_argument("--feature-ttl", metavar="DURATION", default=None,
                   help="TTL of feature:{symbol}:{timeframe}:{version} keys (default: 1h)")
    g.add_argument("--metrics-port", type=int, metavar="PORT", default=None,
                   help="serve Prometheus metrics on 127.0.0.1:PORT (0: a free port, "
                        "printed) (default: off)")
    g.add_argument("--metrics-linger", type=float, metavar="SECONDS", default=None,
                   help="after the run, keep serving the final metrics until one scrape has "
                        "read them, at most SECONDS (for replays scraped by Prometheus) "
                        "(default: 0, stop with the run)")
