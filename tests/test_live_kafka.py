"""The live path on a real broker: the same orders as the embedded run, through crashes too.

Each test has its own topics (a prefix) on the session's tansu; the pipeline runs as the CLI
process a data engineer starts (``run --bootstrap``), fed by ``produce-ticks`` with a slice of
the real E-mini trades, and is read back the way a trader reads it. The reference is the
embedded run of the same file with the same models and flags.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import msgspec
import pytest

from jobs.live.kafka_client import KafkaSettings
from jobs.live.kill_switch import kill_switch
from tests._kafka import create_catalog_topics
from tests._live import (
    FILE_FLAGS,
    TRADE_FLAGS,
    by_position,
    cli,
    count_by,
    emini_slice,
    file_lines,
    first_copies,
    produce,
    read_topic,
    start_live,
)
from tests._replay_fixture import ReplayPool, pool_fixture
from topics import names as tn
from topics.messages import Control, Order

replays = pool_fixture()

TRADER_TOPICS = (tn.ORDERS, tn.FILLS, tn.RISK_REJECTS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live")


@pytest.fixture(scope="module")
def models(replays: ReplayPool) -> Path:
    return replays.models


@pytest.fixture(scope="module")
def ticks(workdir: Path) -> Path:
    return emini_slice(workdir)


def _embedded(workdir: Path, ticks: Path, models: Path, name: str, *extra: str) -> Path:
    out = workdir / name
    r = cli("run", "--ticks", str(ticks), *FILE_FLAGS, "--models", str(models), *TRADE_FLAGS,
            "--out", str(out), "--quiet", "--no-report-html", *extra)
    assert r.returncode == 0, r.stderr
    return out / "topics"


@pytest.fixture(scope="module")
def embedded(workdir: Path, ticks: Path, models: Path) -> Path:
    """The embedded run's topic files (the reference)."""
    topics = _embedded(workdir, ticks, models, "embedded")
    for t in TRADER_TOPICS:
        assert file_lines(topics / f"{t}.jsonl"), f"the reference run has no {t}"
    return topics


def test_live_run_gives_the_embedded_orders_fills_and_rejects(
        kafka_settings: KafkaSettings, tmp_path: Path, ticks: Path, models: Path,
        embedded: Path) -> None:
    create_catalog_topics(kafka_settings)
    produce(kafka_settings, ticks)
    live = start_live(kafka_settings, models, tmp_path / "ck", "--out", str(tmp_path / "out"))
    assert live.wait() == 0, live.stderr()
    for t in TRADER_TOPICS:
        records = read_topic(kafka_settings, t)
        assert max(count_by(records).values()) == 1  # one run, committed: no duplicates
        assert [r.value for r in records] == file_lines(embedded / f"{t}.jsonl"), t
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ended"] is True
    assert summary["ticks_released"] == 120_000
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["mode"] == "live"


def test_kill_minus_nine_at_random_moments_loses_no_order_and_duplicates_are_identical(
        kafka_settings: KafkaSettings, tmp_path: Path, ticks: Path, models: Path,
        embedded: Path) -> None:
    create_catalog_topics(kafka_settings)
    produce(kafka_settings, ticks)
    ck = tmp_path / "ck"
    rng = random.Random(20261203)
    flags = ("--checkpoint-every", "7000", "--checkpoint-wall", "0.3")
    # two kills at random moments, one in the middle of writing a checkpoint file, one
    # between a transaction's commit and its checkpoint; then a run to the end
    faults: list[dict[str, str] | None] = [None, {"STREAMQUANT_FAULT": "checkpoint-write:2"},
                                           None, {"STREAMQUANT_FAULT": "after-commit:2"}]
    for env in faults:
        live = start_live(kafka_settings, models, ck, *flags, env=env)
        if env is None:
            time.sleep(rng.uniform(2.0, 5.0))
            if live.proc.poll() is None:
                live.kill()
        else:
            assert live.wait() == -9, live.stderr()  # the fault point killed it
    assert (ck / ".checkpoint.msgpack.tmp").exists() or (ck / "checkpoint.msgpack").exists()
    final = start_live(kafka_settings, models, ck, *flags)
    assert final.wait() == 0, final.stderr()
    assert "resuming from" in final.stderr()
    for t in (tn.ORDERS, tn.FILLS, tn.RISK_REJECTS):
        records = read_topic(kafka_settings, t, committed=False)  # aborted ones too
        copies = first_copies(records)  # every duplicate equals its first copy
        assert by_position(copies) == file_lines(embedded / f"{t}.jsonl"), t
    orders = [msgspec.json.decode(v, type=Order)
              for v in first_copies(read_topic(kafka_settings, tn.ORDERS)).values()]
    assert len({o.client_order_id for o in orders}) == len(orders)


def test_kill_switch_through_control_halts_trading_within_one_bar_and_replays(
        kafka_settings: KafkaSettings, tmp_path: Path, workdir: Path, ticks: Path,
        models: Path) -> None:
    create_catalog_topics(kafka_settings)
    head = emini_slice(workdir, 40_000, 100_000)
    tail = emini_slice(workdir, 100_000, 160_000)
    produce(kafka_settings, head, "--no-end")
    live = start_live(kafka_settings, models, tmp_path / "ck")
    deadline = time.monotonic() + 120
    while "released 60,000 " not in live.stderr():  # the head is through the graph
        assert time.monotonic() < deadline, live.stderr()
        assert live.proc.poll() is None, live.stderr()
        time.sleep(0.2)
    sent = kill_switch(kafka_settings, True, "paper", "desk says stop")
    deadline = time.monotonic() + 60
    while "control KILL" not in live.stderr():
        assert time.monotonic() < deadline, live.stderr()
        time.sleep(0.1)
    produce(kafka_settings, tail)
    assert live.wait() == 0, live.stderr()

    applied = [msgspec.json.decode(r.value, type=Control)
               for r in read_topic(kafka_settings, tn.CONTROL_APPLIED)]
    assert [(c.command, c.account, c.reason) for c in applied] == [
        ("KILL", "paper", "desk says stop")]
    stamp = applied[0].ts_event
    assert stamp != sent.ts_event  # stamped with the data watermark, not the sender's clock
    orders = [msgspec.json.decode(r.value, type=Order)
              for r in read_topic(kafka_settings, tn.ORDERS)]
    assert any(o.ts_event < stamp for o in orders)  # it traded before the kill
    bar = 60_000_000_000
    assert not [o for o in orders if o.ts_event > stamp + bar]
    audit = [json.loads(r.value) for r in read_topic(kafka_settings, tn.AUDIT_DECISIONS)]
    after = [d for d in audit if d["ts_event"] > stamp + bar and d.get("risk_checks")]
    assert after and all(d["risk_checks"]["kill_switch_ok"] is False for d in after)

    # the recorded command replays: the embedded run with it gives the live run's orders
    control = tmp_path / "control.applied.jsonl"
    control.write_bytes(b"".join(r.value + b"\n"
                                 for r in read_topic(kafka_settings, tn.CONTROL_APPLIED)))
    both = emini_slice(workdir)
    topics = _embedded(tmp_path, both, models, "replayed", "--control", str(control))
    assert file_lines(topics / "orders.jsonl") == [
        r.value for r in read_topic(kafka_settings, tn.ORDERS)]
