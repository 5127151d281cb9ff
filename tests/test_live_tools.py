"""The Kafka user tools against a real tansu broker: topics, produce-ticks, tail, kill-switch.

Every test has its own topic prefix on the session broker (``tests/_kafka.py``).
"""

from __future__ import annotations

import io
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from jobs.errors import UsageError
from jobs.live import wire
from jobs.live.admin import check_topics, create_topics, delete_topics
from jobs.live.broker import Broker
from jobs.live.kafka_client import KafkaSettings, TopicsMissingError, ck, ck_admin
from jobs.live.kill_switch import kill_switch
from jobs.live.produce_ticks import kafka_partition, murmur2, produce_ticks
from jobs.live.reading import TopicReader, headers_of
from jobs.live.tail import tail
from jobs.options import ReplayOptions
from jobs.sources import TickInput, resolve_ticks
from operators.contract import MIN_WATERMARK
from operators.domain.timeparse import TimestampParser
from operators.normalize import Normalize, NormalizeConfig, RawRecord
from tests._emini_slice import write_slice
from tests._kafka import create_catalog_topics
from topics import names as tn
from topics.catalog import CATALOG
from topics.messages import Control, DeadLetter, Order, RawTick, SourceRef, Tick
from topics.serde import encode

TZ = "America/Chicago"


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp: tuple[int, int]


def read_all(settings: KafkaSettings, name: str) -> list[Rec]:
    """Every record of a catalog topic, partition by partition, in offset order."""
    out: list[Rec] = []
    with TopicReader(settings, settings.topic(name), CATALOG[name].partitions) as r:
        deadline = time.monotonic() + 30
        while not r.all_eof and time.monotonic() < deadline:
            for m in r.poll(0.1):
                if r.is_record(m):
                    out.append(Rec(m.partition() or 0, m.offset() or 0, m.key(),
                                   m.value() or b"", headers_of(m), m.timestamp()))
    assert r.all_eof
    return sorted(out, key=lambda x: (x.partition, x.offset))


def tick_input(path: Path, tz: str | None = TZ) -> TickInput:
    return resolve_ticks(ReplayOptions(out=path.parent, ticks=path, tz=tz, quiet=True))


# --------------------------------------------------------------------------- topics


def test_topics_create_is_idempotent_with_catalog_partitions(
        kafka_settings: KafkaSettings) -> None:
    assert sorted(create_catalog_topics(kafka_settings)) == sorted(CATALOG)
    assert create_topics(kafka_settings) == []
    md = ck_admin.AdminClient(kafka_settings.admin_conf()).list_topics(timeout=5)
    for name, spec in CATALOG.items():
        assert len(md.topics[kafka_settings.topic(name)].partitions) == spec.partitions
    check_topics(kafka_settings, list(CATALOG))


def test_a_topic_auto_created_with_another_partition_count_is_an_error(
        kafka_settings: KafkaSettings) -> None:
    # What tansu does when any client asks about an unknown topic: 4 partitions.
    admin = ck_admin.AdminClient({"bootstrap.servers": kafka_settings.bootstrap})
    admin.list_topics(topic=kafka_settings.topic(tn.ORDERS), timeout=5)
    with pytest.raises(TopicsMissingError, match=r"orders has 4 partitions, the catalog says 8"):
        create_topics(kafka_settings, [tn.ORDERS, tn.FILLS])
    with pytest.raises(TopicsMissingError, match="orders has 4 partitions"):
        check_topics(kafka_settings, [tn.ORDERS])
    assert delete_topics(kafka_settings, [tn.ORDERS, tn.FILLS]) == [tn.ORDERS]
    assert create_topics(kafka_settings, [tn.ORDERS]) == [tn.ORDERS]
    check_topics(kafka_settings, [tn.ORDERS])


def test_check_topics_names_missing_topics_and_how_to_create_them(
        kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, [tn.FILLS])
    with pytest.raises(TopicsMissingError) as e:
        check_topics(kafka_settings, [tn.FILLS, tn.ORDERS, tn.CONTROL])
    msg = str(e.value)
    assert f"{kafka_settings.topic(tn.ORDERS)} is missing" in msg
    assert f"{kafka_settings.topic(tn.CONTROL)} is missing" in msg
    assert kafka_settings.topic(tn.FILLS) + " " not in msg
    assert f"streamquant topics create --bootstrap {kafka_settings.bootstrap}" in msg
    assert "--topic-prefix" in msg


# --------------------------------------------------------------------------- partitioning


def test_murmur2_matches_kafkas_reference_test_vectors() -> None:
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2 (signed 32-bit results)
    cases = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
             b"a-little-bit-longer-string": -1486304829,
             b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
             b"abc": 479470107}
    for key, expected in cases.items():
        assert murmur2(key) == expected & 0xFFFFFFFF


def test_kafka_partition_equals_librdkafkas_murmur2_for_random_keys() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        key = rng.randbytes(rng.randrange(0, 40))
        n = rng.choice((1, 3, 8, 12, 100))
        assert kafka_partition(key, n) == ck.murmur2(key, n)


def test_kafka_partition_is_where_the_murmur2_random_partitioner_puts_a_key(
        kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, [tn.ORDERS])
    rng = random.Random(11)
    keys = {rng.randbytes(rng.randrange(1, 24)) for _ in range(200)}
    keys |= {b"ES", b"NQ", b"account-1", b"\xff\xfe"}
    producer = ck.Producer(kafka_settings.producer_conf())  # partitioner: murmur2_random
    for k in keys:
        producer.produce(kafka_settings.topic(tn.ORDERS), b"x", k)  # no explicit partition
    assert producer.flush(15) == 0
    placed = {r.key: r.partition for r in read_all(kafka_settings, tn.ORDERS)}
    assert placed.keys() == keys
    assert all(placed[k] == kafka_partition(k, 8) for k in keys)
    assert len(set(placed.values())) == 8


# --------------------------------------------------------------------------- produce-ticks


BAD_ROWS = [
    "not-a-time,ES,1640.25,1",  # BAD_TIMESTAMP: sent as given
    "2013-09-01 17:00:01.000,ES,1640.25",  # 3 cells: not a row, sent as raw text
    "2200-01-01 00:00:00.000,ES,1640.25,1",  # implausible: never moves the heartbeat clock
    "2013-09-01 17:00:02.000, ,1640.25,1",  # blank symbol: EMPTY_SYMBOL, key None
    "2013-09-01 17:00:02.500,ES,abc,1",  # BAD_PRICE
]


@pytest.fixture(scope="module")
def tick_file(tmp_path_factory: pytest.TempPathFactory, emini_ticks_path: Path) -> Path:
    """4,000 real E-mini trades with a few broken rows among them."""
    path = write_slice(emini_ticks_path, tmp_path_factory.mktemp("ticks") / "es.csv", 4000)
    lines = path.read_text().splitlines()
    for i, row in enumerate(BAD_ROWS):
        lines.insert(50 + 300 * i, row)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_produce_ticks_writes_a_sequenced_source(kafka_settings: KafkaSettings,
                                                 tick_file: Path) -> None:
    create_topics(kafka_settings, [tn.MD_TICKS_RAW])
    before_ms = time.time_ns() // 1_000_000
    stats = produce_ticks(kafka_settings, tick_input(tick_file), rate=None,
                          heartbeat_every=500, progress=False)
    after_ms = time.time_ns() // 1_000_000 + 1
    rows = tick_file.read_text().splitlines()[1:]
    assert stats.records == len(rows) == 4000 + len(BAD_ROWS)
    assert stats.partitions == 8 and stats.unframed == 1 and stats.first_seq == 0
    recs = read_all(kafka_settings, tn.MD_TICKS_RAW)
    marks = [(r, *wire.source_mark(r.headers)) for r in recs]
    assert stats.last_seq == len(recs) - 1
    assert stats.heartbeats == sum(k == "heartbeat" for _, _, k in marks)

    # seqs: unique across partitions (0..last), increasing within each partition
    assert sorted(s for _, s, _ in marks) == list(range(len(recs)))
    es = kafka_partition(b"ES", 8)
    for p in range(8):
        mine = [(s, k) for r, s, k in marks if r.partition == p]
        assert [s for s, _ in mine] == sorted(s for s, _ in mine)
        assert sum(k == "heartbeat" for _, k in mine) >= 4000 // 500
        assert [k for _, k in mine].count("end") == 1 and mine[-1][1] == "end"
        assert all(k != "data" for _, k in mine) or p in (es, 0)  # keyless rows go to 0

    # data: ES rows on ES's murmur2 partition, in file order, with the producer's wall clock
    data = sorted(((s, r) for r, s, k in marks if k == "data"), key=lambda x: x[0])
    assert len(data) == len(rows)
    for _, r in data:
        assert r.timestamp[0] == ck.TIMESTAMP_CREATE_TIME
        assert before_ms <= r.timestamp[1] <= after_ms
        assert r.partition == (es if r.key == b"ES" else 0)
    assert sum(r.key is None for _, r in data) == 2  # blank symbol, the unframed row

    # heartbeats: T never decreases and covers every plausible ts produced before it
    decode = msgspec.json.Decoder(RawTick).decode
    parser = TimestampParser(TZ)
    newest = MIN_WATERMARK
    last_t = MIN_WATERMARK
    for r, _, kind in sorted(marks, key=lambda x: x[1]):
        if kind == "heartbeat":
            t = msgspec.json.decode(r.value, type=wire.Heartbeat).event_time
            assert last_t <= t and newest <= t < parser.parse("2100-01-01 00:00:00")
            last_t = t
        elif kind == "data" and r.key == b"ES":
            ts = decode(r.value).ts
            if isinstance(ts, int) and ts < parser.parse("2100-01-01 00:00:00"):
                newest = max(newest, ts)
    assert last_t == newest


def test_produced_values_normalize_like_the_file_rows(kafka_settings: KafkaSettings,
                                                      tick_file: Path) -> None:
    """Normalize reading the topic (JSON, UTC) and normalize reading the file (CSV, --tz)
    agree row for row: the same ticks, the same dead-letter reasons."""
    create_topics(kafka_settings, [tn.MD_TICKS_RAW])
    src = tick_input(tick_file)
    produce_ticks(kafka_settings, src, rate=None, progress=False)
    recs = [(s, r) for r in read_all(kafka_settings, tn.MD_TICKS_RAW)
            for s, k in [wire.source_mark(r.headers)] if k == "data"]
    values = [r.value.decode() for _, r in sorted(recs, key=lambda x: x[0])]
    rows = tick_file.read_text().splitlines()[1:]
    file_norm = Normalize(NormalizeConfig(tz=TZ, csv_columns=src.spec.columns,
                                          default_venue=src.default_venue))
    topic_norm = Normalize(NormalizeConfig())
    where = SourceRef(topic="t", partition=0, offset=0)
    reasons = []
    for row, value in zip(rows, values, strict=True):
        a = file_norm.check(RawRecord(payload=row, source=where))
        b = topic_norm.check(RawRecord(payload=value, source=where))
        if isinstance(a, Tick):
            assert isinstance(b, Tick) and a == b
        else:
            assert isinstance(a, DeadLetter) and isinstance(b, DeadLetter)
            reasons.append((a.reason, b.reason))
            if a.reason == "BAD_CSV":  # not a row: the raw text is the dead letter's payload
                assert b.payload == row
    # a row that is not a row reaches the topic as raw text: JSON-decoding it fails
    assert reasons == [("BAD_TIMESTAMP", "BAD_TIMESTAMP"), ("BAD_CSV", "BAD_SCHEMA"),
                       ("EMPTY_SYMBOL", "EMPTY_SYMBOL"), ("BAD_PRICE", "BAD_PRICE")]


def test_appending_continues_the_sequence_and_an_ended_source_is_refused(
        kafka_settings: KafkaSettings, tmp_path: Path, emini_ticks_path: Path) -> None:
    create_topics(kafka_settings, [tn.MD_TICKS_RAW])
    src = tick_input(write_slice(emini_ticks_path, tmp_path / "a.csv", 300))
    first = produce_ticks(kafka_settings, src, rate=None, end=False, progress=False)
    second = produce_ticks(kafka_settings, src, rate=None, progress=False)
    assert second.first_seq == first.last_seq + 1
    seqs = [wire.source_mark(r.headers)[0] for r in read_all(kafka_settings, tn.MD_TICKS_RAW)]
    assert sorted(seqs) == list(range(second.last_seq + 1))
    with pytest.raises(UsageError, match="the source already ended; delete and recreate"):
        produce_ticks(kafka_settings, src, rate=None, progress=False)


def test_paced_produce_heartbeats_every_partition_while_waiting(
        kafka_settings: KafkaSettings, tmp_path: Path, emini_ticks_path: Path) -> None:
    create_topics(kafka_settings, [tn.MD_TICKS_RAW])
    src = tick_input(write_slice(emini_ticks_path, tmp_path / "a.csv", 60))
    t0 = time.monotonic()
    stats = produce_ticks(kafka_settings, src, rate=150.0, progress=False)
    took = time.monotonic() - t0
    assert took >= 59 / 150
    rounds = stats.heartbeats // stats.partitions
    assert rounds >= 0.7 * (59 / 150) / 0.05  # every 50 ms of waiting, not every 2000 rows
    ends = [r for r in read_all(kafka_settings, tn.MD_TICKS_RAW)
            if r.headers.get(wire.KIND) == b"end"]
    assert sorted(r.partition for r in ends) == list(range(8))


def test_produce_ticks_needs_the_topic(kafka_settings: KafkaSettings, tick_file: Path) -> None:
    with pytest.raises(TopicsMissingError, match=r"md\.ticks\.raw is missing"):
        produce_ticks(kafka_settings, tick_input(tick_file), rate=None, progress=False)


# --------------------------------------------------------------------------- tail


def _order(i: int, account: str = "acct-1") -> Order:
    return Order(ts_event=1_378_072_800_000_000_000 + i * 1_000_000_000,
                 client_order_id=f"co-{i}", parent_order_id=f"po-{i}", decision_id=f"d-{i}",
                 account=account, symbol="ES", side="BUY" if i % 2 else "SELL",
                 quantity=float(i + 1), order_type="LIMIT", limit_price=1640.25 + i,
                 time_in_force="DAY", algo="TWAP", slice="1/2", venue="SIM")


def _produce_orders(settings: KafkaSettings, orders: list[Order]) -> list[bytes]:
    producer = ck.Producer(settings.producer_conf())
    values = []
    for i, o in enumerate(orders):
        v = encode(o)
        producer.produce(settings.topic(tn.ORDERS), v, o.account.encode(),
                         headers=wire.output_headers(f"orders:{i}"))  # type: ignore[arg-type]
        values.append(v)
    assert producer.flush(15) == 0
    return values


def test_tail_prints_values_exactly_and_skips_unreadable_ones(
        kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, [tn.ORDERS])
    values = _produce_orders(kafka_settings, [_order(i, f"acct-{i % 3}") for i in range(6)])
    producer = ck.Producer(kafka_settings.producer_conf())
    topic = kafka_settings.topic(tn.ORDERS)
    producer.produce(topic, b"not json", b"acct-0",
                     headers=[(wire.SCHEMA, wire.SCHEMA_VERSION_BYTES)])
    producer.produce(topic, values[0], b"acct-0", headers=[(wire.SCHEMA, b"2")])
    producer.produce(topic, values[1], b"acct-0")
    assert producer.flush(15) == 0
    out, err = io.StringIO(), io.StringIO()
    n = tail(kafka_settings, tn.ORDERS, from_beginning=True, follow=False, fmt="json",
             out=out, err=err)
    assert n == 6
    assert sorted(out.getvalue().encode().splitlines()) == sorted(values)
    skipped = err.getvalue().splitlines()
    assert len(skipped) == 3
    assert all(line.startswith(f"tail: skipped {topic}[") for line in skipped)
    assert any("unknown schema version '2'" in s for s in skipped)
    assert any("no sq.schema header" in s for s in skipped)


def test_tail_table_shows_the_order_fields(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, [tn.ORDERS])
    _produce_orders(kafka_settings, [_order(3)])
    out = io.StringIO()
    assert tail(kafka_settings, tn.ORDERS, from_beginning=True, follow=False, fmt="table",
                out=out) == 1
    header, row = out.getvalue().splitlines()
    assert header.split() == ["time", "account", "symbol", "side", "qty", "type", "limit",
                              "algo", "slice", "client_order_id"]
    assert row.split() == ["2013-09-01T22:00:03.000Z", "acct-1", "ES", "BUY", "4", "LIMIT",
                           "1643.25", "TWAP", "1/2", "co-3"]


def test_tail_table_renders_source_marks_and_times_readably(
        kafka_settings: KafkaSettings, tmp_path: Path, emini_ticks_path: Path) -> None:
    create_topics(kafka_settings, [tn.MD_TICKS_RAW])
    src = tick_input(write_slice(emini_ticks_path, tmp_path / "a.csv", 2))
    produce_ticks(kafka_settings, src, rate=None, progress=False)
    out = io.StringIO()
    assert tail(kafka_settings, tn.MD_TICKS_RAW, from_beginning=True, follow=False,
                fmt="table", out=out) == 2 + 8 + 8
    lines = out.getvalue().splitlines()
    # 2013-09-01 17:00:00.083 in Chicago (CDT) is 22:00:00.083 UTC
    assert "ts=2013-09-01T22:00:00.083Z symbol=ES price=1640.25 size=8 venue=UNKNOWN" in lines
    assert lines.count("[heartbeat] event_time=2013-09-01T22:00:00.083Z") == 8
    assert lines.count("[end]") == 8


def test_tail_from_the_end_prints_only_new_messages(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, [tn.ORDERS])
    old = _produce_orders(kafka_settings, [_order(i) for i in range(3)])
    out = io.StringIO()
    assert tail(kafka_settings, tn.ORDERS, from_beginning=False, follow=False, fmt="json",
                out=out) == 0
    got: list[int] = []
    follower = threading.Thread(target=lambda: got.append(tail(
        kafka_settings, tn.ORDERS, from_beginning=False, follow=True, fmt="json", out=out,
        max_messages=2)))
    follower.start()
    deadline = time.monotonic() + 20
    i = 100
    while follower.is_alive() and time.monotonic() < deadline:
        _produce_orders(kafka_settings, [_order(i)])  # until the follower has seen two
        i += 1
        follower.join(0.2)
    assert got == [2]
    printed = out.getvalue().encode().splitlines()
    assert len(printed) == 2 and not set(printed) & set(old)


# --------------------------------------------------------------------------- kill switch


def test_kill_switch_produces_a_decodable_control_keyed_by_account(
        kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, [tn.CONTROL])
    before = time.time_ns()
    kill = kill_switch(kafka_settings, True, "acct-7", "runaway algo")
    halt = kill_switch(kafka_settings, True, "acct-7", "news", symbol="ES")
    reset = kill_switch(kafka_settings, False, "*", "all clear")
    assert (kill.command, halt.command, reset.command) == ("KILL", "HALT_SYMBOL", "RESET")
    assert before <= kill.ts_event <= time.time_ns()
    recs = read_all(kafka_settings, tn.CONTROL)
    assert [r.key for r in recs] == [b"acct-7", b"acct-7", b"*"]
    decoded = [msgspec.json.decode(r.value, type=Control) for r in recs]
    assert decoded == [kill, halt, reset]
    assert all(r.headers == {wire.SCHEMA: wire.SCHEMA_VERSION_BYTES} for r in recs)
    with pytest.raises(UsageError, match="--reason"):
        kill_switch(kafka_settings, True, "acct-7", "  ")


# --------------------------------------------------------------------------- broker


def test_a_paused_broker_delivers_after_resume(tmp_path: Path) -> None:
    with Broker(log_path=tmp_path / "tansu.log") as b:
        settings = KafkaSettings(b.bootstrap)
        create_topics(settings, [tn.CONTROL])
        producer = ck.Producer(settings.producer_conf())
        topic = settings.topic(tn.CONTROL)
        producer.produce(topic, b"before", b"a")
        assert producer.flush(10) == 0
        b.pause()
        producer.produce(topic, b"during", b"a")
        assert producer.flush(1.0) == 1  # the broker does not answer: still in flight
        b.resume()
        assert producer.flush(20) == 0
        del producer  # disconnects: tansu then stops at once
        assert [r.value for r in read_all(settings, tn.CONTROL)] == [b"before", b"during"]
        assert b.running
    assert not b.running
