"""The backtest report: equity curve, PnL, risk-adjusted returns, activity, a benchmark.

Built from the output topics, as an analyst would build it from ClickHouse: ``positions``
(equity marked at every decision), ``fills``, ``orders``, ``risk.rejects``. Returns are per bar
(one equity point per decision); annualization multiplies by ``periods_per_year`` (default: 1-minute
bars of CME's ~23-hour Globex day, 252 × 23 × 60 = 347,760), configurable with
``--periods-per-year``. Ratios follow empyrical's conventions (see
``operators.domain.performance``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from operators.domain.money import cents_to_float, to_cents
from operators.domain.performance import (
    max_drawdown,
    returns_from_equity,
    sharpe_ratio,
    sortino_ratio,
)
from topics.messages import Decision, Fill, Order, Position, RiskReject

DEFAULT_PERIODS_PER_YEAR = 252.0 * 23 * 60


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 10)


def equity_curve(positions: Sequence[Position], initial_equity: float, start_ts: int | None
                 ) -> tuple[list[int], list[float]]:
    """One point per decision time (last update wins), starting from the initial equity."""
    pts: dict[int, float] = {}
    for p in positions:
        if p.cause in ("decision", "end"):
            pts[p.ts_event] = p.equity
    ts = sorted(pts)
    eq = [pts[t] for t in ts]
    if start_ts is not None and (not ts or ts[0] > start_ts):
        ts.insert(0, start_ts)
        eq.insert(0, initial_equity)
    return ts, eq


def build_report(
    *,
    positions: Sequence[Position],
    fills: Sequence[Fill],
    orders: Sequence[Order],
    rejects: Sequence[RiskReject],
    decisions: Sequence[Decision],
    initial_equity: float,
    multipliers: dict[str, float],
    periods_per_year: float = DEFAULT_PERIODS_PER_YEAR,
    start_ts: int | None = None,
) -> tuple[dict[str, Any], list[int], list[float]]:
    ts, eq = equity_curve(positions, initial_equity, start_ts)
    rets = returns_from_equity(np.asarray(eq, dtype=np.float64)) if len(eq) > 1 else np.empty(0)
    final = eq[-1] if eq else initial_equity
    # Money figures are summed in whole cents (the ledger publishes exact fixed-point amounts)
    fees = sum(to_cents(f.fee) for f in fills)
    last: dict[str, Position] = {}
    for p in positions:
        last[p.symbol] = p
    realized = sum(to_cents(p.realized_pnl) for p in last.values())
    unrealized = sum(to_cents(p.unrealized_pnl) for p in last.values())
    pnl = to_cents(final) - to_cents(initial_equity)
    turnover = math.fsum(f.quantity * f.price * multipliers.get(f.symbol, 1.0) for f in fills)
    rej_codes: Counter[str] = Counter()
    for r in rejects:
        for reason in r.reasons:
            rej_codes[reason.code] += 1
    # Benchmark: hold the underlying over the same bars (closes the decisions saw).
    closes = [(d.ts_event, d.features.get("close")) for d in decisions]
    px = [c for _, c in closes if c is not None]
    bench_rets = np.diff(px) / np.asarray(px[:-1]) if len(px) > 1 else np.empty(0)
    held = [i for i, r in enumerate(rets) if r != 0.0]
    hits = sum(1 for i in held if rets[i] > 0)
    report = {
        "bars_traded": len(rets),
        "initial_equity": initial_equity,
        "final_equity": cents_to_float(to_cents(final)),
        "pnl": cents_to_float(pnl),
        "gross_pnl": cents_to_float(pnl + fees),
        "realized_pnl": cents_to_float(realized),
        "unrealized_pnl": cents_to_float(unrealized),
        "fees": cents_to_float(fees),
        "return": _num(final / initial_equity - 1.0),
        "sharpe": _num(sharpe_ratio(rets, periods_per_year)) if rets.size > 1 else None,
        "sortino": _num(sortino_ratio(rets, periods_per_year)) if rets.size > 1 else None,
        "max_drawdown": _num(max_drawdown(rets)) if rets.size else 0.0,
        "turnover": _num(turnover / initial_equity),
        "hit_rate": _num(hits / len(held)) if held else None,
        "periods_per_year": periods_per_year,
        "decisions": len(decisions),
        "orders": len(orders),
        "parent_orders": len({o.parent_order_id for o in orders}),
        "fills": len(fills),
        "rejects": len(rejects),
        "rejects_by_code": dict(sorted(rej_codes.items())),
        "benchmark": {
            "name": "buy and hold the underlying",
            "return": _num(px[-1] / px[0] - 1.0) if len(px) > 1 else None,
            "sharpe": _num(sharpe_ratio(bench_rets, periods_per_year))
            if bench_rets.size > 1 else None,
            "max_drawdown": _num(max_drawdown(bench_rets)) if bench_rets.size else None,
        },
    }
    return report, ts, eq


def write_equity_csv(path: Path, ts: Sequence[int], eq: Sequence[float]) -> None:
    path.write_text("ts,equity\n" + "".join(f"{t},{e!r}\n" for t, e in zip(ts, eq, strict=True)))


def print_report(r: dict[str, Any]) -> None:
    def f(v: Any, spec: str = ",.2f") -> str:
        return "n/a" if v is None else format(v, spec)

    print("backtest report (trading window)")
    notes = []
    if r.get("stale_bars"):
        notes.append(f"{r['stale_bars']:,} on stale bars: no order")
    if r.get("cost_gated"):
        notes.append(f"{r['cost_gated']:,} held back by the cost gate")
    note = f"   ({'; '.join(notes)})" if notes else ""
    print(f"  decisions       {r['decisions']:>12,}{note}")
    print(f"  parent orders   {r['parent_orders']:>12,}   child orders {r['orders']:,}   "
          f"fills {r['fills']:,}")
    rej = ", ".join(f"{k} {v}" for k, v in r["rejects_by_code"].items()) or "none"
    print(f"  risk rejects    {r['rejects']:>12,}   ({rej})")
    print(f"  net PnL         {f(r['pnl']):>12} USD   gross {f(r['gross_pnl'])}  "
          f"fees {f(r['fees'])}")
    print(f"  realized        {f(r['realized_pnl']):>12} USD   unrealized "
          f"{f(r['unrealized_pnl'])}")
    print(f"  return          {f(r['return'], '.4%'):>12}   benchmark (buy & hold) "
          f"{f(r['benchmark']['return'], '.4%')}")
    print(f"  Sharpe          {f(r['sharpe'], '.3f'):>12}   Sortino {f(r['sortino'], '.3f')}   "
          f"(per-bar returns x sqrt({r['periods_per_year']:,.0f}))")
    print(f"  max drawdown    {f(r['max_drawdown'], '.4%'):>12}   turnover "
          f"{f(r['turnover'], '.2f')}x   hit rate {f(r['hit_rate'], '.2%')}")


NS = 1_000_000_000


def periods_per_year_for(bar_ns: int) -> float:
    """Annualization of per-bar returns: 252 trading days a year for daily bars, intraday bars
    of a 23-hour (Globex) day, calendar time for bars longer than a day (weekly: ~52)."""
    day = 86_400 * NS
    if bar_ns > day * 7 // 6:
        return 365.25 * day / bar_ns
    if bar_ns >= day * 5 // 6:
        return 252.0
    return 252.0 * 23 * 3600 * NS / bar_ns
