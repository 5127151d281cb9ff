"""Kafka settings: validation, client configurations, config files and secret redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.errors import UsageError
from jobs.live.kafka_client import (
    CONSUMER_DEFAULTS,
    FORBIDDEN,
    PRODUCER_DEFAULTS,
    KafkaSettings,
    ck,
    load_kafka_config,
)
from topics.catalog import CATALOG

SECRET = "hunter2-s3cr3t-value"


def test_topic_prefix_maps_catalog_names_both_ways() -> None:
    s = KafkaSettings("127.0.0.1:9092", "dev.")
    for name in CATALOG:
        assert s.topic(name) == f"dev.{name}"
        assert s.catalog_name(s.topic(name)) == name
    with pytest.raises(ValueError, match="prefix"):
        s.catalog_name("orders")
    with pytest.raises(KeyError, match="known topics"):
        s.topic("no.such.topic")


@pytest.mark.parametrize("bootstrap", ["", "localhost", "host:0", "host:99999", "a:1,,b:2",
                                       "http://h:9092"])
def test_bad_bootstrap_is_a_usage_error(bootstrap: str) -> None:
    with pytest.raises(UsageError, match="--bootstrap"):
        KafkaSettings(bootstrap)


def test_bootstrap_accepts_host_port_lists_and_ipv6() -> None:
    assert KafkaSettings("k1.example.com:9092,10.0.0.2:9093,[::1]:9094").bootstrap


@pytest.mark.parametrize("prefix", ["dev/", "a b.", "ü.", "x" * 240])
def test_illegal_topic_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(UsageError, match="--topic-prefix"):
        KafkaSettings("h:1", prefix)


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_properties_we_own_cannot_be_set(name: str) -> None:
    with pytest.raises(UsageError, match=name):
        KafkaSettings("h:1", properties=((name, "x"),))


def test_user_properties_override_defaults_and_code_overrides_win() -> None:
    s = KafkaSettings("h:1", properties=(("linger.ms", "20"), ("fetch.wait.max.ms", "50")))
    assert s.producer_conf()["linger.ms"] == "20"
    assert s.producer_conf(**{"linger.ms": 1})["linger.ms"] == 1
    c = s.consumer_conf(**{"group.id": "g"})
    assert c["fetch.wait.max.ms"] == "50"
    assert c["bootstrap.servers"] == "h:1"
    assert c["auto.offset.reset"] == "error" and c["enable.auto.commit"] is False
    assert s.producer_conf()["partitioner"] == "murmur2_random"


def test_librdkafka_knows_every_default_property() -> None:
    """Creating clients validates property names and values (no broker is contacted)."""
    s = KafkaSettings("127.0.0.1:9")
    ck.Consumer(s.consumer_conf(**{"group.id": "g"})).close()
    ck.Producer(s.producer_conf()).flush(0)
    assert set(CONSUMER_DEFAULTS) >= {"fetch.queue.backoff.ms", "queued.min.messages"}
    assert PRODUCER_DEFAULTS["enable.idempotence"] is True


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "client.properties"
    p.write_text(text)
    return p


def test_config_file_substitutes_environment_and_redacts_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQ_TEST_PASSWORD", SECRET)
    path = _write(tmp_path, f"""# security
security.protocol = SASL_SSL

sasl.mechanism=PLAIN
sasl.username=alice
sasl.password=${{SQ_TEST_PASSWORD}}
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule password="{SECRET}"
ssl.key.password=pre-${{SQ_TEST_PASSWORD}}-post
client.id=a=b
""")
    props = dict(load_kafka_config(path))
    assert props["sasl.password"] == SECRET
    assert props["ssl.key.password"] == f"pre-{SECRET}-post"
    assert props["security.protocol"] == "SASL_SSL"
    assert props["client.id"] == "a=b"  # only the first '=' separates
    s = KafkaSettings("h:1", properties=load_kafka_config(path))
    red = s.redacted()
    assert SECRET not in repr(red)
    assert red["sasl.password"] == red["sasl.jaas.config"] == red["ssl.key.password"] == "***"
    assert red["sasl.username"] == "alice"
    assert red["bootstrap.servers"] == "h:1"
    assert s.producer_conf()["sasl.password"] == SECRET  # the clients do get it


def test_missing_environment_variable_names_it_not_a_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SQ_TEST_UNSET", raising=False)
    path = _write(tmp_path, f"sasl.username={SECRET}\nsasl.password=${{SQ_TEST_UNSET}}\n")
    with pytest.raises(UsageError) as e:
        load_kafka_config(path)
    assert "SQ_TEST_UNSET" in str(e.value) and f"{path}:2" in str(e.value)
    assert SECRET not in str(e.value)


@pytest.mark.parametrize(("text", "line", "words"), [
    ("a.b=1\nsasl.password " + SECRET + "\n", 2, "name=value"),
    ("# c\n\n=" + SECRET + "\n", 3, "name=value"),
    ("bootstrap.servers=h:1\n", 1, "--bootstrap"),
    ("group.id=x\n", 1, "group.id"),
    ("linger.ms=1\nlinger.ms=2\n", 2, "already set on line 1"),
    ("bad name=" + SECRET + "\n", 1, "property name"),
])
def test_malformed_config_lines_name_file_and_line_never_the_value(
        tmp_path: Path, text: str, line: int, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UsageError) as e:
        load_kafka_config(path)
    assert f"{path}:{line}" in str(e.value)
    assert words in str(e.value)
    assert SECRET not in str(e.value)


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_kafka_config(tmp_path / "nope.properties")
