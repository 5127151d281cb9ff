"""A tap: a consumer of some of the graph's output topics, beside the topic files or Kafka.

The output (``TopicSink`` in a replay, ``KafkaOutput`` live) hands each message of a tapped
topic to every tap that asked for it, with its position ``n`` on the topic: the n-th message
the graph emitted there, the same number the message id ``<topic>:<n>`` is made of. Positions
are restored with a checkpoint, so a re-emitted duplicate reaches a tap with its first copy's
position, which is what makes idempotent sinks possible.

A tap never raises into the pipeline for its own trouble (a database or cache that is down):
it buffers, retries, counts and reports. Trading never depends on a tap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec


class Tap(Protocol):
    """One sink fed from the output."""

    name: str
    """Short name for logs and the summary (``clickhouse``, ``redis``, ``metrics``)."""

    topics: frozenset[str]
    """The topics it receives."""

    def accept(self, topic: str, n: int, value: msgspec.Struct, /) -> None:
        """The n-th message on ``topic``. Must be cheap: buffer, do not block."""

    def flush(self) -> None:
        """Push what is buffered (a checkpoint, the end of a run); may block briefly."""

    def close(self) -> None:
        """Flush and release; after it the tap accepts nothing."""

    def stats(self) -> dict[str, Any]:
        """What the summary reports for this tap (rows written, retries, errors)."""


def routes(taps: Sequence[Tap]) -> dict[str, tuple[Tap, ...]]:
    """Topic → the taps that receive it, in the order given."""
    out: dict[str, list[Tap]] = {}
    for tap in taps:
        for t in tap.topics:
            out.setdefault(t, []).append(tap)
    return {t: tuple(v) for t, v in out.items()}
