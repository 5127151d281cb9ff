"""Acceptance tests of the decision chain, read from what a replay writes.

Each test replays the bundled E-mini sample through ``streamquant run --models`` (shared runs,
see ``tests/_replay_fixture.py``) and checks the result as a trader or analyst would: from the
topic files, ``summary.json`` and ``equity.csv``, never from operator internals.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import empyrical
import numpy as np
import pandas as pd
import pytest

from operators.domain.execution import client_order_id, parent_order_id
from operators.domain.risk_rules import QUANTITY_DEPENDENT, RULE_CODES
from operators.infer import arm_for, decision_id_for
from tests._replay_fixture import (
    KILL_AT,
    RESET_AT,
    RISK_LIMITS,
    TRAIN_END,
    Replay,
    ReplayPool,
    pool_fixture,
    read_ticks,
)
from topics.messages import Decision, FeatureVector, Fill, Order, Prediction, RiskReject

replays = pool_fixture()

ES_MULTIPLIER = 50.0
ES_TICK = 0.25
SLIPPAGE = 0.5 * ES_TICK  # ExecConfig.slippage_ticks default
LATENCY_NS = 50_000_000  # ExecConfig.latency_ns default
CHILD_TTL_NS = 60_000_000_000  # ExecConfig.child_ttl_ns default
SLICE_NS = 15_000_000_000  # ExecConfig.slice_interval_ns default
SLICES = 4
INITIAL_EQUITY = 1_000_000.0
EPS = 1e-9


# ------------------------------------------------------------------------------ helpers


def _features_by_decision(run: Replay) -> dict[str, FeatureVector]:
    return {decision_id_for(fv): fv for fv in run.topic("features")}


def _orders_by_decision(run: Replay) -> dict[str, list[Order]]:
    out: dict[str, list[Order]] = defaultdict(list)
    for o in run.topic("orders"):
        out[o.decision_id].append(o)
    for orders in out.values():
        orders.sort(key=lambda o: int(o.slice.split("/")[0]))
    return out


def _fills_by_order(run: Replay) -> dict[str, list[Fill]]:
    out: dict[str, list[Fill]] = defaultdict(list)
    for f in run.topic("fills"):
        out[f.client_order_id].append(f)
    return out


def _decisions(run: Replay) -> dict[str, Decision]:
    return {d.decision_id: d for d in run.topic("audit.decisions")}


def _superseded_at(run: Replay) -> dict[str, int]:
    """Decision id -> event time of the next decision in its symbol, which cancels whatever
    of its execution is still unsent or working (target-based execution)."""
    nxt: dict[str, int] = {}
    last: dict[str, Decision] = {}
    for d in run.topic("audit.decisions"):
        prev = last.get(d.symbol)
        if prev is not None:
            nxt[prev.decision_id] = d.ts_event
        last[d.symbol] = d
    return nxt


def _signed(side: str, qty: float) -> float:
    return qty if side == "BUY" else -qty


def _slice_no(o: Order) -> tuple[int, int]:
    k, m = o.slice.split("/")
    return int(k), int(m)


def _is_whole(x: float) -> bool:
    return abs(x - round(x)) < EPS


def _positions_after_fills(fills: Iterable[Fill]) -> list[tuple[Fill, float, float]]:
    """(fill, position after it, equity after it marked at the fill price), from fills alone."""
    cash = INITIAL_EQUITY
    pos = 0.0
    out = []
    for f in fills:
        s = _signed(f.side, f.quantity)
        cash -= s * f.price * ES_MULTIPLIER + f.fee
        pos += s
        out.append((f, pos, cash + pos * f.price * ES_MULTIPLIER))
    return out


# ------------------------------------------------------------------------------ 1. ids, determinism


def test_a_rerun_writes_byte_identical_orders_fills_rejects_and_audit(replays: ReplayPool
                                                                      ) -> None:
    first, again = replays.get("guarded"), replays.get("guarded_again")
    for topic in ("orders", "fills", "risk.rejects", "audit.decisions", "positions"):
        a, b = first.raw(topic), again.raw(topic)
        assert a, f"{topic} is empty: nothing to compare"
        assert a == b, f"{topic}.jsonl differs between two runs of the same replay"


@pytest.mark.parametrize("name", ["base", "guarded", "twap", "vwap", "iceberg"])
def test_client_order_ids_are_unique_and_derived_from_decision_and_slice(
        replays: ReplayPool, name: str) -> None:
    run = replays.get(name)
    orders: list[Order] = run.topic("orders")
    assert orders
    ids = [o.client_order_id for o in orders]
    assert len(set(ids)) == len(ids), "a client_order_id repeats within one run"
    for o in orders:
        k, m = _slice_no(o)
        assert 1 <= k <= m
        assert o.client_order_id == client_order_id(o.decision_id, k)
        assert o.parent_order_id == parent_order_id(o.decision_id)
    # the audit record names every child id it scheduled, recomputable from its decision id
    sent = set(ids)
    for d in run.topic("audit.decisions"):
        assert list(d.order_ids) == [client_order_id(d.decision_id, k)
                                     for k in range(1, len(d.order_ids) + 1)]
        assert set(d.order_ids) >= {o.client_order_id for o in orders
                                    if o.decision_id == d.decision_id}
    fills: list[Fill] = run.topic("fills")
    fill_ids = [f.fill_id for f in fills]
    assert len(set(fill_ids)) == len(fill_ids), "a fill_id repeats within one run"
    assert {f.client_order_id for f in fills} <= sent, "a fill of an order never sent"


# ------------------------------------------------------------------------------ 2. risk limits


def test_no_fill_takes_the_position_past_the_concentration_limit(replays: ReplayPool) -> None:
    run = replays.get("guarded")
    limit = RISK_LIMITS["max_concentration"]
    after = _positions_after_fills(run.topic("fills"))
    assert after, "the risk replay traded nothing"
    worst = 0.0
    for f, pos, equity in after:
        ratio = abs(pos) * f.price * ES_MULTIPLIER / equity
        worst = max(worst, ratio)
        assert ratio <= limit + EPS, f"after {f.fill_id} the position is {ratio:.2%} of equity"
    # the limit is reached (one contract ~ 8 % of equity), not avoided by never trading
    assert worst > 0.07
    assert max(abs(pos) for _, pos, _ in after) == 1.0


def test_no_order_exceeds_the_max_order_notional(replays: ReplayPool) -> None:
    run = replays.get("guarded")
    ticks = read_ticks(run.out)
    cap = RISK_LIMITS["max_order_notional"]
    orders: list[Order] = run.topic("orders")
    assert orders
    for o in orders:
        last = ticks.price[ticks.seen_at_decision(o.ts_event)]  # the price the check used
        assert o.quantity * last * ES_MULTIPLIER <= cap, o.client_order_id


def test_accepted_orders_per_rate_window_never_exceed_the_limit(replays: ReplayPool) -> None:
    run = replays.get("guarded")
    window = RISK_LIMITS["rate_window_ns"]
    cap = RISK_LIMITS["max_orders_per_window"]
    parents: dict[str, int] = {}
    for o in run.topic("orders"):
        parents.setdefault(o.parent_order_id, o.ts_event)
    times = np.sort(np.fromiter(parents.values(), dtype=np.int64))
    # orders in (t - window, t] for every accepted order time t
    counts = np.searchsorted(times, times, side="right") - np.searchsorted(
        times, times - window, side="right")
    assert counts.max() <= cap
    assert counts.max() == cap, "the rate limit never bound: tighten it"


def test_rejects_carry_the_binding_codes_and_a_consistent_allowed_quantity(
        replays: ReplayPool) -> None:
    run = replays.get("guarded")
    rejects: list[RiskReject] = run.topic("risk.rejects")
    decisions = _decisions(run)
    orders = _orders_by_decision(run)
    ticks = read_ticks(run.out)
    after = _positions_after_fills(run.topic("fills"))
    fill_ts = np.array([f.ts_event for f, _, _ in after], dtype=np.int64)
    codes = Counter(r.code for rej in rejects for r in rej.reasons)
    for code in ("CONCENTRATION_LIMIT", "MAX_NOTIONAL", "RATE_LIMIT"):
        assert codes[code] > 0, f"{code} never bound"
    assert set(codes) <= {"CONCENTRATION_LIMIT", "MAX_NOTIONAL", "RATE_LIMIT", "KILL_SWITCH"}
    resized = 0
    for rej in rejects:
        d = decisions[rej.decision_id]
        assert d.ts_event == rej.ts_event and d.symbol == rej.symbol and d.action == rej.side
        req, allowed = rej.requested_quantity, rej.allowed_quantity
        assert _is_whole(req) and _is_whole(allowed) and 0 <= allowed < req
        price = ticks.price[ticks.seen_at_decision(rej.ts_event)]
        rcodes = {r.code for r in rej.reasons}
        # the audit record's flags name exactly the failed rules
        assert {c for c in RULE_CODES if not d.risk_checks[f"{c.lower()}_ok"]} == rcodes
        if not rcodes <= QUANTITY_DEPENDENT:
            assert allowed == 0, "a quantity-independent failure leaves nothing allowed"
        for r in rej.reasons:
            if r.code == "MAX_NOTIONAL":
                assert r.limit == RISK_LIMITS["max_order_notional"]
                assert r.proposed == pytest.approx(req * price * ES_MULTIPLIER, rel=1e-12)
                assert r.proposed is not None and r.limit is not None
                assert r.proposed > r.limit >= allowed * price * ES_MULTIPLIER
            elif r.code == "CONCENTRATION_LIMIT":
                assert r.limit == RISK_LIMITS["max_concentration"]
                assert r.proposed is not None and r.proposed > r.limit
            elif r.code == "RATE_LIMIT":
                assert (r.limit, r.proposed) == (RISK_LIMITS["max_orders_per_window"],
                                                 RISK_LIMITS["max_orders_per_window"] + 1)
        # what would pass is what was traded (resize to allowed), and it respects the limit
        sent = math.fsum(o.quantity for o in orders.get(rej.decision_id, []))
        assert sent == allowed == d.quantity
        if allowed > 0:
            resized += 1
            i = int(np.searchsorted(fill_ts, rej.ts_event, side="right")) - 1
            pos = after[i][1] if i >= 0 else 0.0
            assert abs(pos + _signed(rej.side, allowed)) <= 1.0, "allowed breaks concentration"
    assert resized > 0, "no reject was traded at its allowed quantity"


# ------------------------------------------------------------------------------ 3. kill switch


def test_no_order_is_sent_while_the_kill_switch_is_on(replays: ReplayPool) -> None:
    run = replays.get("guarded")
    ts = [o.ts_event for o in run.topic("orders")]
    assert not [t for t in ts if KILL_AT <= t < RESET_AT]
    assert any(TRAIN_END <= t < KILL_AT for t in ts), "no order before the kill"
    assert any(t >= RESET_AT for t in ts), "orders did not resume after the reset"
    assert not [f for f in run.topic("fills") if KILL_AT <= f.ts_event < RESET_AT]


def test_decisions_under_the_kill_switch_are_rejected_with_kill_switch(replays: ReplayPool
                                                                       ) -> None:
    run = replays.get("guarded")
    rejects: dict[str, list[RiskReject]] = defaultdict(list)
    for r in run.topic("risk.rejects"):
        rejects[r.decision_id].append(r)
    wanted = 0
    for d in run.topic("audit.decisions"):
        if not KILL_AT <= d.ts_event < RESET_AT or d.action == "HOLD":
            continue
        wanted += 1
        assert d.quantity == 0 and d.order_ids == ()
        assert d.risk_checks["kill_switch_ok"] is False
        (rej,) = rejects[d.decision_id]
        assert rej.reasons[0].code == "KILL_SWITCH"
        assert rej.allowed_quantity == 0 and rej.requested_quantity > 0
    assert wanted > 5, "the strategy never wanted to trade while killed"


# ------------------------------------------------------------------------------ 4. paper broker


def test_decisions_are_made_when_their_bar_became_known(replays: ReplayPool) -> None:
    """A decision's event time is its bar's closing tick (``ts_closed``), not earlier or later;
    an IMMEDIATE order goes out at the decision."""
    run = replays.get("base")
    fvs = _features_by_decision(run)
    late = []
    for d in run.topic("audit.decisions"):
        fv = fvs[d.decision_id]
        if d.ts_event != fv.ts_closed:
            late.append((d.decision_id, (d.ts_event - fv.ts_closed) / 1e9))
    assert not late, f"{len(late)} decisions not stamped at ts_closed, e.g. {late[:3]} (s)"
    decisions = _decisions(run)
    for o in run.topic("orders"):
        assert o.ts_event == decisions[o.decision_id].ts_event


@pytest.mark.parametrize("name", ["base", "twap", "vwap", "iceberg"])
def test_fills_come_from_later_ticks_after_the_latency(replays: ReplayPool, name: str) -> None:
    run = replays.get(name)
    fvs = _features_by_decision(run)
    orders = {o.client_order_id: o for o in run.topic("orders")}
    fills: list[Fill] = run.topic("fills")
    assert fills
    for f in fills:
        o = orders[f.client_order_id]
        assert f.ts_event >= o.ts_event + LATENCY_NS, f.fill_id
        assert f.ts_event < o.ts_event + CHILD_TTL_NS, f"{f.fill_id} after the child expired"
        # never the tick that closed the decision's bar (nor any tick before it)
        assert f.ts_event > fvs[o.decision_id].ts_closed, f.fill_id
        assert (f.symbol, f.side) == (o.symbol, o.side)


def test_market_fills_are_real_trade_prices_plus_half_a_tick_of_slippage(replays: ReplayPool
                                                                         ) -> None:
    run = replays.get("base")
    ticks = read_ticks(run.out)
    for f in run.topic("fills"):
        at = ticks.at(f.ts_event)
        traded = set(ticks.price[at].tolist())
        assert traded, f"{f.fill_id}: no trade at {f.ts_event}"
        assert f.price - _signed(f.side, SLIPPAGE) in traded, f.fill_id
        assert f.liquidity == "TAKER"


def test_fills_never_take_more_than_the_traded_volume(replays: ReplayPool) -> None:
    run = replays.get("base")
    ticks = read_ticks(run.out)
    per_ts: Counter[int] = Counter()
    for f in run.topic("fills"):
        per_ts[f.ts_event] += int(f.quantity)
    for ts, qty in per_ts.items():
        assert qty <= ticks.size[ticks.at(ts)].sum(), f"{qty} filled at {ts}"


def test_orders_fill_partially_and_never_overfill(replays: ReplayPool) -> None:
    run = replays.get("base")
    by_order = _fills_by_order(run)
    partial = 0
    for o in run.topic("orders"):
        fs = by_order.get(o.client_order_id, [])
        filled = math.fsum(f.quantity for f in fs)
        assert filled <= o.quantity
        assert all(f.quantity > 0 and _is_whole(f.quantity) for f in fs)
        if len(fs) > 1 or 0 < filled < o.quantity:
            partial += 1
    assert partial > 0, "no partial fill in the whole replay"


def test_fees_are_one_dollar_per_contract(replays: ReplayPool) -> None:
    run = replays.get("base")
    fills: list[Fill] = run.topic("fills")
    for f in fills:
        assert f.fee == pytest.approx(1.0 * f.quantity, abs=1e-12)
    assert run.summary["fees"] == pytest.approx(math.fsum(f.fee for f in fills), abs=1e-6)


def test_twap_sends_four_equal_slices_fifteen_seconds_apart(replays: ReplayPool) -> None:
    run = replays.get("twap")
    decisions = _decisions(run)
    superseded = _superseded_at(run)
    last_tick = int(read_ticks(run.out).ts[-1])
    four = 0
    for did, orders in _orders_by_decision(run).items():
        d = decisions[did]
        lots = round(d.quantity)
        m = min(SLICES, lots)
        cut = superseded.get(did)
        assert [_slice_no(o) for o in orders] == [(k, m) for k in range(1, len(orders) + 1)]
        for k, o in enumerate(orders, 1):
            assert o.algo == "TWAP" and o.order_type == "MARKET"
            assert o.ts_event == d.ts_event + (k - 1) * SLICE_NS
            assert o.client_order_id == client_order_id(did, k)
        if d.ts_event + (m - 1) * SLICE_NS > last_tick:
            continue  # the stream ended before the last slices were due
        if cut is not None and cut < d.ts_event + (m - 1) * SLICE_NS:
            # the next decision came first: exactly the slices due by then were sent
            assert len(orders) == sum(d.ts_event + k * SLICE_NS <= cut for k in range(m))
            continue
        assert len(orders) == m
        sizes = [o.quantity for o in orders]
        assert math.fsum(sizes) == d.quantity
        assert max(sizes) - min(sizes) <= 1.0
        four += m == SLICES
    assert four > 0, "no parent was large enough for four slices"


def test_iceberg_sends_one_lot_limit_clips_one_after_another(replays: ReplayPool) -> None:
    run = replays.get("iceberg")
    ticks = read_ticks(run.out)
    decisions = _decisions(run)
    by_order = _fills_by_order(run)
    multi = 0
    for did, orders in _orders_by_decision(run).items():
        d = decisions[did]
        ref = ticks.price[ticks.seen_at_decision(d.ts_event)]
        done_at = d.ts_event
        for o in orders:
            assert o.algo == "ICEBERG" and o.order_type == "LIMIT" and o.quantity == 1.0
            assert o.limit_price == round(ref / ES_TICK) * ES_TICK
            # a clip goes out only once the previous one is done (filled or expired)
            assert o.ts_event >= done_at, f"{o.client_order_id} sent before its predecessor ended"
            fs = by_order.get(o.client_order_id, [])
            for f in fs:
                assert f.price == o.limit_price and f.liquidity == "MAKER"
                traded = ticks.price[ticks.at(f.ts_event)]
                through = traded <= o.limit_price if o.side == "BUY" else traded >= o.limit_price
                assert through.any(), f"{f.fill_id}: no trade through the limit"
            filled = math.fsum(f.quantity for f in fs)
            done_at = fs[-1].ts_event if filled == o.quantity else o.ts_event + CHILD_TTL_NS
        multi += len(orders) > 1
    assert multi > 0, "no iceberg had more than one clip"


def test_vwap_slices_follow_the_volume_profile(replays: ReplayPool) -> None:
    run = replays.get("vwap")
    ticks = read_ticks(run.out)
    decisions = _decisions(run)
    last_tick = int(ticks.ts[-1])
    volume = np.concatenate([[0.0], np.cumsum(ticks.size)])

    def traded(bucket: int) -> float:
        lo, hi = np.searchsorted(ticks.ts, [bucket * SLICE_NS, (bucket + 1) * SLICE_NS])
        return float(volume[hi] - volume[lo])

    superseded = _superseded_at(run)
    uneven = 0
    for did, orders in _orders_by_decision(run).items():
        d = decisions[did]
        if d.ts_event + (SLICES - 1) * SLICE_NS > last_tick:
            continue
        cut = superseded.get(did)
        if cut is not None and cut < d.ts_event + (SLICES - 1) * SLICE_NS:
            continue  # a later decision cancelled the remaining slices
        # the profile: volume of the four 15 s buckets before the last trade's bucket
        cur = int(ticks.ts[ticks.last_at_or_before(d.ts_event)]) // SLICE_NS
        w = np.array([traded(cur - SLICES + j) for j in range(SLICES)])
        if w.sum() == 0:
            w = np.ones(SLICES)
        share = d.quantity * w / w.sum()
        sizes = np.zeros(SLICES)
        for k, o in enumerate(orders, 1):
            slot, rem = divmod(o.ts_event - d.ts_event, SLICE_NS)
            assert rem == 0 and 0 <= slot < SLICES
            sizes[slot] = o.quantity
            assert _slice_no(o) == (k, len(orders))
            assert o.algo == "VWAP"
        assert sizes.sum() == d.quantity
        assert np.all(np.abs(sizes - share) < 1.0), (did, sizes, share)
        lots = round(d.quantity)
        equal = [lots // SLICES + (j < lots % SLICES) for j in range(SLICES)]
        uneven += sizes.tolist() != equal
    assert uneven > 0, "no VWAP parent departed from equal slices"


# ------------------------------------------------------------------------------ 5. the report


def test_per_bar_sharpe_sortino_and_drawdown_equal_empyricals_on_the_equity_curve(
        replays: ReplayPool) -> None:
    run = replays.get("base")
    s = run.summary
    eq = pd.read_csv(run.out / "equity.csv")
    assert eq["ts"].is_monotonic_increasing and len(eq) > 1000
    rets = eq["equity"].pct_change().dropna()
    pb = s["per_bar"]
    assert pb["sharpe"] == pytest.approx(empyrical.sharpe_ratio(rets, annualization=1),
                                         rel=1e-8, abs=1e-8)
    assert pb["sortino"] == pytest.approx(empyrical.sortino_ratio(rets, annualization=1),
                                          rel=1e-8, abs=1e-8)
    assert s["max_drawdown"] == pytest.approx(empyrical.max_drawdown(rets), rel=1e-8, abs=1e-10)
    assert s["bars_traded"] == pb["returns"] == len(rets)


def test_pnl_is_final_equity_minus_capital_and_matches_the_ledger(replays: ReplayPool) -> None:
    run = replays.get("base")
    s = run.summary
    final = float(pd.read_csv(run.out / "equity.csv")["equity"].iloc[-1])
    assert s["final_equity"] == pytest.approx(final, abs=1e-6)
    assert s["pnl"] == pytest.approx(final - INITIAL_EQUITY, abs=1e-6)
    last: dict[str, Any] = {}
    for p in run.topic("positions"):
        last[p.symbol] = p
    (pos,) = last.values()
    assert pos.cause == "end"
    assert pos.equity == pytest.approx(final, abs=1e-6)
    assert s["pnl"] == pytest.approx(pos.realized_pnl + pos.unrealized_pnl - pos.fees, abs=1e-6)
    assert (s["realized_pnl"], s["unrealized_pnl"], s["fees"]) == pytest.approx(
        (pos.realized_pnl, pos.unrealized_pnl, pos.fees), abs=1e-6)
    # and from the fills alone, marked at the last trade of the replay
    fills: list[Fill] = run.topic("fills")
    after = _positions_after_fills(fills)
    ticks = read_ticks(run.out)
    _, qty, _ = after[-1]
    cash = INITIAL_EQUITY - math.fsum(_signed(f.side, f.quantity) * f.price * ES_MULTIPLIER
                                      + f.fee for f in fills)
    assert qty == pos.quantity
    assert cash + qty * ticks.price[-1] * ES_MULTIPLIER == pytest.approx(final, abs=1e-6)
    assert s["fills"] == len(fills) and s["orders"] == len(run.topic("orders"))


# ------------------------------------------------------------------------------ 6. the audit record


def test_one_audit_record_per_intent_with_its_inputs_and_orders(replays: ReplayPool) -> None:
    run = replays.get("base")
    intents = run.topic("orders.intents")
    audits: list[Decision] = run.topic("audit.decisions")
    # Issue 7, item 17: decisions on stale bars (closed > 2 bars after their end, e.g. the
    # first one after the Labor Day halt) emit no intent but keep their audit record
    assert [a.decision_id for a in audits if a.skipped is None] == [
        i.decision_id for i in intents]
    assert sum(a.skipped == "stale_bar" for a in audits) == run.summary["stale_bars"] > 0
    assert len({a.decision_id for a in audits}) == len(audits)
    fvs = _features_by_decision(run)
    regimes = {r.ts_event: r for r in run.topic("regimes")}
    registry = json.loads((replays.models / "registry.json").read_text())
    versions = {(e["name"], e["version"]) for e in registry["entries"]}
    orders = _orders_by_decision(run)
    updates = {u.update_id for u in run.topic("models.updates")} | {"online:ES#0"}
    assert len(updates) > 1
    warmup = 0
    ticks = read_ticks(run.out)
    for a in audits:
        fv = fvs[a.decision_id]
        assert a.features == {"close": fv.close, **dict(zip(fv.NAMES, fv.values(), strict=True))}
        # the input lines that caused it: the first and last trade of the decision's bar
        first, last = a.inputs
        assert first.file == last.file == "es_trades_2013-09.csv"
        assert first.line <= last.line
        in_bar = ticks.lines_between(fv.ts_event - 60_000_000_000, fv.ts_event)
        assert (first.line, last.line) == (in_bar[0], in_bar[-1])
        assert set(a.regime_probs) == {"bull", "bear", "sideways"}
        assert math.fsum(a.regime_probs.values()) == pytest.approx(1.0, abs=1e-12)
        r = regimes[fv.ts_event]
        assert (a.regime_probs["bull"], a.regime_probs["bear"], a.regime_probs["sideways"]) == (
            r.prob_bull, r.prob_bear, r.prob_sideways)
        if a.strategy_weights:
            assert all(w >= 0 for w in a.strategy_weights.values())
            assert math.fsum(a.strategy_weights.values()) == pytest.approx(1.0, abs=1e-12)
            frozen = {k: v for k, v in a.model_versions.items() if k != "online"}
            assert set(frozen.items()) <= versions and len(frozen) == 3
            # the online challenger (on by default) names the models.updates event that
            # produced the model it used, or its untrained start (docs/online-learning.md)
            assert a.model_versions["online"] in updates
        else:
            warmup += 1
            assert not fv.complete and a.model_versions == {}
        assert set(a.risk_checks) == (set() if a.action == "HOLD"
                                      else {f"{c.lower()}_ok" for c in RULE_CODES})
        assert list(a.order_ids) == [o.client_order_id for o in orders.get(a.decision_id, [])]
        assert a.quantity == math.fsum(o.quantity for o in orders.get(a.decision_id, []))
    assert warmup == sum(1 for fv in fvs.values()
                         if not fv.complete and fv.ts_closed >= TRAIN_END)


def test_linear_arm_decisions_carry_per_feature_contributions(replays: ReplayPool) -> None:
    run = replays.get("base")
    preds: dict[str, list[Prediction]] = defaultdict(list)
    for p in run.topic("predictions"):
        if p.model != "online":  # River's model: no linear contributions
            preds[p.decision_id].append(p)
    registry = json.loads((replays.models / "registry.json").read_text())
    linear = {(e["name"], e["version"]): e["linear"] for e in registry["entries"]
              if e["linear"] is not None}
    names = set(FeatureVector.NAMES)
    arm_a = 0
    for a in run.topic("audit.decisions"):
        ps = preds.get(a.decision_id, [])
        if not ps:
            continue
        if ps[0].variant == "B":
            assert a.contributions == {}
            continue
        arm_a += 1
        assert set(a.contributions) == names
        parts = [(a.strategy_weights[f"{p.regime}_specialist"], p.contributions or {})
                 for p in ps]
        blended = {n: math.fsum(w * c[n] for w, c in parts) for n in names}
        assert a.contributions == pytest.approx(blended, rel=1e-9, abs=1e-12)
        for p, (_, c) in zip(ps, parts, strict=True):  # each explains its model's logit
            assert set(c) == names
            lin = linear[(p.model, p.model_version)]
            logit = lin["intercept"] + math.fsum(c.values())
            assert 1.0 / (1.0 + math.exp(-logit)) == pytest.approx(p.prob_up, abs=1e-5)
    assert arm_a > 100


# ------------------------------------------------------------------------------ 7. A/B split


def test_ab_arm_is_the_stable_hash_of_the_decision_and_picks_its_models(replays: ReplayPool
                                                                        ) -> None:
    run = replays.get("base")
    bundle = replays.bundle
    by_decision: dict[str, list[Prediction]] = defaultdict(list)
    for p in run.topic("predictions"):
        if p.model != "online":  # the online challenger is in every arm (one model, no A/B)
            by_decision[p.decision_id].append(p)
    arms: Counter[str] = Counter()
    audits = _decisions(run)
    for did, ps in by_decision.items():
        arm = arm_for(did, bundle.ab_split)
        arms[arm] += 1
        models = bundle.arm_a if arm == "A" else bundle.arm_b
        assert {p.variant for p in ps} == {arm}
        assert sorted(p.model for p in ps) == sorted(models)
        assert sorted(p.regime for p in ps) == ["bear", "bull", "sideways"]
        if did in audits:
            assert set(audits[did].model_versions) == {*models, "online"}
    assert set(arms) == {"A", "B"}
    assert 0.4 < arms["B"] / sum(arms.values()) < 0.6
