"""The backtest report: equity curve, PnL and its costs, risk-adjusted returns, round trips.

Built from the output topics, as an analyst would build it from ClickHouse: ``positions``
(equity marked at every decision), ``fills``, ``orders``, ``risk.rejects``,
``audit.decisions``. Figures a trader can believe:

- **Sharpe and Sortino** come from daily returns: the equity at the end of each trading
  session (CME sessions start at the instrument master's ``session_start``, 17:00
  America/Chicago for the E-mini) over the previous session's end, annualized by √252. With
  fewer than ``MIN_SESSIONS`` sessions they are ``null`` and ``ratios_null_reason`` says why:
  one session annualized from per-minute returns gave Sharpe −120 for a −1.2 % day.
- **Per-bar figures** (``per_bar``) stay, not annualized, with a 95 % interval for the Sharpe
  ratio that accounts for autocorrelation (Lo 2002, Newey–West lags).
- **Round trips** (flat → flat, or a flip): count, hit rate after fees, average win and loss;
  every trip in ``<out>/trades.csv`` (``jobs.round_trips``).
- **Costs**: gross before costs, slippage, fees, net — the sample strategy makes money before
  costs and loses it to them.

Ratios follow empyrical's conventions (``operators.domain.performance``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from jobs.round_trips import RoundTrip, round_trips, trip_stats
from operators.domain.money import cents_to_float, to_cents
from operators.domain.performance import (
    TRADING_DAYS,
    max_drawdown,
    returns_from_equity,
    sharpe_interval,
    sharpe_ratio,
    sortino_ratio,
)
from topics.messages import Decision, Fill, Order, Position, RiskReject

DEFAULT_PERIODS_PER_YEAR = 252.0 * 23 * 60
MIN_SESSIONS = 20
NS = 1_000_000_000
DAY_NS = 86_400 * NS
REJECTS_NOTE = ("rejected orders; by code, per failing rule (an order that fails several rules "
                "counts under each, so the codes may sum to more)")


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 10)


@dataclass(frozen=True, slots=True)
class SessionClock:
    """Trading sessions: each starts at ``start`` ("HH:MM") local time in ``tz``.

    A session that starts in the afternoon or evening is named after the next day, as CME
    names its sessions (the 17:00 CT Monday open is Tuesday's session).
    """

    tz: str = "UTC"
    start: str = "17:00"

    def __post_init__(self) -> None:
        ZoneInfo(self.tz)
        _ = self.start_ns  # validates HH:MM

    @property
    def start_ns(self) -> int:
        try:
            h, m = (int(x) for x in self.start.split(":"))
        except ValueError:
            raise ValueError(f"session start {self.start!r} is not HH:MM") from None
        if not (0 <= h < 24 and 0 <= m < 60):
            raise ValueError(f"session start {self.start!r} is not HH:MM")
        return (h * 60 + m) * 60 * NS

    def session_days(self, ts: Sequence[int]) -> list[int]:
        """The session (its day number since 1970-01-01) of each UTC ns timestamp."""
        zone = ZoneInfo(self.tz)
        start = self.start_ns
        shift = 1 if start >= 12 * 3600 * NS else 0
        offsets: dict[int, int] = {}  # UTC offset per hour: changes only at DST switches
        out = []
        for t in ts:
            hour = t // (3600 * NS)
            off = offsets.get(hour)
            if off is None:
                dt = datetime.fromtimestamp(hour * 3600, tz=UTC).astimezone(zone)
                delta = dt.utcoffset() or timedelta(0)
                off = offsets[hour] = int(delta.total_seconds()) * NS
            out.append((t + off - start) // DAY_NS + shift)
        return out

    @staticmethod
    def label(day: int) -> str:
        return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


def session_returns(ts: Sequence[int], values: Sequence[float], clock: SessionClock,
                    first: float | None = None) -> tuple[list[str], list[float]]:
    """Per session: its name and the return from the previous session's last value (the
    first session's from ``first``, else from its own first value) to its own last value."""
    if not ts:
        return [], []
    days = clock.session_days(ts)
    ends: dict[int, float] = {}
    for d, v in zip(days, values, strict=True):
        ends[d] = v
    prev = values[0] if first is None else first
    names, rets = [], []
    for d, v in ends.items():
        names.append(clock.label(d))
        rets.append(v / prev - 1.0)
        prev = v
    return names, rets


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


def _daily_ratios(rets: Sequence[float], n_sessions: int) -> dict[str, Any]:
    if n_sessions < MIN_SESSIONS:
        return {"sharpe": None, "sortino": None,
                "ratios_null_reason": f"{n_sessions} session(s) in the trading window; a daily "
                                      f"Sharpe or Sortino needs at least {MIN_SESSIONS}"}
    r = np.asarray(rets, dtype=np.float64)
    return {"sharpe": _num(sharpe_ratio(r, TRADING_DAYS)),
            "sortino": _num(sortino_ratio(r, TRADING_DAYS)), "ratios_null_reason": None}


def _per_bar(rets: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, Any]:
    held = rets[rets != 0.0]
    ci = sharpe_interval(rets)
    return {
        "returns": int(rets.size),
        "sharpe": _num(ci.sharpe),
        "sharpe_ci95": [_num(ci.low), _num(ci.high)],
        "sortino": _num(sortino_ratio(rets, 1.0)) if rets.size > 1 else None,
        "ci_method": f"Lo (2002) delta method, Newey-West with {ci.lags} lags",
        "hit_rate": _num(float(np.mean(held > 0))) if held.size else None,
        "note": "per bar, not annualized; hit_rate: share of positive equity changes among "
                "bars whose equity changed",
    }


@dataclass(slots=True)
class Report:
    """The figures (summary JSON keys) and what the files and the HTML page draw."""

    figures: dict[str, Any]
    ts: list[int]
    equity: list[float]
    trips: list[RoundTrip] = field(default_factory=list)
    open_trips: list[RoundTrip] = field(default_factory=list)


def build_report(
    *,
    positions: Sequence[Position],
    fills: Sequence[Fill],
    orders: Sequence[Order],
    rejects: Sequence[RiskReject],
    decisions: Sequence[Decision],
    initial_equity: float,
    multipliers: Mapping[str, float],
    periods_per_year: float = DEFAULT_PERIODS_PER_YEAR,
    start_ts: int | None = None,
    sessions: SessionClock | None = None,
    slippage: Mapping[str, float] | None = None,
) -> Report:
    """``slippage``: price units a market (TAKER) fill of each symbol paid (ticks × tick)."""
    clock = sessions or SessionClock()
    ts, eq = equity_curve(positions, initial_equity, start_ts)
    rets = returns_from_equity(np.asarray(eq, dtype=np.float64)) if len(eq) > 1 else np.empty(0)
    final = eq[-1] if eq else initial_equity
    # Money figures are summed in whole cents (the ledger publishes exact fixed-point amounts)
    fees = sum(to_cents(f.fee) for f in fills)
    slip = slippage or {}
    slippage_cost = sum(to_cents(slip.get(f.symbol, 0.0) * f.quantity
                                 * multipliers.get(f.symbol, 1.0))
                        for f in fills if f.liquidity == "TAKER")
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
    _, daily = session_returns(ts, eq, clock, first=initial_equity)
    trips, still_open = round_trips(fills, multipliers)
    stats = trip_stats(trips)
    # Benchmark: hold the underlying over the same bars (closes the decisions saw).
    closes = [(d.ts_event, c) for d in decisions
              if (c := d.features.get("close")) is not None]
    px = [c for _, c in closes]
    bench_rets = np.diff(px) / np.asarray(px[:-1]) if len(px) > 1 else np.empty(0)
    _, bench_daily = session_returns([t for t, _ in closes], px, clock)
    bench_ratios = _daily_ratios(bench_daily, len(bench_daily))
    figures: dict[str, Any] = {
        "bars_traded": len(rets),
        "initial_equity": initial_equity,
        "final_equity": cents_to_float(to_cents(final)),
        "pnl": cents_to_float(pnl),
        "gross_pnl": cents_to_float(pnl + fees),
        "realized_pnl": cents_to_float(realized),
        "unrealized_pnl": cents_to_float(unrealized),
        "fees": cents_to_float(fees),
        "costs": {
            "gross_before_costs": cents_to_float(pnl + fees + slippage_cost),
            "slippage": cents_to_float(slippage_cost),
            "fees": cents_to_float(fees),
            "net": cents_to_float(pnl),
            "note": "slippage: what market fills paid beyond the trade they filled against "
                    "(slippage_ticks x tick size x quantity x multiplier)",
        },
        "return": _num(final / initial_equity - 1.0),
        "sessions": len(daily),
        **_daily_ratios(daily, len(daily)),
        "ratios_basis": "daily (session) returns, annualized by sqrt(252)",
        "per_bar": _per_bar(rets),
        "max_drawdown": _num(max_drawdown(rets)) if rets.size else 0.0,
        "turnover": _num(turnover / initial_equity),
        "hit_rate": _num(stats["hit_rate"]),
        "round_trips": {**{k: _num(v) if isinstance(v, float) else v for k, v in stats.items()},
                        "open": len(still_open),
                        "note": "flat to flat, or a flip; hit rate and averages after fees"},
        "periods_per_year": periods_per_year,
        "decisions": len(decisions),
        "orders": len(orders),
        "parent_orders": len({o.parent_order_id for o in orders}),
        "fills": len(fills),
        "rejects": len(rejects),
        "rejects_by_code": dict(sorted(rej_codes.items())),
        "rejects_note": REJECTS_NOTE,
        "benchmark": {
            "name": "buy and hold the underlying",
            "return": _num(px[-1] / px[0] - 1.0) if len(px) > 1 else None,
            "sharpe": bench_ratios["sharpe"],
            "max_drawdown": _num(max_drawdown(bench_rets)) if bench_rets.size else None,
        },
    }
    return Report(figures, ts, eq, trips, still_open)


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
    rej = ", ".join(f"{k} {v:,}" for k, v in r["rejects_by_code"].items()) or "none"
    print(f"  risk rejects    {r['rejects']:>12,}   orders; per failing rule: {rej}")
    c = r["costs"]
    print(f"  gross PnL       {f(c['gross_before_costs']):>12} USD   before costs: slippage "
          f"{f(c['slippage'])}, fees {f(c['fees'])}")
    print(f"  net PnL         {f(r['pnl']):>12} USD   realized {f(r['realized_pnl'])}, "
          f"unrealized {f(r['unrealized_pnl'])}")
    print(f"  return          {f(r['return'], '.4%'):>12}   benchmark (buy & hold) "
          f"{f(r['benchmark']['return'], '.4%')}")
    rt = r["round_trips"]
    print(f"  round trips     {rt['count']:>12,}   hit rate {f(rt['hit_rate'], '.1%')}, "
          f"avg win {f(rt['avg_win'])}, avg loss {f(rt['avg_loss'])} USD (after fees)")
    if r["sharpe"] is None:
        print(f"  Sharpe (daily)  {'n/a':>12}   {r['ratios_null_reason']}")
    else:
        print(f"  Sharpe (daily)  {f(r['sharpe'], '.3f'):>12}   Sortino "
              f"{f(r['sortino'], '.3f')}   ({r['sessions']} sessions x sqrt(252))")
    pb = r["per_bar"]
    lo, hi = pb["sharpe_ci95"]
    print(f"  Sharpe per bar  {f(pb['sharpe'], '.4f'):>12}   95% CI [{f(lo, '.4f')}, "
          f"{f(hi, '.4f')}] ({pb['ci_method']}; not annualized)")
    print(f"  max drawdown    {f(r['max_drawdown'], '.4%'):>12}   turnover "
          f"{f(r['turnover'], '.2f')}x")


def periods_per_year_for(bar_ns: int) -> float:
    """Annualization of per-bar returns: 252 trading days a year for daily bars, intraday bars
    of a 23-hour (Globex) day, calendar time for bars longer than a day (weekly: ~52)."""
    day = 86_400 * NS
    if bar_ns > day * 7 // 6:
        return 365.25 * day / bar_ns
    if bar_ns >= day * 5 // 6:
        return 252.0
    return 252.0 * 23 * 3600 * NS / bar_ns
