"""The topic sink's files hold each message's serde bytes, one per line, in emit order,
whether a topic's messages are encoded in batches (immutable schemas) or one at a time."""

from __future__ import annotations

from pathlib import Path

from jobs.topic_sink import TopicSink
from topics import names as tn
from topics.messages import OrderIntent, SourceRef, Tick
from topics.serde import encode

TOPICS = (tn.MD_TICKS, tn.ORDERS_INTENTS)


def _tick(i: int) -> Tick:
    return Tick(ts_event=1_700_000_000_000_000_000 + i // 3, symbol="ES", venue="CME",
                price=4000.25 + (i % 7) * 0.25, size=float(i % 5),
                trade_id=None if i % 2 else str(i), source=SourceRef(file="f.csv", line=i + 2))


def _intent(i: int, sizing: dict[str, float]) -> OrderIntent:
    return OrderIntent(ts_event=1_700_000_000_000_000_000 + i, decision_id=f"d{i}",
                       account="main", symbol="ES", side="BUY", quantity=1.0,
                       target_position=float(i), reference_price=4000.0, sizing=sizing)


def test_files_hold_each_messages_serde_bytes_in_emit_order(tmp_path: Path) -> None:
    sink = TopicSink(tmp_path, TOPICS, capture=True)
    n = 5_000  # more than two encoding batches, and a partial one at close
    sizing: dict[str, float] = {"kelly": 0.5}
    for i in range(n):
        sink.emit(tn.MD_TICKS, _tick(i))
        if i % 1000 == 0:
            sink.emit(tn.ORDERS_INTENTS, _intent(i, sizing))
    # a record holding a dict is encoded when emitted: changing the dict afterwards (which an
    # operator must not do, but a batch would see) leaves the written bytes alone
    sizing["kelly"] = 9.0
    sink.close()
    ticks = b"".join(encode(_tick(i)) + b"\n" for i in range(n))
    assert (tmp_path / f"{tn.MD_TICKS}.jsonl").read_bytes() == ticks
    intents = b"".join(encode(_intent(i, {"kelly": 0.5})) + b"\n" for i in range(0, n, 1000))
    assert (tmp_path / f"{tn.ORDERS_INTENTS}.jsonl").read_bytes() == intents
    assert sink.captured is not None and len(sink.captured[tn.MD_TICKS]) == n
    assert sink.counts[tn.MD_TICKS] == n
    assert sink.files_s > 0


def test_a_sink_without_files_spends_no_time_on_them() -> None:
    sink = TopicSink(None, TOPICS)
    for i in range(3_000):
        sink.emit(tn.MD_TICKS, _tick(i))
    sink.close()
    assert sink.counts[tn.MD_TICKS] == 3_000
    assert sink.files_s == 0.0
