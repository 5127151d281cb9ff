"""``<out>/report.html``: the backtest on one self-contained page, for people who would rather
look than read.

Charts with plotly (its JavaScript inline, no CDN: the page opens offline): equity, drawdown,
position, price with the fills marked, the regime probabilities over time, and the cost
breakdown, next to the summary table. Built after the replay from what the report already
holds; every series is thinned to at most ``MAX_POINTS`` points (keeping each bucket's minimum
and maximum), so the page and its memory stay bounded however long the run.
"""

from __future__ import annotations

import html
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from topics.messages import Decision, Fill, Position

MAX_POINTS = 4_000
REGIMES = (("bull", "#2ca02c"), ("sideways", "#7f7f7f"), ("bear", "#d62728"))


def thin(x: npt.ArrayLike, y: npt.ArrayLike, max_points: int = MAX_POINTS
         ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """At most ``max_points`` points of a series: per bucket its first, minimum and maximum
    (in time order), so spikes and drawdowns survive the thinning."""
    xa, ya = np.asarray(x), np.asarray(y, dtype=np.float64)
    n = len(xa)
    if n <= max_points:
        return xa, ya
    buckets = max(1, max_points // 3)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep: list[int] = []
    for lo, hi in itertools.pairwise(edges):
        if hi > lo:
            seg = ya[lo:hi]
            keep.extend((lo, lo + int(np.argmin(seg)), lo + int(np.argmax(seg))))
    idx = np.unique(np.asarray([*keep, n - 1], dtype=np.int64))
    return xa[idx], ya[idx]


def _times(ts: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    return np.asarray(ts, dtype=np.int64).astype("datetime64[ns]")


PERCENT = frozenset({"return", "max_drawdown", "hit_rate"})


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if pct and isinstance(v, float):
        return f"{v:.2%}"
    if isinstance(v, float):
        return f"{v:,.6g}" if abs(v) < 1 else f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


SUMMARY_ROWS = (
    ("net PnL (USD)", "pnl"), ("return", "return"), ("final equity (USD)", "final_equity"),
    ("realized PnL (USD)", "realized_pnl"), ("unrealized PnL (USD)", "unrealized_pnl"),
    ("fees (USD)", "fees"), ("Sharpe (daily, x sqrt 252)", "sharpe"),
    ("Sortino (daily, x sqrt 252)", "sortino"), ("sessions", "sessions"),
    ("max drawdown", "max_drawdown"), ("turnover (x equity)", "turnover"),
    ("round-trip hit rate (after fees)", "hit_rate"), ("decisions", "decisions"),
    ("parent orders", "parent_orders"), ("child orders", "orders"), ("fills", "fills"),
    ("rejected orders", "rejects"),
)


def _summary_table(fig: Mapping[str, Any]) -> str:
    rows = [(label, _fmt(fig.get(key), key in PERCENT)) for label, key in SUMMARY_ROWS]
    rt, pb, bm = fig["round_trips"], fig["per_bar"], fig["benchmark"]
    lo, hi = pb["sharpe_ci95"]
    rows += [
        ("round trips (won / lost / open)", f"{rt['count']:,} ({rt['wins']:,} / "
                                            f"{rt['losses']:,} / {rt['open']:,})"),
        ("average win / loss (USD)", f"{_fmt(rt['avg_win'])} / {_fmt(rt['avg_loss'])}"),
        ("Sharpe per bar (95% CI)", f"{_fmt(pb['sharpe'])} [{_fmt(lo)}, {_fmt(hi)}]"),
        ("benchmark return (buy & hold)", _fmt(bm["return"], True)),
    ]
    rej = ", ".join(f"{k} {v:,}" for k, v in fig["rejects_by_code"].items()) or "none"
    rows.append(("rejects by failing rule", rej))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in rows)
    notes = [fig["rejects_note"], pb["ci_method"] + "; " + pb["note"]]
    if fig.get("ratios_null_reason"):
        notes.insert(0, "Sharpe and Sortino: " + fig["ratios_null_reason"])
    foot = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f'<table class="summary">{body}</table><ul class="notes">{foot}</ul>'


def _series_figure(ts: Sequence[int], equity: Sequence[float], positions: Sequence[Position],
                   decisions: Sequence[Decision], fills: Sequence[Fill]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=5, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[0.26, 0.14, 0.14, 0.28, 0.18],
                        subplot_titles=("equity (USD)", "drawdown", "position (contracts)",
                                        "price and fills", "regime probabilities"))
    eq = np.asarray(equity, dtype=np.float64)
    x, y = thin(_times(ts), eq)
    fig.add_trace(go.Scatter(x=x, y=y, name="equity", line={"color": "#1f77b4"}), 1, 1)
    if eq.size:
        dd = eq / np.maximum.accumulate(eq) - 1.0
        x, y = thin(_times(ts), dd)
        fig.add_trace(go.Scatter(x=x, y=y, name="drawdown", fill="tozeroy",
                                 line={"color": "#d62728"}), 2, 1)
    for sym in sorted({p.symbol for p in positions}):
        pts = [p for p in positions if p.symbol == sym]
        x, y = thin(_times([p.ts_event for p in pts]), [p.quantity for p in pts])
        fig.add_trace(go.Scatter(x=x, y=y, name=f"position {sym}", line_shape="hv"), 3, 1)
    closes = [(d.ts_event, c) for d in decisions if (c := d.features.get("close")) is not None]
    if closes:
        x, y = thin(_times([t for t, _ in closes]), [c for _, c in closes])
        fig.add_trace(go.Scatter(x=x, y=y, name="bar close", line={"color": "#555"}), 4, 1)
    for side, symbol, color in (("BUY", "triangle-up", "#2ca02c"),
                                ("SELL", "triangle-down", "#d62728")):
        fs = [f for f in fills if f.side == side]
        step = max(1, len(fs) // MAX_POINTS)
        fs = fs[::step]
        fig.add_trace(go.Scatter(
            x=_times([f.ts_event for f in fs]), y=[f.price for f in fs], mode="markers",
            name=f"{side.lower()} fills" + (f" (every {step}th)" if step > 1 else ""),
            marker={"symbol": symbol, "color": color, "size": 7}), 4, 1)
    rt = _times([d.ts_event for d in decisions])
    for name, color in REGIMES:
        x, y = thin(rt, [d.regime_probs.get(name, 0.0) for d in decisions])
        fig.add_trace(go.Scatter(x=x, y=y, name=f"P({name})", stackgroup="regime",
                                 line={"color": color, "width": 0.5}), 5, 1)
    fig.update_yaxes(tickformat=".2%", row=2, col=1)
    fig.update_yaxes(range=[0, 1], row=5, col=1)
    fig.update_layout(height=1250, margin={"l": 60, "r": 20, "t": 40, "b": 30},
                      legend={"orientation": "h", "y": -0.04}, template="plotly_white",
                      hovermode="x unified")
    return fig


def _cost_figure(costs: Mapping[str, Any]) -> Any:
    import plotly.graph_objects as go

    gross = costs["gross_before_costs"] or 0.0
    slip = costs["slippage"] or 0.0
    fees = costs["fees"] or 0.0
    fig = go.Figure(go.Waterfall(
        x=["gross before costs", "slippage", "fees", "net"],
        measure=["absolute", "relative", "relative", "total"], y=[gross, -slip, -fees, 0.0],
        text=[f"{v:,.2f}" for v in (gross, -slip, -fees, gross - slip - fees)],
        textposition="outside", connector={"line": {"color": "#999"}},
        increasing={"marker": {"color": "#2ca02c"}}, decreasing={"marker": {"color": "#d62728"}},
        totals={"marker": {"color": "#1f77b4"}}))
    fig.update_layout(title="costs (USD)", height=380, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 50, "b": 30}, showlegend=False)
    return fig


CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } .meta { color: #555; }
.top { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
table.summary { border-collapse: collapse; font-size: 0.9em; }
table.summary th { text-align: left; font-weight: normal; color: #555; padding: 2px 12px 2px 0; }
table.summary td { text-align: right; font-variant-numeric: tabular-nums; padding: 2px 0; }
ul.notes { font-size: 0.8em; color: #555; max-width: 46em; }
.cost { flex: 1; min-width: 420px; }
"""


def write_report_html(path: Path, *, figures: Mapping[str, Any], ts: Sequence[int],
                      equity: Sequence[float], positions: Sequence[Position],
                      decisions: Sequence[Decision], fills: Sequence[Fill],
                      title: str, meta: Mapping[str, Any]) -> None:
    """Write the page: plotly.js once, inline; the figures as divs; the tables as HTML."""
    series = _series_figure(ts, equity, positions, decisions, fills)
    costs = _cost_figure(figures["costs"])
    config = {"displaylogo": False, "responsive": True}
    cost_div = costs.to_html(full_html=False, include_plotlyjs=True, config=config,
                             div_id="costs")
    series_div = series.to_html(full_html=False, include_plotlyjs=False, config=config,
                                div_id="series")
    summary_json = json.dumps(figures, sort_keys=True).replace("</", "<\\/")
    meta_text = " · ".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in meta.items())
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class=\"meta\">{meta_text}</p>"
        f"<div class=\"top\"><div>{_summary_table(figures)}</div>"
        f"<div class=\"cost\">{cost_div}</div></div>{series_div}"
        f"<script type=\"application/json\" id=\"summary-json\">"
        f"{summary_json}</script>"
        "</body></html>\n")
    path.write_text(doc, encoding="utf-8")
