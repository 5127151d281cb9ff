"""Graph assembly shared by every runtime: which operators, in which order, on which topics.

The embedded runner, the batched replay and (later) the Kafka, Flink and Faust hosts all build
their graph here, so "what runs" is defined once; they differ only in how records reach it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from jobs.graph import Graph, Stage
from jobs.loaders.instruments import Instrument
from jobs.loaders.registry import FileModelProvider
from jobs.strategy import StrategyBundle
from operators.account import AccountOpConfig, AccountOperator
from operators.account_feed import AccountFeedConfig, AccountFeedRouter
from operators.contract import Operator
from operators.domain.execution import ExecConfig
from operators.domain.ledger import InstrumentSpec
from operators.domain.limits import AccountSpec
from operators.features import (
    WindowFeatures,
)
from operators.infer import Device, Infer, InferConfig
from operators.learn import ONLINE_REGIME, LearnConfig, learn_operator
from operators.normalize import Normalize
from operators.regime_blend import BlendConfig, RegimeBlend
from operators.size import Size as SizeOp
from operators.size import SizeConfig, SizedAccount
from topics import names as tn
from topics.messages import (
    Algo,
)


@dataclass(frozen=True, slots=True)
class ChainOptions:
    models: Path
    bundle: StrategyBundle
    instruments: dict[str, Instrument]
    accounts: tuple[AccountSpec, ...] = (AccountSpec(),)
    """The accounts the chain trades (``--risk``'s ``[accounts.NAME]``, default ``paper``)."""
    execution: ExecConfig = field(default_factory=ExecConfig)
    algo: Algo = "IMMEDIATE"
    periods_per_year: float = 252.0 * 23 * 60
    session_tz: str = "America/Chicago"
    child_ttl_ns: int | None = None  # None: the execution config's
    max_bar_age_ns: int | None = None  # None: two bar lengths; -1: any age
    cost_gate: bool = True
    edge_horizon_bars: float | None = None  # None: the models' label horizon
    device: Device = "cpu"  # resolved once per run (jobs.device.resolve_device)
    online_learning: bool = True
    """The ``learn`` stage (docs/online-learning.md); False: frozen models only."""
    learn: LearnConfig | None = None
    """The learner's settings; None: defaults with the bundle's horizon, seed and training
    window (the champion is always the bundle's arm A)."""


def infer_operator(models: Path, arm_a: tuple[str, ...], arm_b: tuple[str, ...] = (),
                   ab_split: float = 0.0, *, pins: dict[str, str] | None = None,
                   device: Device = "cpu") -> Infer:
    """``infer`` serving a registry directory: the served set (latest, or pinned, per name)
    is selected here, once, and goes into the operator's config; the operator is not open."""
    served = FileModelProvider.select(models, tuple(dict.fromkeys(arm_a + arm_b)), pins)
    return Infer(InferConfig(models=served.entries(), arm_a=arm_a, arm_b=arm_b,
                             ab_split=ab_split, device=device), served)


def chain_stages(opts: ChainOptions) -> tuple[Stage, ...]:
    b = opts.bundle
    infer = infer_operator(opts.models, b.arm_a, b.arm_b, b.ab_split, pins=dict(b.pins),
                           device=opts.device)
    blend = RegimeBlend(BlendConfig(
        hmm=b.hmm, online_regime=ONLINE_REGIME if opts.online_learning else None))
    specs = {s: InstrumentSpec(symbol=s, multiplier=i.multiplier, tick_size=i.tick_size,
                               lot_size=i.lot_size, group=i.group or s, venue=i.venue)
             for s, i in sorted(opts.instruments.items())}
    first = specs[b.symbols[0]]
    size = SizeOp(SizeConfig(
        vol=b.vol,
        accounts=tuple(SizedAccount(name=a.name, reference_equity=a.settings.initial_equity,
                                    symbols=a.symbols) for a in opts.accounts),
        multiplier=first.multiplier, lot_size=first.lot_size,
        periods_per_year=opts.periods_per_year, algo=opts.algo, trade_from_ns=b.train_end,
        multipliers={s: sp.multiplier for s, sp in specs.items()},
        lot_sizes={s: sp.lot_size for s, sp in specs.items()},
        max_bar_age_ns=(2 * b.bar_ns if opts.max_bar_age_ns is None
                        else None if opts.max_bar_age_ns < 0 else opts.max_bar_age_ns),
        cost_gate=opts.cost_gate,
        edge_horizon_bars=float(opts.edge_horizon_bars or b.horizon_bars),
        slippage_ticks=opts.execution.slippage_ticks, tick_size=first.tick_size,
        tick_sizes={s: sp.tick_size for s, sp in specs.items()},
        fee_per_contract=opts.accounts[0].settings.fee_per_contract,
        fee_bps=opts.accounts[0].settings.fee_bps))
    session = next((i.session_start for i in opts.instruments.values() if i.session_start),
                   "17:00")
    feed = AccountFeedRouter(AccountFeedConfig.of(opts.accounts))
    account = AccountOperator(AccountOpConfig(
        accounts=opts.accounts, instruments=specs,
        execution=msgspec.structs.replace(
            opts.execution,
            child_ttl_ns=opts.child_ttl_ns or opts.execution.child_ttl_ns,
            track_volume=opts.algo == "VWAP"),
        session_start=session, session_tz=opts.session_tz))
    return (
        Stage(infer, (tn.FEATURES,), (tn.PREDICTIONS,)),
        *((learn_stage(opts),) if opts.online_learning else ()),
        Stage(blend, (tn.FEATURES, tn.PREDICTIONS), (tn.REGIMES, tn.SIGNALS)),
        Stage(size, (tn.SIGNALS,), (tn.ORDERS_INTENTS, tn.AUDIT_DECISIONS)),
        Stage(feed, (tn.MD_TICKS, tn.CONTROL), (tn.ACCOUNT_FEED,)),
        Stage(account, (tn.ORDERS_INTENTS, tn.ACCOUNT_FEED),
              (tn.ORDERS, tn.FILLS, tn.RISK_REJECTS, tn.POSITIONS, tn.AUDIT_DECISIONS)),
    )


def learn_stage(opts: ChainOptions) -> Stage:
    """The online learner, its champion the bundle's arm A served from the same files."""
    b = opts.bundle
    pins = {n: v for n, v in b.pins if n in b.arm_a}
    champion = infer_operator(opts.models, b.arm_a, pins=pins, device=opts.device)
    cfg = opts.learn or LearnConfig(horizon_bars=b.horizon_bars, seed=b.seed,
                                    reference_until_ns=b.train_end)
    return Stage(learn_operator(cfg, champion), (tn.FEATURES,),
                 (tn.PREDICTIONS, tn.MODELS_UPDATES))


def tick_graph(norm: Normalize, feats: WindowFeatures, chain: tuple[Stage, ...] = ()) -> Graph:
    return Graph(tn.MD_TICKS_RAW, (
        Stage(norm, (tn.MD_TICKS_RAW,), (tn.MD_TICKS, tn.MD_TICKS_DLQ)),
        Stage(feats, (tn.MD_TICKS,), (tn.MD_BARS, tn.FEATURES, tn.MD_TICKS_LATE)),
        *chain,
    ), external=(tn.CONTROL,) if chain else ())


@contextmanager
def opened(stages: Iterable[Stage]) -> Iterator[tuple[Stage, ...]]:
    """Open every stage's operator before the first event; close them all at the end.

    Every host that runs a graph goes through this (the replay paths, tests, benchmarks; later
    the Kafka, Flink and Faust hosts call the same hooks from their own lifecycle). Operators
    close last-opened first, also when the run fails or an ``open`` does.
    """
    staged = tuple(stages)
    done: list[Operator[Any, Any]] = []
    try:
        for st in staged:
            st.operator.open()
            done.append(st.operator)
        yield staged
    finally:
        for op in reversed(done):
            op.close()
