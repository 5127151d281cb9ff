"""The linear form of the dispatch rules (``jobs.core.linear``, what the Flink job runs per
stage) emits exactly what ``LocalRunner`` emits, message for message and in the same order."""

from __future__ import annotations

import msgspec

from jobs.core.linear import END, OUT, SOURCE, LinearStage, linear_chain, run_chain
from jobs.topology import opened
from tests._chain_fixture import chain_run
from topics import names as tn


def test_linear_chain_emits_the_local_runners_messages_in_its_order() -> None:
    run = chain_run()
    stages = linear_chain(run.graph, watermark_topic=tn.MD_TICKS)
    with opened(run.graph.stages):
        out = run_chain(stages, [*((SOURCE, r) for r in run.records), (END,)])
    emitted = [(i[1], i[2]) for i in out if i[0] == OUT]
    assert {t for t, _ in run.log} >= {tn.ORDERS, tn.FILLS, tn.MD_BARS, tn.FEATURES}
    assert sum(1 for t, _ in run.log if t == tn.ORDERS) > 0
    enc = msgspec.json.encode
    assert [(t, enc(v)) for t, v in emitted] == [(t, enc(v)) for t, v in run.log]


def test_linear_stages_resume_from_their_snapshots_without_changing_the_output() -> None:
    run = chain_run()
    records = run.records[:20_000]
    items = [*((SOURCE, r) for r in records), (END,)]
    cut = 12_345
    with opened(run.graph.stages):
        whole = run_chain(linear_chain(run.graph, watermark_topic=tn.MD_TICKS), items)
        first = linear_chain(run.graph, watermark_topic=tn.MD_TICKS)
        head = run_chain(first, items[:cut])
        snaps = [s.snapshot() for s in first]
        second = linear_chain(run.graph, watermark_topic=tn.MD_TICKS)
        for s, snap in zip(second, snaps, strict=True):
            s.restore(snap)
        tail = run_chain(second, items[cut:])
    enc = msgspec.json.encode
    assert [(i[1], enc(i[2])) for i in head + tail if i[0] == OUT] == \
        [(i[1], enc(i[2])) for i in whole if i[0] == OUT]
    assert isinstance(second[0], LinearStage) and second[0].watermark > 0


def test_the_flink_wire_between_stages_keeps_every_message_and_its_order() -> None:
    from jobs.flink.wire import encode, out_messages, pack, unpack
    from operators.normalize import RawRecord

    run = chain_run()
    stages = linear_chain(run.graph, watermark_topic=tn.MD_TICKS)
    records = list(run.records)
    blocks = [pack([(SOURCE, r) for r in records[i:i + 512]]) for i in range(0, len(records),
                                                                              512)]
    blocks.append(pack([(END,)]))
    got: list[tuple[str, bytes]] = []
    with opened(run.graph.stages):
        for data in blocks:
            for s in stages:
                items, wire = unpack(data, s.inputs, source=RawRecord if s.first else None,
                                     ts_topic=s.wm_topic if s.first else None)
                data = encode(s.handle_all(items), wire)
            got += out_messages(data)
    enc = msgspec.json.encode
    assert got == [(t, enc(v)) for t, v in run.log]
