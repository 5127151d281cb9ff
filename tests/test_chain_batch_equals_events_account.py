"""``AccountOperator.quiet_ticks`` over columns equals ``_on_tick`` trade by trade.

Real E-mini trades (Sunday 17:00 CT to Monday 19:36 CT, across the Monday 17:00 session roll)
as two instruments, applied to an account holding open positions in both, with a daily-loss
limit that trips in each session and VWAP volume tracking on: the account state
after the columnar run (marks, volume buckets, session, reduce-only flag, counters) is the
per-trade state, byte for byte in its checkpoint encoding.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import pytest

from operators.account import AccountOpConfig, AccountOperator, AccountOpState, QuietTicks
from operators.contract import Emit
from operators.domain import ledger as lg
from operators.domain.execution import ExecConfig
from operators.domain.ledger import InstrumentSpec
from operators.domain.limits import AccountSpec, RiskLimits
from topics.messages import Tick

ROWS = 60_000
TZ = ZoneInfo("America/Chicago")


@pytest.fixture(scope="module")
def ticks(emini_ticks_path: Path) -> list[Tick]:
    out = []
    with emini_ticks_path.open() as f:
        f.readline()
        for n, line in zip(range(ROWS), f, strict=False):
            ts, price, size = line.rstrip("\n").split(",")
            dt = datetime.fromisoformat(ts).replace(tzinfo=TZ)
            ns = int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1_000
            sym = "ES" if n % 3 else "EX"
            px = float(price) if sym == "ES" else float(price) - 100.0
            out.append(Tick(ts_event=ns, symbol=sym, venue="CME", price=px, size=float(size)))
    return out


def _operator() -> AccountOperator:
    specs = {s: InstrumentSpec(symbol=s, multiplier=50.0, tick_size=0.25, lot_size=1.0,
                               group="equity-index") for s in ("ES", "EX")}
    return AccountOperator(AccountOpConfig(
        accounts=(AccountSpec(limits=RiskLimits(daily_loss_limit=0.0002)),),
        instruments=specs, execution=ExecConfig(track_volume=True)))


def _holding(op: AccountOperator, first: Tick) -> AccountOpState:
    """The account after its first trade, short 3 ES and 2 EX (the market rises)."""
    state = op.new_state("paper")
    state.seq = 1
    op._on_tick(state, first, [])
    lg.apply_fill(state.ledger, "ES", "SELL", 3.0, 1640.25, 3.0, 50.0, "equity-index")
    lg.apply_fill(state.ledger, "EX", "SELL", 2.0, 1540.25, 2.0, 50.0, "equity-index")
    return state


def test_quiet_ticks_leave_the_account_as_trade_by_trade_handling(ticks: list[Tick]) -> None:
    op = _operator()
    per_trade = _holding(op, ticks[0])
    out: list[Emit] = []
    trips_at = []
    for t in ticks[1:]:
        before = per_trade.ledger.reduce_only
        op._on_tick(per_trade, t, out)
        if per_trade.ledger.reduce_only and not before:
            trips_at.append(t.ts_event)
    assert out == []  # nothing working: trades alone emit nothing
    # the premises: a roll, and a trip in each session (9 minutes into each)
    assert per_trade.counters["sessions"] == 2
    assert per_trade.counters["reduce_only_trips"] == 2, trips_at

    columnar = _holding(op, ticks[0])
    rest = ticks[1:]
    codes = {"ES": 0, "EX": 1}
    for lo, hi in ((0, 7), (7, 20_000), (20_000, len(rest))):  # stretches of any length
        run = rest[lo:hi]
        op.quiet_ticks(columnar, QuietTicks(
            ts=np.array([t.ts_event for t in run], dtype=np.int64),
            price=np.array([t.price for t in run]), size=np.array([t.size for t in run]),
            symbol=np.array([codes[t.symbol] for t in run], dtype=np.int32),
            symbols=("ES", "EX"), tick_at=lambda k, run=run: run[k]))
    per_trade.last_ts = columnar.last_ts  # kept by the buffer's release, not by _on_tick
    per_trade.timer_ts = columnar.timer_ts
    assert msgspec.msgpack.encode(columnar) == msgspec.msgpack.encode(per_trade)
