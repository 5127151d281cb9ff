"""Every metric a run exports, named once: type, labels and meaning.

The collector builds its families from these specs, the dashboard and the rules may only name
metrics listed here (a test checks), and docs/observability.md documents each of them.

Naming follows Prometheus' conventions: the ``streamquant_`` prefix, the unit in the name
(``_seconds``, ``_bytes``, ``_usd``, ``_ratio``, ``_bits``), ``_total`` for counters. Labels take
values from closed sets only - topics, operators, reason and reject codes, accounts and symbols
of the run's configuration, model names of the served set - never ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]
Where = Literal["all", "live", "chain"]
"""Where a metric appears: every run, the live path only, or runs with the decision chain."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    where: Where = "all"

    def __post_init__(self) -> None:
        if not self.name.startswith("streamquant_"):
            raise ValueError(f"{self.name}: metrics are named streamquant_*")
        if (self.kind == "counter") != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters, and only counters, end in _total")

    @property
    def samples(self) -> tuple[str, ...]:
        """The series names the exposition carries for this metric."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


def _c(name: str, labels: tuple[str, ...], help_: str, where: Where = "all") -> MetricSpec:
    return MetricSpec(name, "counter", labels, help_, where)


def _g(name: str, labels: tuple[str, ...], help_: str, where: Where = "all") -> MetricSpec:
    return MetricSpec(name, "gauge", labels, help_, where)


def _h(name: str, labels: tuple[str, ...], help_: str, where: Where = "all") -> MetricSpec:
    return MetricSpec(name, "histogram", labels, help_, where)


RUN_INFO = _g("streamquant_run_info", ("mode", "path"),
              "1, labelled with how the run executes: mode replay or live; path batch, event, bars "
              "or live.")
RUN_FINISHED = _g("streamquant_run_finished", (),
                  "1 once the run has ended and the endpoint serves its final values.")
MESSAGES = _c("streamquant_messages_total", ("topic",),
              "Messages the graph emitted on each topic (this process).")
SOURCE_RECORDS = _c("streamquant_source_records_total", (),
                    "Source records fed into the graph (absent on the batched replay, whose "
                    "columnar front end reads them).")
OP_IN = _c("streamquant_operator_events_in_total", ("operator",),
           "Events delivered to each operator (the messages of its input topics).")
OP_OUT = _c("streamquant_operator_events_out_total", ("operator",),
            "Events each operator emitted (the messages of its output topics).")
OP_CALL = _h("streamquant_operator_call_seconds", ("operator", "call"),
             "Wall time of one operator call (call: process = one event, batch = one key's run "
             "of events, timer = one timer), sampled: calls are timed in short windows.")
TICK_TO_ORDER = _h("streamquant_tick_to_order_seconds", (),
                   "Wall time from reading the tick that closed a bar to the emission of the "
                   "first order of a decision on that bar (per account).", "chain")
WATERMARK = _g("streamquant_watermark_seconds", (),
               "The graph's watermark as Unix seconds (event time; the newest event time seen "
               "once the stream has ended).")
WATERMARK_LAG = _g("streamquant_watermark_lag_seconds", (),
                   "Wall-clock now minus the watermark, on the live path while the stream "
                   "runs.", "live")
STREAM_ENDED = _g("streamquant_stream_ended", (),
                  "1 once every source partition has ended and the graph saw the end of "
                  "stream.")
LATE = _c("streamquant_late_ticks_total", (),
          "Valid ticks older than the watermark when they arrived (md.ticks.late).")
DEAD_LETTERS = _c("streamquant_dead_letters_total", ("reason",),
                  "Input records sent to md.ticks.dlq, by reason code.")
ORDERS = _c("streamquant_orders_total", ("account",), "Child orders emitted.", "chain")
FILLS = _c("streamquant_fills_total", ("account",), "Fills.", "chain")
REJECTS = _c("streamquant_risk_rejects_total", ("account",),
             "Pre-trade rejections (risk.rejects records).", "chain")
REJECT_CODES = _c("streamquant_risk_reject_reasons_total", ("code",),
                  "Failed pre-trade rules: one per reason code of each rejection.", "chain")
DECISIONS = _c("streamquant_decisions_total", ("action",),
               "Decisions (audit.decisions) by action (BUY, SELL, HOLD).", "chain")
CONTROLS = _c("streamquant_control_commands_total", ("command",),
              "Control commands applied (KILL, RESET, HALT_SYMBOL, RESUME_SYMBOL).", "chain")
EQUITY = _g("streamquant_account_equity_usd", ("account",),
            "Account equity in the newest positions record.", "chain")
PNL = _g("streamquant_account_pnl_usd", ("account",),
         "Equity minus the account's initial equity (newest positions record).", "chain")
DRAWDOWN = _g("streamquant_account_drawdown_ratio", ("account",),
              "1 - equity / peak equity over the positions records (0 at a new peak).", "chain")
MAX_DRAWDOWN = _g("streamquant_account_max_drawdown_ratio", ("account",),
                  "Largest drawdown ratio seen so far.", "chain")
DAY_PNL = _g("streamquant_account_day_pnl_usd", ("account",),
             "Marked equity minus the session's start-of-day equity (the pre-trade gate's "
             "state at scrape time).", "chain")
DAILY_LOSS = _g("streamquant_account_daily_loss_utilization_ratio", ("account",),
                "Day loss / (daily_loss_limit x start-of-day equity): 1 is the limit, where "
                "the account turns reduce-only (gate state at scrape time).", "chain")
CONCENTRATION = _g("streamquant_position_concentration_ratio", ("account", "symbol"),
                   "|position x last price x multiplier| / equity of each open position (gate "
                   "state at scrape time).", "chain")
CONCENTRATION_LIMIT = _g("streamquant_account_concentration_limit_ratio", ("account",),
                         "The account's max_concentration limit.", "chain")
KILL_SWITCH = _g("streamquant_account_kill_switch", ("account",),
                 "1 while the account's kill switch is tripped (gate state at scrape time).",
                 "chain")
REDUCE_ONLY = _g("streamquant_account_reduce_only", ("account",),
                 "1 while the account may only reduce positions (daily loss limit reached).",
                 "chain")
INFERENCE = _h("streamquant_inference_seconds", (),
               "Wall time of one infer call (every served model on one feature vector, or one "
               "key's batch), sampled like the operator calls.", "chain")
PREDICTIONS = _c("streamquant_predictions_total", ("model", "variant"),
                 "Predictions by served model and A/B arm.", "chain")
REGIME_ENTROPY = _g("streamquant_regime_entropy_bits", ("symbol",),
                    "Entropy of the newest regime posterior, in bits (3 regimes: 0 to "
                    "log2 3 = 1.585).", "chain")
REGIME_PROB = _g("streamquant_regime_probability", ("symbol", "regime"),
                 "The newest regime posterior (regime: bull, bear, sideways).", "chain")
CHECKPOINTS = _c("streamquant_checkpoints_total", (), "Checkpoints written.", "live")
CHECKPOINT_SECONDS = _h("streamquant_checkpoint_seconds", (),
                        "Wall time of one checkpoint (snapshot, transaction commit, file write, "
                        "tap flush).", "live")
CHECKPOINT_BYTES = _g("streamquant_checkpoint_bytes", (), "Size of the newest checkpoint.",
                      "live")
SINK_ROWS = _g("streamquant_sink_buffered_rows", ("sink",),
               "Rows a sink accepted and has not written yet.")
SINK_LAG = _g("streamquant_sink_lag_seconds", ("sink",),
              "Seconds the oldest unwritten row of a sink has waited.")

CATALOG: tuple[MetricSpec, ...] = (
    RUN_INFO, RUN_FINISHED, MESSAGES, SOURCE_RECORDS, OP_IN, OP_OUT, OP_CALL, TICK_TO_ORDER,
    WATERMARK, WATERMARK_LAG, STREAM_ENDED, LATE, DEAD_LETTERS, ORDERS, FILLS, REJECTS,
    REJECT_CODES, DECISIONS, CONTROLS, EQUITY, PNL, DRAWDOWN, MAX_DRAWDOWN, DAY_PNL,
    DAILY_LOSS, CONCENTRATION, CONCENTRATION_LIMIT, KILL_SWITCH, REDUCE_ONLY, INFERENCE,
    PREDICTIONS, REGIME_ENTROPY, REGIME_PROB, CHECKPOINTS, CHECKPOINT_SECONDS,
    CHECKPOINT_BYTES, SINK_ROWS, SINK_LAG,
)
BY_NAME = {m.name: m for m in CATALOG}
SAMPLE_NAMES = frozenset(s for m in CATALOG for s in m.samples)
"""Every series name a scrape may carry (histograms with their suffixes)."""

# Histogram buckets (upper bounds, seconds). Each holds its alert threshold as a bound, so
# histogram_quantile is exact at the budget: 200 ms decision latency, 1 ms inference.
CALL_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
                5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5,
                   1.0, 2.5, 5.0, 10.0)
CHECKPOINT_BUCKETS = (1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                      10.0, 30.0)
