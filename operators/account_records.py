"""The account operator's output records, built from its domain state (pure functions)."""

from __future__ import annotations

from typing import Literal

from operators.domain import ledger as lg
from operators.domain.execution import Child, ExecConfig
from topics.messages import (
    Decision,
    Fill,
    Order,
    OrderCancel,
    OrderIntent,
    Position,
    Reason,
    RiskReject,
    VenueReport,
)


def order_record(c: Child, account: str, sent_at: int, cfg: ExecConfig, venue: str) -> Order:
    """The ``orders`` record of a child sent at ``sent_at``."""
    return Order(
        ts_event=sent_at, client_order_id=c.client_order_id,
        parent_order_id=c.parent_order_id, decision_id=c.decision_id, account=account,
        symbol=c.symbol, side=c.side, quantity=c.quantity,
        order_type="LIMIT" if c.order_type == "LIMIT" else "MARKET",
        limit_price=c.limit_price, time_in_force=cfg.time_in_force, algo=c.algo,
        slice=f"{c.slice_no}/{c.slices}", venue=venue)


def fill_record(r: VenueReport, c: Child, account: str) -> Fill:
    """The ``fills`` record of a venue's FILL report for child ``c``."""
    return Fill(
        ts_event=r.ts_event, fill_id=r.fill_id, client_order_id=r.client_order_id,
        account=account, symbol=r.symbol, side=c.side, quantity=r.quantity, price=r.price,
        fee=r.fee, venue=r.venue, liquidity=r.liquidity)


def position_record(led: lg.AccountState, account: str, symbol: str, ts: int,
                    cause: Literal["fill", "decision", "end"]) -> Position:
    """The ``positions`` record of ``symbol`` after a change (marked at the last trade)."""
    p = lg.position(led, symbol)
    return Position(
        ts_event=ts, account=account, symbol=symbol, quantity=p.quantity,
        avg_price=p.avg_price, realized_pnl=p.realized_pnl,
        unrealized_pnl=lg.unrealized_pnl(led, symbol), fees=p.fees, equity=lg.equity(led),
        cause=cause)


def decision_record(it: OrderIntent, action: Literal["BUY", "SELL", "HOLD"], qty: float,
                    flags: dict[str, bool], order_ids: tuple[str, ...]) -> Decision:
    """The ``audit.decisions`` record of one intent: its trace, sizing, checks and orders."""
    tr = it.trace
    return Decision(
        ts_event=it.ts_event, decision_id=it.decision_id, symbol=it.symbol, action=action,
        quantity=qty, confidence=float(it.sizing.get("confidence", 0.0)),
        regime_probs=tr.regime_probs if tr else {},
        strategy_weights=tr.strategy_weights if tr else {},
        features=tr.features if tr else {},
        model_versions=tr.model_versions if tr else {},
        model_outputs=tr.model_outputs if tr else {},
        sizing=dict(it.sizing), risk_checks=flags, order_ids=order_ids,
        contributions=tr.contributions if tr else {},
        inputs=tr.inputs if tr else ())


def cancel_record(c: Child, account: str, ts: int, venue: str, reason: str) -> OrderCancel:
    """The ``orders.cancels`` record asking a live venue to cancel working child ``c``."""
    return OrderCancel(ts_event=ts, client_order_id=c.client_order_id, account=account,
                       symbol=c.symbol, venue=venue, reason=reason)


def parent_reject_record(first: Child, account: str, ts: int, cancelled: float,
                         reasons: tuple[Reason, ...]) -> RiskReject:
    """The ``risk.rejects`` record of a parent cancelled because child ``first`` was denied."""
    return RiskReject(ts_event=ts, decision_id=first.decision_id, account=account,
                      symbol=first.symbol, side=first.side, requested_quantity=cancelled,
                      allowed_quantity=0.0, reasons=reasons)
