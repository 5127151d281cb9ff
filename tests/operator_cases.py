"""One contract case per operator: a fresh instance and the real input it consumes.

``tests/test_operator_contract.py`` discovers every ``Operator`` subclass with a ``UID`` in
``operators/`` and fails until ``CASES`` has an entry for it. Inputs are never hand-made: the
tick-driven operators get what they consumed in one real replay of the E-mini prefix
(``tests._chain_fixture.chain_run``), in the order they consumed it; ``bar_features`` gets
``arch``'s daily S&P 500 bars through the bar-file loader. The only injected messages are
``control`` commands (a kill switch trip and its reset) in the account and account feed cases,
so that path runs.

Each case feeds all of an operator's inputs through one topic (a multi-input operator
dispatches on type), and sizes its events so the suite's ~10 runs per case stay at seconds.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import msgspec

from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from operators.account import AccountOperator
from operators.account_feed import AccountFeedRouter
from operators.bar_features import BarFeatures, BarFeaturesConfig
from operators.contract import Operator
from operators.features import WindowFeatures
from operators.infer import Infer
from operators.learn import Learn
from operators.normalize import Normalize
from operators.regime_blend import RegimeBlend
from operators.size import Size, SizeConfig
from tests._chain_fixture import DAY_NS, chain_run, sp500_bars
from topics.messages import (
    AccountFeed,
    Control,
    ModelUpdate,
    OrderIntent,
    Prediction,
    RiskReject,
    Signal,
)

NORMALIZE_RECORDS = 20_000
FEATURE_TICKS = 60_000
INFER_VECTORS = 1_200
LEARN_VECTORS = 400
BLEND_MESSAGES = 5_000
ACCOUNT_WINDOW = 30_000
FEED_TICKS = 20_000
"""Caps on each case's events (the prefix holds 60,000 ticks and 1,182 bars): one run of any
case takes ~0.1 s, so the suite's ~10 runs per case stay near a second."""
FEATURE_LATENESS_NS = 90_000_000_000
"""More than a bar: two or more bars are open (with pending close timers) at every cut."""
ACCOUNT_LATENESS_NS = 1_000_000_000
"""The account's buffer holds about a second of ticks and intents (with timers) at a cut."""
ACCOUNT_LEAD_TICKS = 100
"""Ticks before the first intent, so the account has marks before it trades."""
KILL_AT, RESET_AT = 0.4, 0.65
"""Where in the account window the kill switch trips and resets (fractions of the window)."""


@dataclass(frozen=True, slots=True)
class OperatorCase:
    """How the contract suite builds and feeds one operator.

    ``make`` returns a fresh instance with the same config every call; ``events`` returns the
    same list (in arrival order) every call. ``wm_topic`` is the topic whose event times drive
    the runner's watermark (the input topic itself for event-time inputs).
    """

    make: Callable[[], Operator[Any, Any]]
    events: Callable[[], list[msgspec.Struct]]
    input_topic: str
    output_topics: tuple[str, ...]
    lateness_ns: int = 0
    wm_topic: str = "md.ticks"


def _fixed(events: list[msgspec.Struct]) -> Callable[[], list[msgspec.Struct]]:
    return lambda: events


def _op(uid: str) -> Any:
    return chain_run().operators[uid]


# ------------------------------------------------------------------------- tick-rate stages


def normalize_case() -> OperatorCase:
    """The first raw E-mini CSV lines as the replay source frames them (file and line).

    The sample has no trade ids, so the per-symbol dedupe memory stays empty here; its
    snapshot/restore is proven in ``test_normalize_dedupe`` on an id-carrying stream.
    """
    cfg = _op("normalize").config
    records: list[msgspec.Struct] = list(chain_run().records[:NORMALIZE_RECORDS])
    return OperatorCase(make=lambda: Normalize(cfg), events=_fixed(records),
                        input_topic="md.ticks.raw", output_topics=("md.ticks", "md.ticks.dlq"),
                        wm_topic="md.ticks")


def window_features_case() -> OperatorCase:
    """All normalized ticks of the prefix (1,182 one-minute bars) under 90 s of lateness.

    The replay ran without lateness; here the watermark trails by 90 s, so a checkpoint
    always holds several open bars and their close timers (a snapshot that kept only the
    newest bar would fail the split test).
    """
    cfg = dataclasses.replace(_op("window_features").config, lateness_ns=FEATURE_LATENESS_NS)
    ticks = chain_run().consumed(("md.ticks",))[:FEATURE_TICKS]
    return OperatorCase(make=lambda: WindowFeatures(cfg), events=_fixed(ticks),
                        input_topic="md.ticks",
                        output_topics=("md.bars", "features", "md.ticks.late"),
                        lateness_ns=cfg.lateness_ns, wm_topic="md.ticks")


def bar_features_case() -> OperatorCase:
    """Daily S&P 500 bars (arch's sample), the ``--bars`` input path."""
    bars: list[msgspec.Struct] = list(sp500_bars())
    return OperatorCase(make=lambda: BarFeatures(BarFeaturesConfig(DAY_NS)),
                        events=_fixed(bars), input_topic="md.bars",
                        output_topics=("features",), wm_topic="md.bars")


# ------------------------------------------------------------------------- decision chain


def _outputs(case: OperatorCase) -> dict[str, list[msgspec.Struct]]:
    """One run of the case as the suite runs it: what the operator emitted, by topic."""
    graph = Graph(case.input_topic,
                  (Stage(case.make(), (case.input_topic,), case.output_topics),))
    sink = TopicSink(None, case.output_topics, capture=True)
    runner = LocalRunner(graph, sink, lateness_ns=case.lateness_ns,
                         watermark_topic=case.wm_topic)
    for ev in case.events():
        runner.feed(ev)
    runner.end_of_stream()
    assert sink.captured is not None
    return sink.captured


def _require(case: OperatorCase, missing: Iterable[str]) -> OperatorCase:
    """Fail loudly (not vacuously pass) if upstream changes stop a case reaching its paths."""
    gaps = list(missing)
    if gaps:
        raise RuntimeError(f"contract case no longer exercises: {', '.join(gaps)}")
    return case


def infer_case() -> OperatorCase:
    """Every feature vector: warm-up ones are skipped, the rest scored by both A/B arms."""
    served = _op("infer")
    vectors = chain_run().consumed(("features",))[:INFER_VECTORS]

    def make() -> Infer:  # the suite drives operators itself: it is their host, so it opens
        op = Infer(served.config, served.model_provider)
        op.open()
        return op

    case = OperatorCase(make=make, events=_fixed(vectors),
                        input_topic="features", output_topics=("predictions",),
                        wm_topic="features")
    preds = [p for p in _outputs(case)["predictions"] if isinstance(p, Prediction)]
    arms = {p.variant for p in preds}
    return _require(case, [f"arm {a}" for a in ("A", "B") if a not in arms]
                    + (["warm-up"] if len(preds) >= 3 * len(vectors) else []))


def learn_case() -> OperatorCase:
    """Feature vectors of the prefix through the online learner, its champion the run's arm A;
    short windows and batches, so the case passes stability checks, a rollback and its
    cooldown, and a checkpoint cuts through the River model, pending labels and the windows."""
    served: Learn = _op("learn")
    # the logistic model only: the contract's per-key host re-encodes the state on every
    # event, and the tree's state (~25 KB) would make the suite's ~20 runs take minutes; the
    # tree's checkpoint is proven in tests/test_online_learning.py
    cfg = msgspec.structs.replace(served.config, models=("logit",), window=60, min_window=30,
                                  batch_labels=10, cooldown_labels=20, reference_max=100)
    champion = served.champion
    assert champion is not None
    vectors = chain_run().consumed(("features",))[:LEARN_VECTORS]

    def make() -> Learn:  # the suite hosts the operator: it opens it (the champion's sessions)
        op = Learn(cfg, Infer(champion.config, champion.model_provider))
        op.open()
        return op

    case = OperatorCase(make=make, events=_fixed(vectors), input_topic="features",
                        output_topics=("predictions", "models.updates"), wm_topic="features")
    kinds = {u.update_type for u in _outputs(case)["models.updates"]
             if isinstance(u, ModelUpdate)}
    return _require(case, [k for k in ("incremental", "rollback") if k not in kinds])


def regime_blend_case() -> OperatorCase:
    """Feature vectors and predictions interleaved as dispatched (a bar's predictions reach
    the blend before its feature vector, so decisions wait in ``pending``)."""
    cfg = _op("regime_blend").config
    msgs = chain_run().consumed(("features", "predictions"))[:BLEND_MESSAGES]
    case = OperatorCase(make=lambda: RegimeBlend(cfg), events=_fixed(msgs),
                        input_topic="features", output_topics=("regimes", "signals"),
                        wm_topic="features")
    kinds = {s.fallback for s in _outputs(case)["signals"] if isinstance(s, Signal)}
    return _require(case, [f"signals with fallback={k!r}" for k in ("warmup", None)
                           if k not in kinds])


def size_case() -> OperatorCase:
    """Every blended signal: the training window warms the forecaster, then it sizes."""
    cfg: SizeConfig = _op("size").config
    signals = chain_run().consumed(("signals",))
    case = OperatorCase(make=lambda: Size(cfg), events=_fixed(signals),
                        input_topic="signals",
                        output_topics=("orders.intents", "audit.decisions"),  # stale-bar skips
                        wm_topic="signals")
    intents = [i for i in _outputs(case)["orders.intents"] if isinstance(i, OrderIntent)]
    return _require(case, [] if any(i.target_position != 0 for i in intents)
                    else ["non-zero targets after trade_from_ns"])


def _commands(events: list[msgspec.Struct], wrap: Callable[[Control], msgspec.Struct]
              ) -> list[msgspec.Struct]:
    """``events`` with a kill switch trip and its reset inserted (each wrapped by ``wrap``)."""
    events = list(events)
    kill, reset = int(len(events) * KILL_AT), int(len(events) * RESET_AT)
    # The later one first, so the earlier index still points at the same message.
    commands: tuple[tuple[int, Literal["RESET", "KILL"]], ...] = ((reset, "RESET"), (kill, "KILL"))
    for at, command in commands:
        ts = events[at].ts_event  # type: ignore[attr-defined]
        events.insert(at, wrap(Control(ts_event=ts, command=command,
                                       reason="operator contract case")))
    return events


def account_feed_case() -> OperatorCase:
    """The prefix's first trades with a kill switch trip and reset for every account."""
    cfg = _op("account_feed").config
    ticks = chain_run().consumed(("md.ticks",))[:FEED_TICKS]
    events = _commands(ticks, lambda c: c)
    case = OperatorCase(make=lambda: AccountFeedRouter(cfg), events=_fixed(events),
                        input_topic="md.ticks", output_topics=("account.feed",),
                        wm_topic="md.ticks")
    feeds = [f for f in _outputs(case)["account.feed"] if isinstance(f, AccountFeed)]
    return _require(case, [k for k, n in (("ticks", sum(f.tick is not None for f in feeds)),
                                          ("controls", sum(f.control is not None for f in feeds)))
                           if not n])


@cache
def account_events() -> list[msgspec.Struct]:
    consumed = chain_run().consumed(("account.feed", "orders.intents"))
    first = next(i for i, m in enumerate(consumed) if isinstance(m, OrderIntent))
    events = consumed[max(0, first - ACCOUNT_LEAD_TICKS):][:ACCOUNT_WINDOW]
    account = _op("account").config.accounts[0].name
    return _commands(events, lambda c: AccountFeed(ts_event=c.ts_event, account=account,
                                                   control=c))


def account_case() -> OperatorCase:
    """The trading window's trades and sized intents under a tight concentration limit, with
    the kill switch tripped and reset in the middle; the watermark trails by 1 s, so
    buffered trades and intents sit in state (with their timers) across every cut."""
    cfg = _op("account").config
    case = OperatorCase(make=lambda: AccountOperator(cfg), events=account_events,
                        input_topic="account.feed",
                        output_topics=("orders", "fills", "risk.rejects", "positions",
                                       "audit.decisions"),
                        lateness_ns=ACCOUNT_LATENESS_NS, wm_topic="account.feed")
    out = _outputs(case)
    codes = Counter(r.code for rj in out["risk.rejects"] if isinstance(rj, RiskReject)
                    for r in rj.reasons)
    gaps = [t for t in ("orders", "fills") if not out[t]]
    gaps += [c for c in ("CONCENTRATION_LIMIT", "KILL_SWITCH") if not codes[c]]
    return _require(case, gaps)


CASES: dict[str, Callable[[], OperatorCase]] = {
    "normalize": normalize_case,
    "window_features": window_features_case,
    "bar_features": bar_features_case,
    "infer": infer_case,
    "learn": learn_case,
    "regime_blend": regime_blend_case,
    "size": size_case,
    "account_feed": account_feed_case,
    "account": account_case,
}
