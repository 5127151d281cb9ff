"""``streamquant tail``: print a topic's messages, as JSON lines or as a readable table.

Every partition is assigned (no consumer group, nothing committed) and read with
``read_committed``. "From the end" means from where each partition reported EOF when the tail
started (tansu's "latest offset" is wrong, so the end is found by reading to it). A message
this code cannot read (no or unknown ``sq.schema``, a value that is not the topic's schema) is
reported on stderr with its coordinates and skipped: a tail never stops on bad data.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Literal, TextIO

import msgspec

from jobs.errors import UsageError
from jobs.live import wire
from jobs.live.admin import check_topics
from jobs.live.kafka_client import BrokerUnavailable, KafkaSettings
from jobs.live.reading import TopicReader, headers_of
from operators.domain.timeparse import format_ns
from topics import names as tn
from topics.catalog import CATALOG
from topics.messages import Fill, Order, RiskReject
from topics.serde import decode

Format = Literal["json", "table"]
IDLE_TIMEOUT_S = 30.0

Column = tuple[str, int, Callable[[Any], object]]
_TIME_FIELDS = frozenset({"ts", "ts_end", "ts_closed", "event_time", "watermark", "bar_ts",
                          "window_start", "window_end"})
_NS_MIN = 10**17  # a smaller integer is not a nanosecond time of this century


def utc_ms(ns: int | None) -> str:
    """An event time as ISO-8601 UTC to the millisecond (``-`` when absent)."""
    if ns is None:
        return "-"
    text = format_ns(ns)  # ...SS.fffffffffZ
    return text[:-7] + "Z"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.10g}"


_TABLES: dict[str, tuple[Column, ...]] = {
    tn.ORDERS: (
        ("time", 24, lambda o: utc_ms(o.ts_event)), ("account", 10, lambda o: o.account),
        ("symbol", 7, lambda o: o.symbol), ("side", 4, lambda o: o.side),
        ("qty", 8, lambda o: _num(o.quantity)), ("type", 6, lambda o: o.order_type),
        ("limit", 10, lambda o: _num(o.limit_price)), ("algo", 9, lambda o: o.algo),
        ("slice", 5, lambda o: o.slice), ("client_order_id", 0, lambda o: o.client_order_id),
    ),
    tn.FILLS: (
        ("time", 24, lambda f: utc_ms(f.ts_event)), ("account", 10, lambda f: f.account),
        ("symbol", 7, lambda f: f.symbol), ("side", 4, lambda f: f.side),
        ("qty", 8, lambda f: _num(f.quantity)), ("price", 10, lambda f: _num(f.price)),
        ("fee", 7, lambda f: _num(f.fee)), ("liq", 5, lambda f: f.liquidity),
        ("fill_id", 0, lambda f: f.fill_id),
    ),
    tn.RISK_REJECTS: (
        ("time", 24, lambda r: utc_ms(r.ts_event)), ("account", 10, lambda r: r.account),
        ("symbol", 7, lambda r: r.symbol), ("side", 4, lambda r: r.side),
        ("requested", 9, lambda r: _num(r.requested_quantity)),
        ("allowed", 8, lambda r: _num(r.allowed_quantity)),
        ("codes", 28, lambda r: ",".join(x.code for x in r.reasons)),
        ("decision_id", 0, lambda r: r.decision_id),
    ),
}
_TABLE_TYPES: dict[str, type] = {tn.ORDERS: Order, tn.FILLS: Fill, tn.RISK_REJECTS: RiskReject}


def _row(cells: list[tuple[str, int]]) -> str:
    return " ".join(text.ljust(width) for text, width in cells).rstrip()


def table_header(topic_name: str) -> str | None:
    cols = _TABLES.get(topic_name)
    if cols is None:
        return None
    return _row([(name, width) for name, width, _ in cols])


def table_line(topic_name: str, value: Any, kind: wire.Kind = "data") -> str:
    """One readable line: the chosen columns of orders, fills and risk rejects; ``time``
    then ``field=value`` pairs for other topics (nested values as JSON)."""
    cols = _TABLES.get(topic_name)
    if cols is not None:
        return _row([(str(get(value)), width) for _, width, get in cols])
    fields = msgspec.structs.asdict(value)
    head = utc_ms(fields.pop("ts_event")) if "ts_event" in fields else ""
    fields.pop("schema_version", None)
    parts = [f"[{kind}]"] if kind != "data" else []
    for k, v in fields.items():
        if v is None or v is msgspec.UNSET:
            continue
        if k in _TIME_FIELDS and type(v) is int and abs(v) >= _NS_MIN:
            text = utc_ms(v)
        else:
            text = v if isinstance(v, str) else msgspec.json.encode(v).decode()
        parts.append(f"{k}={text}")
    return f"{head} {' '.join(parts)}".strip()


class _Decoder:
    """A topic's value decoder; the source topic's marks decode by their ``sq.kind``."""

    def __init__(self, topic_name: str) -> None:
        self.topic_name = topic_name
        self.source = topic_name == tn.MD_TICKS_RAW
        self._hb = msgspec.json.Decoder(wire.Heartbeat)
        self._end = msgspec.json.Decoder(wire.EndOfPartition)

    def __call__(self, headers: dict[str, bytes], value: bytes) -> tuple[Any, wire.Kind]:
        """The decoded value and its kind; raises ``HeaderError`` / ``msgspec.DecodeError``."""
        if not self.source:
            wire.check_schema(headers)
            return decode(self.topic_name, value), "data"
        _, kind = wire.source_mark(headers)
        if kind == "heartbeat":
            return self._hb.decode(value), kind
        if kind == "end":
            return self._end.decode(value), kind
        return decode(self.topic_name, value), kind


def tail(settings: KafkaSettings, topic: str, *, from_beginning: bool, follow: bool,
         fmt: Format, out: TextIO, max_messages: int | None = None,
         err: TextIO | None = None) -> int:
    """Print ``topic``'s messages (catalog name; the prefix is added) to ``out``; return how
    many were printed. Without ``follow`` it stops once every partition reached its end;
    with it, at ``max_messages`` or Ctrl-C."""
    if topic not in CATALOG:
        raise UsageError(f"unknown topic {topic!r}; see 'streamquant topics list'")
    if fmt not in ("json", "table"):
        raise UsageError(f"--format {fmt!r}: json or table")
    if max_messages is not None and max_messages < 1:
        raise UsageError("--max must be >= 1")
    errors = err if err is not None else sys.stderr
    kafka_topic = settings.topic(topic)
    check_topics(settings, [topic])
    partitions = CATALOG[topic].partitions
    dec = _Decoder(topic)
    printed = 0
    header = table_header(topic) if fmt == "table" else None
    try:
        with TopicReader(settings, kafka_topic, partitions, read_committed=True) as reader:
            idle_since = time.monotonic()
            while max_messages is None or printed < max_messages:
                if not follow and reader.all_eof:
                    break
                batch = reader.poll(0.2)
                now = time.monotonic()
                if batch:
                    idle_since = now
                elif not follow and now - idle_since > IDLE_TIMEOUT_S:
                    raise BrokerUnavailable(f"reading {kafka_topic} from {settings.bootstrap}: "
                                            f"no progress for {IDLE_TIMEOUT_S:g}s")
                for m in batch:
                    p = m.partition()
                    if not reader.is_record(m) or (not from_beginning and p not in reader.eof):
                        continue
                    value = m.value() or b""
                    try:
                        obj, kind = dec(headers_of(m), value)
                        if fmt == "json":
                            line = value.decode("utf-8")
                        else:
                            line = table_line(topic, obj, kind)
                    except (wire.HeaderError, msgspec.DecodeError, UnicodeDecodeError) as exc:
                        print(f"tail: skipped {kafka_topic}[{p}]@{m.offset()}: {exc}",
                              file=errors, flush=True)
                        continue
                    if header is not None:
                        out.write(header + "\n")
                        header = None
                    out.write(line + "\n")
                    printed += 1
                    if max_messages is not None and printed >= max_messages:
                        break
                out.flush()
    except KeyboardInterrupt:  # Ctrl-C ends a follow
        out.flush()
    return printed
