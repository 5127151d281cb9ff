"""``streamquant explain DECISION_ID``: one decision's whole story, from the analysts' tables.

A decision is the point where a bar's features, the specialists' outputs, the regime blend,
sizing and the pre-trade check meet; its id ties every table together. This module gathers
the rows that carry the id (or, for the bar, its symbol and bar time) into one typed record:

- ``audit_decisions``: the decision itself (features, model versions and outputs, regime
  probabilities, weights, contributions, sizing, risk checks, order ids, input lines);
- ``md_bars``, ``features``, ``regimes``: the bar that closed (decision ids are
  ``{symbol}-{bar end ns}-{hash}``, so the bar is found without a second id);
- ``md_ticks``: the ticks between the bar's first and last input line (when the raw ticks
  table is kept);
- ``predictions``, ``signals``: each specialist's output and the blend;
- ``orders_intents``, ``risk_rejects``, ``orders``, ``fills``: what sizing asked for, what the
  pre-trade check cut and why, the child orders and their executions.

Rows are read with ``FINAL`` so a replay written twice explains once. A decision made for
several accounts has one id per account (``…@account``); asking for the bare id explains each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec


class ExplainError(LookupError):
    """The decision is not there (or is ambiguous); the message says what to do."""


class QueryClient(Protocol):
    """What explain needs from a clickhouse-connect client."""

    def query(self, query: str, parameters: dict[str, Any] | None = None) -> Any: ...


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    ts_event: int
    price: float
    size: float
    line: int | None


class InputTicks(msgspec.Struct, frozen=True, kw_only=True):
    """The bar's input: the first and last source line and what ``md_ticks`` holds between."""

    file: str | None
    first_line: int | None
    last_line: int | None
    stored: bool
    """Whether ``md_ticks`` was filled (``run --no-clickhouse-ticks`` leaves it empty)."""
    count: int = 0
    volume: float = 0.0
    first: Tick | None = None
    last: Tick | None = None


class BarRow(msgspec.Struct, frozen=True, kw_only=True):
    timeframe: str
    ts_start: int
    ts_end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trade_count: int


class RegimeRow(msgspec.Struct, frozen=True, kw_only=True):
    prob_bull: float
    prob_bear: float
    prob_sideways: float
    entropy: float


class PredictionRow(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    model_version: str
    variant: str
    regime: str
    score: float
    prob_up: float
    device: str
    contributions: dict[str, float]


class SignalRow(msgspec.Struct, frozen=True, kw_only=True):
    signal: float
    prob_up: float
    confidence: float
    close: float
    bar_return: float | None
    weights: dict[str, float]
    fallback: str | None


class IntentRow(msgspec.Struct, frozen=True, kw_only=True):
    ts_event: int
    account: str
    side: str
    quantity: float
    target_position: float
    reference_price: float
    algo: str
    sizing: dict[str, float]


class ReasonRow(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    limit: float | None
    proposed: float | None


class RejectRow(msgspec.Struct, frozen=True, kw_only=True):
    ts_event: int
    account: str
    side: str
    requested_quantity: float
    allowed_quantity: float
    reasons: tuple[ReasonRow, ...]


class FillRow(msgspec.Struct, frozen=True, kw_only=True):
    ts_event: int
    fill_id: str
    quantity: float
    price: float
    fee: float
    venue: str
    liquidity: str


class OrderRow(msgspec.Struct, frozen=True, kw_only=True):
    ts_event: int
    client_order_id: str
    parent_order_id: str
    account: str
    side: str
    quantity: float
    order_type: str
    limit_price: float | None
    time_in_force: str
    algo: str
    slice: str
    venue: str
    fills: tuple[FillRow, ...] = ()

    @property
    def filled(self) -> float:
        return sum(f.quantity for f in self.fills)


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the tables say about one decision (``explain --format json`` prints it)."""

    job: str
    decision_id: str
    symbol: str
    ts_event: int
    bar_ts: int
    action: str
    quantity: float
    confidence: float
    skipped: str | None
    device: str
    features: dict[str, float | None]
    contributions: dict[str, float]
    model_versions: dict[str, str]
    model_outputs: dict[str, float]
    regime_probs: dict[str, float]
    strategy_weights: dict[str, float]
    sizing: dict[str, float]
    risk_checks: dict[str, bool]
    order_ids: tuple[str, ...]
    inputs: InputTicks
    feature_version: str | None = None
    ts_closed: int | None = None
    bar: BarRow | None = None
    regime: RegimeRow | None = None
    signal: SignalRow | None = None
    predictions: tuple[PredictionRow, ...] = ()
    intents: tuple[IntentRow, ...] = ()
    rejects: tuple[RejectRow, ...] = ()
    orders: tuple[OrderRow, ...] = ()


def bar_time(decision_id: str) -> tuple[str, int]:
    """``(symbol, bar end ns)`` of a decision id ``{symbol}-{ns}-{hash}[@account]``."""
    base = decision_id.split("@", 1)[0]
    parts = base.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[0]:
        raise ExplainError(f"{decision_id!r} is not a decision id (SYMBOL-BARTIMENS-HASH, as "
                           "in audit_decisions.decision_id or orders.decision_id)")
    return parts[0], int(parts[1])


def _rows(client: QueryClient, sql: str, **params: Any) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=params)
    # times are selected as integer ns under another name (``x__ns``): an alias equal to the
    # column's name would replace the column in WHERE
    names = [n.removesuffix("__ns") for n in result.column_names]
    return [dict(zip(names, row, strict=True)) for row in result.result_rows]


_DECISION = """
SELECT job, decision_id, symbol, toUnixTimestamp64Nano(ts_event) AS ts_event__ns, action, quantity,
       confidence, regime_probs, strategy_weights, features, model_versions, model_outputs,
       sizing, risk_checks, order_ids, contributions, inputs, device, skipped
FROM audit_decisions FINAL
WHERE decision_id = {id:String} {job_filter}
ORDER BY job
"""


def find_decisions(client: QueryClient, decision_id: str, job: str | None = None
                   ) -> list[dict[str, Any]]:
    """The audit rows of ``decision_id``: the exact id, else every account's ``id@account``."""
    job_filter = "AND job = {job:String}" if job is not None else ""
    params: dict[str, Any] = {"id": decision_id}
    if job is not None:
        params["job"] = job
    rows = _rows(client, _DECISION.replace("{job_filter}", job_filter), **params)
    if rows or "@" in decision_id:
        return rows
    like = _DECISION.replace("decision_id = {id:String}", "startsWith(decision_id, {id:String})")
    params["id"] = f"{decision_id}@"
    return _rows(client, like.replace("{job_filter}", job_filter), **params)


_BY_ORDER = """
SELECT DISTINCT decision_id FROM orders FINAL
WHERE client_order_id = {id:String} OR parent_order_id = {id:String}
UNION DISTINCT
SELECT DISTINCT o.decision_id FROM orders AS o FINAL
INNER JOIN (SELECT client_order_id FROM fills FINAL WHERE fill_id = {id:String}) AS f
    ON o.client_order_id = f.client_order_id
"""


def resolve_id(client: QueryClient, some_id: str) -> str:
    """A decision id as given, or the decision behind an order (client or parent id) or a
    fill id: "why was this order placed" starts from whatever id the reader has."""
    base = some_id.split("@", 1)[0]
    parts = base.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return some_id
    found = sorted({r["decision_id"] for r in _rows(client, _BY_ORDER, id=some_id)})
    if len(found) == 1:
        return str(found[0])
    if found:
        raise ExplainError(f"{some_id} belongs to several decisions ({', '.join(found)}): "
                           "explain one of them")
    raise ExplainError(f"{some_id!r} is neither a decision id (SYMBOL-BARTIMENS-HASH) nor an "
                       "order or fill id in the orders and fills tables")


def explain(client: QueryClient, some_id: str, job: str | None = None
            ) -> list[DecisionRecord]:
    """The record of a decision (one per account when the bare id of a multi-account
    decision is given), found by its id or by the id of one of its orders or fills. Raises
    :class:`ExplainError` when nothing matches or several jobs hold the id and ``job`` does
    not choose."""
    decision_id = resolve_id(client, some_id)
    symbol, bar_ts = bar_time(decision_id)
    rows = find_decisions(client, decision_id, job)
    if not rows:
        raise ExplainError(_not_found(client, decision_id, symbol, job))
    jobs = sorted({r["job"] for r in rows})
    if len(jobs) > 1:
        raise ExplainError(f"{decision_id} is in several jobs ({', '.join(jobs)}): choose one "
                           "with --job")
    return [_record(client, r, symbol, bar_ts) for r in rows]


def _not_found(client: QueryClient, decision_id: str, symbol: str, job: str | None) -> str:
    count = _rows(client, "SELECT count() AS n FROM audit_decisions")[0]["n"]
    if not count:
        return ("audit_decisions is empty: was the run made with the ClickHouse sink on (the "
                "clickhouse extra installed, no --sink none) and with trading (no --no-trade)?")
    near = _rows(client, "SELECT DISTINCT decision_id FROM audit_decisions WHERE symbol = "
                 "{s:String} ORDER BY ts_event DESC LIMIT 3", s=symbol)
    hint = (f"; latest {symbol} decisions: " + ", ".join(r["decision_id"] for r in near)
            if near else f"; no decision on symbol {symbol!r}")
    where = f" in job {job!r}" if job is not None else ""
    return f"no decision {decision_id}{where} in audit_decisions{hint}"


def _one(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return rows[0] if rows else None


def _record(client: QueryClient, d: dict[str, Any], symbol: str, bar_ts: int
            ) -> DecisionRecord:
    job = d["job"]
    did = d["decision_id"]
    base = did.split("@", 1)[0]
    q = {"job": job, "sym": symbol, "bar": bar_ts, "id": did, "base": base}
    feat = _one(_rows(client, """
        SELECT feature_version, toUnixTimestamp64Nano(ts_closed) AS ts_closed__ns, inputs
        FROM features FINAL
        WHERE job = {job:String} AND symbol = {sym:String}
          AND ts_event = fromUnixTimestamp64Nano({bar:Int64})
        LIMIT 1""", **q))
    bar = _one(_rows(client, """
        SELECT timeframe, toUnixTimestamp64Nano(ts_event) AS ts_start__ns,
               toUnixTimestamp64Nano(ts_end) AS ts_end__ns, open, high, low, close, volume, vwap,
               trade_count
        FROM md_bars FINAL
        WHERE job = {job:String} AND symbol = {sym:String}
          AND ts_end = fromUnixTimestamp64Nano({bar:Int64})
        LIMIT 1""", **q))
    regime = _one(_rows(client, """
        SELECT prob_bull, prob_bear, prob_sideways, entropy FROM regimes FINAL
        WHERE job = {job:String} AND symbol = {sym:String}
          AND ts_event = fromUnixTimestamp64Nano({bar:Int64})
        LIMIT 1""", **q))
    preds = _rows(client, """
        SELECT model, model_version, variant, regime, score, prob_up, device, contributions
        FROM predictions FINAL
        WHERE job = {job:String} AND decision_id = {base:String}
        ORDER BY model""", **q)
    signal = _one(_rows(client, """
        SELECT signal, prob_up, confidence, close, bar_return, weights, fallback
        FROM signals FINAL WHERE job = {job:String} AND decision_id = {base:String}
        LIMIT 1""", **q))
    intents = _rows(client, """
        SELECT toUnixTimestamp64Nano(ts_event) AS ts_event__ns, account, side, quantity,
               target_position, reference_price, algo, sizing
        FROM orders_intents FINAL WHERE job = {job:String} AND decision_id = {id:String}
        ORDER BY ts_event, seq""", **q)
    rejects = _rows(client, """
        SELECT toUnixTimestamp64Nano(ts_event) AS ts_event__ns, account, side, requested_quantity,
               allowed_quantity, reasons
        FROM risk_rejects FINAL WHERE job = {job:String} AND decision_id = {id:String}
        ORDER BY ts_event, seq""", **q)
    orders = _rows(client, """
        SELECT toUnixTimestamp64Nano(ts_event) AS ts_event__ns, client_order_id, parent_order_id,
               account, side, quantity, order_type, limit_price, time_in_force, algo,
               slice, venue
        FROM orders FINAL WHERE job = {job:String} AND decision_id = {id:String}
        ORDER BY ts_event, seq""", **q)
    fills: dict[str, list[FillRow]] = {}
    if orders:
        for f in _rows(client, """
                SELECT client_order_id, toUnixTimestamp64Nano(ts_event) AS ts_event__ns, fill_id,
                       quantity, price, fee, venue, liquidity
                FROM fills FINAL
                WHERE job = {job:String} AND client_order_id IN {ids:Array(String)}
                ORDER BY ts_event, seq""", ids=[o["client_order_id"] for o in orders], **q):
            cid = f.pop("client_order_id")
            fills.setdefault(cid, []).append(msgspec.convert(f, FillRow))
    inputs = list(d["inputs"] or (feat or {}).get("inputs") or ())
    return DecisionRecord(
        job=job, decision_id=did, symbol=d["symbol"], ts_event=d["ts_event"], bar_ts=bar_ts,
        action=d["action"], quantity=d["quantity"], confidence=d["confidence"],
        skipped=d["skipped"], device=d["device"], features=dict(d["features"]),
        contributions=dict(d["contributions"]), model_versions=dict(d["model_versions"]),
        model_outputs=dict(d["model_outputs"]), regime_probs=dict(d["regime_probs"]),
        strategy_weights=dict(d["strategy_weights"]), sizing=dict(d["sizing"]),
        risk_checks=dict(d["risk_checks"]), order_ids=tuple(d["order_ids"]),
        inputs=_input_ticks(client, job, symbol, inputs),
        feature_version=feat["feature_version"] if feat else None,
        ts_closed=feat["ts_closed"] if feat else None,
        bar=msgspec.convert(bar, BarRow) if bar else None,
        regime=msgspec.convert(regime, RegimeRow) if regime else None,
        signal=msgspec.convert(signal, SignalRow) if signal else None,
        predictions=tuple(msgspec.convert(p, PredictionRow) for p in preds),
        intents=tuple(msgspec.convert(i, IntentRow) for i in intents),
        rejects=tuple(msgspec.convert(r, RejectRow) for r in rejects),
        orders=tuple(msgspec.convert({**o, "fills": fills.get(o["client_order_id"], [])},
                                     OrderRow) for o in orders))


def _input_ticks(client: QueryClient, job: str, symbol: str, inputs: list[dict[str, Any]]
                 ) -> InputTicks:
    """The ticks between the bar's first and last input line (a file replay's lines)."""
    first = inputs[0] if inputs else {}
    last = inputs[-1] if inputs else {}
    file, lo, hi = first.get("file"), first.get("line"), last.get("line")
    stored = bool(_rows(client, "SELECT count() > 0 AS any FROM md_ticks WHERE job = "
                        "{job:String}", job=job)[0]["any"])
    if not stored or file is None or lo is None or hi is None:
        return InputTicks(file=file, first_line=lo, last_line=hi, stored=stored)
    agg = _rows(client, """
        SELECT count() AS n, sum(size) AS volume FROM md_ticks FINAL
        WHERE job = {job:String} AND symbol = {sym:String} AND source_file = {file:String}
          AND source_line BETWEEN {lo:Int64} AND {hi:Int64}""",
                job=job, sym=symbol, file=file, lo=lo, hi=hi)[0]
    ends = _rows(client, """
        SELECT toUnixTimestamp64Nano(ts_event) AS ts_event__ns, price, size, source_line AS line
        FROM md_ticks FINAL
        WHERE job = {job:String} AND symbol = {sym:String} AND source_file = {file:String}
          AND source_line IN ({lo:Int64}, {hi:Int64})
        ORDER BY source_line""", job=job, sym=symbol, file=file, lo=lo, hi=hi)
    ticks = [msgspec.convert(t, Tick) for t in ends]
    return InputTicks(file=file, first_line=lo, last_line=hi, stored=True, count=agg["n"],
                      volume=float(agg["volume"] or 0.0),
                      first=ticks[0] if ticks else None,
                      last=ticks[-1] if len(ticks) > 1 else (ticks[0] if ticks else None))
