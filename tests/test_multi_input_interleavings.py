"""Multi-input operators give the same outputs whatever the arrival interleaving of their inputs.

A Kafka host reads each input topic from its own partitions: the order within a stream is kept,
the interleaving between streams is not. The regime blend (feature vectors and predictions) and
the account (its feed of trades and commands, sized intents) run here as multi-input stages of
a real graph on the local runner, fed the recorded chain replay's messages
(``tests._chain_fixture``) in the recorded order and in random interleavings
(``tests._interleavings``, fixed seeds); every output topic must be byte-identical. The core's
own merge is tested the same way in ``tests/test_event_time_merge.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from operators.account import AccountOperator
from operators.regime_blend import RegimeBlend
from tests._chain_fixture import chain_run
from tests._interleavings import interleave
from tests.operator_cases import ACCOUNT_LATENESS_NS, BLEND_MESSAGES, account_events
from topics.messages import AccountFeed, FeatureVector, OrderIntent, Prediction

SEEDS = (1, 2, 3)
MINUTE = 60_000_000_000
BLEND_JITTER = 10 * MINUTE
"""Predictions and vectors drift up to ten bars apart: the blend has no watermark to wait for."""
ACCOUNT_OUTPUTS = ("orders", "fills", "risk.rejects", "positions", "audit.decisions")


def _bytes(sink: TopicSink, topics: Sequence[str]) -> dict[str, bytes]:
    assert sink.captured is not None
    enc = msgspec.json.Encoder()
    return {t: b"\n".join(enc.encode(v) for v in sink.captured[t]) for t in topics}


def _run(graph: Graph, outputs: tuple[str, ...], arrivals: list[tuple[str, Any]],
         lateness_ns: int, watermark_topic: str) -> dict[str, bytes]:
    sink = TopicSink(None, outputs, capture=True)
    runner = LocalRunner(graph, sink, lateness_ns=lateness_ns, watermark_topic=watermark_topic)
    for topic, value in arrivals:
        if topic == graph.source_topic:
            runner.feed(value)
        else:
            runner.inject(topic, value)
    runner.end_of_stream()
    return _bytes(sink, outputs)


# ------------------------------------------------------------------------------ regime blend

BLEND_INPUTS = ("features", "predictions")
BLEND_OUTPUTS = ("regimes", "signals")


@pytest.fixture(scope="module")
def blend_streams() -> tuple[list[Any], list[Any]]:
    msgs = chain_run().consumed(BLEND_INPUTS)[:BLEND_MESSAGES]
    vectors = [m for m in msgs if isinstance(m, FeatureVector)]
    preds = [m for m in msgs if isinstance(m, Prediction)]
    assert len(preds) > 100
    return vectors, preds


def _blend_graph() -> Graph:
    blend = RegimeBlend(chain_run().operators["regime_blend"].config)  # type: ignore[attr-defined]
    return Graph("features", (Stage(blend, BLEND_INPUTS, BLEND_OUTPUTS),),
                 external=("predictions",))


def test_regime_blend_outputs_ignore_the_interleaving_of_vectors_and_predictions(
        blend_streams: tuple[list[Any], list[Any]]) -> None:
    recorded = [(t, v) for t, v in chain_run().log if t in BLEND_INPUTS][:BLEND_MESSAGES]
    reference = _run(_blend_graph(), BLEND_OUTPUTS, recorded, 0, "features")
    assert reference["signals"], "the blend decided nothing"
    for seed in SEEDS:
        order = [(BLEND_INPUTS[s], v) for s, v in interleave(blend_streams, BLEND_JITTER, seed)]
        assert order != recorded
        assert _run(_blend_graph(), BLEND_OUTPUTS, order, 0, "features") == reference, seed


# ------------------------------------------------------------------------------ account

ACCOUNT_INPUTS = ("account.feed", "orders.intents")


@pytest.fixture(scope="module")
def account_streams() -> tuple[list[Any], list[Any]]:
    events = account_events()
    streams = ([e for e in events if isinstance(e, AccountFeed)],
               [e for e in events if isinstance(e, OrderIntent)])
    assert streams[1] and sum(f.control is not None for f in streams[0]) == 2
    return streams


def _account_graph() -> Graph:
    account = AccountOperator(chain_run().operators["account"].config)  # type: ignore[attr-defined]
    return Graph("account.feed", (Stage(account, ("orders.intents", "account.feed"),
                                        ACCOUNT_OUTPUTS),),
                 external=("orders.intents",))


def test_account_outputs_ignore_the_interleaving_of_its_feed_and_intents(
        account_streams: tuple[list[Any], list[Any]]) -> None:
    events = account_events()
    recorded = [("orders.intents" if isinstance(e, OrderIntent) else "account.feed", e)
                for e in events]
    reference = _run(_account_graph(), ACCOUNT_OUTPUTS, recorded, ACCOUNT_LATENESS_NS,
                     "account.feed")
    assert reference["orders"] and reference["fills"] and reference["risk.rejects"]
    for seed in SEEDS:
        order = [(ACCOUNT_INPUTS[s], v)
                 for s, v in interleave(account_streams, ACCOUNT_LATENESS_NS, seed)]
        assert order != recorded
        got = _run(_account_graph(), ACCOUNT_OUTPUTS, order, ACCOUNT_LATENESS_NS,
                   "account.feed")
        assert got == reference, seed
