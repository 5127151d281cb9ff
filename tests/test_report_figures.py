"""Report figures a trader can believe, each recomputed here independently.

- Sharpe and Sortino from daily (session) returns × √252 (empyrical on session returns built
  with pandas from ``equity.csv``); ``null`` with a reason below 20 sessions, as in the
  one-session E-mini trading window (it printed Sharpe −120 for a −1.2 % day before);
- the per-bar Sharpe ratio's interval: Lo (2002) with Newey–West moments (statsmodels'
  HAC matrix) and, as a cross-check, arch's stationary block bootstrap;
- round trips recomputed from the ``fills`` and ``positions`` topic files (the ledger's
  realized PnL), against ``trades.csv`` and the hit rate and average win / loss;
- the cost breakdown: slippage from the md.ticks trade each market fill filled against;
- reject counts by code are per failing rule (from ``risk.rejects``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import empyrical
import numpy as np
import pandas as pd
import pytest
from arch.bootstrap import StationaryBootstrap, optimal_block_length
from statsmodels.stats.sandwich_covariance import S_hac_simple

from jobs.cli import main
from tests._replay_fixture import ReplayPool, pool_fixture, read_ticks
from tests._sp500 import write_sp500_bars
from topics.messages import Fill, Position

replays = pool_fixture()
INITIAL_EQUITY = 1_000_000.0
ES_MULTIPLIER = 50.0
HALF_TICK = 0.125


def _session_returns(equity_csv: Path, tz: str, start_hours: int = 17) -> pd.Series:
    """Session-end equity over the previous session's end (the first over the capital);
    sessions start at ``start_hours`` local time, as CME's 17:00 CT open."""
    eq = pd.read_csv(equity_csv)
    local = pd.to_datetime(eq["ts"], utc=True).dt.tz_convert(tz).dt.tz_localize(None)
    session = (local - pd.Timedelta(hours=start_hours)).dt.floor("D")
    last = eq.groupby(session.to_numpy())["equity"].last()
    return last / last.shift(1, fill_value=INITIAL_EQUITY) - 1.0


# ------------------------------------------------------------------- 12. Sharpe and Sortino


def test_one_session_gives_null_sharpe_and_sortino_with_a_reason(replays: ReplayPool) -> None:
    run = replays.get("base")
    s = run.summary
    daily = _session_returns(run.out / "equity.csv", "America/Chicago")
    assert len(daily) == s["sessions"] == 1  # 2013-09-02 17:00 CT to 09-03 13:51 CT
    assert s["sharpe"] is None and s["sortino"] is None
    assert "1 session(s)" in s["ratios_null_reason"] and "20" in s["ratios_null_reason"]
    assert s["benchmark"]["sharpe"] is None
    assert daily.iloc[0] == pytest.approx(s["return"], abs=1e-12)


def test_per_bar_sharpe_interval_is_lo_2002_with_newey_west_moments(replays: ReplayPool
                                                                     ) -> None:
    run = replays.get("base")
    pb = run.summary["per_bar"]
    r = pd.read_csv(run.out / "equity.csv")["equity"].pct_change().dropna().to_numpy()
    n = len(r)
    lags = int(np.floor(4 * (n / 100.0) ** (2.0 / 9.0)))
    assert f"{lags} lags" in pb["ci_method"]
    mu = r.mean()
    dev = r - mu
    var = np.mean(dev**2)
    sigma = S_hac_simple(np.column_stack([dev, dev**2 - var]), nlags=lags) / n
    grad = np.array([1 / math.sqrt(var), -mu / (2 * var**1.5)])
    se = math.sqrt(grad @ sigma @ grad / n)
    sr = empyrical.sharpe_ratio(r, annualization=1)
    lo, hi = pb["sharpe_ci95"]
    assert pb["sharpe"] == pytest.approx(sr, rel=1e-9)
    assert (lo, hi) == pytest.approx((sr - 1.959963984540054 * se,
                                      sr + 1.959963984540054 * se), rel=1e-8)
    # a different method, the same question: the stationary bootstrap's percentile interval
    block = float(optimal_block_length(r).loc[0, "stationary"])
    boot = StationaryBootstrap(block, r, seed=20020101)
    b_lo, b_hi = boot.conf_int(lambda x: np.array([x.mean() / x.std(ddof=1)]), reps=2000,
                               method="percentile").ravel()
    assert 0.75 < (b_hi - b_lo) / (hi - lo) < 1.33
    assert abs((b_lo + b_hi) / 2 - (lo + hi) / 2) < 0.25 * (hi - lo)


def _sp500_bars(path: Path, rows: int) -> Path:
    write_sp500_bars(path, rows)
    return path


@pytest.fixture(scope="module")
def daily_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """S&P 500 daily bars: trained on the first 30 %, traded over ~840 sessions."""
    base = tmp_path_factory.mktemp("daily")
    bars = _sp500_bars(base / "sp500.csv", 1_200)
    assert main(["train", "--bars", str(bars), "--out", str(base / "models"), "--quiet"]) == 0
    out = base / "out"
    assert main(["run", "--bars", str(bars), "--models", str(base / "models"), "--out",
                 str(out), "--quiet", "--no-report-html", "--summary-json",
                 str(base / "s.json")]) == 0
    return out, json.loads((base / "s.json").read_text())


def test_daily_sharpe_and_sortino_equal_empyrical_on_session_returns(
        daily_run: tuple[Path, dict[str, Any]]) -> None:
    out, s = daily_run
    daily = _session_returns(out / "equity.csv", "UTC")
    assert s["sessions"] == len(daily) > 800
    assert s["ratios_null_reason"] is None
    assert s["sharpe"] == pytest.approx(empyrical.sharpe_ratio(daily, annualization=252),
                                        rel=1e-8)
    assert s["sortino"] == pytest.approx(empyrical.sortino_ratio(daily, annualization=252),
                                         rel=1e-8)
    assert s["periods_per_year"] == 252.0


# ------------------------------------------------------------------- 13. round trips, costs


def _trips_from_topics(fills: list[Fill], positions: list[Position]) -> list[dict[str, Any]]:
    """Round trips from the ledger's own position updates (one per fill, in fill order):
    a trip ends where the quantity reaches zero or changes sign; its gross PnL is the
    ledger's realized PnL over it, its fees the fills' fees (a flip's split by quantity)."""
    updates = [p for p in positions if p.cause == "fill"]
    assert len(updates) == len(fills)
    trips: list[dict[str, Any]] = []
    prev_q, realized_at_start, fees, entry = 0.0, 0.0, 0.0, None
    for f, p in zip(fills, updates, strict=True):
        q = p.quantity
        flips = prev_q != 0 and q != 0 and (q > 0) != (prev_q > 0)
        closes = prev_q != 0 and (q == 0 or flips)
        if entry is None:
            entry = f.ts_event
        if closes:
            closing_share = abs(prev_q) / f.quantity
            fees += f.fee * closing_share
            gross = p.realized_pnl - realized_at_start
            trips.append({"direction": "LONG" if prev_q > 0 else "SHORT", "entry_ts": entry,
                          "exit_ts": f.ts_event, "gross": gross, "fees": fees,
                          "net": gross - fees})
            realized_at_start = p.realized_pnl
            fees = f.fee * (1 - closing_share) if flips else 0.0
            entry = f.ts_event if flips else None
        else:
            fees += f.fee
        prev_q = q
    return trips


def test_round_trips_recomputed_from_fills_and_positions_match_trades_csv(
        replays: ReplayPool) -> None:
    run = replays.get("base")
    s = run.summary
    expected = _trips_from_topics(run.topic("fills"), run.topic("positions"))
    with (run.out / "trades.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["exit_ts"]]
    assert len(rows) == len(expected) == s["round_trips"]["count"] > 100
    for row, exp in zip(rows, expected, strict=True):
        assert row["direction"] == exp["direction"]
        assert (int(row["entry_ts"]), int(row["exit_ts"])) == (exp["entry_ts"], exp["exit_ts"])
        assert float(row["gross_pnl"]) == pytest.approx(exp["gross"], abs=1e-6)
        assert float(row["fees"]) == pytest.approx(exp["fees"], abs=1e-6)
        assert float(row["net_pnl"]) == pytest.approx(exp["net"], abs=1e-6)
    wins = [t["net"] for t in expected if t["net"] > 0]
    losses = [t["net"] for t in expected if t["net"] < 0]
    rt = s["round_trips"]
    assert s["hit_rate"] == rt["hit_rate"] == pytest.approx(len(wins) / len(expected))
    assert rt["avg_win"] == pytest.approx(np.mean(wins), abs=1e-6)
    assert rt["avg_loss"] == pytest.approx(np.mean(losses), abs=1e-6)
    # the last trip is still open at the end of the replay: listed, not counted
    last_position = [p for p in run.topic("positions") if p.cause == "fill"][-1].quantity
    assert rt["open"] == (1 if last_position != 0 else 0)


def test_cost_breakdown_shows_slippage_and_fees_turn_a_gross_profit_into_a_loss(
        replays: ReplayPool) -> None:
    run = replays.get("base")
    s = run.summary
    ticks = read_ticks(run.out)
    slippage = 0.0
    for f in run.topic("fills"):
        assert f.liquidity == "TAKER"  # IMMEDIATE: market children
        traded = ticks.price[ticks.at(f.ts_event)]
        paid = HALF_TICK if f.side == "BUY" else -HALF_TICK
        assert np.isclose(traded + paid, f.price).any()  # the print it filled against
        slippage += HALF_TICK * f.quantity * ES_MULTIPLIER
    c = s["costs"]
    assert c["slippage"] == pytest.approx(slippage, abs=1e-6)
    assert c["fees"] == s["fees"]
    assert c["net"] == s["pnl"]
    assert c["gross_before_costs"] == pytest.approx(c["net"] + c["slippage"] + c["fees"],
                                                    abs=1e-6)
    assert c["gross_before_costs"] > 0 > c["net"]  # measured on the sample


def test_reject_counts_by_code_are_per_failing_rule(replays: ReplayPool) -> None:
    run = replays.get("guarded")
    s = run.summary
    rejects = run.topic("risk.rejects")
    by_code: dict[str, int] = {}
    for r in rejects:
        for reason in r.reasons:
            by_code[reason.code] = by_code.get(reason.code, 0) + 1
    assert s["rejects"] == len(rejects)
    assert s["rejects_by_code"] == by_code
    assert sum(by_code.values()) > len(rejects)  # orders that failed several rules
    assert "per failing rule" in s["rejects_note"]
