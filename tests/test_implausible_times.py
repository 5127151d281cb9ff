"""A tick implausibly far ahead of the stream goes to the DLQ and never moves the watermark.

One year-2200 print in the middle of a real E-mini day used to push the watermark two
centuries ahead, so every later tick was late and the run ended with almost nothing (exit 0).
Now it is an ``IMPLAUSIBLE_TIME`` dead letter and the day's bars are exactly those of the clean
file, on both paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import msgspec
import pytest

from jobs.cli import main
from operators.contract import SimpleContext
from operators.normalize import MAX_FORWARD_JUMP_NS, Normalize, NormalizeConfig, RawRecord
from topics.messages import DeadLetter, SourceRef
from topics.serde import decode

HALT_ROW = 55_799  # first data row after the Labor Day halt (10:29:59 -> 17:00 CT)


def lines_of(emini: Path, start: int, stop: int) -> list[str]:
    with emini.open() as f:
        all_lines = f.read().splitlines()
    return ["ts,price,size", *all_lines[1 + start : 1 + stop]]


def run(tmp_path: Path, name: str, lines: list[str], mode: str, *extra: str) -> tuple[dict, Path]:
    ticks = tmp_path / f"{name}.csv"
    ticks.write_text("\n".join(lines) + "\n")
    out = tmp_path / f"{name}-{mode}"
    summary = tmp_path / f"{name}-{mode}.json"
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", "--ticks", str(ticks), "--symbol", "ES", "--tz", "America/Chicago",
                     "--out", str(out), "--mode", mode, "--no-trade", "--quiet",
                     "--summary-json", str(summary), *extra]) == 0
    return json.loads(summary.read_text()), out / "topics"


def digest(topics: Path, name: str) -> str:
    return hashlib.sha256((topics / f"{name}.jsonl").read_bytes()).hexdigest()


def both(tmp_path: Path, name: str, lines: list[str], *extra: str) -> tuple[dict, Path]:
    s_batch, t_batch = run(tmp_path, name, lines, "batch", *extra)
    s_event, t_event = run(tmp_path, name, lines, "event", *extra)
    for p in sorted(t_event.glob("*.jsonl")):
        assert digest(t_batch, p.stem) == digest(t_event, p.stem), p.name
    assert s_batch["dlq_by_reason"] == s_event["dlq_by_reason"]
    return s_event, t_event


def test_a_year_2200_tick_mid_day_is_dead_lettered_and_the_day_is_unchanged(
        tmp_path: Path, emini_ticks_path: Path) -> None:
    clean = lines_of(emini_ticks_path, 0, 20_000)
    s_clean, t_clean = both(tmp_path, "clean", clean)
    poisoned = [*clean[:10_001], "2200-09-02 12:00:00.000,1640.25,1", *clean[10_001:]]
    s, topics = both(tmp_path, "poisoned", poisoned)
    assert s["dlq_by_reason"] == {"IMPLAUSIBLE_TIME": 1}
    assert s["ticks_valid"] == 20_000 and s["late_ticks"] == 0
    (dl,) = [decode("md.ticks.dlq", ln) for ln in (topics / "md.ticks.dlq.jsonl").read_bytes()
             .splitlines()]
    assert dl.source.line == 10_002 and "2200-09-02" in dl.detail and "7d" in dl.detail
    assert digest(topics, "md.bars") == digest(t_clean, "md.bars")  # the day's bars, bit for bit

    def vectors(t: Path) -> list:  # and its vectors (their source lines moved by one)
        return [msgspec.structs.replace(decode("features", ln), inputs=())
                for ln in (t / "features.jsonl").read_bytes().splitlines()]

    assert vectors(topics) == vectors(t_clean)
    assert s["bars"] == s_clean["bars"] > 300


def test_the_maximum_jump_is_a_setting(tmp_path: Path, emini_ticks_path: Path) -> None:
    """The 6.5-hour Labor Day halt is a plausible gap by default, not with a 3-hour limit:
    then the stream after it is dead-lettered (and says why)."""
    lines = lines_of(emini_ticks_path, HALT_ROW - 4_000, HALT_ROW + 1_000)
    s, _ = both(tmp_path, "halt", lines)
    assert s["dlq"] == 0 and s["ticks_valid"] == 5_000
    s, topics = both(tmp_path, "halt3h", lines, "--max-forward-jump", "3h")
    assert s["dlq_by_reason"] == {"IMPLAUSIBLE_TIME": 1_000} and s["ticks_valid"] == 4_000
    first = decode("md.ticks.dlq", (topics / "md.ticks.dlq.jsonl").read_bytes().splitlines()[0])
    assert first.source.line == 4_002 and "more than 3h ahead" in first.detail


def test_with_trade_ids_and_lateness_both_paths_agree(tmp_path: Path,
                                                      emini_ticks_path: Path) -> None:
    """Far-future prints among re-sent trade ids: the batch path's row-by-row stream checks
    (jump, then dedupe) give the per-event path's bytes."""
    body = lines_of(emini_ticks_path, 0, 6_000)[1:]
    rows = ["ts,symbol,price,size,venue,trade_id"]
    for i, line in enumerate(body):
        ts, price, size = line.split(",")
        tid = f"T{i - 7 if i % 50 == 49 else i}"  # every 50th row re-sends an earlier trade
        if i in (1_000, 1_001, 3_000):
            ts = "2199-12-31 23:59:59.000"  # a burst of two, then one alone
        if i == 4_000:
            tid = "T3000"  # the id of the implausible row: it was never admitted
        rows.append(f"{ts},ES,{price},{size},CME,{tid}")
    s, _ = both(tmp_path, "ids", rows, "--lateness", "2s")
    # 6000 / 50 re-sends are duplicates; T3000 on row 4000 is not (row 3000 never got in)
    assert s["dlq_by_reason"] == {"IMPLAUSIBLE_TIME": 3, "DUPLICATE": 120}


def test_the_operator_judges_against_the_watermark_it_is_given() -> None:
    op = Normalize(NormalizeConfig(csv_columns=("ts", "symbol", "price", "size")))
    rec = RawRecord(payload="2200-01-01T00:00:00Z,ES,1,1", source=SourceRef(file="f", line=2))
    no_watermark = op.process(op.new_state("ES"), rec, SimpleContext())[1][0]
    assert no_watermark.topic == "md.ticks"  # nothing seen yet: nothing to judge against
    wm = 1_378_000_000 * 10**9
    (out,) = op.process(op.new_state("ES"), rec, SimpleContext(watermark=wm))[1]
    assert isinstance(out.value, DeadLetter) and out.value.reason == "IMPLAUSIBLE_TIME"
    edge = RawRecord(payload=f"{wm + MAX_FORWARD_JUMP_NS},ES,1,1", source=rec.source)
    (ok,) = op.process(op.new_state("ES"), edge, SimpleContext(watermark=wm))[1]
    assert ok.topic == "md.ticks"  # exactly the maximum jump is still plausible


@pytest.mark.parametrize("value", ["0s", "soon"])
def test_a_bad_maximum_jump_is_a_usage_error(tmp_path: Path, value: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["run", "--max-forward-jump", value, "--out", str(tmp_path / "o"),
                     "--no-trade", "--quiet"])
    assert code == 2 and "--max-forward-jump" in err.getvalue()
