"""Bar files as vendors ship them: adjusted OHLC with rounding, duplicate and unsorted rows,
and the ``features`` command taking the same input options as ``run``.

Real data: arch's daily S&P 500 bars. The adjusted file is built the way vendors derive one:
an adjusted close (here a 2 %/year total-return factor, rounded to 6 decimals) and open, high
and low scaled by ``adj_close / close``, which leaves some closes an ulp outside the range.
"""

from __future__ import annotations

import json
from pathlib import Path

import arch.data.sp500
import numpy as np
import pandas as pd
import pytest

from jobs.cli import main
from topics.serde import decode

HEADER = "ts,symbol,open,high,low,close,volume"


def sp500() -> pd.DataFrame:
    return arch.data.sp500.load()


def adjusted(df: pd.DataFrame) -> pd.DataFrame:
    years = (df.index[-1] - df.index).days / 365.25
    adj_close = (df["Close"] * 0.98**years).round(6)
    f = adj_close / df["Close"]
    return pd.DataFrame({"Open": df["Open"] * f, "High": df["High"] * f, "Low": df["Low"] * f,
                         "Close": adj_close, "Volume": df["Volume"]}, index=df.index)


def write_bars(path: Path, df: pd.DataFrame, *, tz_naive_time: str = "") -> list[str]:
    rows = [f"{ts.date().isoformat()}{tz_naive_time},SPX,"
            + ",".join(repr(float(v)) for v in (r.Open, r.High, r.Low, r.Close, r.Volume))
            for ts, r in zip(df.index, df.itertuples(), strict=True)]
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return rows


def ulp_inconsistent(df: pd.DataFrame) -> np.ndarray:
    lo = np.minimum(df.Open, df.Close)
    hi = np.maximum(df.Open, df.Close)
    return np.flatnonzero(((df.Low > lo) | (df.High < hi)).to_numpy())


def dead_letters(path: Path) -> list:
    if not path.exists():
        return []
    return [decode("md.ticks.dlq", ln) for ln in path.read_bytes().splitlines()]


def run_summary(tmp_path: Path, bars: Path, *extra: str) -> dict:
    out = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    summary = tmp_path / f"{out.name}.json"
    assert main(["run", "--bars", str(bars), "--out", str(out), "--no-trade", "--quiet",
                 "--summary-json", str(summary), *extra]) == 0
    s = json.loads(summary.read_text())
    s["_dlq"] = dead_letters(out / "topics" / "md.ticks.dlq.jsonl")
    return s


def test_an_adjusted_daily_file_with_rounding_is_accepted_whole(tmp_path: Path) -> None:
    df = adjusted(sp500())
    off = ulp_inconsistent(df)
    assert len(off) >= 5  # the premise: real rounding puts closes an ulp outside the range
    path = tmp_path / "adjusted.csv"
    write_bars(path, df)

    out = tmp_path / "features.csv"
    assert main(["features", "--bars", str(path), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1 + len(df)
    assert not (tmp_path / "features.csv.dlq.jsonl").exists()
    s = run_summary(tmp_path, path)
    assert s["bars_in"] == len(df) and s["dlq"] == 0

    # The tolerance is a setting: at 0 exactly those rows go to the DLQ, the rest still runs.
    strict = run_summary(tmp_path, path, "--ohlc-tolerance", "0")
    assert strict["bars_in"] == len(df) - len(off)
    assert [d.source.line for d in strict["_dlq"]] == [int(i) + 2 for i in off]
    assert {d.reason for d in strict["_dlq"]} == {"BAD_BAR"}


def test_rows_inconsistent_beyond_the_tolerance_are_dead_lettered_not_the_file(
        tmp_path: Path) -> None:
    df = sp500().iloc[:400].copy()
    df.iloc[100, df.columns.get_loc("Close")] = df.iloc[100]["Low"] * 0.99  # 1 % below the low
    df.iloc[250, df.columns.get_loc("High")] = df.iloc[250]["Open"] * 0.999
    path = tmp_path / "bad.csv"
    write_bars(path, df)
    out = tmp_path / "features.csv"
    assert main(["features", "--bars", str(path), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1 + 398
    dl = dead_letters(tmp_path / "features.csv.dlq.jsonl")
    assert [(d.reason, d.source.line) for d in dl] == [("BAD_BAR", 102), ("BAD_BAR", 252)]
    assert "inconsistent OHLC" in dl[0].detail
    s = run_summary(tmp_path, path)
    assert s["bars_in"] == 398 and [d.source.line for d in s["_dlq"]] == [102, 252]


def test_duplicate_and_unsorted_bars_are_dead_lettered_with_their_line(tmp_path: Path) -> None:
    df = sp500().iloc[:300]
    path = tmp_path / "messy.csv"
    rows = write_bars(path, df)
    # line 52 repeats line 51's bar; lines 101 and 102 are swapped
    messy = [*rows[:50], rows[49], *rows[50:99], rows[100], rows[99], *rows[101:]]
    path.write_text(HEADER + "\n" + "\n".join(messy) + "\n")
    s = run_summary(tmp_path, path)
    got = [(d.reason, d.source.line) for d in s["_dlq"]]
    assert got == [("DUPLICATE_BAR", 52), ("UNSORTED_BAR", 103)]
    assert "already on line 51" in s["_dlq"][0].detail
    assert "before the bar on line 102" in s["_dlq"][1].detail
    assert s["bars_in"] == 299
    out = tmp_path / "features.csv"
    assert main(["features", "--bars", str(path), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1 + 299


def test_features_takes_bar_and_tz_like_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    df = sp500().iloc[:1]  # one bar (sent twice): its length cannot be inferred, needs --bar
    path = tmp_path / "few.csv"
    write_bars(path, pd.concat([df, df]), tz_naive_time=" 16:00:00")
    out = tmp_path / "features.csv"
    assert main(["features", "--bars", str(path), "--out", str(out)]) == 2
    assert "pass --bar" in capsys.readouterr().err
    assert main(["features", "--bars", str(path), "--out", str(out), "--bar", "1d",
                 "--tz", "America/New_York"]) == 0
    assert len(out.read_text().splitlines()) == 1 + 1
    (dup,) = dead_letters(tmp_path / "features.csv.dlq.jsonl")
    # 1999-01-04 16:00 in New York is 21:00 UTC: the zone was applied
    assert dup.reason == "DUPLICATE_BAR" and dup.ts_event == 915_483_600 * 10**9
    assert main(["features", "--bars", str(path), "--out", str(out), "--force", "--bar", "1d",
                 "--tz", "Mars/Olympus_Mons"]) == 2
    assert "--tz: unknown time zone 'Mars/Olympus_Mons'" in capsys.readouterr().err
