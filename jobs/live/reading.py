"""Reading every partition of one topic with ``assign()``, knowing where each one ends.

The end of a partition is where the consumer reports partition EOF
(``enable.partition.eof``), never the broker's "latest offset" (tansu reports it wrong), and
partitions are assigned, not subscribed: no consumer group to join (tansu holds JoinGroup for
seconds) and no offsets committed, so a tool reading a topic never disturbs the pipeline.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from jobs.live.kafka_client import KafkaSettings, ck

METADATA_TIMEOUT_S = 10.0
READER_GROUP = "streamquant-reader"
"""The group id librdkafka requires; assign-only readers never join it or commit to it."""


class TopicReader:
    """All partitions of ``kafka_topic`` from their beginning; tracks which reached EOF."""

    def __init__(self, settings: KafkaSettings, kafka_topic: str, partitions: int, *,
                 read_committed: bool = True, batch: int = 10_000) -> None:
        self.topic = kafka_topic
        self.partitions = partitions
        self.batch = batch
        self.eof: set[int] = set()
        """Partitions that reached their end at least once."""
        conf = settings.consumer_conf(**{
            "group.id": READER_GROUP,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        })
        self._consumer = ck.Consumer(conf)
        # Learn the partitions' leaders first: assigned before, librdkafka finds no leader and
        # retries the start-offset query on a 500 ms timer (with auto-creation off, asking
        # about this one topic creates nothing).
        self._consumer.list_topics(kafka_topic, timeout=METADATA_TIMEOUT_S)
        self._consumer.assign([ck.TopicPartition(kafka_topic, p, ck.OFFSET_BEGINNING)
                               for p in range(partitions)])

    @property
    def all_eof(self) -> bool:
        return len(self.eof) == self.partitions

    def poll(self, timeout_s: float) -> list[ck.Message[Any, Any]]:
        """The next messages in partition order, partition-EOF events included: pass each
        to :meth:`is_record`, which notes the EOFs in the order they happen."""
        return self._consumer.consume(self.batch, timeout_s)

    def is_record(self, m: ck.Message[Any, Any]) -> bool:
        """True for a record; False for a partition EOF (noted in :attr:`eof`); any other
        error raises ``RuntimeError``."""
        err = m.error()
        if err is None:
            return True
        if err.code() == ck.KafkaError._PARTITION_EOF:
            p = m.partition()
            if p is not None:
                self.eof.add(p)
            return False
        raise RuntimeError(f"reading {self.topic}[{m.partition()}]: {err.str()}")

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def headers_of(m: ck.Message[Any, Any]) -> dict[str, bytes]:
    """A record's headers as a map, like ``wire.header_map`` (the last of a repeated name;
    null values dropped), at C speed: the hot part of reading a topic."""
    raw = m.headers()
    if not raw:
        return {}
    h: dict[str, Any] = dict(raw)  # a consumer's header values are bytes or None
    if None in h.values():
        h = {k: v for k, v in h.items() if v is not None}
    return h
