"""Exposure is added only when the expected edge beats the expected round-trip cost.

On the E-mini sample the models' one-bar edge rarely covers a round trip (half a tick of
slippage and 1 USD of fees each way: ~1.8 bp of an ES contract), so the default replay trades
far less than the ungated one; it still trades, and so does a 120,000-tick slice trained with
``train --ticks``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from jobs.cli import main
from tests._replay_fixture import Replay, ReplayPool, pool_fixture
from topics.messages import OrderIntent, Signal

replays = pool_fixture()

ES_MULTIPLIER = 50.0
ES_TICK = 0.25
SLIPPAGE_TICKS = 0.5  # ExecConfig default
FEE_PER_CONTRACT = 1.0  # AccountConfig default
ROWS = 120_000


@pytest.fixture(scope="module")
def gated(replays: ReplayPool) -> Replay:
    return replays.get("default")


def _round_trip(price: float) -> float:
    """Two legs of half a tick of slippage plus the per-contract fee, over the notional."""
    leg = SLIPPAGE_TICKS * ES_TICK * ES_MULTIPLIER + FEE_PER_CONTRACT
    return 2 * leg / (price * ES_MULTIPLIER)


def test_exposure_grows_only_where_the_edge_beats_the_round_trip_cost(gated: Replay) -> None:
    signals = {s.decision_id: s for s in gated.topic("signals") if isinstance(s, Signal)}
    intents: list[OrderIntent] = gated.topic("orders.intents")
    prev = 0.0
    added = held_back = 0
    for it in intents:
        z = it.sizing
        s = signals[it.decision_id]
        edge = abs(s.signal) * math.sqrt(2 / math.pi) * z["sigma_forecast"]
        assert z["expected_edge"] == pytest.approx(edge, rel=1e-12)
        assert z["round_trip_cost"] == pytest.approx(_round_trip(it.reference_price), rel=1e-12)
        t = it.target_position
        grows = abs(t) > abs(prev) or t * prev < 0
        if grows:
            assert z["expected_edge"] > z["round_trip_cost"], it.decision_id
            added += 1
        if z["cost_gated"]:
            held_back += 1
            assert z["expected_edge"] <= z["round_trip_cost"]
            assert not grows and t != z["ideal_position"]
        prev = t
    assert added > 0, "the gate let nothing through: the default replay would not trade"
    assert held_back == gated.summary["cost_gated"] > added


def test_the_default_replay_still_trades_and_trades_less_than_without_the_gate(
        gated: Replay, replays: ReplayPool) -> None:
    s, ungated = gated.summary, replays.get("base").summary
    assert s["orders"] > 0 and s["fills"] > 0
    assert s["turnover"] < ungated["turnover"]
    assert s["fees"] < ungated["fees"]
    assert s["orders"] < ungated["orders"]
    assert ungated["cost_gated"] == 0


def test_a_120k_tick_slice_trained_with_train_ticks_still_trades(
        emini_ticks_path: Path, tmp_path: Path) -> None:
    ticks = tmp_path / "es.csv"
    with emini_ticks_path.open() as src, ticks.open("w") as dst:
        src.readline()  # DateTime,Price,Volume
        dst.write("ts,price,size\n")
        for n, line in enumerate(src):
            if n >= ROWS:
                break
            dst.write(line)
    common = ["--ticks", str(ticks), "--symbol", "ES", "--tz", "America/Chicago", "--quiet"]
    assert main(["train", *common, "--out", str(tmp_path / "models")]) == 0
    assert main(["run", *common, "--models", str(tmp_path / "models"), "--out",
                 str(tmp_path / "run"), "--summary-json", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["orders"] > 0 and s["fills"] > 0
    assert s["cost_gated"] > 0  # the gate was on and did hold exposure back
