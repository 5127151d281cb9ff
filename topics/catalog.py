"""The topic catalog: names, keys, partitioning, retention and the schema of every topic.

Topic names are a public contract (traders subscribe to ``orders``, ``fills`` and
``risk.rejects``); changing one is a breaking change. Topics are frozen config objects so the
runtimes, the deploy manifests and the CLI read one source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from topics import messages as m

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its name, value schema, key and retention policy."""

    name: str
    schema: type[m.Message] | type[m.RawTick]
    key: Literal["symbol", "account", "decision_id", "model_id", "none"]
    partitions: int
    retention_ms: int | None  # None: keep forever
    compacted: bool
    audience: str
    doc: str
    internal: bool = False
    """A repartition of other topics inside the graph: a Kafka host keeps it like any topic,
    the local runner's file sinks do not write it (its content is in the topics it re-keys)."""

    def __post_init__(self) -> None:
        if not self.name or self.name.strip() != self.name:
            raise ValueError(f"bad topic name {self.name!r}")
        if self.partitions < 1:
            raise ValueError(f"{self.name}: partitions must be >= 1")
        if self.retention_ms is not None and self.retention_ms <= 0:
            raise ValueError(f"{self.name}: retention_ms must be positive or None")

    @property
    def cleanup_policy(self) -> str:
        return "compact" if self.compacted else "delete"


_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec("md.ticks.raw", m.RawTick, "symbol", 8, 3 * DAY_MS, False, "venues",
              "Raw venue ticks as received; normalize is the only consumer."),
    TopicSpec("md.ticks", m.Tick, "symbol", 8, 7 * DAY_MS, False, "pipeline",
              "Validated, deduplicated trades in canonical units and UTC ns."),
    TopicSpec("md.ticks.dlq", m.DeadLetter, "none", 1, 30 * DAY_MS, False, "data engineers",
              "Rejected input with a reason code, the raw payload and its source."),
    TopicSpec("md.ticks.late", m.LateTick, "symbol", 1, 30 * DAY_MS, False, "data engineers",
              "Valid ticks that arrived behind the watermark (not folded into bars)."),
    TopicSpec("md.bars", m.Bar, "symbol", 8, 90 * DAY_MS, False, "analysts",
              "Event-time tumbling OHLCV bars with VWAP and trade count."),
    TopicSpec("features", m.FeatureVector, "symbol", 8, 30 * DAY_MS, False, "pipeline",
              "Versioned per-bar feature vectors (TA-Lib semantics)."),
    TopicSpec("predictions", m.Prediction, "symbol", 8, 30 * DAY_MS, False, "analysts",
              "Per-model outputs with model version and A/B arm."),
    TopicSpec("regimes", m.Regime, "symbol", 8, 90 * DAY_MS, False, "analysts",
              "Filtered regime posterior and entropy per bar."),
    TopicSpec("signals", m.Signal, "symbol", 8, 30 * DAY_MS, False, "pipeline",
              "Blended signal, confidence and specialist weights."),
    TopicSpec("orders.intents", m.OrderIntent, "account", 8, 30 * DAY_MS, False, "pipeline",
              "Sized parent orders awaiting the pre-trade check."),
    TopicSpec("orders", m.Order, "account", 8, None, False, "traders",
              "Approved child orders with deterministic client order ids."),
    TopicSpec("risk.rejects", m.RiskReject, "account", 8, None, False, "traders",
              "Denied orders with every failing rule and the allowed quantity."),
    TopicSpec("fills", m.Fill, "account", 8, None, False, "traders",
              "Executions of child orders."),
    TopicSpec("positions", m.Position, "account", 8, None, True, "traders",
              "Latest position and PnL per account and symbol (compacted)."),
    TopicSpec("audit.decisions", m.Decision, "decision_id", 8, None, False, "analysts",
              "One record per decision explaining every input and check."),
    TopicSpec("models.updates", m.ModelUpdate, "model_id", 1, None, False, "analysts",
              "Online-learning updates, drift alarms and rollbacks."),
    TopicSpec("control", m.Control, "account", 1, None, False, "operators",
              "Kill switch and halts; read by the pre-trade check."),
    TopicSpec("account.feed", m.AccountFeed, "account", 8, DAY_MS, False, "pipeline",
              "Trades and commands re-keyed by account: one copy per account trading the "
              "symbol (or named by the command).", internal=True),
    TopicSpec("venue.reports", m.VenueReport, "account", 8, None, False, "venues",
              "Execution reports of a live venue (acks, fills, expiries) for the account."),
    TopicSpec("orders.cancels", m.OrderCancel, "account", 8, None, False, "venues",
              "Cancels of working child orders sent to a live venue."),
    TopicSpec("control.applied", m.Control, "account", 1, None, False, "operators",
              "Each control command as the live pipeline applied it, ts_event stamped with the "
              "data watermark it took effect at (replayable with run --control)."),
)

CATALOG: dict[str, TopicSpec] = {spec.name: spec for spec in _SPECS}


def topic(name: str) -> TopicSpec:
    """Look a topic up by name, with a clear error listing the known names."""
    try:
        return CATALOG[name]
    except KeyError:
        known = ", ".join(CATALOG)
        raise KeyError(f"unknown topic {name!r}; known topics: {known}") from None
