"""An instrument master lists each symbol once: a second row for a symbol (another venue or
multiplier) is an error naming both rows, never a silent last-row-wins.

The pipeline keys positions, limits and fills by symbol; with ES listed at multiplier 50 and
again at 5, notional, PnL and fees would silently use whichever row came last.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.cli import main
from jobs.loaders.instruments import parse_instruments_csv, parse_instruments_toml
from tests._emini_slice import TZ_ARGS, slice_fixtures

emini_slice, _ = slice_fixtures()


@pytest.mark.parametrize(("text", "detail"), [
    ("symbol,venue,multiplier\nES,CME,50\nNQ,CME,20\nES,CBOT,50\n", "venue 'CME' vs 'CBOT'"),
    ("symbol,venue,multiplier\nES,CME,50\nES,CME,5\n", "multiplier 50.0 vs 5.0"),
])
def test_a_symbol_listed_twice_in_csv_names_both_lines_and_the_difference(
        text: str, detail: str) -> None:
    with pytest.raises(ValueError, match="duplicate instrument 'ES' at line 2 and line ") as e:
        parse_instruments_csv(text, "ins.csv")
    assert detail in str(e.value)


def test_a_symbol_listed_twice_in_toml_is_an_error() -> None:
    text = ('[[instrument]]\nsymbol = "ES"\nvenue = "CME"\nmultiplier = 50\n'
            '[[instrument]]\nsymbol = "ES"\nvenue = "GLOBEX"\nmultiplier = 50\n')
    with pytest.raises(ValueError, match="instrument #0 and instrument #1"):
        parse_instruments_toml(text, "ins.toml")


def test_run_refuses_an_instrument_master_with_a_symbol_twice(
        tmp_path: Path, emini_slice: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ins = tmp_path / "instruments.csv"
    ins.write_text("symbol,venue,multiplier,tick_size\nES,CME,50,0.25\nES,CME,5,0.25\n")
    out = tmp_path / "out"
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--instruments", str(ins),
                 "--out", str(out), "--no-trade", "--quiet"]) == 2
    assert "duplicate instrument 'ES'" in capsys.readouterr().err
    assert not out.exists()
