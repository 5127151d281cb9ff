"""The columnar path (``load_tick_columns`` + ``NormalizeColumns``) equals the per-event path
(``iter_raw_records`` + ``process``) row for row: same ticks, same DLQ reasons, event times,
payloads and sources, and the same dedupe state.
"""

from __future__ import annotations

import gzip
import random
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from jobs.accel.normalize_columns import NormalizeColumns
from jobs.tick_files import iter_raw_records, load_tick_columns, normalize_config_for
from operators.contract import Emit, SimpleContext
from operators.normalize import TICKS_TOPIC, Normalize, NormalizeConfig
from tests.test_normalize_dlq_corpus import csv_config, run_events, write_csv_corpus
from topics.dlq import DLQ_TOPIC, DlqReason
from topics.messages import DeadLetter, Tick

EMINI_MAP = {"DateTime": "ts", "Price": "price", "Volume": "size"}


def dl_key(d: DeadLetter) -> tuple[object, ...]:
    return (d.reason, d.ts_event, d.payload, d.source)


def assert_paths_agree(
    path: Path, config: NormalizeConfig, column_map: dict[str, str] | None = None
) -> tuple[list[Emit], int]:
    """Run both paths over one file; return the per-event outputs and the DLQ count."""
    events, states = run_events(Normalize(config), list(iter_raw_records(path)))
    cols = load_tick_columns(
        path,
        column_map,
        config.tz,
        config.default_symbol,
        config.default_venue,
        delimiter=config.csv_delimiter,
    )
    op = NormalizeColumns(Normalize(config))
    result = op.validate(cols)
    assert len(cols) == len(events)
    assert result.reasons() == [
        None if e.topic == TICKS_TOPIC else DlqReason(e.value.reason) for e in events
    ]
    assert [dl_key(d) for d in result.dead_letters] == [
        dl_key(e.value) for e in events if e.topic == DLQ_TOPIC
    ]
    assert op.ticks(cols, result.valid) == [
        e.value for e in events if e.topic == TICKS_TOPIC
    ]
    assert {k: v for k, v in result.states.items() if v.ids} == {
        k: v for k, v in states.items() if v.ids
    }
    return events, len(result.dead_letters)


def test_the_emini_file_gives_identical_ticks_on_both_paths(emini_ticks_path: Path) -> None:
    cfg = normalize_config_for(
        emini_ticks_path,
        EMINI_MAP,
        tz="America/Chicago",
        default_symbol="ES",
        default_venue="CME",
    )
    cols = load_tick_columns(emini_ticks_path, EMINI_MAP, "America/Chicago", "ES", "CME")
    result = NormalizeColumns(Normalize(cfg)).validate(cols)
    assert len(cols) == 500_000
    assert result.valid.all() and result.dead_letters == []

    sample = np.zeros(len(cols), dtype=bool)
    sample[::997] = True
    sample[-1] = True
    batch_sample = iter(NormalizeColumns(Normalize(cfg)).ticks(cols, sample))
    op, ctx = Normalize(cfg), SimpleContext()
    state = op.new_state("ES")
    ts = np.empty(len(cols), np.int64)
    price = np.empty(len(cols))
    size = np.empty(len(cols))
    line = np.empty(len(cols), np.int64)
    n = 0
    for rec in iter_raw_records(emini_ticks_path):
        state, (out,) = op.process(state, rec, ctx)
        tick = out.value
        assert out.topic == TICKS_TOPIC and isinstance(tick, Tick)
        ts[n], price[n], size[n], line[n] = tick.ts_event, tick.price, tick.size, tick.source.line
        if sample[n]:
            assert tick == next(batch_sample)  # whole messages, field for field
        n += 1
    assert n == len(cols)
    np.testing.assert_array_equal(cols.ts, ts)
    np.testing.assert_array_equal(cols.price, price)
    np.testing.assert_array_equal(cols.size, size)
    np.testing.assert_array_equal(cols.line, line)


def test_the_malformed_corpus_gives_the_same_reasons_on_both_paths(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    write_csv_corpus(path)
    _, n_dead = assert_paths_agree(path, csv_config(path))
    assert n_dead >= 25


CORRUPTIONS = [
    ("price", "nan"),
    ("price", "-1"),
    ("price", "0"),
    ("price", "abc"),
    ("price", ""),
    ("price", "inf"),
    ("price", "1e999"),
    ("price", " 1640.25 "),
    ("price", "1_640"),
    ("price", "１６４０"),
    ("size", "-3"),
    ("size", ""),
    ("size", "nan"),
    ("size", "0"),
    ("size", "2.5"),
    ("size", "-0"),
    ("ts", "garbage"),
    ("ts", ""),
    ("ts", "2013-02-30 10:00:00.000"),
    ("ts", "2013-09-01 25:00:00.000"),
    ("ts", "1378072800083"),
    ("ts", "2013-09-01T17:00:00.083Z"),
    ("ts", "2013-09-01 17:00:00"),
    ("ts", "2013-09-01 17:00:00.1234"),
    ("row", "drop"),
    ("row", "extra"),
    ("row", "quote"),
    ("row", "badquote"),
    ("row", "blank"),
    ("row", "empty"),
]


def corrupt_emini(src: Path, dst: Path, n: int, rate: float, seed: int) -> int:
    lines = src.read_text().splitlines()[: n + 1]
    rng = random.Random(seed)
    out = [lines[0]]
    changed = 0
    for line in lines[1:]:
        if rng.random() >= rate:
            out.append(line)
            continue
        changed += 1
        ts, price, size = line.split(",")
        what, value = rng.choice(CORRUPTIONS)
        if what == "price":
            price = value
        elif what == "size":
            size = value
        elif what == "ts":
            ts = value
        elif value == "drop":
            out.append(f"{ts},{price}")
            continue
        elif value == "extra":
            out.append(f"{line},X")
            continue
        elif value == "quote":
            out.append(f'"{ts}","{price}",{size}')
            continue
        elif value == "badquote":
            out.append(f'"{ts},{price},{size}')
            continue
        elif value == "blank":
            out.append("")
        elif value == "empty":
            out.append(",,")
            continue
        out.append(f"{ts},{price},{size}")
    dst.write_bytes(gzip.compress(("\r\n".join(out) + "\r\n").encode()))
    return changed


def test_a_corrupted_gzipped_emini_extract_gives_the_same_dlq_on_both_paths(
    emini_ticks_path: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "ticks.csv.gz"
    changed = corrupt_emini(emini_ticks_path, dst, n=60_000, rate=0.03, seed=3)
    cfg = normalize_config_for(
        dst,
        EMINI_MAP,
        tz="America/Chicago",
        default_symbol="ES",
        default_venue="CME",
        instruments=("ES",),
    )
    events, n_dead = assert_paths_agree(dst, cfg, EMINI_MAP)
    assert 0.5 * changed < n_dead < changed
    seen = {e.value.reason for e in events if e.topic == DLQ_TOPIC}
    assert seen == {"BAD_PRICE", "BAD_SIZE", "BAD_TIMESTAMP", "BAD_CSV", "MISSING_FIELD"}


def test_a_file_without_symbols_and_no_default_is_missing_field_on_both_paths(
    emini_ticks_path: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "few.csv"
    dst.write_text("\n".join(emini_ticks_path.read_text().splitlines()[:200]) + "\n")
    cfg = normalize_config_for(dst, EMINI_MAP, tz="America/Chicago")
    events, n_dead = assert_paths_agree(dst, cfg, EMINI_MAP)
    assert n_dead == 199 and {e.value.reason for e in events} == {"MISSING_FIELD"}


@pytest.mark.parametrize("tz", ["America/Chicago", "Australia/Lord_Howe", "Europe/London"])
def test_naive_times_across_dst_transitions_agree_on_both_paths(tmp_path: Path, tz: str) -> None:
    rows = []
    for day in ("2013-03-10", "2013-11-03", "2013-03-31", "2013-10-27", "2013-10-06", "2013-04-07"):
        t = datetime.fromisoformat(f"{day}T00:00:00")
        for k in range(0, 4 * 3600, 37):
            stamp = t + timedelta(seconds=k, milliseconds=(k * 7) % 1000)
            rows.append(f"{stamp.isoformat(sep=' ', timespec='milliseconds')},ES,100.25,1")
    path = tmp_path / "dst.csv"
    path.write_text("ts,symbol,price,size\n" + "\n".join(rows) + "\n")
    events, n_dead = assert_paths_agree(
        path, NormalizeConfig(tz=tz, csv_columns=("ts", "symbol", "price", "size"))
    )
    assert n_dead == 0
    zone = ZoneInfo(tz)
    for row, e in zip(rows, events, strict=True):  # and both equal zoneinfo with fold=0
        wall = datetime.fromisoformat(row.split(",")[0]).replace(tzinfo=zone)
        assert e.value.ts_event == round(wall.timestamp() * 1000) * 10**6


def test_a_batch_then_per_event_continuation_equals_per_event_throughout(tmp_path: Path) -> None:
    rng = random.Random(8)
    rows = []
    for i in range(3000):
        tid = f"id{max(0, i - rng.randint(0, 40)) if rng.random() < 0.3 else i}"
        sym = rng.choice(["ES", "NQ"])
        rows.append(f"{1_700_000_000_000 + 250 * i},{sym},{100 + i % 7},1,CME,{tid},,")
    path = tmp_path / "ids.csv"
    path.write_text("ts,symbol,price,size,venue,trade_id,bid,ask\n" + "\n".join(rows) + "\n")
    cfg = NormalizeConfig(
        csv_columns=("ts", "symbol", "price", "size", "venue", "trade_id", "bid", "ask"),
        dedupe_window_ns=2 * 10**9,
    )
    records = list(iter_raw_records(path))
    whole, _ = run_events(Normalize(cfg), records)

    half = tmp_path / "first_half.csv"
    half.write_text("ts,symbol,price,size,venue,trade_id,bid,ask\n" + "\n".join(rows[:1500]) + "\n")
    cols = load_tick_columns(half)
    result = NormalizeColumns(Normalize(cfg)).validate(cols)
    kept = cols.select(result.valid)
    assert len(kept) == int(result.valid.sum()) < len(cols)
    assert kept.payload_of(0) == cols.payload_of(int(np.flatnonzero(result.valid)[0]))
    assert NormalizeColumns(Normalize(cfg)).validate(kept).valid.all()  # fresh state: all admitted
    rest, _ = run_events(Normalize(cfg), records[1500:], dict(result.states))
    first = [None if r is None else r.value for r in result.reasons()]
    second = [None if e.topic == TICKS_TOPIC else e.value.reason for e in rest]
    assert first + second == [None if e.topic == TICKS_TOPIC else e.value.reason for e in whole]
    assert "DUPLICATE" in second
