"""``streamquant produce-ticks``: replay a tick file into ``md.ticks.raw`` as a sequenced source.

Each data row becomes one record (``jobs.live.wire``): value a ``RawTick`` in canonical field
names, key the symbol, ``sq.seq`` numbering every record across all partitions. The values
stay raw (normalize validates them on the pipeline's side) with two exceptions that make the
record self-describing without the file's settings:

- ``ts`` that parses in the file's zone (``--tz``) becomes integer UTC nanoseconds (before
  1973, where an integer would be read as ms by magnitude, an ISO-8601 ``Z`` string with all
  nine fraction digits); a ``ts`` that does not parse is sent as given, so normalize
  dead-letters it with the reason;
- an absent symbol or venue takes the ``--symbol`` / ``--venue`` default.

A row that is not a record at all (wrong number of CSV cells, a JSON line that is not a tick
object) is sent as its raw text, so normalize dead-letters it (``BAD_JSON``/``BAD_SCHEMA``)
with the payload instead of the row silently disappearing.

Placement: the explicit partition of each record is Java's murmur2 partition of its key
(:func:`kafka_partition`), what a Java client and librdkafka's ``murmur2_random`` compute, so
our placement and any other producer's agree; a record without a symbol goes to partition 0.

Heartbeats carry the source's event clock ``T``: the newest ts produced so far among rows whose
ts parsed and that were not implausibly far ahead of ``T`` (normalize's default
``MAX_FORWARD_JUMP_NS``, the check normalize applies); ``T`` never decreases. Before any ts
parsed, ``T`` is ``MIN_WATERMARK`` (no clock yet). A round of heartbeats (one per partition)
goes out every ``heartbeat_every`` data rows, every 5 ms of wall time when paced by ``rate``,
and before the ``end`` marks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec

from jobs.errors import UsageError
from jobs.live import wire
from jobs.live.admin import check_topics, cluster_metadata, partition_counts
from jobs.live.kafka_client import BrokerUnavailable, KafkaSettings, ck
from jobs.live.reading import TopicReader, headers_of
from jobs.progress import Progress, data_lines
from jobs.sources import TickInput, iter_records
from operators.contract import MIN_WATERMARK
from operators.domain.tick_fields import (
    TICK_FIELDS,
    fields_of_cells,
    is_implausible,
    split_csv_line,
)
from operators.domain.timeparse import TimestampError, TimestampParser, format_ns
from operators.normalize import MAX_FORWARD_JUMP_NS
from topics import names as tn
from topics.messages import RawTick

_M32 = 0xFFFFFFFF
_MURMUR_M = 0x5BD1E995
_MURMUR_SEED = 0x9747B28C
_INT_TS_MIN = 10**17  # below this magnitude an epoch integer is read as s/ms/µs, not ns
PACED_HEARTBEAT_S = 0.005
SCAN_IDLE_TIMEOUT_S = 30.0
INTERRUPT_FLUSH_S = 10.0

_TS, _SYMBOL, _PRICE, _SIZE, _VENUE, _TRADE_ID, _BID, _ASK = range(8)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``) as an unsigned
    32-bit integer."""
    length = len(data)
    h = (_MURMUR_SEED ^ length) & _M32
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _MURMUR_M) & _M32
        k ^= k >> 24
        k = (k * _MURMUR_M) & _M32
        h = ((h * _MURMUR_M) & _M32) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _MURMUR_M) & _M32
    h ^= h >> 13
    h = (h * _MURMUR_M) & _M32
    h ^= h >> 15
    return h


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Java's default partitioner (and librdkafka's ``murmur2``) gives a key:
    ``toPositive(murmur2(key)) % partitions``."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class ProduceStats:
    """What one ``produce_ticks`` wrote: data ``records``, ``heartbeats`` (records, one per
    partition per round), the topic's ``partitions``, wall ``seconds``, the ``sq.seq`` range
    used and ``unframed`` rows sent as raw text (not a CSV row / JSON tick object)."""

    records: int
    heartbeats: int
    partitions: int
    seconds: float
    first_seq: int
    last_seq: int
    unframed: int = 0


@dataclass(frozen=True, slots=True)
class SourceState:
    """What a sequenced source topic already holds (read to EOF)."""

    records: int
    last_seq: int | None
    event_time: int  # the newest heartbeat's T (MIN_WATERMARK: none)
    ended: tuple[int, ...]  # partitions carrying an ``end`` record


def scan_source(settings: KafkaSettings, kafka_topic: str, partitions: int) -> SourceState:
    """Read ``kafka_topic`` to EOF: the highest ``sq.seq``, the newest heartbeat, the ends."""
    last: int | None = None
    event_time = MIN_WATERMARK
    ended: set[int] = set()
    n = 0
    hb = msgspec.json.Decoder(wire.Heartbeat)
    with TopicReader(settings, kafka_topic, partitions, read_committed=False) as reader:
        idle_since = time.monotonic()
        while not reader.all_eof:
            batch = reader.poll(0.2)
            if batch:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > SCAN_IDLE_TIMEOUT_S:
                raise BrokerUnavailable(f"reading {kafka_topic} from {settings.bootstrap}: no "
                                        f"progress for {SCAN_IDLE_TIMEOUT_S:g}s")
            for m in batch:
                if not reader.is_record(m):
                    continue
                n += 1
                where = f"{kafka_topic}[{m.partition()}]@{m.offset()}"
                try:
                    seq, kind = wire.source_mark(headers_of(m))
                except wire.HeaderError:
                    continue  # not a sequenced record: the pipeline dead-letters it

                last = seq if last is None else max(last, seq)
                if kind == "end":
                    ended.add(m.partition() or 0)
                elif kind == "heartbeat":
                    try:
                        t = hb.decode(m.value() or b"").event_time
                    except msgspec.DecodeError:
                        raise UsageError(f"{where}: unreadable heartbeat value") from None
                    event_time = max(event_time, t)
    return SourceState(n, last, event_time, tuple(sorted(ended)))


class RowEncoder:
    """One data row of a tick file → (value, key, parsed ts or None, framed?)."""

    def __init__(self, src: TickInput) -> None:
        self.src = src
        self.timestamps = TimestampParser(src.tz)
        self.columns = src.spec.columns
        self.delimiter = src.delimiter
        cols = self.columns or ()
        self._mapped = tuple((fi, cols.index(f)) for fi, f in enumerate(TICK_FIELDS) if f in cols)
        self._ncols = len(cols)
        self._json = msgspec.json.Decoder(RawTick)
        self._encoder = msgspec.json.Encoder()
        self._keys: dict[str, bytes | None] = {}
        self._last: tuple[str, tuple[bytes, bytes | None, int | None, bool]] | None = None

    def encode(self, payload: str) -> tuple[bytes, bytes | None, int | None, bool]:
        last = self._last
        if last is not None and last[0] == payload:  # a tick file repeats whole rows often
            return last[1]
        out = self._encode(payload)
        self._last = (payload, out)
        return out

    def _encode(self, payload: str) -> tuple[bytes, bytes | None, int | None, bool]:
        vals = self._values(payload)
        if vals is None:
            return payload.encode(), None, None, False
        ts: int | None = None
        raw_ts = vals[_TS]
        if raw_ts is not None:
            try:
                ts = self.timestamps.parse(raw_ts)
            except TimestampError:
                pass
            else:
                vals[_TS] = ts if abs(ts) >= _INT_TS_MIN else format_ns(ts)
        sym = vals[_SYMBOL]
        if sym is None:
            sym = vals[_SYMBOL] = self.src.default_symbol
        if vals[_VENUE] is None:
            vals[_VENUE] = self.src.default_venue
        tick = RawTick(ts=vals[_TS], symbol=sym, price=vals[_PRICE], size=vals[_SIZE],
                       venue=vals[_VENUE], trade_id=vals[_TRADE_ID], bid=vals[_BID],
                       ask=vals[_ASK])
        return self._encoder.encode(tick), self._key(sym), ts, True

    def _key(self, sym: str | None) -> bytes | None:
        if sym is None:
            return None
        key = self._keys.get(sym)
        if key is None and sym not in self._keys:
            stripped = sym.strip()  # normalize keys by the trimmed symbol
            key = self._keys[sym] = stripped.encode() if stripped else None
        return key

    def _values(self, payload: str) -> list[Any] | None:
        """The eight raw values (normalize's reading of a CSV line), or None: not a record."""
        if self.columns is None:
            try:
                f = self._json.decode(payload)
            except msgspec.DecodeError:  # ValidationError included
                return None
            return [f.ts, f.symbol, f.price, f.size, f.venue, f.trade_id, f.bid, f.ask]
        try:
            cells = split_csv_line(payload.rstrip("\r\n"), self.delimiter)
        except Exception:  # csv.Error: unparseable quoting
            return None
        if len(cells) != self._ncols:
            return None
        return fields_of_cells(cells, self._mapped)


class _Sender:
    """The producer side: explicit partitions, sequence numbers, heartbeats and ends."""

    def __init__(self, settings: KafkaSettings, kafka_topic: str, partitions: int,
                 first_seq: int, event_time: int) -> None:
        self.topic = kafka_topic
        self.partitions = partitions
        self.seq = first_seq
        self.event_time = event_time
        self.heartbeats = 0
        self.full = 0
        self.failed: list[str] = []
        self._hb = msgspec.json.Encoder()
        self.producer = ck.Producer(settings.producer_conf(**{
            "delivery.report.only.error": True, "on_delivery": self._delivered}))

    def _delivered(self, err: ck.KafkaError | None, msg: ck.Message[Any, Any]) -> None:
        if err is not None:
            self.failed.append(f"{self.topic}[{msg.partition()}]: {err.str()}")

    def send(self, value: bytes, key: bytes | None, partition: int,
             kind: wire.Kind = "data") -> None:
        headers: Any = wire.source_headers(self.seq, kind)
        while True:
            try:
                self.producer.produce(self.topic, value, key, partition=partition,
                                      headers=headers)
                break
            except BufferError:  # the local queue is full: let the broker drain it
                self.full += 1
                self.producer.poll(0.002)  # (only failed deliveries call back: no early wake)
                self.check()
        self.seq += 1

    def heartbeat_round(self) -> None:
        value = self._hb.encode(wire.Heartbeat(event_time=self.event_time))
        for p in range(self.partitions):
            self.send(value, None, p, "heartbeat")
        self.heartbeats += self.partitions

    def end(self) -> None:
        value = self._hb.encode(wire.EndOfPartition())
        for p in range(self.partitions):
            self.send(value, None, p, "end")

    def check(self) -> None:
        if self.failed:
            raise RuntimeError(f"{len(self.failed)} record(s) were not delivered, first: "
                               f"{self.failed[0]}")

    def flush(self) -> None:
        while self.producer.flush(1.0) > 0:
            self.check()
        self.check()


def produce_ticks(settings: KafkaSettings, ticks: TickInput, *, rate: float | None,
                  heartbeat_every: int = 2000, end: bool = True, progress: bool
                  ) -> ProduceStats:
    """Replay ``ticks`` into ``md.ticks.raw``, continuing the numbering already on the topic.

    ``rate``: data records per second (None: as fast as possible). Refuses (``UsageError``)
    a topic that already carries ``end`` marks: its source ended, and a consumer may have
    finished reading it.
    """
    if rate is not None and not rate > 0:
        raise UsageError(f"--rate must be > 0 records/s, got {rate}")
    if heartbeat_every < 1:
        raise UsageError(f"--heartbeat-every must be >= 1, got {heartbeat_every}")
    t0 = time.monotonic()
    kafka_topic = settings.topic(tn.MD_TICKS_RAW)
    check_topics(settings, [tn.MD_TICKS_RAW])
    partitions = partition_counts(cluster_metadata(settings))[kafka_topic]
    state = scan_source(settings, kafka_topic, partitions)
    if state.ended:
        raise UsageError(f"{kafka_topic}: the source already ended; delete and recreate the "
                         "topic to replay again (end marks on partition(s) "
                         f"{', '.join(map(str, state.ended))})")
    first_seq = 0 if state.last_seq is None else state.last_seq + 1
    sender = _Sender(settings, kafka_topic, partitions, first_seq, state.event_time)
    encoder = RowEncoder(ticks)
    total = data_lines(ticks.path, header=ticks.spec.fmt == "csv") if progress else None
    meter = Progress("produce-ticks", total, enabled=progress)
    partition_of: dict[bytes, int] = {}
    jump = MAX_FORWARD_JUMP_NS
    n = unframed = 0
    since_hb = 0
    clock = time.monotonic
    start = last_hb = clock()
    poll = sender.producer.poll
    try:
        for rec in iter_records(ticks):
            value, key, ts, framed = encoder.encode(rec.payload)
            if key is None:
                part = 0
            else:
                part = partition_of.get(key, -1)
                if part < 0:
                    part = partition_of[key] = kafka_partition(key, partitions)
            if rate is not None:
                now = clock()
                while True:  # pace: wait for this record's slot, heartbeating while idle
                    if now - last_hb >= PACED_HEARTBEAT_S:
                        sender.heartbeat_round()
                        last_hb, since_hb = now, 0
                        poll(0)
                    ahead = start + n / rate - now
                    if ahead <= 0.001:
                        break
                    time.sleep(min(ahead, PACED_HEARTBEAT_S))
                    now = clock()
            sender.send(value, key, part)
            n += 1
            if not framed:
                unframed += 1
            if ts is not None and not is_implausible(ts, sender.event_time, jump, MIN_WATERMARK) \
                    and ts > sender.event_time:
                sender.event_time = ts
            since_hb += 1
            if since_hb >= heartbeat_every:
                sender.heartbeat_round()
                since_hb = 0
                last_hb = clock()
            if n % 1000 == 0:
                poll(0)
                sender.check()
                meter.update(n)
    except KeyboardInterrupt:  # deliver what was produced: a rerun continues after it
        sender.producer.flush(INTERRUPT_FLUSH_S)
        raise
    sender.heartbeat_round()
    if end:
        sender.end()
    sender.flush()
    meter.update(n)
    return ProduceStats(records=n, heartbeats=sender.heartbeats, partitions=partitions,
                        seconds=time.monotonic() - t0, first_seq=first_seq,
                        last_seq=sender.seq - 1, unframed=unframed)
