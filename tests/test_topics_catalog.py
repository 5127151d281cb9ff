"""The topic catalog and the one JSON encoding are the public contract: pin their behaviour."""

from __future__ import annotations

import json

import msgspec
import pytest

from topics import messages as m
from topics.catalog import CATALOG, TopicSpec, topic
from topics.serde import decode, encode, encode_many, json_schema

PUBLIC = ("md.ticks.raw", "md.ticks", "md.ticks.dlq", "md.ticks.late", "md.bars", "features",
          "predictions", "regimes", "signals", "orders.intents", "orders", "risk.rejects",
          "fills", "positions", "audit.decisions", "models.updates", "control", "account.feed",
          "venue.reports", "orders.cancels", "control.applied")


def test_catalog_has_exactly_the_public_topic_names() -> None:
    assert tuple(CATALOG) == PUBLIC


def test_trader_topics_are_keyed_by_account_and_kept() -> None:
    for name in ("orders", "fills", "risk.rejects"):
        spec = topic(name)
        assert spec.key == "account"
        assert spec.retention_ms is None
    assert topic("positions").compacted


def test_every_schema_is_frozen_and_versioned() -> None:
    for spec in CATALOG.values():
        cfg = spec.schema.__struct_config__
        assert cfg.frozen, spec.name
        if spec.name != "md.ticks.raw":
            assert "ts_event" in spec.schema.__struct_fields__
            assert "schema_version" in spec.schema.__struct_fields__


def test_unknown_topic_error_lists_known_names() -> None:
    with pytest.raises(KeyError, match=r"known topics: md\.ticks\.raw"):
        topic("order")


def test_topic_spec_validates_partitions() -> None:
    with pytest.raises(ValueError, match="partitions"):
        TopicSpec("x", m.Tick, "symbol", 0, None, False, "", "")


def _order() -> m.Order:
    return m.Order(ts_event=1_378_072_800_083_000_000, client_order_id="c1", parent_order_id="p1",
                   decision_id="d1", account="acct", symbol="ES", side="BUY", quantity=2.0,
                   order_type="LIMIT", limit_price=1640.25, time_in_force="DAY",
                   algo="TWAP", slice="1/4", venue="CME")


def test_order_round_trips_through_json_bytes_exactly() -> None:
    o = _order()
    data = encode(o)
    assert decode("orders", data) == o
    assert encode(decode("orders", data)) == data
    assert json.loads(data)["ts_event"] == 1_378_072_800_083_000_000  # int ns, not float


def test_encoding_is_field_order_and_compact() -> None:
    data = encode(_order())
    assert data.startswith(b'{"ts_event":1378072800083000000,"schema_version":1,"client_order_id"')
    assert b" " not in data
    lines = encode_many([_order(), _order()])
    assert lines == data + b"\n" + data + b"\n"


def test_decode_rejects_wrong_types_with_field_name() -> None:
    bad = encode(_order()).replace(b'"quantity":2.0', b'"quantity":"two"')
    with pytest.raises(msgspec.ValidationError, match="quantity"):
        decode("orders", bad)


def test_reject_reasons_carry_code_limit_and_proposed() -> None:
    r = m.RiskReject(ts_event=1, decision_id="d", account="a", symbol="ES", side="SELL",
                     requested_quantity=10, allowed_quantity=3,
                     reasons=(m.Reason(code="MAX_NOTIONAL", message="too big", limit=5e6,
                                       proposed=8.2e6),))
    back = decode("risk.rejects", encode(r))
    assert back.reasons[0].code == "MAX_NOTIONAL"
    assert back.allowed_quantity == 3


@pytest.mark.parametrize("name", PUBLIC)
def test_json_schema_export_validates_structure(name: str) -> None:
    schema = json_schema(name)
    assert "streamquant topic " + name in schema["$comment"]
    ref = schema["$ref"].split("/")[-1]
    props = schema["$defs"][ref]["properties"]
    for field in topic(name).schema.__struct_fields__:
        assert field in props


def test_committed_kafka_manifests_match_the_catalog() -> None:
    from pathlib import Path

    from topics.deploy import strimzi_manifests

    committed = (Path(__file__).parent.parent / "deploy" / "kafka-topics.yaml").read_text()
    assert committed == strimzi_manifests(), "regenerate: streamquant topics strimzi > deploy/…"
    docs = committed.split("\n---\n")
    assert len(docs) == len(CATALOG)
    for doc, spec in zip(docs, CATALOG.values(), strict=True):
        assert f"  topicName: {spec.name}\n" in doc
        assert f"  partitions: {spec.partitions}\n" in doc
        assert f'cleanup.policy: "{spec.cleanup_policy}"' in doc
    assert 'retention.ms: "-1"' in docs[list(CATALOG).index("orders")]


def test_topic_name_constants_are_exactly_the_catalog() -> None:
    """Code names topics through ``topics.names``; every constant is a catalog topic and every
    catalog topic has its constant."""
    from topics import names

    spelled = {v for k, v in vars(names).items() if k.isupper()}
    assert spelled == set(CATALOG)


def test_stage_operators_name_no_topic_by_a_string_literal() -> None:
    """The graph and the operators that emit use the constants (``topics/names.py``)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = [*root.glob("operators/*.py"), root / "jobs" / "topology.py",
             root / "jobs" / "batch_replay.py", root / "jobs" / "event_replay.py"]
    found = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("Emit", "Stage"):
                for arg in ast.walk(node):
                    if isinstance(arg, ast.Constant) and arg.value in CATALOG:
                        found.append(f"{f.name}:{arg.lineno} {arg.value!r}")
    assert not found
