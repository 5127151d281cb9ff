"""The kill switch through Redis: operators set it with the CLI, the runtime turns each change
into a ``control`` command (live) or applies what is on at the start (embedded replay).

Real parts only: a redis-server per test, the session's tansu broker, the CLI as processes,
the live run as the process a data engineer starts, on slices of the real E-mini trades.
``kill-switch`` runs in process (``jobs.cli.main``: the same parser and command).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from jobs.cli import main
from jobs.live.kafka_client import KafkaSettings
from jobs.live.redis_watch import FORWARDED_FILE, KillSwitchWatcher, WatchConfig
from jobs.sinks.redis_keys import SWITCH_CHANNEL
from jobs.sinks.redis_replay import replay_controls
from jobs.sinks.redis_server import RedisServer, free_port
from jobs.sinks.redis_switch import read_switches, set_switch
from tests._kafka import create_catalog_topics
from tests._live import (
    FILE_FLAGS,
    TRADE_FLAGS,
    cli,
    emini_slice,
    produce,
    read_topic,
    start_live,
)
from tests._redis import client_of
from tests._replay_fixture import ReplayPool, pool_fixture
from topics import names as tn
from topics.messages import Control, Order, RiskReject

replays = pool_fixture()
BAR_NS = 60_000_000_000


def _wait(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_kill_switch_cli_records_each_change_with_a_new_version_and_publishes_it(
        redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    r = client_of(redis_server)
    sub = r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    sub.subscribe(SWITCH_CHANNEL)
    url = redis_server.url
    steps = [("on", "paper", None, "desk says stop"), ("on", "paper", "ES", "halt ES"),
             ("off", "paper", None, "all clear")]
    for state, account, symbol, reason in steps:
        args = ["kill-switch", state, "--account", account, "--reason", reason, "--redis", url]
        assert main([*args, *(("--symbol", symbol) if symbol else ())]) == 0
        assert "a live run with --redis forwards it to control" in capsys.readouterr().out
    switches = read_switches(r)
    assert switches.version == 3 and switches.epoch
    assert [(s.key, s.state, s.account, s.symbol, s.reason, s.version)
            for s in switches.states] == [
        ("killswitch:paper:ES", "on", "paper", "ES", "halt ES", 2),
        ("killswitch:paper", "off", "paper", None, "all clear", 3)]
    assert all(s.ts > 1_700_000_000 * 10**9 for s in switches.states)  # the operator's clock
    notices: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(notices) < len(steps) and time.monotonic() < deadline:
        m = sub.get_message(timeout=0.5)  # None for the subscription's own confirmation
        if m is not None:
            notices.append(m["data"])
    assert notices == [
        b"killswitch:paper 1", b"killswitch:paper:ES 2", b"killswitch:paper 3"]

    assert main(["kill-switch", "on", "--account", "paper", "--reason", "x"]) == 2
    assert "--bootstrap" in capsys.readouterr().err
    assert main(["kill-switch", "on", "--account", "paper", "--reason", "x", "--redis",
                 f"redis://127.0.0.1:{free_port()}/0"]) == 1
    assert "ConnectionError" in capsys.readouterr().err
    assert read_switches(r).version == 3  # nothing recorded by the failed call


def test_watcher_forwards_each_switch_change_to_control_once_across_restarts(
        kafka_settings: KafkaSettings, redis_server: RedisServer, tmp_path: Path) -> None:
    create_catalog_topics(kafka_settings, [tn.CONTROL])
    r = client_of(redis_server)
    cfg = WatchConfig(redis_server.url, poll_s=0.1)
    set_switch(r, True, "paper", "desk says stop", None, 1)  # set before the pipeline runs
    w = KillSwitchWatcher(cfg, kafka_settings, tmp_path)
    w.start()  # forwards it before the host would read control
    assert w.forwarded == 1
    set_switch(r, True, "paper", "halt ES", "ES", 2)
    _wait(lambda: w.forwarded == 2, "the HALT_SYMBOL")
    w.stop()

    set_switch(r, False, "paper", "all clear", None, 3)  # while the pipeline is down
    w = KillSwitchWatcher(cfg, kafka_settings, tmp_path)  # a restart: same state dir
    w.start()
    assert (w.forwarded, w.already_sent) == (1, 0)  # the RESET only: nothing lost, nothing twice
    # sent to this control topic by 'kill-switch --bootstrap ... --redis ...': not again
    set_switch(r, True, "paper", "both ways", None, 4, sent_to=kafka_settings.topic(tn.CONTROL))
    _wait(lambda: w.already_sent == 1, "the switch the CLI delivered itself")

    # Redis crashes and comes back empty: versions restart at 1 in a new epoch, and a switch
    # set there is a new change even though its version was forwarded before
    redis_server.kill()
    _wait(lambda: w.failures >= 1, "the watcher to notice the outage")
    redis_server.start()
    r = client_of(redis_server)
    assert set_switch(r, True, "paper", "after the crash", None, 5).version == 1
    _wait(lambda: w.forwarded == 2 and w.reconnects == 1, "the switch set after the restart")
    w.stop()

    control = [msgspec.json.decode(x.value, type=Control)
               for x in read_topic(kafka_settings, tn.CONTROL)]
    assert [(c.command, c.account, c.symbol, c.reason, c.ts_event) for c in control] == [
        ("KILL", "paper", None, "desk says stop", 1),
        ("HALT_SYMBOL", "paper", "ES", "halt ES", 2),
        ("RESET", "paper", None, "all clear", 3),
        ("KILL", "paper", None, "after the crash", 5)]
    state = json.loads((tmp_path / FORWARDED_FILE).read_text())
    assert state == {"epoch": read_switches(r).epoch, "versions": {"killswitch:paper": 1}}


def test_live_run_halts_within_one_bar_of_a_redis_kill_switch_and_resumes_after_reset(
        kafka_settings: KafkaSettings, redis_server: RedisServer, tmp_path: Path,
        replays: ReplayPool) -> None:
    create_catalog_topics(kafka_settings)
    head = emini_slice(tmp_path, 40_000, 58_000)  # warm-up, then an hour of trading
    middle = emini_slice(tmp_path, 58_000, 61_000)  # two hours under the kill switch
    tail = emini_slice(tmp_path, 61_000, 64_000)  # trading again after the reset
    produce(kafka_settings, head, "--no-end")
    live = start_live(kafka_settings, replays.models, tmp_path / "ck", "--redis",
                      redis_server.url, "--out", str(tmp_path / "out"))

    def seen(text: str) -> Callable[[], bool]:
        def check() -> bool:
            assert live.proc.poll() is None, live.stderr()
            return text in live.stderr()
        return check

    _wait(seen("released 18,000 "), "the head through the graph")
    assert main(["kill-switch", "on", "--account", "paper", "--reason", "desk says stop",
                 "--redis", redis_server.url]) == 0
    _wait(seen("control KILL"), "the KILL applied")
    produce(kafka_settings, middle, "--no-end")
    _wait(seen("released 21,000 "), "the middle through the graph")
    assert main(["kill-switch", "off", "--account", "paper", "--reason", "all clear",
                 "--redis", redis_server.url]) == 0
    _wait(seen("control RESET"), "the RESET applied")
    produce(kafka_settings, tail)
    assert live.wait() == 0, live.stderr()

    applied = [msgspec.json.decode(x.value, type=Control)
               for x in read_topic(kafka_settings, tn.CONTROL_APPLIED)]
    assert [(c.command, c.account, c.reason) for c in applied] == [
        ("KILL", "paper", "desk says stop"), ("RESET", "paper", "all clear")]
    kill_at, reset_at = applied[0].ts_event, applied[1].ts_event
    orders = [msgspec.json.decode(x.value, type=Order)
              for x in read_topic(kafka_settings, tn.ORDERS)]
    assert any(o.ts_event < kill_at for o in orders)  # it traded before
    assert not [o for o in orders if kill_at + BAR_NS < o.ts_event <= reset_at]
    assert any(o.ts_event > reset_at for o in orders)  # and again after the reset
    rejects = [msgspec.json.decode(x.value, type=RiskReject)
               for x in read_topic(kafka_settings, tn.RISK_REJECTS)]
    halted = [x for x in rejects if kill_at < x.ts_event <= reset_at]
    assert halted and all("KILL_SWITCH" in {c.code for c in x.reasons} for x in halted)
    audit = [json.loads(x.value) for x in read_topic(kafka_settings, tn.AUDIT_DECISIONS)]
    during = [d for d in audit if kill_at + BAR_NS < d["ts_event"] <= reset_at
              and d.get("risk_checks")]
    assert during and all(d["risk_checks"]["kill_switch_ok"] is False for d in during)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["kill_switch_watch"]["forwarded"] == 2
    assert summary["sinks"]["redis"]["failures"] == 0
    assert client_of(redis_server).get("position:paper:ES") == read_topic(
        kafka_settings, tn.POSITIONS)[-1].value


def test_embedded_replay_applies_the_switches_on_at_its_start_and_replays_without_redis(
        redis_server: RedisServer, tmp_path: Path, replays: ReplayPool) -> None:
    r = client_of(redis_server)
    set_switch(r, True, "paper", "ES halted", "ES", 10)
    set_switch(r, True, "paper", "stop", None, 11)
    set_switch(r, False, "paper", "resumed", None, 12)  # off: nothing to apply
    ticks = emini_slice(tmp_path, 40_000, 64_000)
    flags = ("--ticks", str(ticks), *FILE_FLAGS, "--models", str(replays.models), *TRADE_FLAGS,
             "--quiet", "--no-report-html")
    first = cli("run", *flags, "--out", str(tmp_path / "redis"), "--redis", redis_server.url)
    assert first.returncode == 0, first.stderr
    topics = tmp_path / "redis" / "topics"
    assert [msgspec.json.decode(x, type=Control) for x in
            (topics / "control.jsonl").read_bytes().splitlines()] == [
        Control(ts_event=0, command="HALT_SYMBOL", account="paper", symbol="ES",
                reason="ES halted")]
    manifest = json.loads((tmp_path / "redis" / "manifest.json").read_text())
    assert [(a["key"], a["version"]) for a in
            manifest["config"]["kill_switch_from_redis"]["applied"]] == [
        ("killswitch:paper:ES", 1)]
    assert (topics / "orders.jsonl").read_bytes() == b""  # halted from the first bar
    rejects = [msgspec.json.decode(x, type=RiskReject)
               for x in (topics / "risk.rejects.jsonl").read_bytes().splitlines()]
    assert rejects and all("TRADING_HALTED" in {c.code for c in x.reasons} for x in rejects)

    # the recorded commands reproduce the run without Redis
    again = cli("run", *flags, "--out", str(tmp_path / "again"), "--control",
                str(topics / "control.jsonl"))
    assert again.returncode == 0, again.stderr
    for t in (tn.ORDERS, tn.RISK_REJECTS, tn.AUDIT_DECISIONS, tn.POSITIONS):
        assert (tmp_path / "again" / "topics" / f"{t}.jsonl").read_bytes() == (
            topics / f"{t}.jsonl").read_bytes(), t

    # Redis unreachable: the replay goes on without switches and records why
    controls, record = replay_controls(f"redis://127.0.0.1:{free_port()}/0", quiet=True)
    assert controls == [] and "ConnectionError" in record["error"]
