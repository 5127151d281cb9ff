"""Redis key names and value formats: the contract strategies and risk tools read (docs/redis.md).

Values are JSON (msgspec Structs, fields in declaration order) so any language reads them
with one ``GET`` and its JSON parser; timestamps are integer nanoseconds since the Unix epoch
(UTC) like every topic, plus an ISO-8601 text where a human reads it.

Feature store (the seed's pattern): ``feature:{symbol}:{timeframe}:{feature_version}``
→ :class:`FeatureEntry`, with a TTL. Positions: ``position:{account}:{symbol}`` → the
``positions`` topic's message as is; ``account:{account}`` → :class:`AccountTotals`. Kill
switch: ``killswitch:{account}`` and ``killswitch:{account}:{symbol}`` → a hash
(:class:`SwitchState`'s fields), with a counter, an epoch, an index and a channel beside.
"""

from __future__ import annotations

from typing import Literal

import msgspec

FEATURE_PREFIX = "feature:"
POSITION_PREFIX = "position:"
ACCOUNT_PREFIX = "account:"
SWITCH_PREFIX = "killswitch:"
SWITCH_VERSION = "killswitch.version"
"""Counter: every switch change takes the next value (its ``version``)."""
SWITCH_EPOCH = "killswitch.epoch"
"""Random id set with the first switch: a new value means the dataset was lost (a restart
without persistence) and versions started over."""
SWITCH_INDEX = "killswitch.index"
"""Set of every switch key ever set (watchers read these, never ``KEYS``/``SCAN``)."""
SWITCH_CHANNEL = "killswitch.changes"
"""Pub/sub channel: ``<key> <version>`` for each change, for prompt notice."""


def feature_key(symbol: str, timeframe: str, feature_version: str) -> str:
    return f"{FEATURE_PREFIX}{symbol}:{timeframe}:{feature_version}"


def position_key(account: str, symbol: str) -> str:
    return f"{POSITION_PREFIX}{account}:{symbol}"


def account_key(account: str) -> str:
    return f"{ACCOUNT_PREFIX}{account}"


def switch_key(account: str, symbol: str | None = None) -> str:
    """One switch per account (``*``: every account) and one per account and symbol."""
    return f"{SWITCH_PREFIX}{account}" if symbol is None else f"{SWITCH_PREFIX}{account}:{symbol}"


class FeatureEntry(msgspec.Struct, frozen=True, kw_only=True):
    """The latest feature vector of one symbol, timeframe and feature version."""

    symbol: str
    timeframe: str
    feature_version: str
    ts_event: int
    """The bar's start (event time, ns)."""
    ts_closed: int
    """When the bar was known complete (the newest event time seen as it closed, ns): how
    fresh the vector is in the stream's time."""
    timestamp: str
    """``ts_event`` as ISO-8601 UTC text."""
    close: float
    features: dict[str, float | None]
    """Name → value in ``FeatureVector.NAMES`` order; ``null`` while an indicator warms up."""
    ttl_s: int
    """The key's TTL when written (seconds of wall time)."""


class AccountTotals(msgspec.Struct, frozen=True, kw_only=True):
    """One account's totals over the latest position of each of its symbols."""

    account: str
    ts_event: int
    """The newest position update's event time."""
    equity: float
    """The account's equity in the newest update."""
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    net_pnl: float
    """``realized_pnl + unrealized_pnl - fees``."""
    positions: dict[str, float]
    """Symbol → quantity (signed), symbols in name order."""


SwitchValue = Literal["on", "off"]


class SwitchState(msgspec.Struct, frozen=True, kw_only=True):
    """A kill switch as stored (the hash's fields) with its key."""

    key: str
    state: SwitchValue
    account: str
    symbol: str | None
    reason: str
    ts: int
    """The operator's wall clock when set (ns)."""
    time: str
    """``ts`` as ISO-8601 UTC text."""
    version: int
    """The change's number from ``killswitch.version``: increases with every change."""
    sent_to: str | None = None
    """The Kafka topic the command was also produced to by the CLI (a watcher forwarding to
    that topic skips it: no duplicate)."""
