"""Every ``Emit.key`` is the record key Kafka partitions by, and the key its consumer uses.

A Kafka host writes each output with ``Emit.key`` as the record key, so the key must be the
one the topic catalog declares for that topic (``topics.catalog``: the value's ``symbol``,
``account`` or ``decision_id`` field, empty for unkeyed topics); and a consuming stage reads
the record from the partition its key hashes to, so the consumer's ``key()`` of the value must
be that same key (co-partitioning: no repartition topic needed). Checked on every message of a
real replay: the E-mini prefix through normalize, window features and the decision chain with
a trained bundle, as ``tests._chain_fixture`` runs it, with each operator's calls observed.

One input is keyed differently on purpose: the account consumes ``md.ticks`` (keyed by symbol)
under its account key, i.e. market data is broadcast to the account (issue 6 splits the
account so market data reaches the accounts that trade a symbol). The test pins that as a
broadcast: every tick maps to the one configured account.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from operators.contract import Emit, Operator
from operators.infer import Infer
from operators.learn import Learn
from tests._chain_fixture import chain_run
from topics.catalog import topic

BROADCAST = {("md.ticks", "account")}
"""(topic, consuming stage) pairs the host must broadcast rather than co-partition."""


def _observed(op: Operator[Any, Any], log: list[tuple[str, Emit]]) -> None:
    """Record every Emit the operator returns (its methods wrapped on this instance only)."""
    names = ["process", "on_timer"]
    if type(op).process_batch is not Operator.process_batch:  # the default calls process
        names.append("process_batch")
    for name in names:
        inner: Callable[..., tuple[Any, list[Emit]]] = getattr(op, name)

        def wrapped(*args: Any, _inner: Any = inner) -> tuple[Any, list[Emit]]:
            state, outs = _inner(*args)
            log.extend((op.UID, e) for e in outs)
            return state, outs

        setattr(op, name, wrapped)


@pytest.fixture(scope="module")
def replay() -> tuple[Graph, list[tuple[str, Emit]]]:
    """The recorded run again on fresh operators (same configs and wiring), observed."""
    run = chain_run()
    log: list[tuple[str, Emit]] = []
    stages = []
    for st in run.graph.stages:
        old = st.operator
        if isinstance(old, Infer):  # infer needs its model provider and is opened by its host
            op: Any = Infer(old.config, old.model_provider)
            op.open()
        elif isinstance(old, Learn):  # the learner scores its champion: opened the same way
            assert old.champion is not None
            op = Learn(old.config, Infer(old.champion.config, old.champion.model_provider))
            op.open()
        else:
            op = type(old)(old.config)  # type: ignore[call-arg, attr-defined]
        _observed(op, log)
        stages.append(Stage(op, st.inputs, st.outputs, st.merge_inputs))
    graph = Graph(run.graph.source_topic, tuple(stages), run.graph.external)
    runner = LocalRunner(graph, TopicSink(None, graph.output_topics))
    for rec in run.records:
        runner.feed(rec)
    runner.end_of_stream()
    return graph, log


def test_every_emit_key_is_the_catalog_key_of_its_topic(
        replay: tuple[Graph, list[tuple[str, Emit]]]) -> None:
    _, log = replay
    per_topic = Counter(e.topic for _, e in log)
    for t in ("md.ticks", "md.bars", "features", "predictions", "regimes", "signals",
              "orders.intents", "orders", "fills", "risk.rejects", "positions",
              "audit.decisions", "models.updates"):
        assert per_topic[t] > 0, f"the replay produced no {t}"
    for uid, e in log:
        field = topic(e.topic).key
        want = "" if field == "none" else getattr(e.value, field)
        assert e.key == want, f"{uid} emits {e.topic} keyed {e.key!r}, catalog key {want!r}"


def test_every_consumer_keys_a_record_by_its_emit_key(
        replay: tuple[Graph, list[tuple[str, Emit]]]) -> None:
    graph, log = replay
    checked = Counter[tuple[str, str]]()
    broadcast_keys: dict[tuple[str, str], set[str]] = {}
    for _, e in log:
        for st in graph.consumers(e.topic):
            got = st.operator.key(e.value)
            pair = (e.topic, st.uid)
            if pair in BROADCAST:
                broadcast_keys.setdefault(pair, set()).add(got)
                continue
            assert got == e.key, f"{st.uid}.key() of a {e.topic} record is {got!r}, " \
                                 f"the record key is {e.key!r}"
            checked[pair] += 1
    assert set(checked) >= {("md.ticks", "window_features"), ("features", "infer"),
                            ("features", "regime_blend"), ("predictions", "regime_blend"),
                            ("signals", "size"), ("orders.intents", "account")}
    for pair, keys in broadcast_keys.items():
        assert len(keys) == 1, f"{pair}: a broadcast input maps to one key per consumer"
