"""Topic names, spelled once: code names a topic by these constants, never by a string.

The catalog (``topics/catalog.py``) describes each of them; a test keeps the two equal.
"""

from __future__ import annotations

from typing import Final

ACCOUNT_FEED: Final = "account.feed"
AUDIT_DECISIONS: Final = "audit.decisions"
CONTROL: Final = "control"
CONTROL_APPLIED: Final = "control.applied"
FEATURES: Final = "features"
FILLS: Final = "fills"
MD_BARS: Final = "md.bars"
MD_TICKS: Final = "md.ticks"
MD_TICKS_DLQ: Final = "md.ticks.dlq"
MD_TICKS_LATE: Final = "md.ticks.late"
MD_TICKS_RAW: Final = "md.ticks.raw"
MODELS_UPDATES: Final = "models.updates"
ORDERS: Final = "orders"
ORDERS_CANCELS: Final = "orders.cancels"
ORDERS_INTENTS: Final = "orders.intents"
POSITIONS: Final = "positions"
PREDICTIONS: Final = "predictions"
REGIMES: Final = "regimes"
RISK_REJECTS: Final = "risk.rejects"
SIGNALS: Final = "signals"
VENUE_REPORTS: Final = "venue.reports"
