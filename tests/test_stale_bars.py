"""A decision on a bar that ended long before it was decided places no order.

On the E-mini sample the first decision of the trading window is on the bar that ended at
10:30 CT on Labor Day, before the halt; only the reopening tick at 17:00 CT closed it. Trading
it would act 6.5 hours late on a price the market had left.
"""

from __future__ import annotations

import msgspec
import pytest

from operators.contract import SimpleContext
from operators.domain.volatility import VolConfig
from operators.size import Size, SizeConfig
from tests._replay_fixture import TRAIN_END, Replay, ReplayPool, pool_fixture
from topics.messages import Decision, Order, OrderIntent, Signal

replays = pool_fixture()

NS = 1_000_000_000
MINUTE = 60 * NS
MAX_AGE = 2 * MINUTE  # the default: two bar lengths
LAST_BAR_BEFORE_HALT = 1_378_135_800 * NS  # 2013-09-02 15:30 UTC = 10:30 CT, the bar's end


@pytest.fixture(scope="module")
def base(replays: ReplayPool) -> Replay:
    """The replay with every default (cost gate on)."""
    return replays.get("default")


def _bar_end(decision_id: str) -> int:
    """Decision ids are ``<symbol>-<bar end ns>-<hash>``."""
    return int(decision_id.split("-")[1])


def test_the_first_decision_after_the_labor_day_halt_is_skipped_and_audited(base: Replay
                                                                            ) -> None:
    audit: list[Decision] = base.topic("audit.decisions")
    first = audit[0]
    assert first.ts_event >= TRAIN_END
    assert _bar_end(first.decision_id) == LAST_BAR_BEFORE_HALT
    assert first.ts_event - LAST_BAR_BEFORE_HALT > 6 * 3600 * NS  # closed by the reopening
    assert first.skipped == "stale_bar"
    assert (first.action, first.quantity, first.order_ids) == ("HOLD", 0.0, ())
    assert first.sizing["bar_age_ns"] == first.ts_event - LAST_BAR_BEFORE_HALT
    assert first.sizing["max_bar_age_ns"] == MAX_AGE
    intents: list[OrderIntent] = base.topic("orders.intents")
    orders: list[Order] = base.topic("orders")
    assert first.decision_id not in {i.decision_id for i in intents}
    assert first.decision_id not in {o.decision_id for o in orders}
    assert orders and orders[0].ts_event > first.ts_event  # the replay still trades


def test_exactly_the_decisions_on_bars_older_than_two_bars_are_skipped_and_counted(
        base: Replay) -> None:
    audit: list[Decision] = base.topic("audit.decisions")
    intents = {i.decision_id for i in base.topic("orders.intents")}
    stale = [d for d in audit if d.ts_event - _bar_end(d.decision_id) > MAX_AGE]
    assert stale
    for d in audit:
        if d in stale:
            assert d.skipped == "stale_bar" and d.decision_id not in intents
        else:
            assert d.skipped is None and d.decision_id in intents
    assert base.summary["stale_bars"] == len(stale)
    assert base.summary["decisions"] == len(audit)


def test_the_age_limit_is_configurable_and_can_be_switched_off(base: Replay,
                                                               replays: ReplayPool) -> None:
    """The stale signal of the replay, sized again by fresh operators with other limits."""
    stale: Signal = next(s for s in base.topic("signals")
                         if s.ts_event >= TRAIN_END and s.trace is not None
                         and s.trace.bar_ts == LAST_BAR_BEFORE_HALT)
    age = stale.ts_event - LAST_BAR_BEFORE_HALT
    cfg = SizeConfig(vol=replays.bundle.vol, multiplier=50.0,
                     trade_from_ns=TRAIN_END, max_bar_age_ns=MAX_AGE)

    def emitted(config: SizeConfig) -> list[str]:
        op = Size(config)
        _, out = op.process(op.new_state("ES"), stale, SimpleContext())
        return [e.topic for e in out]

    assert emitted(cfg) == ["audit.decisions"]
    assert emitted(msgspec.structs.replace(cfg, max_bar_age_ns=age)) == ["orders.intents"]
    assert emitted(msgspec.structs.replace(cfg, max_bar_age_ns=None)) == ["orders.intents"]
    with pytest.raises(ValueError, match="max_bar_age_ns"):
        SizeConfig(vol=VolConfig(backcast=1.0), max_bar_age_ns=-1)
