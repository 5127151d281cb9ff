"""A malformed-input corpus: every bad record lands in the DLQ with the right reason, its raw
payload and its source; the valid records around it pass through unchanged; nothing raises.
"""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

import pandas as pd
import pytest

from jobs.loaders.instruments import (
    Instrument,
    known_symbols,
    load_instruments,
    parse_instruments_csv,
)
from jobs.tick_files import iter_raw_records, normalize_config_for
from operators.contract import Emit, SimpleContext
from operators.domain.dedupe import DedupeState
from operators.normalize import TICKS_TOPIC, Normalize, NormalizeConfig, RawRecord
from topics import serde
from topics.catalog import topic
from topics.dlq import DLQ_TOPIC, DlqReason
from topics.messages import DeadLetter, RawTick, SourceRef, Tick

CSV_HEADER = "ts,symbol,price,size,venue,trade_id,bid,ask"

# (line text, expected reason or None for a valid row). Blank strings are blank lines.
CSV_CORPUS: list[tuple[str, DlqReason | None]] = [
    ("2024-03-01T14:30:00.000000001Z,ES,5100.25,3,CME,t1,5100.00,5100.50", None),
    ("2024-03-01T14:30:00.1Z,ES,nan,1,CME,t2,,", DlqReason.BAD_PRICE),
    ("2024-03-01T14:30:00.2Z,ES,inf,1,CME,t3,,", DlqReason.BAD_PRICE),
    ("2024-03-01T14:30:00.3Z,ES,0,1,CME,t4,,", DlqReason.BAD_PRICE),
    ("2024-03-01T14:30:00.4Z,ES,-5100.25,1,CME,t5,,", DlqReason.BAD_PRICE),
    ("2024-03-01T14:30:00.5Z,ES,5100.25,-1,CME,t6,,", DlqReason.BAD_SIZE),
    ("2024-03-01 14:30:00.6,NQ,18000.5,0,,,,", None),  # zero size is a trade; venue default
    ("yesterday,ES,5100.25,1,CME,t7,,", DlqReason.BAD_TIMESTAMP),
    (",ES,5100.25,1,CME,t8,,", DlqReason.BAD_TIMESTAMP),
    ("2024-03-01T14:30:00.7Z,,5100.25,1,CME,t9,,", DlqReason.EMPTY_SYMBOL),
    ("2024-03-01T14:30:00.8Z,   ,5100.25,1,CME,t10,,", DlqReason.EMPTY_SYMBOL),
    ("2024-03-01T14:30:00.9Z,XYZ,5100.25,1,CME,t11,,", DlqReason.UNKNOWN_SYMBOL),
    ("2024-03-01T14:30:01Z,ES,5100.5,2,CME,t1,,", DlqReason.DUPLICATE),  # t1 of line 2
    ("2024-03-01T14:30:01.1Z,ES,5100.5,2,ICE,t1,,", None),  # same id, other venue
    ("2024-03-01T14:30:01.2Z,ES,5100.5,2,CME,t12,5101,5100", DlqReason.CROSSED_QUOTE),
    ("2024-03-01T14:30:01.3Z,ES,5100.5,2,CME,t13,-1,5100", DlqReason.BAD_QUOTE),
    ("2024-03-01T14:30:01.4Z,ES,5100.5,2,CME,t14,abc,5100", DlqReason.BAD_QUOTE),
    ("2024-03-01T14:30:01.5Z,ES,5100.5,2,CME,t15,5100,inf", DlqReason.BAD_QUOTE),
    ("2024-03-01T14:30:01.6Z,ES,5100.5,2,CME", DlqReason.BAD_CSV),
    ("2024-03-01T14:30:01.7Z,ES,5100.5,2,CME,t16,1,2,extra", DlqReason.BAD_CSV),
    ("2024-03-01T14:30:01.8Z,ES,,2,CME,t17,,", DlqReason.MISSING_FIELD),
    ("2024-03-01T14:30:01.9Z,ES,5100.5,,CME,t18,,", DlqReason.MISSING_FIELD),
    ("2024-03-01T14:30:02Z,ES,abc,2,CME,t19,,", DlqReason.BAD_PRICE),
    ("2024-03-01T14:30:02.1Z,ES,1_000,2,CME,t20,,", DlqReason.BAD_PRICE),
    ("2024-03-01T14:30:02.2Z,ES,5100.5,nan,CME,t21,,", DlqReason.BAD_SIZE),
    ("2024-03-01T14:30:02.3Z,ES,5100.5,1e400,CME,t22,,", DlqReason.BAD_SIZE),
    ("1709303402400,NQ,18001.25,5,CME,,,", None),  # epoch ms
    ('"2024-03-01 14:30:02.5","ES","5100.75","4",CME,t23,,', None),  # quoted cells
    ('"2024-03-01 14:30:02.6,ES,5100.75,4,CME,t24,,', DlqReason.BAD_CSV),  # unterminated quote
    ("", None),  # a blank line is not a record but keeps the numbering
    ("2024-03-01T14:30:02.7Z,ES,5100.75,4,CME,t25,0,0", None),  # bid == ask, zero bid
    ("2024-03-01T16:00:00Z,ES,5100.75,4,CME,t23,,", None),  # t23 is > 1 h old: re-admitted
    ("2024-03-01T16:00:01Z,ES,5100.75,1,CME,t1,,", None),  # t1 expired too
    ("2024-03-01T16:00:02Z,ES,5100.75,1,CME,t23,,", DlqReason.DUPLICATE),  # t23 again, fresh
    ("2024-03-01T16:00:03Z,NQ,18002,1,CME,t23,,", None),  # same id on another symbol
    ("2024-03-01T16:00:04Z,ES,5100.75,1,CME,   ,,", None),  # blank id: no dedupe
    ("2024-03-01T16:00:04Z,ES,5100.75,1,CME,,,", None),  # identical trade without id
    ("2024-03-01T16:00:04Z,ES,5100.75,1,CME,,,", None),
]

# JSON payloads (Kafka values), with the expected reason.
JSON_CORPUS: list[tuple[str, DlqReason | None]] = [
    (
        '{"ts": "2024-03-01T14:30:00Z", "symbol": "BTC-USD", "price": 62000.5, "size": 0.25,'
        ' "venue": "COINBASE", "trade_id": 123}',
        None,
    ),
    ('{"ts": "2024-03-01T14:30:00Z", "symbol": "BTC-USD", "price": 62000.5', DlqReason.BAD_JSON),
    ("not json at all", DlqReason.BAD_JSON),
    ("", DlqReason.BAD_JSON),
    ("[1, 2, 3]", DlqReason.BAD_SCHEMA),
    ('"just a string"', DlqReason.BAD_SCHEMA),
    ('{"ts": 1709303400, "symbol": "BTC-USD", "price": true, "size": 1}', DlqReason.BAD_SCHEMA),
    ('{"ts": 1709303400, "symbol": ["BTC"], "price": 1, "size": 1}', DlqReason.BAD_SCHEMA),
    ('{"ts": 1e400, "symbol": "BTC-USD", "price": 1, "size": 1}', DlqReason.BAD_SCHEMA),
    ('{"ts": 1709303400, "symbol": "BTC-USD", "price": NaN, "size": 1}', DlqReason.BAD_JSON),
    ('{"ts": 1709303400, "symbol": "BTC-USD", "price": "NaN", "size": 1}', DlqReason.BAD_PRICE),
    ('{"ts": 1709303400, "symbol": "BTC-USD", "price": -1e-9, "size": 1}', DlqReason.BAD_PRICE),
    ('{"ts": 1709303400, "price": 1, "size": 1}', DlqReason.MISSING_FIELD),
    ('{"ts": 1709303400, "symbol": null, "price": 1, "size": 1}', DlqReason.MISSING_FIELD),
    ('{"ts": 1709303400, "symbol": "BTC-USD", "size": 1}', DlqReason.MISSING_FIELD),
    ('{"ts": 1709303400, "symbol": "BTC-USD", "price": 1}', DlqReason.MISSING_FIELD),
    ('{"symbol": "BTC-USD", "price": 1, "size": 1}', DlqReason.BAD_TIMESTAMP),
    ('{"ts": "", "symbol": "BTC-USD", "price": 1, "size": 1}', DlqReason.BAD_TIMESTAMP),
    ("{}", DlqReason.BAD_TIMESTAMP),
    ('{"ts": 1709303400, "symbol": "", "price": 1, "size": 1}', DlqReason.EMPTY_SYMBOL),
    (
        '{"ts": 1709303400123, "symbol": "BTC-USD", "price": 62001, "size": 2,'
        ' "venue": "COINBASE", "trade_id": "123"}',
        DlqReason.DUPLICATE,  # integer id 123 above and the string "123" are one id
    ),
    (
        '{"ts": 1709303400123456, "symbol": "ETH-USD", "price": 3400.1, "size": 2,'
        ' "venue": "COINBASE", "trade_id": 123}',
        None,
    ),
    (
        '{"ts": "2024-03-01 14:30:00", "symbol": "ETH-USD", "price": 3400, "size": 1,'
        ' "bid": 3401, "ask": 3399.5}',
        DlqReason.CROSSED_QUOTE,
    ),
    (
        '{"ts": 1709303400999999999, "symbol": " BTC-USD ", "price": "62000.5", "size": "1",'
        ' "bid": "62000", "ask": 62001, "exchange_extra": {"x": [1]}}',
        None,  # strings are trimmed, numbers may be strings, unknown keys are ignored
    ),
]


def write_csv_corpus(path: Path) -> None:
    path.write_text("\n".join([CSV_HEADER] + [line for line, _ in CSV_CORPUS]) + "\n")


def csv_config(path: Path, instruments: tuple[str, ...] | None = ("ES", "NQ")) -> NormalizeConfig:
    return normalize_config_for(path, default_venue="CME", instruments=instruments)


def run_events(
    op: Normalize, records: list[RawRecord], states: dict[str, DedupeState] | None = None
) -> tuple[list[Emit], dict[str, DedupeState]]:
    """A minimal keyed runtime: one state per key, events in order."""
    states = {} if states is None else states
    ctx = SimpleContext()
    out: list[Emit] = []
    for rec in records:
        k = op.key(rec)
        st = states.get(k)
        if st is None:
            st = op.new_state(k)
        st, emitted = op.process(st, rec, ctx)
        states[k] = st
        out.extend(emitted)
    return out, states


def expected_tick(line: str, lineno: int, file: str) -> Tick:
    """The tick a valid corpus line should become, computed with pandas and float()."""
    frame = pd.read_csv(io.StringIO(line), header=None, dtype=str, keep_default_na=False)
    cells = frame.iloc[0].tolist()
    ts, sym, price, size, venue, tid, bid, ask = (str(c).strip() for c in cells)
    ts_ns = pd.Timestamp(int(ts), unit="ms").value if ts.isdigit() else pd.Timestamp(ts).value
    return Tick(
        ts_event=ts_ns,
        symbol=sym,
        venue=venue or "CME",
        price=float(price),
        size=float(size),
        trade_id=tid or None,
        bid=float(bid) if bid else None,
        ask=float(ask) if ask else None,
        source=SourceRef(file=file, line=lineno),
    )


def test_every_bad_csv_row_reaches_the_dlq_with_reason_payload_and_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    write_csv_corpus(path)
    op = Normalize(csv_config(path))
    records = list(iter_raw_records(path))
    outputs, _ = run_events(op, records)

    expected = [(i + 2, line, r) for i, (line, r) in enumerate(CSV_CORPUS) if line]
    assert len(outputs) == len(records) == len(expected)
    for out, (lineno, line, reason) in zip(outputs, expected, strict=True):
        if reason is None:
            assert out.topic == TICKS_TOPIC and out.key == out.value.symbol, (lineno, out)
            assert out.value == expected_tick(line, lineno, str(path)), lineno
        else:
            assert out.topic == DLQ_TOPIC and out.key == "", (lineno, out)
            dl = out.value
            assert isinstance(dl, DeadLetter)
            assert (dl.reason, dl.payload, dl.source) == (
                reason.value,
                line,
                SourceRef(file=str(path), line=lineno),
            ), lineno
            assert dl.detail


def test_dead_letter_details_name_the_field_and_value(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    write_csv_corpus(path)
    outputs, _ = run_events(Normalize(csv_config(path)), list(iter_raw_records(path)))
    by_line = {o.value.source.line: o.value for o in outputs if o.topic == DLQ_TOPIC}
    assert "price" in by_line[3].detail and "nan" in by_line[3].detail
    assert "size" in by_line[7].detail and "-1" in by_line[7].detail
    assert "yesterday" in by_line[9].detail
    assert "XYZ" in by_line[13].detail
    assert "t1" in by_line[14].detail and "CME" in by_line[14].detail
    assert "5101" in by_line[16].detail and "5100" in by_line[16].detail
    assert "abc" in by_line[18].detail and "bid" in by_line[18].detail
    assert "5 cells" in by_line[20].detail


def test_dead_letters_carry_the_parsed_event_time_when_there_is_one(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    write_csv_corpus(path)
    outputs, _ = run_events(Normalize(csv_config(path)), list(iter_raw_records(path)))
    by_line = {o.value.source.line: o.value for o in outputs if o.topic == DLQ_TOPIC}
    assert by_line[3].ts_event == pd.Timestamp("2024-03-01T14:30:00.1Z").value
    assert by_line[9].ts_event is None  # unparseable time
    assert by_line[20].ts_event is None  # the line never split into fields


def test_every_bad_json_record_reaches_the_dlq_with_its_kafka_coordinates() -> None:
    op = Normalize(NormalizeConfig())
    records = [
        RawRecord(payload=p, source=SourceRef(topic="md.ticks.raw", partition=3, offset=100 + i))
        for i, (p, _) in enumerate(JSON_CORPUS)
    ]
    outputs, _ = run_events(op, records)
    assert len(outputs) == len(records)
    for i, (out, (payload, reason)) in enumerate(zip(outputs, JSON_CORPUS, strict=True)):
        if reason is None:
            assert out.topic == TICKS_TOPIC, (i, out)
            continue
        assert out.topic == DLQ_TOPIC, (i, out)
        assert out.value.reason == reason.value, (i, out.value)
        assert out.value.payload == payload
        assert out.value.source == SourceRef(topic="md.ticks.raw", partition=3, offset=100 + i)

    ticks = [o.value for o in outputs if o.topic == TICKS_TOPIC]
    assert ticks[0] == Tick(
        ts_event=pd.Timestamp("2024-03-01T14:30:00Z").value,
        symbol="BTC-USD",
        venue="COINBASE",
        price=62000.5,
        size=0.25,
        trade_id="123",
        source=records[0].source,
    )
    assert ticks[1].ts_event == pd.Timestamp(1709303400123456, unit="us").value
    assert (ticks[1].symbol, ticks[1].trade_id, ticks[1].venue) == ("ETH-USD", "123", "COINBASE")
    last = ticks[2]
    assert (last.symbol, last.venue, last.price, last.size, last.bid, last.ask) == (
        "BTC-USD",
        "UNKNOWN",
        62000.5,
        1.0,
        62000.0,
        62001.0,
    )
    assert last.ts_event == 1709303400999999999


def test_decoded_fields_skip_parsing_and_odd_python_values_are_rejected_not_raised() -> None:
    op = Normalize(NormalizeConfig(default_symbol="ES"))
    src = SourceRef(file="mem", line=1)
    good = RawRecord(payload="", source=src, fields=RawTick(ts=1_700_000_000, price=10, size=1))
    odd = [
        RawTick(ts=True, price=1, size=1),  # type: ignore[arg-type]
        RawTick(ts=1_700_000_000, symbol=5, price=1, size=1),  # type: ignore[arg-type]
        RawTick(ts=1_700_000_000, price=10**400, size=1),
        RawTick(ts=1_700_000_000, price=1, size=object()),  # type: ignore[arg-type]
        RawTick(ts=1_700_000_000, price=1, size=1, venue=3),  # type: ignore[arg-type]
        RawTick(ts=1_700_000_000, price=1, size=1, trade_id=1.5),  # type: ignore[arg-type]
    ]
    outs, _ = run_events(op, [good] + [RawRecord(payload="", source=src, fields=f) for f in odd])
    assert outs[0].value == Tick(
        ts_event=1_700_000_000 * 10**9,
        symbol="ES",
        venue="UNKNOWN",
        price=10.0,
        size=1.0,
        source=src,
    )
    reasons = [o.value.reason for o in outs[1:]]
    assert reasons == [
        "BAD_TIMESTAMP",
        "BAD_SCHEMA",
        "BAD_PRICE",
        "BAD_SIZE",
        "BAD_SCHEMA",
        "BAD_SCHEMA",
    ]


def test_garbage_and_mutated_real_lines_never_raise_and_give_one_output_each(
    emini_ticks_path: Path,
) -> None:
    src = emini_ticks_path.read_text().splitlines()[1:2001]
    rng = random.Random(20240301)
    alphabet = ',.-+:eE0123456789 "{}[]nainfNaN\tZT\x00é'
    payloads = []
    for line in src:
        chars = list(line)
        for _ in range(rng.randint(1, 4)):
            op_kind = rng.random()
            pos = rng.randrange(len(chars) + 1)
            if op_kind < 0.4 and chars:
                chars[min(pos, len(chars) - 1)] = rng.choice(alphabet)
            elif op_kind < 0.7:
                chars.insert(pos, rng.choice(alphabet))
            elif chars:
                del chars[min(pos, len(chars) - 1)]
        payloads.append("".join(chars))
    payloads += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(500)
    ]
    cfg = NormalizeConfig(
        tz="America/Chicago",
        csv_columns=("ts", "price", "size"),
        default_symbol="ES",
        instruments=("ES",),
    )
    for config in (cfg, NormalizeConfig(default_symbol="ES")):  # as CSV, then as JSON
        op = Normalize(config)
        records = [
            RawRecord(payload=p, source=SourceRef(file="fuzz", line=i))
            for i, p in enumerate(payloads)
        ]
        outputs, _ = run_events(op, records)
        assert len(outputs) == len(records)
        for rec, out in zip(records, outputs, strict=True):
            if out.topic == TICKS_TOPIC:
                t = out.value
                assert math.isfinite(t.price) and t.price > 0 and t.size >= 0
            else:
                assert out.value.reason in set(DlqReason) - {DlqReason.INTERNAL}, out.value
                assert out.value.payload == rec.payload
            serde.encode(out.value)  # every output is a valid topic message


def test_outputs_match_the_topic_catalog_and_round_trip_through_serde(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    write_csv_corpus(path)
    outputs, _ = run_events(Normalize(csv_config(path)), list(iter_raw_records(path)))
    for out in outputs:
        spec = topic(out.topic)
        assert isinstance(out.value, spec.schema)
        assert serde.decode(out.topic, serde.encode(out.value)) == out.value


def test_unknown_symbol_only_when_an_instrument_list_is_configured(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    write_csv_corpus(path)
    outputs, _ = run_events(Normalize(csv_config(path, None)), list(iter_raw_records(path)))
    line_13 = next(o for o in outputs if o.value.source.line == 13)
    assert line_13.topic == TICKS_TOPIC and line_13.value.symbol == "XYZ"


INSTRUMENTS_CSV = """symbol,venue,multiplier,tick_size,lot_size,group,session_start,sector
ES,CME,50,0.25,1,equity_index,17:00,index
NQ,CME,20,0.25,,equity_index,17:00,index
BTC-USD,COINBASE,,,0.0001,crypto,,
"""

INSTRUMENTS_TOML = """
[[instrument]]
symbol = "ES"
venue = "CME"
multiplier = 50
tick_size = 0.25
lot_size = 1
group = "equity_index"
session_start = "17:00"
sector = "index"

[[instrument]]
symbol = "NQ"
venue = "CME"
multiplier = 20
tick_size = 0.25
group = "equity_index"
session_start = "17:00"
sector = "index"

[[instrument]]
symbol = "BTC-USD"
venue = "COINBASE"
lot_size = 0.0001
group = "crypto"
"""


def test_instrument_files_in_csv_and_toml_give_the_same_frozen_records(tmp_path: Path) -> None:
    (tmp_path / "ins.csv").write_text(INSTRUMENTS_CSV)
    (tmp_path / "ins.toml").write_text(INSTRUMENTS_TOML)
    from_csv = load_instruments(tmp_path / "ins.csv")
    from_toml = load_instruments(tmp_path / "ins.toml")
    assert from_csv[:2] == from_toml[:2]
    assert from_csv[0] == Instrument(
        symbol="ES",
        venue="CME",
        multiplier=50.0,
        tick_size=0.25,
        lot_size=1.0,
        group="equity_index",
        session_start="17:00",
        extra=(("sector", "index"),),
    )
    btc = from_csv[2]
    assert (btc.multiplier, btc.tick_size, btc.lot_size, btc.extra) == (1.0, 0.01, 0.0001, ())
    assert known_symbols(from_csv) == ("BTC-USD", "ES", "NQ")
    with pytest.raises(AttributeError):
        btc.symbol = "X"  # type: ignore[misc]
    # the loaded list drives UNKNOWN_SYMBOL
    op = Normalize(NormalizeConfig(instruments=known_symbols(from_toml)))
    rec = RawRecord(
        payload='{"ts": 1, "symbol": "ETH-USD", "price": 1, "size": 1}',
        source=SourceRef(file="x", line=1),
    )
    assert op.process(op.new_state("ETH-USD"), rec, SimpleContext())[1][0].value.reason == (
        "UNKNOWN_SYMBOL"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("venue,multiplier\nCME,50\n", "no 'symbol' column"),
        ("symbol,multiplier\nES,0\n", "multiplier"),
        ("symbol,multiplier\nES,abc\n", "multiplier"),
        ("symbol,tick_size\nES,nan\n", "tick_size"),
        ("symbol,venue\nES,CME\nES,CME\n", "duplicate"),
        ("symbol,venue\nES\n", "cells"),
        ("", "empty"),
    ],
)
def test_bad_instrument_files_fail_loudly(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_instruments_csv(text)


def test_config_validation_rejects_bad_settings() -> None:
    for kwargs in (
        {"csv_columns": ("ts", "px")},
        {"csv_columns": ("ts", "ts")},
        {"csv_columns": ()},
        {"csv_delimiter": ",,"},
        {"default_symbol": ""},
        {"default_symbol": " ES"},
        {"default_venue": ""},
        {"instruments": ("ES", "")},
        {"dedupe_window_ns": 0},
        {"dedupe_max_ids": 0},
    ):
        with pytest.raises(ValueError):
            NormalizeConfig(**kwargs)  # type: ignore[arg-type]
    cfg = NormalizeConfig(csv_columns=("ts", "", "price", "size"))
    with pytest.raises(AttributeError):
        cfg.tz = "UTC"  # type: ignore[misc]
