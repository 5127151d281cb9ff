"""The metrics tap: what the low-rate topics say, kept in plain ints for the collector.

It accepts only topics that arrive at bar rate or slower (features, predictions, regimes, the
decision chain's outputs, control); the tick-rate topics are counted by the output anyway and
read at scrape time. Each handler is a few dict updates. On ``features`` (a bar closed) it
stamps the decision the bar will lead to, for the tick → order latency, and opens an operator
sampling window (``jobs.metrics.sampler``).
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from jobs.metrics.catalog import LATENCY_BUCKETS
from jobs.metrics.histogram import LiteHistogram
from jobs.metrics.sampler import OperatorSampler
from jobs.sinks.probe import RunProbe
from topics import names as tn
from topics.messages import Control, FeatureVector, Order, Position, Prediction, Regime

_LN2 = math.log(2.0)
_STAMPS_KEPT = 4096  # open decisions remembered for the latency (oldest dropped first)


def _decision_id_for() -> Callable[[FeatureVector], str]:
    """``operators.infer.decision_id_for`` (imported on the first bar: a run without the
    chain need not load onnxruntime)."""
    from operators.infer import decision_id_for

    return decision_id_for


@dataclass(slots=True)
class AccountFigures:
    """What the positions records say about one account."""

    equity: float
    peak: float
    max_drawdown: float = 0.0

    @property
    def drawdown(self) -> float:
        return 1.0 - self.equity / self.peak if self.peak > 0 else 0.0


@dataclass(slots=True)
class TapCounts:
    """Everything the handlers count (read by the collector from the scrape thread)."""

    orders: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    fills: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejects: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    reject_codes: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    decisions: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped_decisions: int = 0
    """Decisions without an order intent (size's audit records: ``skipped`` set)."""
    controls: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    predictions: defaultdict[tuple[str, str], int] = field(
        default_factory=lambda: defaultdict(int))
    entropy_bits: dict[str, float] = field(default_factory=dict)
    regime_probs: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    accounts: dict[str, AccountFigures] = field(default_factory=dict)
    tick_to_order: LiteHistogram = field(
        default_factory=lambda: LiteHistogram(LATENCY_BUCKETS))


class MetricsTap:
    """A ``Tap`` (``jobs.sinks.tap``) feeding a run's Prometheus endpoint (``serve``)."""

    name = "metrics"
    topics = frozenset({tn.FEATURES, tn.PREDICTIONS, tn.REGIMES, tn.ORDERS, tn.FILLS,
                        tn.RISK_REJECTS, tn.POSITIONS, tn.AUDIT_DECISIONS, tn.CONTROL})

    def __init__(self, *, sampler: OperatorSampler | None = None,
                 siblings: Sequence[Any] = ()) -> None:
        self.counts = TapCounts()
        self.sampler = sampler or OperatorSampler()
        self.probe: RunProbe | None = None
        self.siblings = siblings
        """The run's other taps (the list they are appended to): their ``lag()`` is read."""
        self.finished = False
        self._stamps: dict[str, int] = {}
        self._decision_of: Callable[[FeatureVector], str] | None = None
        self._on_close: list[Callable[[], None]] = []
        self._handlers: dict[str, Callable[[Any], None]] = {
            tn.FEATURES: self._bar, tn.PREDICTIONS: self._prediction, tn.REGIMES: self._regime,
            tn.ORDERS: self._order, tn.FILLS: self._fill, tn.RISK_REJECTS: self._reject,
            tn.POSITIONS: self._position, tn.AUDIT_DECISIONS: self._decision,
            tn.CONTROL: self._control}

    # -- Tap ----------------------------------------------------------------------------------
    def bind(self, probe: RunProbe) -> None:
        """The runtime this tap reports on (``jobs.sinks.probe``); a later bind replaces it."""
        self.probe = probe

    def accept(self, topic: str, n: int, value: msgspec.Struct, /) -> None:
        handler = self._handlers.get(topic)
        if handler is not None:
            handler(value)

    def flush(self) -> None:
        """Nothing buffered: every figure is read at scrape time."""

    def close(self) -> None:
        """The run ended: stop sampling, mark the values final, run the close hooks (the
        endpoint serves its final values for the linger, then stops)."""
        if self.probe is not None:
            self.sampler.disarm(self.probe.dispatcher())
        self.finished = True
        hooks, self._on_close = self._on_close, []
        for hook in hooks:
            hook()

    def on_close(self, hook: Callable[[], None]) -> None:
        self._on_close.append(hook)

    def stats(self) -> dict[str, Any]:
        c = self.counts
        return {"orders": sum(c.orders.values()), "fills": sum(c.fills.values()),
                "tick_to_order_samples": c.tick_to_order.count,
                "sampling_windows": self.sampler.windows}

    # -- handlers (main thread) ---------------------------------------------------------------
    def _bar(self, fv: FeatureVector) -> None:
        probe = self.probe
        read = probe.read_ns() if probe is not None else None
        decision_of = self._decision_of
        if decision_of is None:
            decision_of = self._decision_of = _decision_id_for()
        stamps = self._stamps
        stamps[decision_of(fv)] = time.perf_counter_ns() if read is None else read
        if len(stamps) > _STAMPS_KEPT:
            del stamps[next(iter(stamps))]
        if probe is not None:
            self.sampler.arm(probe.dispatcher())

    def _order(self, o: Order) -> None:
        c = self.counts
        c.orders[o.account] += 1
        if o.slice.startswith("1/"):  # a decision's first child; later slices wait by design
            t = self._stamps.get(o.decision_id.partition("@")[0])
            if t is not None:
                c.tick_to_order.observe_ns(time.perf_counter_ns() - t)

    def _fill(self, f: Any) -> None:
        self.counts.fills[f.account] += 1

    def _reject(self, r: Any) -> None:
        c = self.counts
        c.rejects[r.account] += 1
        for reason in r.reasons:
            c.reject_codes[reason.code] += 1

    def _decision(self, d: Any) -> None:
        c = self.counts
        c.decisions[d.action] += 1
        if d.skipped is not None:
            c.skipped_decisions += 1

    def _prediction(self, p: Prediction) -> None:
        self.counts.predictions[(p.model, p.variant)] += 1

    def _regime(self, r: Regime) -> None:
        c = self.counts
        c.entropy_bits[r.symbol] = r.entropy / _LN2
        c.regime_probs[r.symbol] = (r.prob_bull, r.prob_bear, r.prob_sideways)

    def _position(self, p: Position) -> None:
        acc = self.counts.accounts.get(p.account)
        if acc is None:
            self.counts.accounts[p.account] = AccountFigures(p.equity, p.equity)
            return
        acc.equity = p.equity
        if p.equity > acc.peak:
            acc.peak = p.equity
        dd = acc.drawdown
        if dd > acc.max_drawdown:
            acc.max_drawdown = dd

    def _control(self, c: Control) -> None:
        self.counts.controls[c.command] += 1


def note(text: str) -> None:
    print(f"metrics: {text}", file=sys.stderr, flush=True)
