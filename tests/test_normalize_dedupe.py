"""Dedupe: only records with a trade id, per venue+symbol, within an event-time TTL, with
bounded state that survives snapshot/restore exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.accel.normalize_columns import NormalizeColumns
from jobs.cli import main
from jobs.tick_files import iter_raw_records, load_tick_columns, normalize_config_for
from operators.contract import Emit, SimpleContext, StateMismatchError
from operators.normalize import TICKS_TOPIC, Normalize, NormalizeConfig, RawRecord
from tests.test_normalize_dlq_corpus import run_events
from topics.dlq import DLQ_TOPIC, DlqReason
from topics.messages import SourceRef

SEC = 10**9
EMINI_MAP = {"DateTime": "ts", "Price": "price", "Volume": "size"}


def rec(ts_s: float, trade_id: str | None, symbol: str = "ES", venue: str = "CME") -> RawRecord:
    tid = "" if trade_id is None else trade_id
    line = f"{int(ts_s * SEC)},{symbol},100.25,1,{venue},{tid}"
    return RawRecord(payload=line, source=SourceRef(topic="md.ticks.raw", partition=0, offset=0))


def config(**kw: object) -> NormalizeConfig:
    return NormalizeConfig(
        csv_columns=("ts", "symbol", "price", "size", "venue", "trade_id"),
        **kw,  # type: ignore[arg-type]
    )


def reasons(outputs: list[Emit]) -> list[str | None]:
    return [None if o.topic == TICKS_TOPIC else o.value.reason for o in outputs]


def test_a_trade_id_seen_within_the_ttl_is_a_duplicate_and_readmitted_after_it() -> None:
    op = Normalize(config(dedupe_window_ns=60 * SEC))
    t0 = 1_700_000_000
    outs, _ = run_events(
        op,
        [
            rec(t0, "a"),
            rec(t0 + 30, "a"),  # within 60 s: duplicate
            rec(t0 + 60, "a"),  # exactly the TTL after: still within
            rec(t0 + 60.5, "b"),  # moves event time past t0 + 60: "a" expires
            rec(t0 + 61, "a"),  # re-admitted
            rec(t0 + 62, "a"),  # and now a duplicate of the re-admitted one
        ],
    )
    assert reasons(outs) == [None, "DUPLICATE", "DUPLICATE", None, None, "DUPLICATE"]


def test_an_id_older_than_the_window_is_stale_not_admitted_unchecked() -> None:
    """The window runs back from the newest event time seen with an id; a record before it
    cannot be checked (its original may have been forgotten), so it is counted as stale."""
    op = Normalize(config(dedupe_window_ns=60 * SEC))
    t0 = 1_700_000_000
    outs, states = run_events(
        op,
        [
            rec(t0, "a"),
            rec(t0 + 100, "b"),  # moves the window to [t0 + 40, t0 + 100]: "a" is forgotten
            rec(t0, "a"),  # "a" re-sent with its original time: stale, not accepted twice
            rec(t0 + 39, "c"),  # just before the window: stale too
            rec(t0 + 40, "d"),  # at its start: admitted
            rec(t0 + 100, "b"),  # still remembered
        ],
    )
    assert reasons(outs) == [None, None, "STALE_TRADE_ID", "STALE_TRADE_ID", None, "DUPLICATE"]
    assert "older than the dedupe window (1m back from" in outs[2].value.detail
    assert sorted(states["ES"].ids) == ["CME\x1fb", "CME\x1fd"]


def test_ids_forgotten_for_room_make_older_records_stale() -> None:
    op = Normalize(config(dedupe_max_ids=3))
    t0 = 1_700_000_000
    outs, _ = run_events(op, [rec(t0 + i, f"id{i}") for i in range(5)]
                         + [rec(t0 + 1, "id1"), rec(t0 + 2, "id9"), rec(t0 + 4, "id4")])
    # id0 and id1 were forgotten for room: anything at or before t0 + 1 is uncheckable
    assert reasons(outs) == [None] * 5 + ["STALE_TRADE_ID", None, "DUPLICATE"]
    assert "forgotten for room" in outs[5].value.detail


def test_the_key_is_venue_symbol_and_trade_id_and_int_ids_equal_their_text() -> None:
    op = Normalize(NormalizeConfig())
    src = SourceRef(topic="md.ticks.raw", partition=0, offset=0)
    payloads = [
        '{"ts": 1700000000, "symbol": "ES", "price": 1, "size": 1, "venue": "CME", "trade_id": 7}',
        '{"ts": 1700000001, "symbol": "ES", "price": 1, "size": 1, "venue": "CME", "trade_id": "7"}',  # noqa: E501
        '{"ts": 1700000002, "symbol": "ES", "price": 1, "size": 1, "venue": "ICE", "trade_id": 7}',
        '{"ts": 1700000003, "symbol": "NQ", "price": 1, "size": 1, "venue": "CME", "trade_id": 7}',
        '{"ts": 1700000004, "symbol": "ES", "price": 1, "size": 1, "trade_id": " 7 "}',
        '{"ts": 1700000005, "symbol": "ES", "price": 1, "size": 1, "trade_id": "7"}',
    ]
    outs, states = run_events(op, [RawRecord(payload=p, source=src) for p in payloads])
    assert reasons(outs) == [None, "DUPLICATE", None, None, None, "DUPLICATE"]
    assert sorted(states) == ["ES", "NQ"]
    assert len(states["ES"].ids) == 3  # CME|7, ICE|7, UNKNOWN|7


def test_rejected_records_do_not_consume_a_trade_id() -> None:
    op = Normalize(config())
    bad = RawRecord(
        payload="1700000000000,ES,-1,1,CME,x", source=SourceRef(file="f", line=1)
    )  # negative price
    outs, _ = run_events(op, [bad, rec(1_700_000_001, "x")])
    assert reasons(outs) == ["BAD_PRICE", None]


def test_state_is_bounded_by_max_ids_dropping_the_oldest_first() -> None:
    op = Normalize(config(dedupe_max_ids=3))
    t0 = 1_700_000_000
    outs, states = run_events(
        op, [rec(t0 + i, f"id{i}") for i in range(5)] + [rec(t0 + 9, "id0"), rec(t0 + 9, "id4")]
    )
    assert reasons(outs) == [None] * 5 + [None, "DUPLICATE"]
    st = states["ES"]
    assert len(st.ids) == len(st.expiry) == 3
    assert sorted(st.ids) == ["CME\x1fid0", "CME\x1fid3", "CME\x1fid4"]


def test_records_without_trade_ids_are_never_deduplicated() -> None:
    op = Normalize(config(dedupe_window_ns=60 * SEC))
    same = [rec(1_700_000_000, None) for _ in range(50)]
    outs, states = run_events(op, same)
    assert reasons(outs) == [None] * 50
    assert states["ES"].ids == {} and states["ES"].expiry == []


def test_all_500k_emini_rows_pass_although_306k_repeat_an_earlier_row(
    emini_ticks_path: Path,
) -> None:
    frame = pd.read_csv(emini_ticks_path, dtype=str)
    repeated = int(frame.duplicated().sum())
    assert repeated > 300_000  # identical rows are real trades in this file
    cfg = normalize_config_for(
        emini_ticks_path,
        EMINI_MAP,
        tz="America/Chicago",
        default_symbol="ES",
        default_venue="CME",
    )
    op = Normalize(cfg)
    st = op.new_state("ES")
    ctx = SimpleContext()
    ticks = 0
    ts = np.empty(len(frame), dtype=np.int64)
    for rec_ in iter_raw_records(emini_ticks_path):
        st, (out,) = op.process(st, rec_, ctx)
        assert out.topic == TICKS_TOPIC, out
        ts[ticks] = out.value.ts_event
        ticks += 1
    assert ticks == len(frame) == 500_000
    ref = (
        pd.to_datetime(frame["DateTime"], format="%Y-%m-%d %H:%M:%S.%f")
        .dt.tz_localize("America/Chicago")
        .astype("int64")
        .to_numpy()
    )
    np.testing.assert_array_equal(ts, ref)
    assert st.ids == {}


def id_stream(emini_ticks_path: Path, n: int = 20_000) -> list[RawRecord]:
    """Real E-mini times and prices with venue-style ids, including replays and gaps."""
    frame = pd.read_csv(emini_ticks_path, nrows=n, dtype=str)
    rng = np.random.default_rng(5)
    ids = np.arange(n)
    symbols = np.where(rng.random(n) < 0.3, "NQ", "ES")
    venues = np.where(rng.random(n) < 0.2, "ICE", "CME")
    # ~15 % of rows re-send an earlier trade (same id, symbol and venue), from up to 100
    # rows back (mostly within the TTL) or up to 3000 rows back (mostly expired)
    replay = rng.random(n) < 0.15
    back = np.where(rng.random(n) < 0.5, rng.integers(1, 100, n), rng.integers(1, 3000, n))
    for j in np.flatnonzero(replay).tolist():
        src = max(0, j - int(back[j]))
        ids[j], symbols[j], venues[j] = ids[src], symbols[src], venues[src]
    return [
        RawRecord(
            payload=f"{t},{s},{p},{v},{ven},T{i}",
            source=SourceRef(file="ids.csv", line=j + 2),
        )
        for j, (t, p, v, s, ven, i) in enumerate(
            zip(
                frame["DateTime"],
                frame["Price"],
                frame["Volume"],
                symbols,
                venues,
                ids,
                strict=True,
            )
        )
    ]


def stream_config() -> NormalizeConfig:
    return NormalizeConfig(
        tz="America/Chicago",
        csv_columns=("ts", "symbol", "price", "size", "venue", "trade_id"),
        dedupe_window_ns=120 * SEC,
        dedupe_max_ids=5_000,
    )


def test_dedupe_matches_an_independent_pandas_reference(emini_ticks_path: Path) -> None:
    records = id_stream(emini_ticks_path)
    outs, _ = run_events(Normalize(stream_config()), records)
    got = [o.topic == DLQ_TOPIC for o in outs]
    # Reference with plain dicts: last-admitted time per (symbol, venue, id), horizon per symbol.
    frame = pd.DataFrame(
        [r.payload.split(",") for r in records],
        columns=["ts", "symbol", "price", "size", "venue", "tid"],
    )
    ts = pd.to_datetime(frame["ts"]).dt.tz_localize("America/Chicago").astype("int64")
    admitted: dict[tuple[str, str, str], int] = {}
    high: dict[str, int] = {}
    expected = []
    for t, s, v, i in zip(ts, frame["symbol"], frame["venue"], frame["tid"], strict=True):
        high[s] = max(high.get(s, t), t)
        seen = admitted.get((s, v, i))
        dup = seen is not None and seen >= high[s] - 120 * SEC
        if not dup:
            admitted[(s, v, i)] = t
        expected.append(dup)
    replayed_late = sum(
        1
        for j, (dup, tid) in enumerate(zip(expected, frame["tid"], strict=True))
        if not dup and tid != f"T{j}"
    )
    assert sum(expected) > 500 and replayed_late > 200  # both duplicates and expiries happen
    assert got == expected


@pytest.mark.parametrize("split", [1, 500, 2_000, 4_321, 7_000])
def test_a_split_run_restored_from_snapshots_equals_an_uninterrupted_run(
    emini_ticks_path: Path, split: int
) -> None:
    records = id_stream(emini_ticks_path)
    whole, _ = run_events(Normalize(stream_config()), records)

    first = Normalize(stream_config())
    part1, states = run_events(first, records[:split])
    blobs = {k: first.snapshot(st) for k, st in states.items()}
    second = Normalize(stream_config())  # a fresh process: nothing shared but the bytes
    restored = {k: second.restore(b) for k, b in blobs.items()}
    assert restored == states
    part2, _ = run_events(second, records[split:], restored)
    assert part1 + part2 == whole
    forgetful, _ = run_events(Normalize(stream_config()), records[split:])
    assert forgetful != part2  # the restored state mattered


def test_snapshots_refuse_another_dedupe_config_but_not_another_instrument_list() -> None:
    op = Normalize(config())
    _, states = run_events(op, [rec(1_700_000_000, "a")])
    blob = op.snapshot(states["ES"])
    with pytest.raises(StateMismatchError):
        Normalize(config(dedupe_window_ns=5 * SEC)).restore(blob)
    with pytest.raises(StateMismatchError):
        Normalize(config(dedupe_max_ids=7)).restore(blob)
    again = Normalize(config(instruments=("ES",), tz="Europe/London")).restore(blob)
    assert again == states["ES"]


def test_batched_dedupe_gives_the_same_duplicates_and_the_same_state(
    emini_ticks_path: Path, tmp_path: Path
) -> None:
    records = id_stream(emini_ticks_path)
    outs, states = run_events(Normalize(stream_config()), records)
    f = tmp_path / "ids.csv"
    body = "\n".join(r.payload for r in records)
    f.write_text(f"ts,symbol,price,size,venue,trade_id\n{body}\n")
    cols = load_tick_columns(f, tz="America/Chicago")
    result = NormalizeColumns(Normalize(stream_config())).validate(cols)
    assert [r.value if r else None for r in result.reasons()] == reasons(outs)
    assert result.states == states
    assert DlqReason.DUPLICATE.value in reasons(outs)


def test_late_resends_are_counted_as_stale_on_both_paths_and_the_window_is_a_setting(
    emini_ticks_path: Path, tmp_path: Path
) -> None:
    """Real E-mini trades with venue ids; at the end a feed re-sends its first 300 trades
    verbatim (original times, 9 hours back). They used to be accepted a second time."""
    records = id_stream(emini_ticks_path)
    header = "ts,symbol,price,size,venue,trade_id\n"
    stream = [r.payload for r in records]

    def run(name: str, lines: list[str], mode: str, *extra: str) -> tuple[dict, bytes]:
        f = tmp_path / f"{name}.csv"
        f.write_text(header + "\n".join(lines) + "\n")
        out = tmp_path / f"{name}-{mode}-{len(extra)}"
        summary = tmp_path / f"{out.name}.json"
        assert main(["run", "--ticks", str(f), "--tz", "America/Chicago", "--out", str(out),
                     "--mode", mode, "--no-trade", "--quiet", "--summary-json", str(summary),
                     *extra]) == 0
        dlq = (out / "topics" / "md.ticks.dlq.jsonl").read_bytes()
        return json.loads(summary.read_text())["dlq_by_reason"], dlq

    resent = stream + stream[:300]
    batch, event = run("resent", resent, "batch"), run("resent", resent, "event")
    assert batch[1] == event[1]  # the same dead letters, byte for byte
    base, _ = run("stream", stream, "event")
    assert "STALE_TRADE_ID" not in base  # in order, nothing is too old to check
    assert event[0] == {**base, "STALE_TRADE_ID": 300}  # none of the re-sends got through
    # With a 12-hour window every id is still remembered: the re-sends are plain duplicates.
    wide_base, _ = run("stream", stream, "event", "--dedupe-window", "12h")
    wide, _ = run("resent", resent, "event", "--dedupe-window", "12h")
    assert wide == {**wide_base, "DUPLICATE": wide_base["DUPLICATE"] + 300}
