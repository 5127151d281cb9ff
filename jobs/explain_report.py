"""The text report of ``streamquant explain``: a decision read top to bottom, input to fills.

The order follows the pipeline (input ticks → bar → features → specialists → regime blend →
sizing → pre-trade check → orders → fills), so a reader answers "why was this order placed"
by reading down. Times are UTC with milliseconds; the record's JSON (``--format json``) keeps
integer nanoseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime

from jobs.explain import DecisionRecord, OrderRow

_W = 22  # label column


def _ts(ns: int | None) -> str:
    if ns is None:
        return "-"
    dt = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return f"{dt:%Y-%m-%d %H:%M:%S}.{ns % 1_000_000_000 // 1_000_000:03d} UTC"


def _num(v: float | None, digits: int = 6) -> str:
    if v is None:
        return "-"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.{digits}g}"


def _px(v: float | None) -> str:
    """A price: every digit it has (tick sizes such as 0.125 must not be rounded away)."""
    return "-" if v is None else f"{v:.10g}"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _line(label: str, text: str) -> str:
    return f"  {label:<{_W}}{text}"


def render(rec: DecisionRecord) -> str:
    """The readable report of one decision."""
    out: list[str] = []
    head = f"{rec.action} {_num(rec.quantity)}" if rec.action != "HOLD" else "HOLD"
    out.append(f"Decision {rec.decision_id}  ({rec.symbol}, job {rec.job})")
    out.append(_line("decided at", _ts(rec.ts_event)))
    out.append(_line("action", head + (f"   (no order: {rec.skipped})" if rec.skipped else "")))
    out.append(_line("confidence", f"{rec.confidence:.3f}"))
    out.append(_line("device", rec.device))
    out += _inputs(rec)
    out += _bar(rec)
    out += _features(rec)
    out += _models(rec)
    out += _blend(rec)
    out += _sizing(rec)
    out += _risk(rec)
    out += _orders(rec)
    return "\n".join(out) + "\n"


def _inputs(rec: DecisionRecord) -> list[str]:
    i = rec.inputs
    out = ["", "Input"]
    if i.file is None:
        out.append(_line("source", "not a file replay (no input lines recorded)"))
        return out
    out.append(_line("lines", f"{i.file}:{i.first_line}..{i.last_line}"))
    if not i.stored:
        out.append(_line("ticks", "md_ticks was not kept for this job (--no-clickhouse-ticks)"))
        return out
    out.append(_line("ticks", f"{i.count:,} in md_ticks, volume {_num(i.volume)}"))
    for name, t in (("first tick", i.first), ("last tick", i.last)):
        if t is not None:
            out.append(_line(name, f"{_ts(t.ts_event)}  {_px(t.price)} x {_num(t.size)}  "
                                   f"(line {t.line})"))
    return out


def _bar(rec: DecisionRecord) -> list[str]:
    out = ["", "Bar"]
    b = rec.bar
    if b is None:
        out.append(_line("bar", f"ending {_ts(rec.bar_ts)} (not in md_bars)"))
        return out
    out.append(_line(f"{b.timeframe} bar", f"{_ts(b.ts_start)} .. {_ts(b.ts_end)}"))
    out.append(_line("OHLC", f"{_px(b.open)} / {_px(b.high)} / {_px(b.low)} / "
                             f"{_px(b.close)}"))
    out.append(_line("volume, vwap, trades",
                     f"{_num(b.volume)}, {_px(b.vwap)}, {b.trade_count:,}"))
    if rec.ts_closed is not None:
        out.append(_line("known complete at", _ts(rec.ts_closed)))
    return out


def _features(rec: DecisionRecord) -> list[str]:
    version = f" ({rec.feature_version})" if rec.feature_version else ""
    out = ["", f"Features{version}"]
    contrib = rec.contributions
    if contrib:
        out.append(f"  {'feature':<{_W}}{'value':>14}  {'contribution':>13}")
    for name, v in rec.features.items():
        c = contrib.get(name)
        tail = f"  {c:>+13.4f}" if c is not None else ""
        out.append(f"  {name:<{_W}}{_num(v):>14}{tail}")
    if not contrib:
        out.append("  (no per-feature contributions: the served models are not linear)")
    return out


def _models(rec: DecisionRecord) -> list[str]:
    out = ["", "Specialists"]
    if not rec.predictions:
        for name, v in rec.model_outputs.items():
            out.append(_line(name, f"{v:.4f}  version {rec.model_versions.get(name, '-')}"))
        return out
    out.append(f"  {'model':<{_W}}{'arm':<5}{'regime':<10}{'prob_up':>8}{'score':>9}  version")
    for p in rec.predictions:
        out.append(f"  {p.model:<{_W}}{p.variant:<5}{p.regime:<10}{p.prob_up:>8.4f}"
                   f"{p.score:>+9.4f}  {p.model_version} ({p.device})")
    return out


def _blend(rec: DecisionRecord) -> list[str]:
    out = ["", "Regime blend"]
    probs = "  ".join(f"{k} {_pct(v)}" for k, v in rec.regime_probs.items())
    out.append(_line("regime probabilities", probs))
    if rec.regime is not None:
        out.append(_line("regime entropy", f"{rec.regime.entropy:.3f}"))
    weights = "  ".join(f"{k} {_pct(v)}" for k, v in rec.strategy_weights.items())
    out.append(_line("strategy weights", weights or "-"))
    s = rec.signal
    if s is not None:
        out.append(_line("signal", f"{s.signal:+.4f} (prob_up {s.prob_up:.4f}, confidence "
                                   f"{s.confidence:.3f})"))
        if s.fallback:
            out.append(_line("fallback", s.fallback))
    return out


def _sizing(rec: DecisionRecord) -> list[str]:
    out = ["", "Sizing"]
    for it in rec.intents:
        out.append(_line(f"intent ({it.account})",
                         f"{it.side} {_num(it.quantity)} → target {_num(it.target_position)} "
                         f"at ref {_px(it.reference_price)}, {it.algo}"))
    for k, v in rec.sizing.items():
        out.append(_line(k, _num(v)))
    if not rec.sizing and not rec.intents:
        out.append("  (no sizing: the decision stopped before it)")
    return out


def _risk(rec: DecisionRecord) -> list[str]:
    out = ["", "Pre-trade check"]
    if not rec.risk_checks:
        out.append("  (not reached: no order was proposed)")
    for name, ok in rec.risk_checks.items():
        out.append(f"  {'pass' if ok else 'FAIL':<6}{name}")
    for r in rec.rejects:
        out.append(_line(f"cut ({r.account})", f"{r.side} {_num(r.requested_quantity)} → "
                                               f"{_num(r.allowed_quantity)}"))
        for reason in r.reasons:
            out.append(f"    {reason.code}: {reason.message}")
    return out


def _orders(rec: DecisionRecord) -> list[str]:
    out = ["", "Orders"]
    if not rec.orders:
        out.append("  (none)")
        return out
    for o in rec.orders:
        out += _order(o)
    return out


def _order(o: OrderRow) -> list[str]:
    price = f" limit {_px(o.limit_price)}" if o.limit_price is not None else ""
    out = [f"  {o.client_order_id}  {_ts(o.ts_event)}  {o.side} {_num(o.quantity)} "
           f"{o.order_type}{price} {o.time_in_force} {o.algo} slice {o.slice} @ {o.venue}"]
    for f in o.fills:
        out.append(f"    fill {f.fill_id}  {_ts(f.ts_event)}  {_num(f.quantity)} @ "
                   f"{_px(f.price)}  fee {_num(f.fee)}  {f.liquidity}")
    if o.fills:
        qty = o.filled
        avg = sum(f.quantity * f.price for f in o.fills) / qty if qty else 0.0
        out.append(f"    filled {_num(qty)} of {_num(o.quantity)}, average {_px(avg)}")
    else:
        out.append("    no fills")
    return out
