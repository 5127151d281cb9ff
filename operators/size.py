"""Size: a target position from the blended signal, its confidence and the volatility forecast.

Per bar, keyed by symbol:

1. the volatility forecaster (EWMA(0.94) or GARCH(1,1), arch's recursion) absorbs the bar's
   return and forecasts the next bar's standard deviation ``σ``;
2. continuous fractional Kelly: with ``P(up) = p`` and ``E|r| ≈ σ·sqrt(2/π)`` the expected
   return is ``μ ≈ (2p − 1)·σ·sqrt(2/π)`` and the Kelly fraction ``μ/σ²``; we take
   ``kelly_fraction`` of it;
3. volatility targeting caps the fraction at ``σ_target/σ`` (the per-bar target from an annual
   one), so the position's forecast volatility never exceeds the target;
4. regime scaling multiplies by the posterior-expected regime scale (e.g. half size when
   sideways) and by the regime confidence;
5. the fraction of reference equity becomes contracts through price × multiplier, rounded
   toward zero to the lot size and capped.

The intent carries the target; the account operator turns ``target − position − working`` into
an order, so a rejected or partly filled order never makes sizing drift.

Cost gate: the expected edge of a position over the model's horizon is
``|μ| × edge_horizon_bars`` (the same ``μ`` Kelly uses), the expected round-trip cost of a
contract ``2 × (slippage_ticks × tick_size × multiplier + fee_per_contract) / (price ×
multiplier) + 2 × fee_bps / 10⁴`` (no slippage for ICEBERG, which rests at the decision price).
When the edge does not exceed the cost, no exposure is added: the target keeps the current one
where it lies on the ideal's side (shrinking to the ideal if that is smaller) and is flat
otherwise. Reducing and exiting stay allowed — their cost was counted when the position opened.

Stale bars: a decision on a bar that ended more than ``max_bar_age_ns`` before the decision
time (the signal's ``ts_event``, when the bar was closed) emits no order intent, only an
``audit.decisions`` record with ``skipped="stale_bar"``: the first bar after a halt or a quiet
spell is closed by a tick that can come hours later, and trading on it would act on a price
the market has long left.

Each configured account (``accounts``) that trades the symbol gets its own intent, sized on its
own reference equity with its own rebalance band. With one account the intent keeps the
signal's decision id; with several, each account's decision id is the signal's with
``@<account>`` appended (``account_decision_id``), so client order ids and audit records stay
unique per account.
"""

from __future__ import annotations

import math

import msgspec

from operators.contract import Context, Emit, Operator
from operators.domain.volatility import VolConfig, VolForecaster, VolState
from topics import names as tn
from topics.messages import Algo, Decision, OrderIntent, Signal

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class SizedAccount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An account the sizer makes intents for."""

    name: str
    reference_equity: float = 1_000_000.0
    symbols: tuple[str, ...] = ()
    """The symbols it trades; empty: every symbol."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("account name must be non-empty")
        if not (math.isfinite(self.reference_equity) and self.reference_equity > 0):
            raise ValueError(f"{self.name}: reference_equity must be a positive number, "
                             f"got {self.reference_equity!r}")


class SizeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    vol: VolConfig
    accounts: tuple[SizedAccount, ...] = (SizedAccount(name="paper"),)
    multiplier: float = 1.0
    lot_size: float = 1.0
    kelly_fraction: float = 0.25
    target_vol_annual: float = 0.10
    periods_per_year: float = 252.0 * 23 * 60
    max_fraction: float = 0.35
    max_contracts: float = 1e9
    regime_scale: dict[str, float] = msgspec.field(
        default_factory=lambda: {"bull": 1.0, "bear": 1.0, "sideways": 0.5})
    algo: Algo = "IMMEDIATE"
    rebalance_band_lots: float = 1.0
    """Keep the current target while the new one differs by at most this many lots on the same
    side (flips and exits always trade): the usual guard against trading noise."""
    trade_from_ns: int = -(2**63)
    """Decisions before this event time only warm the forecaster (the training window)."""
    multipliers: dict[str, float] = {}
    lot_sizes: dict[str, float] = {}
    max_bar_age_ns: int | None = None
    """A decision whose bar ended longer ago than this emits no intent (None: any age)."""
    cost_gate: bool = True
    """Add exposure only when the expected edge beats the expected round-trip cost."""
    edge_horizon_bars: float = 1.0
    """Bars over which the model's edge is expected (the labels' horizon)."""
    slippage_ticks: float = 0.5
    tick_size: float = 0.0
    tick_sizes: dict[str, float] = {}
    fee_per_contract: float = 1.0
    fee_bps: float = 0.0

    def __post_init__(self) -> None:
        names = [a.name for a in self.accounts]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"accounts must be non-empty with unique names, got {names}")
        positive = (
            "multiplier",
            "lot_size",
            "target_vol_annual",
            "periods_per_year",
            "max_contracts",
        )
        for name in positive:
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        costs = ("slippage_ticks", "tick_size", "fee_per_contract", "fee_bps")
        for name in costs:
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if not (math.isfinite(self.edge_horizon_bars) and self.edge_horizon_bars > 0):
            raise ValueError(f"edge_horizon_bars must be > 0, got {self.edge_horizon_bars!r}")
        if self.max_bar_age_ns is not None and self.max_bar_age_ns < 0:
            raise ValueError(f"max_bar_age_ns must be >= 0, got {self.max_bar_age_ns}")
        if not 0 < self.kelly_fraction <= 1:
            raise ValueError(f"kelly_fraction must be in (0, 1], got {self.kelly_fraction}")
        if not 0 < self.max_fraction <= 10:
            raise ValueError(f"max_fraction must be in (0, 10], got {self.max_fraction}")
        if any(not (math.isfinite(s) and s >= 0) for s in self.regime_scale.values()):
            raise ValueError("regime_scale values must be finite and >= 0")

    @property
    def target_vol_bar(self) -> float:
        return self.target_vol_annual / math.sqrt(self.periods_per_year)


class SizeState(msgspec.Struct, kw_only=True):
    vol: VolState
    targets: dict[str, float] = {}
    """The last target per account (the rebalance band compares against it)."""


def account_decision_id(decision_id: str, account: str, several: bool) -> str:
    """The decision id an account's intent carries: the signal's, with ``@account`` when
    several accounts size the same signal."""
    return f"{decision_id}@{account}" if several else decision_id


def round_to_lot(quantity: float, lot: float) -> float:
    """Round toward zero to a whole number of lots (never sizes up)."""
    lots = math.floor(abs(quantity) / lot + 1e-9)
    return math.copysign(lots * lot, quantity) if lots else 0.0


class Size(Operator[SizeState, Signal]):
    UID = "size"
    STATE_VERSION = 2
    State = SizeState

    def __init__(self, config: SizeConfig) -> None:
        self.config = config
        self._vol = VolForecaster(config.vol)

    def key(self, event: Signal) -> str:
        return event.symbol

    def new_state(self, key: str) -> SizeState:
        return SizeState(vol=self._vol.new_state())

    def process(
        self, state: SizeState, event: Signal, ctx: Context
    ) -> tuple[SizeState, list[Emit]]:
        cfg = self.config
        if event.bar_return is not None:
            state.vol = self._vol.update(state.vol, event.bar_return)
        if event.ts_event < cfg.trade_from_ns:
            return state, []
        if cfg.max_bar_age_ns is not None and event.trace is not None:
            age = event.ts_event - event.trace.bar_ts
            if age > cfg.max_bar_age_ns:
                return state, [self._skip(event, "stale_bar", {
                    "bar_age_ns": float(age), "max_bar_age_ns": float(cfg.max_bar_age_ns)})]
        multiplier = cfg.multipliers.get(event.symbol, cfg.multiplier)
        lot = cfg.lot_sizes.get(event.symbol, cfg.lot_size)
        sigma = math.sqrt(self._vol.forecast(state.vol))
        kelly = event.signal * _SQRT_2_OVER_PI / sigma
        vol_cap = cfg.target_vol_bar / sigma
        frac = math.copysign(min(cfg.kelly_fraction * abs(kelly), vol_cap), kelly)
        regime = math.fsum(p * cfg.regime_scale.get(r, 1.0) for r, p in event.regime_probs.items())
        frac *= regime * event.confidence
        frac = max(-cfg.max_fraction, min(cfg.max_fraction, frac))
        several = len(cfg.accounts) > 1
        out: list[Emit] = []
        for acct in cfg.accounts:
            if acct.symbols and event.symbol not in acct.symbols:
                continue
            intent = self._intent(state, event, acct, several, multiplier, lot, frac, {
                "sigma_forecast": sigma,
                "kelly_fraction_raw": kelly,
                "vol_cap": vol_cap,
                "regime_scale": regime,
                "confidence": event.confidence,
                "fraction": frac,
            })
            out.append(Emit(tn.ORDERS_INTENTS, acct.name, intent))
        return state, out

    def _intent(self, state: SizeState, event: Signal, acct: SizedAccount, several: bool,
                multiplier: float, lot: float, frac: float, sizing: dict[str, float]
                ) -> OrderIntent:
        """One account's target: the fraction of its equity in contracts, banded and capped."""
        cfg = self.config
        equity = acct.reference_equity
        contracts = frac * equity / (event.close * multiplier)
        contracts = max(-cfg.max_contracts, min(cfg.max_contracts, contracts))
        target = round_to_lot(contracts, lot)
        ideal = target
        prev = state.targets.get(acct.name, 0.0)
        edge = abs(event.signal) * _SQRT_2_OVER_PI * sizing["sigma_forecast"] \
            * cfg.edge_horizon_bars
        cost = self._round_trip_cost(event.symbol, event.close, multiplier)
        gated = 0.0
        if cfg.cost_gate and edge <= cost:  # add no exposure the edge cannot pay for
            kept = math.copysign(min(abs(target), abs(prev)), prev) if target * prev > 0 else 0.0
            gated = float(kept != target)
            target = kept
        # Turnover control: a move of at most the band (same side) keeps the old target, unless
        # the old one no longer fits under the cap at today's price.
        cap = round_to_lot(cfg.max_fraction * equity / (event.close * multiplier), lot)
        if (abs(target - prev) <= cfg.rebalance_band_lots * lot + 1e-9
                and target * prev > 0 and abs(prev) <= cap):
            target = prev
        delta = target - prev
        state.targets[acct.name] = target
        sizing.update(contracts_raw=contracts, ideal_position=ideal, expected_edge=edge,
                      round_trip_cost=cost, cost_gated=gated, target_position=target)
        return OrderIntent(
            ts_event=event.ts_event,
            decision_id=account_decision_id(event.decision_id, acct.name, several),
            account=acct.name,
            symbol=event.symbol,
            side="BUY" if delta >= 0 else "SELL",
            quantity=abs(delta),
            target_position=target,
            reference_price=event.close,
            algo=cfg.algo,
            sizing=sizing,
            trace=event.trace,
        )

    def _round_trip_cost(self, symbol: str, price: float, multiplier: float) -> float:
        """Expected cost of opening and closing one contract, as a fraction of its notional."""
        cfg = self.config
        slip = 0.0 if cfg.algo == "ICEBERG" else (
            cfg.slippage_ticks * cfg.tick_sizes.get(symbol, cfg.tick_size) * multiplier)
        return 2.0 * ((slip + cfg.fee_per_contract) / (price * multiplier) + cfg.fee_bps * 1e-4)

    def _skip(self, event: Signal, why: str, sizing: dict[str, float]) -> Emit:
        """The audit record of a decision that emits no order intent."""
        tr = event.trace
        assert tr is not None
        return Emit(tn.AUDIT_DECISIONS, event.decision_id, Decision(
            ts_event=event.ts_event, decision_id=event.decision_id, symbol=event.symbol,
            action="HOLD", quantity=0.0, confidence=event.confidence,
            regime_probs=tr.regime_probs, strategy_weights=tr.strategy_weights,
            features=tr.features, model_versions=tr.model_versions,
            model_outputs=tr.model_outputs, sizing=sizing, risk_checks={}, order_ids=(),
            contributions=tr.contributions, inputs=tr.inputs, skipped=why))
