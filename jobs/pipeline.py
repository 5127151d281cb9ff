"""The decision chain's operators, assembled from a strategy bundle and run options.

infer → regime blend → size → account (pre-trade check, routing, paper broker). The graph is
the same for the per-event and the batched path; only how ticks and features reach it differs.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from jobs.graph import Stage
from jobs.strategy import StrategyBundle
from operators.account import AccountOpConfig, AccountOperator
from operators.bars import parse_duration
from operators.execution import ExecConfig
from operators.infer import Infer, InferConfig
from operators.instruments import Instrument, load_instruments
from operators.ledger import InstrumentSpec
from operators.regime_blend import BlendConfig, RegimeBlend
from operators.risk_config import AccountConfig, RiskLimits, load_account_config, load_risk_limits
from operators.size import Size as SizeOp
from operators.size import SizeConfig
from topics.messages import Algo

DEFAULT_INSTRUMENTS = Path(__file__).parent / "data" / "instruments.csv"
ACCOUNT = "paper"


@dataclass(frozen=True, slots=True)
class ChainOptions:
    models: Path
    bundle: StrategyBundle
    instruments: dict[str, Instrument]
    limits: RiskLimits
    account: AccountConfig
    execution: ExecConfig = field(default_factory=ExecConfig)
    algo: Algo = "IMMEDIATE"
    periods_per_year: float = 252.0 * 23 * 60
    session_tz: str = "America/Chicago"
    child_ttl_ns: int | None = None  # None: the execution config's


@dataclass(frozen=True, slots=True)
class RiskFile:
    """What ``--risk PATH`` configures: limits, the account, execution and the paper broker."""

    limits: RiskLimits = field(default_factory=RiskLimits)
    account: AccountConfig = field(default_factory=AccountConfig)
    execution: ExecConfig = field(default_factory=ExecConfig)


def load_risk_file(path: Path | None) -> RiskFile:
    """``--risk PATH``: TOML with optional ``[limits]``, ``[account]`` and ``[execution]``.

    ``[execution]`` takes ``ExecConfig``'s fields; durations (``*_ns``) may be written as
    strings such as ``"50ms"`` or ``"15s"``. Unknown tables or keys are errors.
    """
    if path is None:
        return RiskFile()
    with path.open("rb") as fh:
        doc = tomllib.load(fh)
    unknown = sorted(set(doc) - {"limits", "account", "execution"})
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; known: [limits], [account], [execution]")
    limits = load_risk_limits(path) if "limits" in doc else RiskLimits()
    account = load_account_config(path) if "account" in doc else AccountConfig()
    execution = ExecConfig()
    if "execution" in doc:
        raw = {k: parse_duration(v) if k.endswith("_ns") and isinstance(v, str) else v
               for k, v in doc["execution"].items()}
        try:
            execution = msgspec.convert(raw, ExecConfig)
        except (msgspec.ValidationError, ValueError) as exc:
            raise ValueError(f"[execution]: {exc}") from None
    return RiskFile(limits=limits, account=account, execution=execution)


def instrument_master(path: Path | None, symbols: tuple[str, ...], quiet: bool
                      ) -> dict[str, Instrument]:
    """Instruments by symbol: ``--instruments`` or the shipped file, defaults for the rest."""
    table = {i.symbol: i for i in load_instruments(path or DEFAULT_INSTRUMENTS)}
    for sym in symbols:
        if sym not in table:
            if not quiet:
                print(f"warning: {sym} is not in the instrument master; using multiplier 1, "
                      "lot 1, tick 0.01 (pass --instruments)", file=sys.stderr)
            table[sym] = Instrument(symbol=sym)
    return table


def chain_stages(opts: ChainOptions) -> tuple[Stage, ...]:
    b = opts.bundle
    infer = Infer(InferConfig(registry_dir=str(opts.models), arm_a=b.arm_a, arm_b=b.arm_b,
                              ab_split=b.ab_split))
    blend = RegimeBlend(BlendConfig(hmm=b.hmm))
    specs = {s: InstrumentSpec(symbol=s, multiplier=i.multiplier, tick_size=i.tick_size,
                               lot_size=i.lot_size, group=i.group or s)
             for s, i in sorted(opts.instruments.items())}
    first = specs[b.symbols[0]]
    size = SizeOp(SizeConfig(
        account=ACCOUNT, vol=b.vol, reference_equity=opts.account.initial_equity,
        multiplier=first.multiplier, lot_size=first.lot_size,
        periods_per_year=opts.periods_per_year, algo=opts.algo, trade_from_ns=b.train_end,
        multipliers={s: sp.multiplier for s, sp in specs.items()},
        lot_sizes={s: sp.lot_size for s, sp in specs.items()}))
    session = next((i.session_start for i in opts.instruments.values() if i.session_start),
                   "17:00")
    account = AccountOperator(AccountOpConfig(
        account=ACCOUNT, instruments=specs, limits=opts.limits, account_cfg=opts.account,
        execution=msgspec.structs.replace(
            opts.execution,
            child_ttl_ns=opts.child_ttl_ns or opts.execution.child_ttl_ns,
            track_volume=opts.algo == "VWAP"),
        session_start=session, session_tz=opts.session_tz))
    return (
        Stage(infer, ("features",), ("predictions",)),
        Stage(blend, ("features", "predictions"), ("regimes", "signals")),
        Stage(size, ("signals",), ("orders.intents",)),
        Stage(account, ("orders.intents", "md.ticks", "control"),
              ("orders", "fills", "risk.rejects", "positions", "audit.decisions")),
    )
