"""The sequenced source (``jobs.core.sequenced*``): a partitioned source gives the embedded run.

The E-mini prefix's records are laid out as a feed handler writes them to an 8-partition topic
(data on the symbol's partition, heartbeats to every partition every few thousand records, an
end mark per partition) and delivered in random interleavings of the partitions, in random
chunk sizes, as a broker might. Every topic must equal the embedded run's, message for message;
so must a run checkpointed and restored into a fresh runner at random points.
"""

from __future__ import annotations

import random
from collections import defaultdict

import msgspec
import pytest

from jobs.core.sequenced import DATA, END, HEARTBEAT, Element, SequencedMerge, SequenceError
from jobs.core.sequenced_runner import SequencedRunner
from jobs.topology import opened
from operators.contract import END_OF_STREAM
from tests._chain_fixture import RecordingSink, chain_run
from topics import names as tn

PARTITIONS = 8
DATA_PARTITION = 5
HEARTBEAT_EVERY = 2_000
_enc = msgspec.json.Encoder()


def _layout() -> list[list[Element]]:
    """The chain run's records as a sequenced 8-partition source (event clock from md.ticks)."""
    run = chain_run()
    ts_of = {}
    for topic, v in run.log:
        if topic == tn.MD_TICKS:
            ts_of[v.source.line] = v.ts_event  # type: ignore[attr-defined]
    parts: list[list[Element]] = [[] for _ in range(PARTITIONS)]
    seq = 0
    clock = 0

    def put(p: int, kind: int, payload: object) -> None:
        nonlocal seq
        parts[p].append(Element(seq, kind, p, len(parts[p]), payload))
        seq += 1

    for i, rec in enumerate(run.records):
        clock = max(clock, ts_of.get(rec.source.line, clock))
        put(DATA_PARTITION, DATA, rec)
        if (i + 1) % HEARTBEAT_EVERY == 0:
            for p in range(PARTITIONS):
                put(p, HEARTBEAT, clock)
    for p in range(PARTITIONS):
        put(p, HEARTBEAT, clock)
    for p in range(PARTITIONS):
        put(p, END, None)
    return parts


def _by_topic(log: list[tuple[str, msgspec.Struct]] | tuple[tuple[str, msgspec.Struct], ...]
              ) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for topic, v in log:
        if topic != tn.CONTROL:
            out[topic].append(_enc.encode(v))
    return dict(out)


def _deliver(parts: list[list[Element]], seed: int, checkpoint_every: int | None = None
             ) -> dict[str, list[bytes]]:
    """Deliver the partitions in a random interleaving; optionally checkpoint and restart."""
    graph = chain_run().graph
    rng = random.Random(seed)
    sink = RecordingSink(graph.output_topics)
    with opened(graph.stages):
        runner = SequencedRunner(graph, sink, partitions=PARTITIONS)
        pos = [0] * PARTITIONS
        steps = 0
        saved: tuple[bytes, int] | None = None
        restarts = 0
        while any(pos[p] < len(parts[p]) for p in range(PARTITIONS)):
            p = rng.randrange(PARTITIONS)
            k = rng.randint(1, 4_000)
            for e in parts[p][pos[p]:pos[p] + k]:
                runner.push(e)
            pos[p] = min(len(parts[p]), pos[p] + k)
            runner.run_ready()
            steps += 1
            assert steps < 20_000, "the merge made no progress"
            if not checkpoint_every:
                continue
            if saved is not None and steps % checkpoint_every == checkpoint_every // 2:
                # a crash: the outputs since the checkpoint and the buffered records are
                # lost; a fresh runner resumes from it, re-reading each partition
                data, cut = saved
                del sink.log[cut:]
                runner = SequencedRunner(graph, sink, partitions=PARTITIONS)
                runner.restore(data)
                pos = list(runner.merge.next_offsets)
                saved = None
                restarts += 1
            elif steps % checkpoint_every == 0:
                saved = runner.checkpoint(dict(sink.counts)), len(sink.log)
        assert runner.ended
        assert runner.watermark == END_OF_STREAM
        assert restarts >= 2 or not checkpoint_every
    return _by_topic(sink.log)


@pytest.fixture(scope="module")
def layout() -> list[list[Element]]:
    return _layout()


def test_partitions_in_any_arrival_order_give_the_embedded_topics(layout: list[list[Element]]
                                                                  ) -> None:
    expected = _by_topic(chain_run().log)
    assert expected[tn.ORDERS] and expected[tn.FILLS] and expected[tn.MD_BARS]
    for seed in (1, 2):
        got = _deliver(layout, seed)
        for topic, values in expected.items():
            assert got.get(topic, []) == values, f"seed {seed}: {topic} differs"


def test_restarts_from_checkpoints_give_the_embedded_topics(layout: list[list[Element]]) -> None:
    expected = _by_topic(chain_run().log)
    got = _deliver(layout, 7, checkpoint_every=60)
    for topic, values in expected.items():
        assert got.get(topic, []) == values, f"{topic} differs after restarts"


def test_merge_waits_for_a_partition_that_has_shown_nothing() -> None:
    m = SequencedMerge(2)
    m.push(Element(0, DATA, 0, 0, "a"))
    assert m.pop_run() == []  # partition 1 might still hold seq < 0... or anything below 1
    m.push(Element(1, HEARTBEAT, 1, 0, 10))
    assert [e.payload for e in m.pop_run()] == ["a"]
    assert m.pop_run() == []  # partition 0 is silent again: its next record may be seq 1.5
    m.push(Element(2, END, 0, 1))
    assert [e.kind for e in m.pop_run()] == [HEARTBEAT]
    assert m.pop_run() == []  # partition 1 is silent now
    m.push(Element(3, END, 1, 1))
    assert [(e.partition, e.kind) for e in m.pop_run()] == [(0, END)]
    assert [(e.partition, e.kind) for e in m.pop_run()] == [(1, END)]
    assert m.ended() and m.next_offsets == [2, 2]


def test_merge_releases_runs_below_the_other_heads_in_one_call() -> None:
    m = SequencedMerge(2)
    for i in range(5):
        m.push(Element(i, DATA, 0, i, i))
    m.push(Element(3_000, HEARTBEAT, 1, 0, 0))
    assert [e.seq for e in m.pop_run()] == [0, 1, 2, 3, 4]


def test_merge_refuses_a_sequence_that_goes_back_on_a_partition() -> None:
    m = SequencedMerge(2)
    m.push(Element(5, DATA, 0, 0))
    with pytest.raises(SequenceError, match="sequence 3 after 5"):
        m.push(Element(3, DATA, 0, 1))


def test_merge_refuses_a_sequence_seen_on_another_partition() -> None:
    m = SequencedMerge(2)
    m.push(Element(0, DATA, 0, 0))
    m.push(Element(1, DATA, 0, 1))
    m.push(Element(0, DATA, 1, 0))  # a second producer numbering from 0 too
    m.pop_run()
    with pytest.raises(SequenceError, match="already merged"):
        m.pop_run()


def test_merge_refuses_data_after_a_partition_ended() -> None:
    m = SequencedMerge(1)
    m.push(Element(0, END, 0, 0))
    with pytest.raises(SequenceError, match="after the partition's end mark"):
        m.push(Element(1, DATA, 0, 1))
