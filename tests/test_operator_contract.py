"""The contract every operator passes, run automatically over every operator in ``operators/``.

Modelled on River's estimator checks: a new operator class is picked up by discovery and the
suite fails until it has a case in ``tests/operator_cases.py`` with real input.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import msgspec
import numpy as np
import pytest

import operators
from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from operators.contract import Operator, SimpleContext, StateMismatchError
from tests.operator_cases import CASES, OperatorCase


def _all_operator_classes() -> list[type[Operator[Any, Any]]]:
    for mod in pkgutil.iter_modules(operators.__path__):
        importlib.import_module(f"operators.{mod.name}")
    found: list[type[Operator[Any, Any]]] = []
    stack: list[type[Any]] = [Operator]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if "UID" in sub.__dict__ and sub.__module__.startswith("operators."):
                found.append(sub)
    return sorted(found, key=lambda c: c.UID)


def _run(case: OperatorCase, events: list[Any], runner: LocalRunner | None = None) -> LocalRunner:
    if runner is None:
        runner = _runner(case)
    for ev in events:
        runner.feed(ev)
    return runner


def _runner(case: OperatorCase) -> LocalRunner:
    op = case.make()
    graph = Graph(case.input_topic, (Stage(op, (case.input_topic,), case.output_topics),))
    sink = TopicSink(None, case.output_topics, capture=True)
    return LocalRunner(graph, sink, lateness_ns=case.lateness_ns, watermark_topic=case.wm_topic)


def _outputs(runner: LocalRunner) -> dict[str, bytes]:
    assert runner.sink.captured is not None
    enc = msgspec.json.Encoder()
    return {t: b"\n".join(enc.encode(v) for v in vs) for t, vs in runner.sink.captured.items()}


def _full_run(case: OperatorCase) -> dict[str, bytes]:
    r = _run(case, case.events())
    r.end_of_stream()
    return _outputs(r)


def test_every_operator_class_has_a_contract_case() -> None:
    uids = {cls.UID for cls in _all_operator_classes()}
    assert uids, "discovery found no operators"
    missing = sorted(uids - set(CASES))
    assert not missing, f"operators without a contract case: {missing}"


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request: pytest.FixtureRequest) -> OperatorCase:
    return CASES[request.param]()


def test_case_produces_output(case: OperatorCase) -> None:
    out = _full_run(case)
    assert sum(len(v) for v in out.values()) > 0, "a contract case must exercise real outputs"


def test_state_snapshot_round_trips(case: OperatorCase) -> None:
    r = _run(case, case.events())
    op = case.make()
    states = r.states(op.UID)
    assert states, "no keyed state after the case's events"
    for state in states.values():
        blob = op.snapshot(state)
        restored = op.restore(blob)
        assert op.snapshot(restored) == blob
        assert msgspec.msgpack.encode(restored) == msgspec.msgpack.encode(state)


def test_snapshot_from_other_operator_or_version_is_refused(case: OperatorCase) -> None:
    r = _run(case, case.events()[:50])
    op = case.make()
    state = next(iter(r.states(op.UID).values()))
    blob = op.snapshot(state)

    class Bumped(type(op)):  # type: ignore[misc]
        STATE_VERSION = type(op).STATE_VERSION + 1

    bumped = Bumped.__new__(Bumped)
    bumped.__dict__.update(op.__dict__)
    with pytest.raises(StateMismatchError):
        bumped.restore(blob)


def test_split_and_restored_run_equals_uninterrupted(case: OperatorCase) -> None:
    events = case.events()
    whole = _full_run(case)
    rng = np.random.default_rng(7)
    for cut in sorted({1, len(events) // 2, *rng.integers(1, len(events), 3).tolist()}):
        first = _run(case, events[:cut])
        blob = first.checkpoint()
        second = _runner(case)
        second.restore(blob)
        _run(case, events[cut:], second)
        second.end_of_stream()
        a, b = _outputs(first), _outputs(second)
        joined = {t: b"\n".join(x for x in (a[t], b[t]) if x) for t in whole}
        assert joined == whole, f"split at {cut} differs from the uninterrupted run"


def test_two_runs_are_identical(case: OperatorCase) -> None:
    assert _full_run(case) == _full_run(case)


def test_process_is_pure_given_state_and_event(case: OperatorCase) -> None:
    """Same (state, event, watermark) twice from a snapshot: same outputs, same next state."""
    events = case.events()
    r = _run(case, events[: len(events) // 2])
    op = case.make()
    nxt = events[len(events) // 2]
    key = op.key(nxt)
    base = r.states(op.UID).get(key) or op.new_state(key)
    blob = op.snapshot(base)
    results = []
    for _ in range(2):
        ctx = SimpleContext(watermark=r.watermark, now=0)
        state, outs = op.process(op.restore(blob), nxt, ctx)
        results.append((op.snapshot(state), [(e.topic, e.key, msgspec.json.encode(e.value))
                                              for e in outs], ctx.timers))
    assert results[0] == results[1]


def test_events_are_not_mutated(case: OperatorCase) -> None:
    events = case.events()
    before = [msgspec.msgpack.encode(e) for e in events]
    r = _run(case, events)
    r.end_of_stream()
    assert [msgspec.msgpack.encode(e) for e in events] == before
    assert all(type(e).__struct_config__.frozen for e in events)


def test_config_is_frozen(case: OperatorCase) -> None:
    op = case.make()
    cfg = getattr(op, "config", None)
    assert cfg is not None, "operators keep their config in .config"
    field = next(iter(getattr(cfg, "__dataclass_fields__", None) or cfg.__struct_fields__))
    with pytest.raises((AttributeError, TypeError)):
        setattr(cfg, field, getattr(cfg, field))
