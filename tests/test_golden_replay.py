"""Golden acceptance replay: ``streamquant run`` on the E-mini sample gives exactly these figures.

The session's bundle is trained by ``tests._replay_fixture`` with ``streamquant train``'s
defaults; training is deterministic (the models and ``strategy.json`` are byte-identical to a
separate ``streamquant train`` run's, checked when these figures were taken), so the replay is
``streamquant run --models`` with the default options. It runs twice; both runs must write the
same bytes and the pinned figures. A change to any figure is a behaviour change: it needs a
documented reason and new constants here.
"""

from __future__ import annotations

from pathlib import Path

from tests._replay_fixture import ReplayPool, pool_fixture

replays = pool_fixture()

# From /tmp/base/run_batch.summary.json: `streamquant run --models /tmp/base/models` (batch
# mode, defaults) on main at a7d5f4c, with /tmp/base/models from `streamquant train`.
DECISIONS = 1_237
ORDERS = 584
FILLS = 1_352
REJECTS_BY_CODE = {"CONCENTRATION_LIMIT": 571}
NET_PNL = -12_075.25
FEES = 1_969.0
FINAL_EQUITY = 987_924.75


def test_the_emini_replay_pins_decisions_orders_fills_rejects_and_pnl(replays: ReplayPool
                                                                      ) -> None:
    s = replays.get("base").summary
    assert s["decisions"] == DECISIONS
    assert s["orders"] == ORDERS
    assert s["fills"] == FILLS
    assert s["rejects_by_code"] == REJECTS_BY_CODE
    assert s["rejects"] == sum(REJECTS_BY_CODE.values())
    assert s["pnl"] == NET_PNL
    assert s["fees"] == FEES
    assert s["final_equity"] == FINAL_EQUITY
    run = replays.get("base")
    assert len(run.topic("audit.decisions")) == DECISIONS
    assert len(run.topic("orders")) == ORDERS
    assert len(run.topic("fills")) == FILLS
    assert len(run.topic("risk.rejects")) == sum(REJECTS_BY_CODE.values())


def test_the_golden_replay_writes_the_same_bytes_twice(replays: ReplayPool) -> None:
    first, again = replays.get("base"), replays.get("base_again")

    def files(out: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted((out / "topics").glob("*.jsonl"))}

    a, b = files(first.out), files(again.out)
    assert set(a) >= {"orders.jsonl", "fills.jsonl", "risk.rejects.jsonl", "positions.jsonl",
                      "audit.decisions.jsonl", "signals.jsonl", "predictions.jsonl"}
    assert a == b
    timing = {"wall_s", "ticks_per_s", "bars_per_s", "train_s"}
    sa = {k: v for k, v in first.summary.items() if k not in timing}
    sb = {k: v for k, v in again.summary.items() if k not in timing}
    assert sa == sb
