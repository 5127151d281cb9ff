"""The Faust adapter under Faust's own ``agent.test_context()``: no broker, real operators.

The graph agent gets records the way a broker would hand them over - sequenced ticks spread
over several partitions, heartbeats, end marks, a record a foreign producer wrote - and the
records it sends are checked: source order restored by ``sq.seq``, deterministic ids, the DLQ,
the watermark on the status page, and a checkpoint that a fresh pipeline resumes from.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from jobs.faust.app import FaustConfig, build_app
from jobs.faust.pipeline import FaustHostError, FaustPipeline
from jobs.live import wire
from jobs.live.host import CheckpointPolicy
from jobs.topology import tick_graph
from operators.features import FeaturesConfig, WindowFeatures
from operators.normalize import Normalize, NormalizeConfig
from topics import names as tn
from topics.messages import Control, RawTick

MINUTE = 60_000_000_000
T0 = 1_378_130_400_000_000_000  # 2013-09-02 14:00 UTC


def _pipeline(ckdir: Path) -> FaustPipeline:
    graph = tick_graph(Normalize(NormalizeConfig(default_symbol="ES", default_venue="CME")),
                       WindowFeatures(FeaturesConfig()))
    return FaustPipeline(graph, ckdir, kafka_topic=lambda t: f"u.{t}",
                         policy=CheckpointPolicy(every_records=1_000_000, every_event_ns=None,
                                                 every_wall_s=3600.0))


class Sent:
    """The records the agent produced, as the broker would store them."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: Any
                       ) -> None:
        self.records.append((topic, key, value, dict(headers)))

    def on(self, topic: str) -> list[tuple[str, bytes]]:
        return [(h[wire.ID].decode(), v) for t, _, v, h in self.records if t == f"u.{topic}"]


def _tick(seq: int, i: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The i-th tick of the test feed: one every 20 s, prices walking up."""
    value = msgspec.json.encode(RawTick(ts=T0 + i * 20_000_000_000, price=1650 + i / 4,
                                        size=1))
    return value, wire.source_headers(seq)  # type: ignore[return-value]


async def _feed(ckdir: Path, records: list[tuple[int, int, bytes, Any]], sent: Sent,
                pipeline: FaustPipeline | None = None) -> FaustPipeline:
    """Put ``(partition, offset, value, headers)`` records through the graph agent."""
    pipe = pipeline or _pipeline(ckdir)
    pipe.resume()
    config = FaustConfig(bootstrap="127.0.0.1:9", checkpoint_dir=ckdir, topic_prefix="u.")
    app, driver = build_app(config, pipe, send=sent, stop=lambda: None)
    agent = app.agents[next(n for n in app.agents if n.endswith("streamquant-graph"))]
    async with agent.test_context() as ctx:
        for p, offset, value, headers in records:
            ctx.sent_offset = offset  # the Kafka offset of this record on its partition
            await ctx.put(value, b"ES", partition=p, headers=headers, wait=False)
        deadline = time.monotonic() + 30
        while pipe.stats.consumed + pipe.stats.skipped < len(records) and pipe.error is None:
            assert time.monotonic() < deadline, "the agent did not take every record"
            await asyncio.sleep(0.01)  # a batch closes after BATCH_WAIT_S
        assert pipe.error is None, pipe.error
        await driver.checkpoint()
    return pipe


def _spread(n: int, parts: int = 3) -> list[tuple[int, int, bytes, Any]]:
    """The partitions beyond ``parts`` ended (first in the sequence), then ``n`` ticks dealt
    round-robin over ``parts`` partitions, then an end mark on each."""
    idle = 8 - parts
    out: list[tuple[int, int, bytes, Any]] = [
        (p, 0, b"{}", wire.source_headers(p - parts, "end")) for p in range(parts, 8)]
    offsets = [0] * parts
    for i in range(n):
        p = i % parts
        value, headers = _tick(idle + i, i)
        out.append((p, offsets[p], value, headers))
        offsets[p] += 1
    for p in range(parts):
        out.append((p, offsets[p], b"{}", wire.source_headers(idle + n + p, "end")))
    return out


def test_agent_releases_partitions_in_sequence_order_with_deterministic_ids(
        tmp_path: Path) -> None:
    records = _spread(30)
    # a broker hands partitions over in any interleaving: partition 2 first, then 0, then 1
    records.sort(key=lambda r: ({2: 0, 0: 1, 1: 2}.get(r[0], -1), r[1]))
    sent = Sent()
    pipe = asyncio.run(_feed(tmp_path / "ck", records, sent))
    ticks = sent.on(tn.MD_TICKS)
    assert [i for i, _ in ticks] == [f"{tn.MD_TICKS}:{n}" for n in range(30)]
    prices = [msgspec.json.decode(v)["price"] for _, v in ticks]
    assert prices == sorted(prices) and len(set(prices)) == 30  # the feed's order, not fetch's
    assert len(sent.on(tn.MD_BARS)) == 10  # 30 ticks 20 s apart: ten one-minute bars
    assert pipe.ended and pipe.status()["status"] == "ended"


def test_a_record_without_sequence_headers_is_dead_lettered_with_its_coordinate(
        tmp_path: Path) -> None:
    idle = [(p, 0, b"{}", wire.source_headers(p - 1, "end")) for p in range(1, 8)]
    ticks = [(0, i if i < 3 else i + 1, *_tick(7 + i, i)) for i in range(6)]
    foreign = (0, 3, b'{"ts": 1}', [(wire.SCHEMA, b"1")])  # no sq.seq: not our producer
    end = (0, 7, b"{}", wire.source_headers(13, "end"))
    sent = Sent()
    asyncio.run(_feed(tmp_path / "ck", [*idle, *ticks[:3], foreign, *ticks[3:], end], sent))
    dead = sent.on(tn.MD_TICKS_DLQ)
    assert len(dead) == 1
    letter = msgspec.json.decode(dead[0][1])
    assert letter["reason"] == "BAD_HEADER" and letter["source"]["offset"] == 3
    assert dead[0][0] == f"{tn.MD_TICKS_DLQ}:{tn.MD_TICKS_RAW}[0]@3"
    assert len(sent.on(tn.MD_TICKS)) == 6  # the stream goes on


def test_a_restarted_pipeline_resumes_after_its_checkpoint_with_the_same_ids(
        tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    records = _spread(24, parts=2)
    first, rest = records[:6 + 14], records[6 + 14:]  # the 6 idle partitions' ends + 14 ticks
    sent1 = Sent()
    asyncio.run(_feed(ck, first, sent1))  # checkpoints at the end
    sent2 = Sent()
    # the group's offsets may lag the checkpoint: everything is handed over again
    asyncio.run(_feed(ck, records, sent2))
    whole = Sent()
    asyncio.run(_feed(tmp_path / "ck-whole", records, whole))
    assert sent1.on(tn.MD_TICKS) + sent2.on(tn.MD_TICKS) == whole.on(tn.MD_TICKS)
    assert sent1.on(tn.MD_BARS) + sent2.on(tn.MD_BARS) == whole.on(tn.MD_BARS)
    assert rest  # the second run had records of its own


def test_group_offsets_ahead_of_the_checkpoint_stop_the_pipeline(tmp_path: Path) -> None:
    pipe = _pipeline(tmp_path / "ck")
    pipe.resume()
    value, headers = _tick(0, 0)
    with pytest.raises(FaustHostError, match="ahead of the checkpoint"):
        pipe.on_source(0, 5, value, headers)  # nothing checkpointed: offset 0 comes first
    assert pipe.status()["status"] == "failed"


def test_control_agent_stamps_journals_and_dead_letters_commands_and_a_restart_reapplies(
        tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    pipe = asyncio.run(_feed(ck, _spread(6, parts=1)[:-1], Sent()))  # ticks, no end yet
    wm = pipe.watermark
    sent = Sent()
    config = FaustConfig(bootstrap="127.0.0.1:9", checkpoint_dir=ck, topic_prefix="u.")
    app, _ = build_app(config, pipe, send=sent, stop=lambda: None)
    agent = app.agents[next(n for n in app.agents if n.endswith("streamquant-control"))]
    kill = msgspec.json.encode(Control(command="KILL", account="paper", reason="desk",
                                       ts_event=1))
    schema = [(wire.SCHEMA, wire.SCHEMA_VERSION_BYTES)]

    async def put_commands() -> None:
        async with agent.test_context() as ctx:
            for offset, (value, headers) in enumerate(
                    [(kill, schema), (b'{"command": "EXPLODE"}', schema), (kill, None)]):
                ctx.sent_offset = offset
                await ctx.put(value, b"paper", headers=headers, wait=False)
            deadline = time.monotonic() + 30
            while pipe.runner.control_offset < 3:
                assert time.monotonic() < deadline, "the control agent took too few commands"
                await asyncio.sleep(0.01)

    asyncio.run(put_commands())
    applied = sent.on(tn.CONTROL_APPLIED)
    assert [i for i, _ in applied] == [f"{tn.CONTROL_APPLIED}:0"]
    stamped = msgspec.json.decode(applied[0][1], type=Control)
    assert (stamped.command, stamped.ts_event) == ("KILL", wm + 1)  # the watermark's, not 1
    reasons = [msgspec.json.decode(v)["reason"] for _, v in sent.on(tn.MD_TICKS_DLQ)]
    assert reasons == ["BAD_CONTROL", "BAD_HEADER"]
    assert (ck / "control.journal").exists()
    # a crash before the next checkpoint: the restart applies the command again, same id/bytes
    again = _pipeline(ck)
    again.resume()
    redo = again.drain()
    assert [(t, v) for t, v, _, _ in redo if t == f"u.{tn.CONTROL_APPLIED}"] == [
        (f"u.{tn.CONTROL_APPLIED}", applied[0][1])]
