"""The live path on a real broker: the same orders as the embedded run, through crashes too.

Each test has its own topics (a prefix) on the session's tansu; the pipeline runs as the CLI
process a data engineer starts (``run --bootstrap``), fed by ``produce-ticks`` with a slice of
the real E-mini trades, and is read back the way a trader reads it. The reference is the
embedded run of the same file with the same models and flags.
"""

from __future__ import annotations

import json
import random
import re
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
    checkpoint_mtime,
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
        before = checkpoint_mtime(ck)
        live = start_live(kafka_settings, models, ck, *flags, env=env)
        if env is None:  # a random moment once this run is under way, early enough that the
            # fault runs after it still reach their second checkpoint on a fast machine
            live.wait_for_checkpoint(ck, before)
            time.sleep(rng.uniform(0.0, 0.5))
            assert live.proc.poll() is None, live.stderr()
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


def test_bad_records_go_to_the_dlq_with_their_source_and_the_run_goes_on(
        kafka_settings: KafkaSettings, tmp_path: Path, workdir: Path, models: Path) -> None:
    from jobs.live import wire
    from jobs.live.kafka_client import ck

    create_catalog_topics(kafka_settings)
    produce(kafka_settings, emini_slice(workdir, 40_000, 45_000), "--no-end")
    # what a broken or foreign producer might write, in the middle of the stream
    p = ck.Producer(kafka_settings.producer_conf())
    raw = kafka_settings.topic(tn.MD_TICKS_RAW)
    p.produce(raw, b'{"ts": 1, "price": 1}', b"ES", partition=0)  # no headers at all
    p.produce(raw, b"{}", b"ES", partition=0,
              headers=[(wire.SCHEMA, b"2"), (wire.SEQ, b"999999")])  # a future schema
    p.produce(raw, b"not json", b"ES", partition=0,
              headers=wire.source_headers(1_000_000))  # sequenced, but garbage
    p.produce(kafka_settings.topic(tn.CONTROL), b'{"command": "EXPLODE"}', b"paper",
              headers=[(wire.SCHEMA, wire.SCHEMA_VERSION_BYTES)])
    p.produce(kafka_settings.topic(tn.CONTROL), b'{"command": "KILL"}', b"paper")  # no headers
    p.flush(10)
    produce(kafka_settings, emini_slice(workdir, 45_000, 50_000))
    live = start_live(kafka_settings, models, tmp_path / "ck", "--summary-json",
                      str(tmp_path / "summary.json"))
    assert live.wait() == 0, live.stderr()
    dead = [json.loads(r.value) for r in read_topic(kafka_settings, tn.MD_TICKS_DLQ)]
    got = {(d["reason"], d["source"]["topic"], d["source"]["partition"]) for d in dead}
    assert got == {("BAD_HEADER", tn.MD_TICKS_RAW, 0), ("UNKNOWN_SCHEMA", tn.MD_TICKS_RAW, 0),
                   ("BAD_JSON", tn.MD_TICKS_RAW, 0), ("BAD_CONTROL", tn.CONTROL, 0),
                   ("BAD_HEADER", tn.CONTROL, 0)}
    assert all("offset" in d["source"] for d in dead)
    unknown = next(d for d in dead if d["reason"] == "UNKNOWN_SCHEMA"
                   and d["source"]["topic"] == tn.MD_TICKS_RAW)
    assert "unknown schema version '2'" in unknown["detail"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ticks_released"] == 10_001  # every good tick and the garbage one
    assert summary["dlq_by_reason"]["BAD_JSON"] == 1
    assert not read_topic(kafka_settings, tn.CONTROL_APPLIED)


def test_a_paused_broker_makes_the_run_wait_and_resume_without_loss(
        tmp_path: Path, ticks: Path, models: Path, embedded: Path) -> None:
    from jobs.live.broker import Broker

    with Broker(log_path=tmp_path / "tansu.log") as b:
        settings = KafkaSettings(b.bootstrap, "outage.")
        create_catalog_topics(settings)
        produce(settings, ticks)
        live = start_live(settings, models, tmp_path / "ck", "--checkpoint-wall", "0.5")
        deadline = time.monotonic() + 120
        # trading is under way: a progress line with orders (any number: on a fast machine the
        # first line already shows hundreds)
        while not re.search(r"orders [1-9]", live.stderr()):
            assert time.monotonic() < deadline and live.proc.poll() is None, live.stderr()
            time.sleep(0.05)
        b.pause()  # SIGSTOP: the broker neither answers nor closes connections
        time.sleep(12)
        b.resume()
        assert live.wait() == 0, live.stderr()
        assert "not answering" in live.stderr()
        for t in TRADER_TOPICS:
            copies = first_copies(read_topic(settings, t, committed=False))
            assert by_position(copies) == file_lines(embedded / f"{t}.jsonl"), t


def test_a_broker_that_lost_its_data_stops_the_run_with_a_clear_error(
        kafka_settings: KafkaSettings, tmp_path: Path, workdir: Path, models: Path) -> None:
    from jobs.live.admin import delete_topics
    from topics.catalog import CATALOG

    ck = tmp_path / "ck"
    missing = start_live(kafka_settings, models, ck)  # no topics yet
    assert missing.wait() == 1
    assert "topics create" in missing.stderr()
    create_catalog_topics(kafka_settings)
    produce(kafka_settings, emini_slice(workdir, 40_000, 45_000))
    first = start_live(kafka_settings, models, ck)
    assert first.wait() == 0, first.stderr()
    # the broker "restarts" empty: same topics, no records
    delete_topics(kafka_settings, list(CATALOG))
    create_catalog_topics(kafka_settings)
    again = start_live(kafka_settings, models, ck)
    assert again.wait() == 1
    assert "lost data" in again.stderr() and "Refusing to reset silently" in again.stderr()


def test_sigterm_drains_checkpoints_and_a_restart_adds_nothing(
        kafka_settings: KafkaSettings, tmp_path: Path, workdir: Path, models: Path) -> None:
    import signal

    create_catalog_topics(kafka_settings)
    produce(kafka_settings, emini_slice(workdir, 40_000, 70_000))
    ck = tmp_path / "ck"
    live = start_live(kafka_settings, models, ck, until_end=False)
    deadline = time.monotonic() + 120
    while "source ended" not in live.stderr() and "caught up" not in live.stderr():
        assert time.monotonic() < deadline and live.proc.poll() is None, live.stderr()
        time.sleep(0.2)
    live.proc.send_signal(signal.SIGTERM)
    assert live.wait() == 0, live.stderr()
    assert (ck / "checkpoint.msgpack").is_file()
    before = {t: len(read_topic(kafka_settings, t, committed=False)) for t in TRADER_TOPICS}
    assert before[tn.ORDERS] > 0
    again = start_live(kafka_settings, models, ck)  # --until-end: the source already ended
    assert again.wait() == 0, again.stderr()
    assert "resuming from" in again.stderr()
    after = {t: len(read_topic(kafka_settings, t, committed=False)) for t in TRADER_TOPICS}
    assert after == before


def test_a_command_applied_before_a_crash_is_applied_again_at_its_recorded_time(
        kafka_settings: KafkaSettings, tmp_path: Path, workdir: Path, models: Path) -> None:
    create_catalog_topics(kafka_settings)
    produce(kafka_settings, emini_slice(workdir, 40_000, 100_000), "--no-end")
    ck = tmp_path / "ck"
    never = ("--checkpoint-every", "1000000000", "--checkpoint-wall", "3600",
             "--checkpoint-interval", "off")  # nothing is committed before the crash
    live = start_live(kafka_settings, models, ck, *never)
    deadline = time.monotonic() + 120
    while "released 60,000 " not in live.stderr():
        assert time.monotonic() < deadline and live.proc.poll() is None, live.stderr()
        time.sleep(0.2)
    kill_switch(kafka_settings, True, "paper", "before the crash")
    while "control KILL" not in live.stderr():
        assert time.monotonic() < deadline, live.stderr()
        time.sleep(0.1)
    live.kill()
    assert not (ck / "checkpoint.msgpack").exists()
    again = start_live(kafka_settings, models, ck, *never)
    produce(kafka_settings, emini_slice(workdir, 100_000, 160_000))
    assert again.wait() == 0, again.stderr()
    assert "re-applied at its recorded time" in again.stderr()
    applied = first_copies(read_topic(kafka_settings, tn.CONTROL_APPLIED, committed=False))
    assert len(applied) == 1  # applied once; any repeat is the same message
    control = tmp_path / "control.jsonl"
    control.write_bytes(next(iter(applied.values())) + b"\n")
    topics = _embedded(tmp_path, emini_slice(workdir), models, "replayed", "--control",
                       str(control))
    orders = by_position(first_copies(read_topic(kafka_settings, tn.ORDERS, committed=False)))
    assert orders == file_lines(topics / "orders.jsonl")
