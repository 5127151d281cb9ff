"""``streamquant run`` end to end on real data: summary figures, topic files, determinism.

The full 500,000-tick E-mini replay runs through the CLI entry point, as `make run` does.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import talib

from jobs.cli import main
from tests._sp500 import write_sp500_bars
from topics.serde import decode


def _digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "topics").glob("*.jsonl"))}


@pytest.fixture(scope="module")
def emini_runs(tmp_path_factory: pytest.TempPathFactory, emini_ticks_path: Path
               ) -> dict[str, Path]:
    """The bundled replay (features only) three times: batch twice, event once."""
    base = tmp_path_factory.mktemp("emini")
    outs = {}
    for name, mode in (("batch1", "batch"), ("batch2", "batch"), ("event", "event")):
        out = base / name
        code = main(["run", "--out", str(out), "--mode", mode, "--no-trade", "--quiet",
                     "--summary-json", str(out.parent / f"{name}.json")])
        assert code == 0
        outs[name] = out
    return outs


def test_bundled_replay_summary_counts_every_tick_bar_and_vector(emini_runs: dict[str, Path]
                                                                 ) -> None:
    s = json.loads((emini_runs["batch1"].parent / "batch1.json").read_text())
    assert s["ticks_in"] == 500_000
    assert s["ticks_valid"] == 500_000  # identical rows without ids are distinct trades
    assert s["dlq_by_reason"] == {}
    assert s["late_ticks"] == 0  # the file is in time order
    assert s["bars"] == 2_264  # one-minute bars with at least one trade
    assert s["features"] == 2_264
    assert s["wall_s"] > 0 and s["ticks_per_s"] > 0
    # with topic files, the summary also gives the replay's rate less the time spent on them
    assert s["topic_files"] and s["topic_files_s"] > 0
    assert s["ticks_per_s_without_files"] > s["ticks_per_s"]


def test_two_runs_write_identical_topic_files(emini_runs: dict[str, Path]) -> None:
    a, b = _digests(emini_runs["batch1"]), _digests(emini_runs["batch2"])
    assert a == b
    assert {"md.ticks.jsonl", "md.bars.jsonl", "features.jsonl", "md.ticks.dlq.jsonl",
            "md.ticks.late.jsonl"} <= set(a)


def test_batched_path_writes_the_event_paths_bytes(emini_runs: dict[str, Path]) -> None:
    assert _digests(emini_runs["batch1"]) == _digests(emini_runs["event"])


def test_manifest_records_config_input_hash_and_code_version(emini_runs: dict[str, Path],
                                                             emini_ticks_path: Path) -> None:
    m = json.loads((emini_runs["batch1"] / "manifest.json").read_text())
    assert m["input"]["sha256"] == hashlib.sha256(emini_ticks_path.read_bytes()).hexdigest()
    assert m["config"]["tz"] == "America/Chicago"
    assert m["config"]["symbol"] == "ES" and m["config"]["venue"] == "CME"
    assert m["code_version"].startswith("0.1.0")
    assert m["seed"] == 0


def test_md_ticks_carry_utc_time_and_source_line(emini_runs: dict[str, Path]) -> None:
    first = (emini_runs["batch1"] / "topics" / "md.ticks.jsonl").open("rb").readline()
    t = decode("md.ticks", first)
    # 2013-09-01 17:00:00.083 America/Chicago (CDT, UTC-5) = 22:00:00.083 UTC
    assert t.ts_event == 1_378_072_800_083_000_000
    assert (t.symbol, t.venue, t.price, t.size) == ("ES", "CME", 1640.25, 8.0)
    assert (t.source.file, t.source.line) == ("es_trades_2013-09.csv", 2)


def test_out_dir_must_be_empty_without_force(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert main(["run", "--out", str(tmp_path), "--no-trade", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").exists()


CORPUS = """ts,symbol,price,size,venue,trade_id,bid,ask
2024-03-01T14:30:00.000Z,ESH4,5100.25,2,CME,1,5100.00,5100.25
2024-03-01T14:30:00.500Z,ESH4,5100.50,1,CME,2,,
2024-03-01T14:30:01Z,ESH4,nan,1,CME,3,,
2024-03-01T14:30:02Z,ESH4,inf,1,CME,4,,
2024-03-01T14:30:03Z,ESH4,0,1,CME,5,,
2024-03-01T14:30:04Z,ESH4,-5100,1,CME,6,,
2024-03-01T14:30:05Z,ESH4,5100.75,-1,CME,7,,
yesterday-ish,ESH4,5100.75,1,CME,8,,
2024-03-01T14:30:06Z,,5100.75,1,CME,9,,
2024-03-01T14:30:07Z,NQH4,18000,1,CME,10,,
2024-03-01T14:30:08Z,ESH4,5101.00,1,CME,2,,
2024-03-01T14:30:09Z,ESH4,5101.00,1,CME,11,5101.25,5101.00
2024-03-01T14:30:10Z,ESH4,5101.00,1,CME
2024-03-01T14:30:59.999Z,ESH4,5101.25,3,CME,12,,
2024-03-01T14:31:00.000Z,ESH4,5101.50,1,CME,13,,
2024-03-01T14:30:30Z,ESH4,5099.00,5,CME,14,,
2024-03-01T14:31:30Z,ESH4,5101.75,1,CME,15,,
"""
EXPECTED_REASONS = {3: "BAD_PRICE", 4: "BAD_PRICE", 5: "BAD_PRICE", 6: "BAD_PRICE",
                    7: "BAD_SIZE", 8: "BAD_TIMESTAMP", 9: "EMPTY_SYMBOL", 10: "UNKNOWN_SYMBOL",
                    11: "DUPLICATE", 12: "CROSSED_QUOTE", 13: "BAD_CSV"}


@pytest.mark.parametrize("mode", ["batch", "event"])
def test_malformed_rows_reach_the_dlq_with_reasons_and_late_ticks_are_counted(
        tmp_path: Path, mode: str) -> None:
    ticks = tmp_path / "ticks.csv.gz"
    ticks.write_bytes(gzip.compress(CORPUS.encode()))
    instruments = tmp_path / "instruments.csv"
    instruments.write_text("symbol\nESH4\n")
    out = tmp_path / "out"
    code = main(["run", "--ticks", str(ticks), "--instruments", str(instruments), "--out",
                 str(out), "--mode", mode, "--no-trade", "--quiet", "--summary-json",
                 str(tmp_path / "s.json")])
    assert code == 0
    dlq = [decode("md.ticks.dlq", line) for line in
           (out / "topics" / "md.ticks.dlq.jsonl").read_bytes().splitlines()]
    # CSV line numbers: the header is line 1, data row k is line k + 1
    got = {d.source.line - 1: d.reason for d in dlq}
    assert got == EXPECTED_REASONS
    for d in dlq:
        assert d.payload == CORPUS.splitlines()[d.source.line - 1]
        assert d.source.file == "ticks.csv.gz"
        assert d.detail
    late = [decode("md.ticks.late", line) for line in
            (out / "topics" / "md.ticks.late.jsonl").read_bytes().splitlines()]
    assert [lt.tick.source.line - 1 for lt in late] == [16]  # 14:30:30 after 14:31:00
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["ticks_in"] == 17
    assert s["ticks_valid"] == 17 - len(EXPECTED_REASONS)
    assert s["late_ticks"] == 1
    assert sum(s["dlq_by_reason"].values()) == len(EXPECTED_REASONS)
    bars = [decode("md.bars", line) for line in
            (out / "topics" / "md.bars.jsonl").read_bytes().splitlines()]
    assert [(b.open, b.close, b.volume, b.trade_count) for b in bars] == [
        (5100.25, 5101.25, 6.0, 3), (5101.50, 5101.75, 2.0, 2)]


def test_corpus_gives_identical_files_on_both_paths(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.csv"
    ticks.write_text(CORPUS)
    digests = []
    for mode in ("batch", "event"):
        out = tmp_path / mode
        assert main(["run", "--ticks", str(ticks), "--out", str(out), "--mode", mode,
                     "--lateness", "45s", "--no-trade", "--quiet"]) == 0
        digests.append(_digests(out))
    assert digests[0] == digests[1]


def _sp500_csv(tmp_path: Path, rows: int = 600) -> tuple[Path, Any]:
    path = tmp_path / "sp500.csv"
    return path, write_sp500_bars(path, rows)


def test_features_cli_matches_talib_on_sp500_daily_bars(tmp_path: Path) -> None:
    path, df = _sp500_csv(tmp_path)
    out = tmp_path / "features.csv"
    assert main(["features", "--bars", str(path), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    header = lines[0].split(",")
    assert header == ["ts", "symbol", "ema_12", "ema_26", "macd", "macd_signal", "macd_hist",
                      "rsi_14", "atr_14", "vol_20", "ret_1", "ret_5", "ret_20", "volume_ratio"]
    cells = [ln.split(",") for ln in lines[1:]]
    assert len(cells) == 600
    close = df.Close.to_numpy(float)
    high, low, vol = df.High.to_numpy(float), df.Low.to_numpy(float), df.Volume.to_numpy(float)
    macd, sig, hist = talib.MACD(close, 12, 26, 9)
    ret1 = talib.ROCP(close, 1)
    ref = {"ema_12": talib.EMA(close, 12), "ema_26": talib.EMA(close, 26), "macd": macd,
           "macd_signal": sig, "macd_hist": hist, "rsi_14": talib.RSI(close, 14),
           "atr_14": talib.ATR(high, low, close, 14), "vol_20": talib.STDDEV(ret1, 20, 1.0),
           "ret_1": ret1, "ret_5": talib.ROCP(close, 5), "ret_20": talib.ROCP(close, 20),
           "volume_ratio": vol / talib.SMA(vol, 20)}
    for name, expected in ref.items():
        col = header.index(name)
        got = np.array([float(c[col]) if c[col] else np.nan for c in cells])
        assert np.array_equal(np.isnan(got), np.isnan(expected)), name
        np.testing.assert_allclose(got, expected, rtol=1e-9, equal_nan=True, err_msg=name)
    assert cells[0][0] == "1999-01-04" and cells[0][1] == "SPX"


def test_run_on_a_bar_file_infers_daily_bars_and_emits_one_vector_per_bar(tmp_path: Path) -> None:
    path, _ = _sp500_csv(tmp_path)
    out = tmp_path / "out"
    assert main(["run", "--bars", str(path), "--out", str(out), "--quiet", "--summary-json",
                 str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["bars_in"] == 600 and s["features"] == 600
    fv = decode("features", (out / "topics" / "features.jsonl").read_bytes().splitlines()[-1])
    assert fv.timeframe == "1d"


def test_fetch_fails_clearly_when_the_index_is_unreachable(tmp_path: Path) -> None:
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "0",
           "PIP_FIND_LINKS": "", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2",
           "PIP_CONFIG_FILE": os.devnull, "STREAMQUANT_CACHE": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "jobs.cli", "data", "fetch"], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1
    assert "could not download mlfinpy==0.1.2" in r.stderr
    assert not (tmp_path / "data" / "es_trades_2013-09.csv").exists()


def test_fetch_refuses_a_cached_file_that_fails_its_checksum(tmp_path: Path) -> None:
    """A corrupted cache is re-fetched, never replayed: here the index is unreachable too."""
    bad = tmp_path / "data" / "es_trades_2013-09.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("DateTime,Price,Volume\n2013-09-01 17:00:00.083,1,1\n")
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0",
           "PIP_TIMEOUT": "2", "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "",
           "STREAMQUANT_CACHE": str(tmp_path)}
    code = ("import sys\nfrom jobs.data import DataFetchError, fetch_emini\n"
            "try:\n    fetch_emini(quiet=True)\nexcept DataFetchError as e:\n"
            "    print('refused:', e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 3, r.stderr
    assert "refused: could not download" in r.stdout


def test_bar_file_replay_trades_on_the_next_bars_print(tmp_path: Path) -> None:
    """`train --bars` then `run --bars --models`: decisions at a bar's end fill at the next
    bar's close (the derived print), never at the bar that produced them."""
    path, df = _sp500_csv(tmp_path, rows=1_200)
    models = tmp_path / "models"
    assert main(["train", "--bars", str(path), "--out", str(models), "--quiet"]) == 0
    out = tmp_path / "out"
    assert main(["run", "--bars", str(path), "--models", str(models), "--out", str(out),
                 "--quiet", "--summary-json", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["bars_in"] == 1_200 and s["features"] == 1_200
    assert s["periods_per_year"] == 252.0
    assert s["orders"] > 0 and s["fills"] > 0

    def topic(name: str) -> list:
        return [decode(name, ln) for ln in (out / "topics" / f"{name}.jsonl").read_bytes()
                .splitlines()]

    day = 86_400 * 10**9
    close_at_end = {int(ts.value) + day: float(c) for ts, c in zip(df.index, df.Close,
                                                                   strict=True)}
    orders = {o.client_order_id: o for o in topic("orders")}
    for f in topic("fills"):
        o = orders[f.client_order_id]
        assert f.ts_event > o.ts_event  # a later bar's print
        assert f.price == close_at_end[f.ts_event] + (0.005 if f.side == "BUY" else -0.005)
    bundle = json.loads((models / "strategy.json").read_text())
    # trading starts when training ends: the first decision acts on the last trained bar
    assert min(o.ts_event for o in orders.values()) >= bundle["train_end"]
