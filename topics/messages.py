"""Typed, frozen message schemas: the public contract of every topic.

Conventions (kept everywhere, see docs/messages.md):
- ``ts_event`` is the event time in integer nanoseconds since the Unix epoch, UTC. Integers
  survive JSON, Arrow and ClickHouse without rounding; ISO strings are a presentation concern.
- Optional numbers are ``None`` (JSON ``null``) where a value is undefined (indicator warm-up,
  no quotes), never NaN: NaN is not JSON.
- Ids are deterministic strings derived from their causes (see ``topics.ids``), so a replay or a
  recovery reproduces them and consumers can drop duplicates.
- ``schema_version`` changes when a field's meaning changes; adding an optional field does not.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every topic value."""

    SCHEMA_VERSION: ClassVar[int] = 1
    ts_event: int
    schema_version: int = 1


class SourceRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where an input record came from: a file line or a Kafka coordinate."""

    file: str | None = None
    line: int | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def describe(self) -> str:
        if self.file is not None:
            return f"{self.file}:{self.line}"
        return f"{self.topic}[{self.partition}]@{self.offset}"


# --------------------------------------------------------------------------- market data


class RawTick(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``md.ticks.raw``: a venue tick as received, loosely typed; normalize validates it.

    Values may be strings (CSV cells) or JSON numbers; ``ts`` may be ISO-8601 or epoch
    s/ms/µs/ns. This is the only schema that admits untrusted shapes.
    """

    ts: str | int | float | None = None
    symbol: str | None = None
    price: str | float | int | None = None
    size: str | float | int | None = None
    venue: str | None = None
    trade_id: str | int | None = None
    bid: str | float | int | None = None
    ask: str | float | int | None = None


class Tick(Message, frozen=True, kw_only=True):
    """``md.ticks``: a validated trade in canonical units (price in quote currency)."""

    symbol: str
    venue: str
    price: float
    size: float
    trade_id: str | None = None
    bid: float | None = None
    ask: float | None = None
    source: SourceRef | None = None


class DeadLetter(Message, frozen=True, kw_only=True):
    """``md.ticks.dlq``: a rejected input with a reason code; ``ts_event`` is null if unparsed."""

    ts_event: int | None = None  # type: ignore[assignment]
    reason: str
    detail: str
    payload: str
    source: SourceRef


class LateTick(Message, frozen=True, kw_only=True):
    """``md.ticks.late``: a valid tick older than the watermark when it arrived."""

    tick: Tick
    watermark: int


class Bar(Message, frozen=True, kw_only=True):
    """``md.bars``: an event-time tumbling bar ``[ts_event, ts_end)``."""

    symbol: str
    timeframe: str
    ts_end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None
    trade_count: int


class FeatureVector(Message, frozen=True, kw_only=True):
    """``features``: the versioned per-bar feature vector; ``None`` during warm-up."""

    NAMES: ClassVar[tuple[str, ...]] = (
        "ema_12",
        "ema_26",
        "macd",
        "macd_signal",
        "macd_hist",
        "rsi_14",
        "atr_14",
        "vol_20",
        "ret_1",
        "ret_5",
        "ret_20",
        "volume_ratio",
        "vwap_dist",
    )
    symbol: str
    timeframe: str
    feature_version: str
    ts_closed: int  # when the bar was known complete: max event time seen as it closed
    inputs: tuple[SourceRef, ...] = ()  # first and last input record of the bar's ticks
    close: float
    ema_12: float | None
    ema_26: float | None
    macd: float | None
    macd_signal: float | None
    macd_hist: float | None
    rsi_14: float | None
    atr_14: float | None
    vol_20: float | None
    ret_1: float | None
    ret_5: float | None
    ret_20: float | None
    volume_ratio: float | None
    vwap_dist: float | None

    def values(self) -> tuple[float | None, ...]:
        return tuple(getattr(self, n) for n in self.NAMES)

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.values())


# --------------------------------------------------------------------------- decision chain


ExecutionDevice = Literal["cpu", "cuda"]
"""Where the models ran. Records of the reference (CPU) leave it out — absent means "cpu" — so
the reference run's topic bytes do not depend on the field's existence; other devices write it."""


class Prediction(Message, frozen=True, kw_only=True):
    """``predictions``: one model's output for one feature vector."""

    symbol: str
    decision_id: str
    model: str
    model_version: str
    variant: str  # A/B arm
    regime: str  # the regime this specialist is trained for
    score: float  # signed expected direction in [-1, 1]
    prob_up: float
    contributions: dict[str, float] | None = None  # linear models: coef x standardized value
    device: ExecutionDevice | msgspec.UnsetType = msgspec.UNSET  # absent: "cpu", the reference


class Regime(Message, frozen=True, kw_only=True):
    """``regimes``: filtered (forward-only) regime posterior for one bar."""

    symbol: str
    prob_bull: float
    prob_bear: float
    prob_sideways: float
    entropy: float


class DecisionTrace(msgspec.Struct, frozen=True, kw_only=True):
    """Everything upstream of sizing that explains a decision; carried to the audit record."""

    bar_ts: int
    close: float
    features: dict[str, float | None]
    feature_version: str
    model_outputs: dict[str, float]
    model_versions: dict[str, str]
    variant: str
    regime_probs: dict[str, float]
    strategy_weights: dict[str, float]
    contributions: dict[str, float]
    inputs: tuple[SourceRef, ...] = ()
    device: ExecutionDevice | msgspec.UnsetType = msgspec.UNSET  # absent: "cpu", the reference


class Signal(Message, frozen=True, kw_only=True):
    """``signals``: the blended signal for one bar and the weights that produced it.

    ``ts_event`` is when the bar became known (``FeatureVector.ts_closed``, the event time of
    the tick that closed it): the decision cannot be earlier, and a later stamp trades stale.
    """

    symbol: str
    decision_id: str
    signal: float  # blended 2p - 1 in [-1, 1]
    prob_up: float
    confidence: float  # 1 - normalized regime entropy
    close: float
    bar_return: float | None
    weights: dict[str, float]
    regime_probs: dict[str, float]
    fallback: str | None = None
    trace: DecisionTrace | None = None


class Reason(msgspec.Struct, frozen=True, kw_only=True):
    """One failed pre-trade rule."""

    code: str
    message: str
    limit: float | None = None
    proposed: float | None = None


Side = Literal["BUY", "SELL"]
OrderType = Literal["MARKET", "LIMIT"]
Algo = Literal["IMMEDIATE", "TWAP", "VWAP", "ICEBERG"]


class OrderIntent(Message, frozen=True, kw_only=True):
    """``orders.intents``: a sized parent order before the pre-trade check."""

    decision_id: str
    account: str
    symbol: str
    side: Side
    quantity: float
    target_position: float
    reference_price: float
    algo: Algo = "IMMEDIATE"
    sizing: dict[str, float] = {}
    trace: DecisionTrace | None = None


class Order(Message, frozen=True, kw_only=True):
    """``orders``: a child order; ``client_order_id`` is deterministic (dedupe key)."""

    client_order_id: str
    parent_order_id: str
    decision_id: str
    account: str
    symbol: str
    side: Side
    quantity: float
    order_type: OrderType
    limit_price: float | None
    time_in_force: str
    algo: Algo
    slice: str  # "n/m"
    venue: str


class Fill(Message, frozen=True, kw_only=True):
    """``fills``: an execution of a child order."""

    fill_id: str
    client_order_id: str
    account: str
    symbol: str
    side: Side
    quantity: float
    price: float
    fee: float
    venue: str
    liquidity: Literal["MAKER", "TAKER"]


class RiskReject(Message, frozen=True, kw_only=True):
    """``risk.rejects``: a denied order with every failing rule and what would pass."""

    decision_id: str
    account: str
    symbol: str
    side: Side
    requested_quantity: float
    allowed_quantity: float
    reasons: tuple[Reason, ...]


class Position(Message, frozen=True, kw_only=True):
    """``positions``: position and PnL of one account/symbol after a change."""

    account: str
    symbol: str
    quantity: float
    avg_price: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    equity: float
    cause: Literal["fill", "decision", "end"] = "fill"  # what produced this update


class Decision(Message, frozen=True, kw_only=True):
    """``audit.decisions``: everything that explains one decision."""

    decision_id: str
    symbol: str
    action: Literal["BUY", "SELL", "HOLD"]
    quantity: float
    confidence: float
    regime_probs: dict[str, float]
    strategy_weights: dict[str, float]
    features: dict[str, float | None]
    model_versions: dict[str, str]
    model_outputs: dict[str, float]
    sizing: dict[str, float]
    risk_checks: dict[str, bool]
    order_ids: tuple[str, ...]
    contributions: dict[str, float]
    inputs: tuple[SourceRef, ...]
    device: ExecutionDevice | msgspec.UnsetType = msgspec.UNSET  # absent: "cpu", the reference
    skipped: str | None = None  # why no order intent was emitted (e.g. "stale_bar")


UpdateType = Literal["incremental", "full_retrain", "rollback", "drift", "promotion"]


class ModelUpdate(Message, frozen=True, kw_only=True):
    """``models.updates``: an online-learning event (update batch, drift, rollback, promotion).

    Shaped like the seeds' ``model_update`` event: ``window_start``/``window_end`` are the
    event times of the first and last labelled bar the event covers, ``metrics_before`` the
    scores at the last good snapshot and ``metrics`` those now, ``stability_check`` the check's
    verdict (``passed``, ``failed_rollback``; empty where no check ran). ``update_id`` is what a
    prediction's ``model_version`` names, so the audit record of every decision the online
    model influenced points at the update that produced the model it used.
    """

    model_id: str
    update_type: UpdateType
    window_start: int
    window_end: int
    metrics: dict[str, float]
    update_id: str = ""
    metrics_before: dict[str, float] = {}
    stability_check: str = ""


class Control(Message, frozen=True, kw_only=True):
    """``control``: operator commands (kill switch trip/reset)."""

    command: Literal["KILL", "RESET", "HALT_SYMBOL", "RESUME_SYMBOL"]
    account: str = "*"
    symbol: str | None = None
    reason: str = ""


class AccountFeed(Message, frozen=True, kw_only=True):
    """``account.feed``: one account's copy of a trade or a command, keyed by that account.

    Market data is keyed by symbol and commands may name every account (``*``); the account
    operator is keyed by account, so a router re-keys each trade once per account trading its
    symbol and each command once per account it names (exactly one of ``tick`` and
    ``control`` is set).
    """

    account: str
    tick: Tick | None = None
    control: Control | None = None


ReportKind = Literal["ACK", "FILL", "EXPIRED", "CANCELLED", "REJECTED"]


class VenueReport(Message, frozen=True, kw_only=True):
    """``venue.reports``: what a venue says about one child order (an execution report).

    ``ACK``: the venue holds the order; ``FILL``: ``quantity`` traded at ``price`` with
    ``fee`` (``fill_id`` unique per fill); ``EXPIRED`` (time in force ran out), ``CANCELLED``
    (on request) and ``REJECTED``: the order is done and ``quantity`` (its unfilled rest)
    goes away. The simulated venue answers inside the account; a live venue's reports arrive
    on this topic.
    """

    kind: ReportKind
    account: str
    client_order_id: str
    symbol: str
    side: Side
    venue: str
    quantity: float = 0.0
    price: float = 0.0
    fee: float = 0.0
    fill_id: str = ""
    liquidity: Literal["MAKER", "TAKER"] = "TAKER"
    reason: str = ""


class OrderCancel(Message, frozen=True, kw_only=True):
    """``orders.cancels``: the account asks a live venue to cancel a working child order."""

    client_order_id: str
    account: str
    symbol: str
    venue: str
    reason: str
