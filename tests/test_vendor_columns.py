"""A vendor's own header, mapped with ``--columns``: the bundled sample's file replays with
``--ticks``, and headers that do not fit say exactly which flag or name fixes them."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import pytest

from jobs.cli import main

EMINI_COLUMNS = "ts=DateTime,price=Price,size=Volume"


def run(tmp_path: Path, name: str, *args: str) -> tuple[int, str, dict[str, str]]:
    out = tmp_path / name
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["run", "--out", str(out), "--no-trade", "--quiet", *args])
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted((out / "topics").glob("*.jsonl"))} if code == 0 else {}
    return code, err.getvalue(), digests


def head(emini: Path, rows: int) -> list[str]:
    with emini.open() as f:
        return [next(f).rstrip("\n") for _ in range(rows + 1)]


def test_the_bundled_sample_replays_from_its_own_file_with_columns(
        tmp_path: Path, emini_ticks_path: Path) -> None:
    code, _, bundled = run(tmp_path, "bundled")
    assert code == 0
    code, _, mapped = run(tmp_path, "mapped", "--ticks", str(emini_ticks_path), "--columns",
                          EMINI_COLUMNS, "--symbol", "ES", "--venue", "CME", "--tz",
                          "America/Chicago")
    assert code == 0
    assert mapped == bundled  # every topic file, byte for byte


def test_mapped_columns_give_the_same_bytes_on_both_paths(tmp_path: Path,
                                                          emini_ticks_path: Path) -> None:
    lines = head(emini_ticks_path, 5_000)
    # a vendor file with extra columns in another order: the unmapped ones are ignored
    vendor = ["Volume,Exchange,DateTime,Price,Condition"]
    for line in lines[1:]:
        ts, price, size = line.split(",")
        vendor.append(f"{size},XCME,{ts},{price},@")
    f = tmp_path / "vendor.csv"
    f.write_text("\n".join(vendor) + "\n")
    args = ["--ticks", str(f), "--columns", EMINI_COLUMNS, "--symbol", "ES", "--tz",
            "America/Chicago"]
    batch = run(tmp_path, "batch", *args, "--mode", "batch")
    event = run(tmp_path, "event", *args, "--mode", "event")
    assert batch[0] == event[0] == 0 and batch[2] == event[2]


def test_a_missing_symbol_column_says_to_pass_symbol(tmp_path: Path,
                                                     emini_ticks_path: Path) -> None:
    f = tmp_path / "nosym.csv"
    f.write_text("\n".join(["ts,price,size", *head(emini_ticks_path, 50)[1:]]) + "\n")
    code, err, _ = run(tmp_path, "o", "--ticks", str(f))
    assert code == 2
    assert "missing column(s): symbol" in err and "pass --symbol SYMBOL" in err
    assert run(tmp_path, "o2", "--ticks", str(f), "--symbol", "ES")[0] == 0


def test_semicolon_separated_files_are_told_about_delimiter(tmp_path: Path,
                                                           emini_ticks_path: Path) -> None:
    rows = ["ts,symbol,price,size"] + [f"{ln.split(',')[0]},ES,{ln.split(',')[1]},"
                                       f"{ln.split(',')[2]}" for ln in
                                       head(emini_ticks_path, 2_000)[1:]]
    (tmp_path / "comma").mkdir()
    (tmp_path / "semi").mkdir()
    comma = tmp_path / "comma" / "ticks.csv"  # one name: sources carry it
    comma.write_text("\n".join(rows) + "\n")
    semi = tmp_path / "semi" / "ticks.csv"
    semi.write_text("\n".join(r.replace(",", ";") for r in rows) + "\n")
    code, err, _ = run(tmp_path, "o", "--ticks", str(semi))
    assert code == 2 and "looks ';'-separated; pass --delimiter ';'" in err
    for mode in ("batch", "event"):
        code, _, got = run(tmp_path, f"semi-{mode}", "--ticks", str(semi), "--delimiter", ";",
                           "--mode", mode)
        _, _, want = run(tmp_path, f"comma-{mode}", "--ticks", str(comma), "--mode", mode)
        assert code == 0 and got == want


def test_differently_cased_headers_get_the_columns_to_pass(tmp_path: Path,
                                                          emini_ticks_path: Path) -> None:
    f = tmp_path / "cased.csv"
    rows = ["TS,Symbol,PRICE,size"] + [f"{ln.split(',')[0]},ES,{ln.split(',')[1]},"
                                       f"{ln.split(',')[2]}" for ln in
                                       head(emini_ticks_path, 100)[1:]]
    f.write_text("\n".join(rows) + "\n")
    code, err, _ = run(tmp_path, "o", "--ticks", str(f))
    assert code == 2
    assert "names are case-sensitive" in err
    assert "--columns ts=TS,symbol=Symbol,price=PRICE" in err
    assert run(tmp_path, "o2", "--ticks", str(f), "--columns",
               "ts=TS,symbol=Symbol,price=PRICE")[0] == 0


@pytest.mark.parametrize(("columns", "message"), [
    ("ts=Datetime,price=Price,size=Volume",
     "emini.csv has no column 'Datetime'; the header has 'DateTime' (names are case-sens"),
    ("ts=DateTime,price", "'price' is not FIELD=COLUMN"),
    ("time=DateTime", "'time' is not a tick field"),
    ("ts=DateTime,price=DateTime", "column DateTime given twice"),
])
def test_bad_column_maps_are_usage_errors(tmp_path: Path, emini_ticks_path: Path,
                                          columns: str, message: str) -> None:
    f = tmp_path / "emini.csv"
    f.write_text("\n".join(head(emini_ticks_path, 10)) + "\n")
    code, err, _ = run(tmp_path, "o", "--ticks", str(f), "--symbol", "ES", "--columns",
                       columns)
    assert code == 2 and message in err, err
