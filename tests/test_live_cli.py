"""The Kafka commands of the CLI end to end: broker, topics create, produce-ticks, tail,
kill-switch, and the one-line errors users see."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.live.broker import broker_reachable, free_port
from jobs.live.kafka_client import KafkaSettings
from tests._emini_slice import write_slice
from topics.catalog import CATALOG


def _kafka(settings: KafkaSettings) -> list[str]:
    return ["--bootstrap", settings.bootstrap, "--topic-prefix", settings.topic_prefix]


def test_topics_create_reports_created_then_present(
        kafka_settings: KafkaSettings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "create", *_kafka(kafka_settings)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(CATALOG) and all(line.endswith("created") for line in out)
    assert main(["topics", "create", *_kafka(kafka_settings), "--topic", "orders"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{kafka_settings.topic('orders')}  8 partitions  already present"]


def test_produce_tail_and_kill_switch_commands(
        kafka_settings: KafkaSettings, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        emini_ticks_path: Path) -> None:
    ticks = write_slice(emini_ticks_path, tmp_path / "es.csv", 500)
    k = _kafka(kafka_settings)
    assert main(["topics", "create", *k, "--topic", "md.ticks.raw", "--topic", "control"]) == 0
    capsys.readouterr()
    assert main(["produce-ticks", *k, "--ticks", str(ticks), "--tz", "America/Chicago",
                 "--heartbeat-every", "100", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("produced 500 records from es.csv to ")
    # 500 rows + 6 heartbeat rounds (every 100 rows, and a last one) + an end, x 8 partitions
    assert "with 48 heartbeats and 8 end marks" in out and "seq 0..555" in out

    assert main(["tail", "md.ticks.raw", *k, "--from-beginning", "--max", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(json.loads(line) is not None for line in lines)

    assert main(["kill-switch", "on", "--account", "acct-1", "--reason", "drill", *k]) == 0
    assert capsys.readouterr().out.startswith("sent KILL for account acct-1 (all symbols)")
    assert main(["tail", "control", *k, "--from-beginning", "--format", "table"]) == 0
    row = capsys.readouterr().out
    assert "command=KILL" in row and "account=acct-1" in row and "reason=drill" in row


def test_unreachable_broker_is_one_line_exit_1(
        capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    assert main(["kill-switch", "on", "--account", "a", "--reason", "r",
                 "--bootstrap", dead]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"no Kafka broker answered at {dead}" in err


def test_forbidden_kafka_config_property_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "k.properties"
    cfg.write_text("enable.auto.commit=true\n")
    assert main(["tail", "orders", "--bootstrap", "127.0.0.1:9", "--kafka-config",
                 str(cfg)]) == 2
    assert f"{cfg}:1: enable.auto.commit may not be set" in capsys.readouterr().err


def test_broker_command_serves_until_sigterm_then_exits_0(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "broker", "--port", "0",
                             "--log", str(tmp_path / "tansu.log")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "(memory storage: topics are lost when it stops)" in first
        bootstrap = first.split()[3]
        assert broker_reachable(bootstrap, 5.0) is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert broker_reachable(bootstrap, 0.5) is not None  # tansu stopped with us
    finally:
        if proc.poll() is None:
            proc.kill()
