"""The graph's output as Kafka records: every message a JSON value, keyed by the catalog.

Each record carries ``sq.schema`` and ``sq.id``, the message's deterministic id: ``<topic>:<n>``
for the n-th message the graph emitted on the topic (a restart from a checkpoint restores the
counts, so a re-emitted message has its first copy's id and bytes), and for a dead letter its
source coordinate (it is emitted when a record is read, which is not in the graph's order).
Values are exactly the topic files' lines (``topics.serde``). Partitioning is the client's
keyed partitioner (murmur2, as Java clients and Flink place keys).

Internal topics (re-keyed copies inside the graph) and the ``control`` input are not written.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from jobs.live import wire
from jobs.sinks.tap import Tap, routes
from topics import names as tn
from topics.catalog import CATALOG
from topics.dlq import DLQ_TOPIC

Produce = Callable[..., None]


def _key_getter(key: str) -> Callable[[Any], bytes | None]:
    if key == "none":
        return lambda v: None

    def get(v: Any) -> bytes | None:
        k = getattr(v, key, None)
        return k.encode() if isinstance(k, str) else None
    return get


class KafkaOutput:
    """Counts, ids and produces the graph's messages through ``produce`` (a producer's)."""

    def __init__(self, produce: Produce, kafka_topic: Callable[[str], str],
                 topics: Iterable[str], taps: Sequence[Tap] = ()) -> None:
        self._produce = produce
        self.taps = tuple(taps)
        self._taps = routes(self.taps)
        self._enc = msgspec.json.Encoder()
        self.counts: defaultdict[str, int] = defaultdict(int)
        """Messages emitted per topic (also those not written): the output positions."""
        self.dlq_reasons: Counter[str] = Counter()
        self.written: defaultdict[str, int] = defaultdict(int)
        """Records produced per topic by this process."""
        self.restored: dict[str, int] = {}
        """The positions a checkpoint restored (``counts - restored``: this process's)."""
        self._routes: dict[str, tuple[str, Callable[[Any], bytes | None], bytes]] = {}
        for t in topics:
            spec = CATALOG[t]
            if spec.internal or t == tn.CONTROL:
                continue
            self._routes[t] = (kafka_topic(t), _key_getter(spec.key), f"{t}:".encode())

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._routes)

    def restore(self, positions: dict[str, int]) -> None:
        self.counts.clear()
        self.counts.update(positions)
        self.restored = dict(positions)

    def emit(self, topic: str, value: msgspec.Struct) -> None:
        counts = self.counts
        n = counts[topic]
        counts[topic] = n + 1
        taps = self._taps.get(topic)
        if taps is not None:
            for tap in taps:
                tap.accept(topic, n, value)
        route = self._routes.get(topic)
        if route is None:
            return
        kafka_topic, key, prefix = route
        if topic == DLQ_TOPIC:
            self.dlq_reasons[value.reason] += 1  # type: ignore[attr-defined]
            msg_id = f"{topic}:{value.source.describe()}".encode()  # type: ignore[attr-defined]
        else:
            msg_id = prefix + str(n).encode()
        self._produce(kafka_topic, self._enc.encode(value), key(value),
                      [(wire.SCHEMA, wire.SCHEMA_VERSION_BYTES), (wire.ID, msg_id)])
        self.written[topic] += 1
