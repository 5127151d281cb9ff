"""The contract every operator passes, run automatically over every operator in ``operators/``
and once per host in ``tests/contract_hosts.py``.

Modelled on River's estimator checks: a new operator class is picked up by discovery and the
suite fails until it has a case in ``tests/operator_cases.py`` with real input. A new runtime
joins by adding a host: every check then runs on it, and its output bytes must equal the
reference host's.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import msgspec
import numpy as np
import pytest

import operators
from operators.contract import Operator, SimpleContext, StateMismatchError
from tests.contract_hosts import HOSTS, REFERENCE, ContractHost
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


Host = tuple[str, OperatorCase]
"""A host name and the case it runs (the two parametrized fixtures, joined)."""


def _host(run: Host) -> ContractHost:
    name, case = run
    return HOSTS[name](case)


def _run(run: Host, events: list[Any], host: ContractHost | None = None) -> ContractHost:
    if host is None:
        host = _host(run)
    for ev in events:
        host.feed(ev)
    return host


def _full_run(run: Host) -> dict[str, bytes]:
    h = _run(run, run[1].events())
    h.end_of_stream()
    return h.outputs()


_REFERENCE_OUTPUTS: dict[str, dict[str, bytes]] = {}


def _reference_outputs(case_name: str, case: OperatorCase) -> dict[str, bytes]:
    if case_name not in _REFERENCE_OUTPUTS:
        _REFERENCE_OUTPUTS[case_name] = _full_run((REFERENCE, case))
    return _REFERENCE_OUTPUTS[case_name]


def test_every_operator_class_has_a_contract_case() -> None:
    uids = {cls.UID for cls in _all_operator_classes()}
    assert uids, "discovery found no operators"
    missing = sorted(uids - set(CASES))
    assert not missing, f"operators without a contract case: {missing}"


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request: pytest.FixtureRequest) -> OperatorCase:
    return CASES[request.param]()


@pytest.fixture(params=sorted(HOSTS), scope="module")
def host(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def run(host: str, case: OperatorCase) -> Host:
    return host, case


def test_case_produces_output(run: Host) -> None:
    out = _full_run(run)
    assert sum(len(v) for v in out.values()) > 0, "a contract case must exercise real outputs"


def test_host_writes_the_reference_hosts_bytes(run: Host, request: pytest.FixtureRequest
                                               ) -> None:
    case_name = request.node.callspec.params["case"]
    reference = _reference_outputs(case_name, run[1])
    assert _full_run(run) == reference, f"host {run[0]!r} differs from {REFERENCE!r}"


def test_state_snapshot_round_trips(run: Host) -> None:
    case = run[1]
    r = _run(run, case.events())
    op = case.make()
    states = r.states()
    assert states, "no keyed state after the case's events"
    for state in states.values():
        blob = op.snapshot(state)
        restored = op.restore(blob)
        assert op.snapshot(restored) == blob
        assert op.encode_state(restored) == op.encode_state(state)  # opaque codecs too


def test_snapshot_from_other_operator_or_version_is_refused(run: Host) -> None:
    case = run[1]
    r = _run(run, case.events()[:50])
    op = case.make()
    state = next(iter(r.states().values()))
    blob = op.snapshot(state)

    class Bumped(type(op)):  # type: ignore[misc]
        STATE_VERSION = type(op).STATE_VERSION + 1

    bumped = Bumped.__new__(Bumped)
    bumped.__dict__.update(op.__dict__)
    with pytest.raises(StateMismatchError):
        bumped.restore(blob)


def test_split_and_restored_run_equals_uninterrupted(run: Host) -> None:
    events = run[1].events()
    whole = _full_run(run)
    rng = np.random.default_rng(7)
    for cut in sorted({1, len(events) // 2, *rng.integers(1, len(events), 3).tolist()}):
        first = _run(run, events[:cut])
        blob = first.checkpoint()
        second = _host(run)
        second.restore(blob)
        _run(run, events[cut:], second)
        second.end_of_stream()
        a, b = first.outputs(), second.outputs()
        joined = {t: b"\n".join(x for x in (a[t], b[t]) if x) for t in whole}
        assert joined == whole, f"split at {cut} differs from the uninterrupted run"


def test_two_runs_are_identical(run: Host) -> None:
    assert _full_run(run) == _full_run(run)


def test_process_is_pure_given_state_and_event(run: Host) -> None:
    """Same (state, event, watermark) twice from a snapshot: same outputs, same next state."""
    case = run[1]
    events = case.events()
    r = _run(run, events[: len(events) // 2])
    op = case.make()
    nxt = events[len(events) // 2]
    key = op.key(nxt)
    base = r.states().get(key) or op.new_state(key)
    blob = op.snapshot(base)
    results = []
    for _ in range(2):
        ctx = SimpleContext(watermark=r.watermark, now=0)
        state, outs = op.process(op.restore(blob), nxt, ctx)
        results.append((op.snapshot(state), [(e.topic, e.key, msgspec.json.encode(e.value))
                                              for e in outs], ctx.timers))
    assert results[0] == results[1]


def test_events_are_not_mutated(run: Host) -> None:
    events = run[1].events()
    before = [msgspec.msgpack.encode(e) for e in events]
    r = _run(run, events)
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
