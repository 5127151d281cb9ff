"""The record format on Kafka: what each header means and how source marks are encoded.

Every record a streamquant component produces carries

- ``sq.schema``: the value's schema version (ASCII decimal). A consumer reads only versions it
  knows; another version is refused with a reason (dead letter), never guessed.
- ``sq.id`` (outputs of the graph): the message's deterministic id, ``<topic>:<position>``
  where position counts the messages the graph emitted on that topic. A replay after a crash
  re-emits a message with the same id and the same bytes, so a consumer drops duplicates by it.

Records on the source topic ``md.ticks.raw`` are *sequenced*: one feed handler (``streamquant
produce-ticks``, or any producer following this format) numbers everything it writes with
``sq.seq``, increasing across all partitions. The host merges the partitions back into that
order, so the graph sees the records in the order the source produced them whatever order the
broker delivers them in (``jobs.core.sequenced``). Besides data records (``sq.kind`` absent or
``data``; the value is a ``RawTick``) the source writes two marks to *every* partition:

- ``heartbeat``: value ``{"event_time": T}``: the source's event clock reached ``T`` (the newest
  plausible event time it has produced, in UTC ns); later records on the partition are at
  ``T - lateness`` or later. It advances an idle partition's watermark and lets the merge move
  on past a partition that has nothing to say.
- ``end``: value ``{}``: the partition will carry nothing more (end of a replayed file); its
  watermark is the end of stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

SCHEMA = "sq.schema"
ID = "sq.id"
SEQ = "sq.seq"
KIND = "sq.kind"

SCHEMA_VERSION = 1
"""The version of every topic's value schema this code reads and writes."""
SCHEMA_VERSION_BYTES = str(SCHEMA_VERSION).encode()

Kind = Literal["data", "heartbeat", "end"]


class Heartbeat(msgspec.Struct, frozen=True):
    """A ``heartbeat`` record's value: the source's event clock in UTC ns."""

    event_time: int


class EndOfPartition(msgspec.Struct, frozen=True):
    """An ``end`` record's value (empty: the header says it all)."""


Headers = list[tuple[str, str | bytes | None]]
"""Kafka record headers as confluent-kafka takes them."""


def source_headers(seq: int, kind: Kind = "data") -> Headers:
    """Headers of a record on the source topic."""
    h: Headers = [(SCHEMA, SCHEMA_VERSION_BYTES), (SEQ, str(seq).encode())]
    if kind != "data":
        h.append((KIND, kind.encode()))
    return h


def output_headers(msg_id: str) -> Headers:
    """Headers of a message the graph produced."""
    return [(SCHEMA, SCHEMA_VERSION_BYTES), (ID, msg_id.encode())]


class HeaderError(ValueError):
    """A record whose headers this code cannot read (missing or malformed)."""


class UnknownSchemaError(HeaderError):
    """A record of a schema version this code does not read: refused, never guessed."""


def header_map(headers: list[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    return {k: v for k, v in (headers or ()) if v is not None}


def check_schema(h: Mapping[str, bytes | None]) -> None:
    """Refuse a record without a readable ``sq.schema`` of the version this code knows."""
    raw = h.get(SCHEMA)
    if raw is None:
        raise HeaderError(f"no {SCHEMA} header (not written by a streamquant producer?)")
    if raw != SCHEMA_VERSION_BYTES:
        raise UnknownSchemaError(f"unknown schema version {raw.decode(errors='replace')!r}; this "
                          f"code reads version {SCHEMA_VERSION}")


def source_mark(h: Mapping[str, bytes | None]) -> tuple[int, Kind]:
    """``(seq, kind)`` of a source record; raises :class:`HeaderError` when unreadable."""
    check_schema(h)
    raw = h.get(SEQ)
    if raw is None:
        raise HeaderError(f"no {SEQ} header: the source topic takes sequenced records only "
                          "(docs/live.md, 'Writing ticks')")
    try:
        seq = int(raw)
    except ValueError:
        raise HeaderError(f"{SEQ} {raw!r} is not an integer") from None
    kind = h.get(KIND) or b"data"
    if kind not in (b"data", b"heartbeat", b"end"):
        raise HeaderError(f"unknown {KIND} {kind!r}")
    return seq, kind.decode()  # type: ignore[return-value]
