"""What the backtest report reads from a replay, kept as the replay goes.

The report (``jobs.report``) and its page (``jobs.html_report``) are built after the replay
from six topics: orders, fills, risk rejects, positions, the audit records and the online
learner's ``models.updates``. Those are bar-
or trade-rate, never tick-rate, but an audit record carries every feature, model output,
weight, contribution and source reference of its decision: about 4 KB in memory, so 20 million
ticks (~90,000 decisions) would hold 350 MB of them. Each audit record is therefore kept as a
slim copy with only the fields the report and the page read (ids, time, action, quantity,
regime probabilities, the bar's close, whether the cost gate held it back, why it was
skipped); the whole record is in ``audit.decisions.jsonl``. The other topics are kept whole.

It is a tap (``jobs.sinks.tap``) on the topic sink, so the sink keeps no messages itself.
"""

from __future__ import annotations

from typing import Any

import msgspec

from topics import names as tn
from topics.messages import Decision

REPORT_TOPICS = (tn.ORDERS, tn.FILLS, tn.RISK_REJECTS, tn.POSITIONS, tn.AUDIT_DECISIONS,
                 tn.MODELS_UPDATES)

_NONE: dict[str, Any] = {}  # shared by every slim record: the report never mutates it


def slim_decision(d: Decision) -> Decision:
    """``d`` without what the report does not read (the big dicts and the source refs)."""
    close = d.features.get("close")
    gated = d.sizing.get("cost_gated")
    return msgspec.structs.replace(
        d, features=_NONE if close is None else {"close": close},
        sizing=_NONE if gated is None else {"cost_gated": gated},
        strategy_weights=_NONE, model_versions=_NONE, model_outputs=_NONE, risk_checks=_NONE,
        contributions=_NONE, inputs=(), order_ids=())


class ReportInputs:
    """The report's topics as lists per topic (``captured``), audit records slimmed."""

    name = "report"

    def __init__(self) -> None:
        self.topics = frozenset(REPORT_TOPICS)
        self.captured: dict[str, list[msgspec.Struct]] = {t: [] for t in REPORT_TOPICS}

    def accept(self, topic: str, n: int, value: msgspec.Struct, /) -> None:
        if isinstance(value, Decision):
            value = slim_decision(value)
        self.captured[topic].append(value)

    def flush(self) -> None:
        """Nothing to push: the lists are read after the replay."""

    def close(self) -> None:
        """Nothing to release."""

    def stats(self) -> dict[str, Any]:
        return {t: len(v) for t, v in self.captured.items()}
