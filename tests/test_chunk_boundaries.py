"""Tick files stream in chunks, and where the chunks end changes no byte of output.

A real E-mini slice with crafted bad rows (every kind of dead letter a CSV or JSON line can
earn, quoted cells, blank lines, a stray byte), resent and stale trade ids, a second symbol and
out-of-order ticks mixed in, is replayed with chunks of seven lines and with byte blocks that
cut lines, CRLF pairs and gzip members anywhere, and compared with one chunk holding the whole
file: the topic files (dead letters with their lines and details, ticks, late ticks, bars,
features, and with the decision chain orders and fills) are the same bytes, and the same as
the per-event reference path's.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from jobs.batch_replay import run_batch_ticks
from jobs.event_replay import run_event_ticks
from jobs.graph import Stage
from jobs.options import ReplayOptions
from jobs.progress import Progress
from jobs.replay import chain_options
from jobs.sources import TickInput, normalize_config, resolve_ticks
from jobs.topic_sink import TopicSink
from jobs.topology import chain_stages, opened, tick_graph
from operators.domain.bars import parse_duration
from operators.features import FeaturesConfig, WindowFeatures
from operators.normalize import Normalize
from tests._emini_slice import slice_fixtures
from topics.serde import decode

emini_slice, slice_models = slice_fixtures()

TZ = "America/Chicago"
LATENESS_NS = 1_000_000_000
BAR_NS = parse_duration("1m")
ONE_CHUNK: dict[str, Any] = {"block_bytes": None}
DEDUPE_WINDOW_NS = 300_000_000_000  # 5 minutes: a resend 20 minutes on is stale
CHUNKINGS = {"7 lines": {"max_lines": 7}, "997-byte blocks": {"block_bytes": 997}}


def dirty_rows(slice_path: Path, start: int, stop: int, *, second_symbol: bool
               ) -> list[dict[str, str]]:
    """The slice's trades ``start`` to ``stop`` with trade ids, and crafted rows mixed in.

    A row is a dict of cells; ``"raw"`` holds a line to write as it is (bad rows, blanks).
    """
    with slice_path.open() as f:
        next(f)
        trades = [line.rstrip("\n").split(",")
                  for _, line in zip(range(stop), f, strict=False)][start:]
    rows: list[dict[str, str]] = []
    for i, (ts, sym, price, size) in enumerate(trades):
        if i % 97 == 50:  # arrives 1.5 s behind its neighbours: late with 1 s of lateness
            sec = int(ts[17:19])
            if sec >= 2:
                ts = f"{ts[:17]}{sec - 2:02d}{ts[19:]}"
        rows.append({"ts": ts, "symbol": sym, "price": price, "size": size,
                     "trade_id": f"T{i}" if i % 13 else ""})
        if i % 211 == 100:  # a resend of a recent trade: DUPLICATE
            rows.append(dict(rows[-4]) if rows[-4].get("trade_id") else dict(rows[-3]))
        if second_symbol and i % 50 == 7:
            rows.append({"ts": ts, "symbol": "NQ", "price": f"{float(price) / 1.1:.2f}",
                         "size": size, "trade_id": f"N{i}"})
        if i in CRAFTED_AT:
            rows.extend(CRAFTED_AT[i](ts, rows[1]))
    return rows


CRAFTED_AT = {
    11: lambda ts, first: [{"raw": f"{ts},ES,abc,1,B1"}],  # BAD_PRICE
    12: lambda ts, first: [{"raw": ""}, {"raw": "   "}],  # blank lines: skipped, counted
    23: lambda ts, first: [{"raw": "2013-09-01 17:0x:00.000,ES,1640.25,1,B2"}],  # BAD_TIMESTAMP
    40: lambda ts, first: [{"raw": f"{ts},ES,1640.25,-1,B3"}],  # BAD_SIZE
    41: lambda ts, first: [{"raw": f"{ts},ES,1640.25"}],  # BAD_CSV: too few cells
    42: lambda ts, first: [{"raw": f"{ts},ES,1640.25,1,B5,extra"}],  # BAD_CSV: too many
    60: lambda ts, first: [{"raw": f'"{ts}","ES","1640.25","2",Q1'}],  # quoted: a valid tick
    61: lambda ts, first: [{"raw": f'"{ts},ES,1640.25,2,Q2'}],  # BAD_CSV: open quote
    70: lambda ts, first: [{"raw": f"{ts}, ,1640.25,2,B6"}],  # EMPTY_SYMBOL
    90: lambda ts, first: [{"raw": "2200-01-01 00:00:00.000,ES,1640.25,1,B7"}],  # IMPLAUSIBLE
    130: lambda ts, first: [{"raw": f"{ts},ES,16\udcff40.25,1,B8"}],  # BAD_ENCODING
    2000: lambda ts, first: [dict(first)],  # T1 resent ~25 min later: STALE_TRADE_ID
}
"""Crafted rows after the trade with this index. ``\\udcff`` is written as the byte 0xFF."""

EXPECTED_REASONS = {"BAD_PRICE", "BAD_TIMESTAMP", "BAD_SIZE", "BAD_CSV", "EMPTY_SYMBOL",
                    "IMPLAUSIBLE_TIME", "BAD_ENCODING", "DUPLICATE", "STALE_TRADE_ID"}


def write_csv(rows: list[dict[str, str]], path: Path) -> Path:
    """A vendor-ish CSV: a byte-order mark, CRLF endings, optionally gzipped."""
    lines = ["ts,symbol,price,size,trade_id"]
    for r in rows:
        lines.append(r["raw"] if "raw" in r else
                     ",".join((r["ts"], r["symbol"], r["price"], r["size"], r["trade_id"])))
    data = b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n"
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_jsonl(rows: list[dict[str, str]], path: Path) -> Path:
    """The same trades as JSON objects (numbers as numbers); bad rows as bad JSON lines."""
    lines = []
    for r in rows:
        if "raw" in r:
            cells = r["raw"].split(",")
            if len(cells) != 5:
                lines.append(r["raw"])  # not JSON, or a blank line
                continue
            ts, sym, price, size, tid = cells  # kept as text: a stray byte stays a byte
            lines.append(f'{{"ts": "{ts}", "symbol": "{sym}", "price": "{price}", '
                         f'"size": "{size}", "trade_id": "{tid}"}}')
            continue
        obj: dict[str, Any] = {"ts": r["ts"], "symbol": r["symbol"],
                               "price": float(r["price"]), "size": int(r["size"])}
        if r["trade_id"]:
            obj["trade_id"] = r["trade_id"]
        lines.append(json.dumps(obj))
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    return path


def write_tsv(rows: list[dict[str, str]], path: Path) -> Path:
    """Tab-separated, with whitespace-only lines (blank: skipped, however the tabs split),
    the last one without its terminator."""
    lines = ["ts\tsymbol\tprice\tsize\ttrade_id"]
    for i, r in enumerate(rows):
        if "raw" not in r:
            lines.append("\t".join((r["ts"], r["symbol"], r["price"], r["size"],
                                    r["trade_id"])))
        if i % 300 == 150:
            lines.append("\t\t\t\t" if i % 600 else " \t ")
    path.write_text("\n".join(lines) + "\n\t \t")
    return path


def replay(ticks: Path, out: Path, mode: str, chain: tuple[Stage, ...] = (),
           **chunking: Any) -> dict[str, bytes]:
    """Normalize + features (+ the chain) over ``ticks``; the topic files' bytes."""
    src = tick_input(ticks)
    norm = Normalize(normalize_config(src, None, dedupe_window_ns=DEDUPE_WINDOW_NS))
    feats = WindowFeatures(FeaturesConfig(bar_ns=BAR_NS, lateness_ns=LATENESS_NS))
    sink = TopicSink(out, tick_graph(norm, feats, chain).output_topics)
    fn = run_batch_ticks if mode == "batch" else run_event_ticks
    with opened(chain):
        fn(src, norm, feats, chain, sink, LATENESS_NS, [], Progress("", None, enabled=False),
           **chunking)
    sink.close()
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.jsonl"))}


def tick_input(ticks: Path) -> TickInput:
    return resolve_ticks(ReplayOptions(out=Path("unused"), ticks=ticks, tz=TZ, quiet=True,
                                       lateness_ns=LATENESS_NS,
                                       delimiter="\t" if ticks.suffix == ".txt" else ","))


def dead_letters(topics: dict[str, bytes]) -> list[Any]:
    return [decode("md.ticks.dlq", ln) for ln in topics["md.ticks.dlq.jsonl"].splitlines()]


@pytest.fixture(scope="module")
def dirty(emini_slice: Path) -> list[dict[str, str]]:
    return dirty_rows(emini_slice, 0, 2_500, second_symbol=True)


@pytest.mark.parametrize("name", ["ticks.csv", "ticks.csv.gz"])
def test_csv_chunk_boundaries_change_no_byte_of_any_topic(
        tmp_path: Path, dirty: list[dict[str, str]], name: str) -> None:
    ticks = write_csv(dirty, tmp_path / name)
    whole = replay(ticks, tmp_path / "whole", "batch", **ONE_CHUNK)
    dlq = dead_letters(whole)
    assert {d.reason for d in dlq} == EXPECTED_REASONS  # the premise: every kind is there
    assert whole["md.ticks.late.jsonl"].count(b"\n") > 10
    assert {decode("md.ticks", ln).symbol for ln in whole["md.ticks.jsonl"].splitlines()} == {
        "ES", "NQ"}
    for label, chunking in CHUNKINGS.items():
        assert replay(ticks, tmp_path / label, "batch", **chunking) == whole, label
    assert replay(ticks, tmp_path / "event", "event", max_lines=7) == whole


def test_tab_separated_files_skip_whitespace_lines_in_any_chunking(
        tmp_path: Path, dirty: list[dict[str, str]]) -> None:
    ticks = write_tsv(dirty, tmp_path / "ticks.txt")  # .txt: read with --delimiter '\t' here
    whole = replay(ticks, tmp_path / "whole", "batch", **ONE_CHUNK)
    reasons = {d.reason for d in dead_letters(whole)}
    assert reasons == {"DUPLICATE", "STALE_TRADE_ID"}  # the blank lines are no records
    assert replay(ticks, tmp_path / "tiny", "batch", max_lines=7) == whole
    assert replay(ticks, tmp_path / "event", "event") == whole


def test_dead_letters_keep_their_lines_and_details_in_any_chunking(
        tmp_path: Path, dirty: list[dict[str, str]]) -> None:
    ticks = write_csv(dirty, tmp_path / "ticks.csv")
    lines = ticks.read_bytes().split(b"\r\n")
    for d in dead_letters(replay(ticks, tmp_path / "tiny", "batch", max_lines=7)):
        assert d.source.file == "ticks.csv"
        raw = lines[d.source.line - 1].removeprefix(b"\xef\xbb\xbf")
        assert d.payload == raw.decode("utf-8", "replace")  # the line an editor shows there
        assert d.detail


def test_jsonl_chunk_boundaries_change_no_byte_of_any_topic(
        tmp_path: Path, dirty: list[dict[str, str]]) -> None:
    ticks = write_jsonl(dirty, tmp_path / "ticks.jsonl")
    whole = replay(ticks, tmp_path / "whole", "event", **ONE_CHUNK)
    reasons = {d.reason for d in dead_letters(whole)}
    assert {"BAD_JSON", "BAD_PRICE", "DUPLICATE", "STALE_TRADE_ID", "IMPLAUSIBLE_TIME",
            "BAD_ENCODING"} <= reasons
    assert whole["md.ticks.late.jsonl"].count(b"\n") > 10
    for label, chunking in CHUNKINGS.items():
        assert replay(ticks, tmp_path / label, "event", **chunking) == whole, label


def test_the_whole_chain_trades_alike_on_chunks_of_seven_lines(
        tmp_path: Path, emini_slice: Path, slice_models: Path) -> None:
    # trading starts at the bundle's train end, 02:27 CT, about trade 22,000
    ticks = write_csv(dirty_rows(emini_slice, 17_000, 25_000, second_symbol=False),
                      tmp_path / "ticks.csv.gz")
    opts = ReplayOptions(out=tmp_path, models=slice_models, quiet=True, cost_gate=False)

    def chain() -> tuple[Stage, ...]:
        return chain_stages(chain_options(opts, WindowFeatures(FeaturesConfig(
            bar_ns=BAR_NS)).feature_version, BAR_NS, TZ))

    event = replay(ticks, tmp_path / "event", "event", chain())
    assert event["orders.jsonl"].count(b"\n") >= 5  # the premise: it traded
    assert event["fills.jsonl"].count(b"\n") >= 5
    assert replay(ticks, tmp_path / "tiny", "batch", chain(), max_lines=7) == event
