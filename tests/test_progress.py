"""Progress on long runs: the total, the percentage and the time left where the input's size is
known (an uncompressed file's lines, counted up front); training reports its steps too."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.progress import Progress, data_lines
from tests._emini_slice import SLICE_TICKS, TZ_ARGS, slice_fixtures

emini_slice, _ = slice_fixtures()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_shows_total_percent_and_time_left() -> None:
    clock, out = Clock(), io.StringIO()
    p = Progress("ticks", 500_000, clock=clock, stream=out)
    clock.t += 2.0
    p.update(100_000)  # 50,000/s: 400,000 to go in 8 s
    clock.t += 0.5
    p.update(120_000)  # throttled: at most one line a second
    clock.t += 100.0
    p.update(500_000)
    lines = out.getvalue().splitlines()
    assert lines == ["  ticks: 100,000/500,000  20.0% (50,000/s, 8s left)",
                     "  ticks: 500,000/500,000 100.0% (4,878/s, 0s left)"]


def test_progress_without_a_known_size_shows_count_and_rate() -> None:
    clock, out = Clock(), io.StringIO()
    p = Progress("ticks", None, clock=clock, stream=out)
    clock.t += 4.0
    p.update(10_000)
    assert out.getvalue() == "  ticks: 10,000 (2,500/s)\n"


def test_the_total_is_the_files_data_lines(emini_ticks_path: Path, emini_slice: Path,
                                           tmp_path: Path) -> None:
    assert data_lines(emini_ticks_path) == 500_000
    assert data_lines(emini_slice) == SLICE_TICKS
    gz = tmp_path / "es.csv.gz"
    gz.write_bytes(gzip.compress(emini_slice.read_bytes()[:10_000]))
    assert data_lines(gz) is None  # not known without decompressing: no percentage


def test_training_reports_its_steps(tmp_path: Path, emini_slice: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--ticks", str(emini_slice), *TZ_ARGS, "--out",
                 str(tmp_path / "models")]) == 0
    err = capsys.readouterr().err
    for step in ("step 1/3: fitting the regime HMM on the returns before the validation period",
                 "step 2/3: fitting and exporting 6 specialists",
                 "step 3/3: refitting the regime HMM and the volatility model"):
        assert step in err
