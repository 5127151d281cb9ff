"""The Redis feature store and latest positions, against a real redis-server.

The values in Redis must be what the topics say last (the run's own topic files are the
reference), and Redis must never change what the pipeline trades: a run whose Redis dies
mid-way gives the orders of a run without Redis, byte for byte, and reports the failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from jobs.sinks.redis_keys import AccountTotals, FeatureEntry, account_key, feature_key
from jobs.sinks.redis_server import RedisServer
from jobs.sinks.redis_store import RedisStoreConfig, RedisTap
from tests._live import ROOT
from tests._redis import client_of
from tests._replay_fixture import ReplayPool, pool_fixture
from topics import names as tn
from topics.messages import FeatureVector, Position
from topics.serde import decode, encode

replays = pool_fixture()


def _last_by(lines: list[bytes], topic: str, key: tuple[str, ...]) -> dict[tuple[str, ...], bytes]:
    """The last message per key (field values) of a topic file's lines, as bytes."""
    out: dict[tuple[str, ...], bytes] = {}
    for line in lines:
        msg = decode(topic, line)
        out[tuple(getattr(msg, k) for k in key)] = line
    return out


def _check_store(server: RedisServer, topics: Path, ttl_s: int) -> None:
    """Redis holds each symbol's last feature vector (with its TTL), each account/symbol's
    last position (the topic's bytes) and account totals over them."""
    r = client_of(server)
    feats = _last_by((topics / "features.jsonl").read_bytes().splitlines(), tn.FEATURES,
                     ("symbol", "timeframe", "feature_version"))
    assert feats
    for (symbol, timeframe, version), line in feats.items():
        v = msgspec.json.decode(line, type=FeatureVector)
        key = feature_key(symbol, timeframe, version)
        entry = msgspec.json.decode(r.get(key), type=FeatureEntry)  # type: ignore[arg-type]
        assert (entry.ts_event, entry.ts_closed, entry.close) == (v.ts_event, v.ts_closed,
                                                                  v.close)
        assert list(entry.features) == list(FeatureVector.NAMES)
        assert tuple(entry.features.values()) == v.values()
        assert entry.ttl_s == ttl_s
        assert 0 < r.ttl(key) <= ttl_s
    positions = _last_by((topics / "positions.jsonl").read_bytes().splitlines(), tn.POSITIONS,
                         ("account", "symbol"))
    assert positions
    for (account, symbol), line in positions.items():
        assert r.get(f"position:{account}:{symbol}") == line
        assert r.ttl(f"position:{account}:{symbol}") == -1  # state, not cache: no TTL
    for account in {a for a, _ in positions}:
        mine = [msgspec.json.decode(v, type=Position) for (a, _), v in positions.items()
                if a == account]
        totals = msgspec.json.decode(r.get(account_key(account)),  # type: ignore[arg-type]
                                     type=AccountTotals)
        assert totals.realized_pnl == pytest.approx(sum(p.realized_pnl for p in mine))
        assert totals.fees == pytest.approx(sum(p.fees for p in mine))
        assert totals.net_pnl == pytest.approx(
            totals.realized_pnl + totals.unrealized_pnl - totals.fees)
        newest = max(mine, key=lambda p: p.ts_event)
        assert (totals.ts_event, totals.equity) == (newest.ts_event, newest.equity)
        assert totals.positions == {p.symbol: p.quantity for p in mine}
    r.close()


def test_embedded_run_keeps_its_orders_when_redis_dies_and_rewrites_the_store_when_it_returns(
        replays: ReplayPool, redis_server: RedisServer, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = cli_popen("run", "--models", str(replays.models), "--no-cost-gate", "--out",
                     str(out), "--quiet", "--no-report-html", "--redis", redis_server.url,
                     "--feature-ttl", "10m", "--summary-json", str(tmp_path / "summary.json"))
    r = client_of(redis_server)
    deadline = time.monotonic() + 120
    while not r.keys("feature:ES:*"):  # the store is being written: now Redis dies
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r.close()
    redis_server.kill()
    time.sleep(1.0)  # bars keep closing: the tap fails and backs off
    assert proc.poll() is None, "the run ended before Redis came back: a slice too short?"
    redis_server.start()  # empty, like a crashed server without persistence
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err

    reference = replays.get("base")  # the same replay (ungated: busy) without Redis
    for topic in (tn.ORDERS, tn.FILLS, tn.RISK_REJECTS, tn.POSITIONS):
        assert (out / "topics" / f"{topic}.jsonl").read_bytes() == reference.raw(topic), topic
    stats = json.loads((tmp_path / "summary.json").read_text())["sinks"]["redis"]
    assert stats["failures"] >= 1 and stats["reconnects"] >= 1, stats
    assert "Connection" in stats["last_error"] and stats["unwritten"] == 0
    assert "warning: redis" in err and "answering again" in err
    # written again after the restart: every key, not only those that changed since
    _check_store(redis_server, out / "topics", ttl_s=600)


def test_tap_counts_failures_while_redis_is_down_and_rewrites_every_key_when_it_is_back(
        replays: ReplayPool, redis_server: RedisServer, capfd: pytest.CaptureFixture[str]
        ) -> None:
    run = replays.get("base")  # busy: fills and positions through the run
    feats = [decode(tn.FEATURES, b) for b in run.raw(tn.FEATURES).splitlines()]
    poss = [decode(tn.POSITIONS, b) for b in run.raw(tn.POSITIONS).splitlines()]
    half_f, half_p = len(feats) // 2, len(poss) // 2
    tap = RedisTap(RedisStoreConfig(redis_server.url, feature_ttl_s=60, warn_every_s=30))
    for i, v in enumerate(feats[:half_f]):
        tap.accept(tn.FEATURES, i, v)
    for i, p in enumerate(poss[:half_p]):
        tap.accept(tn.POSITIONS, i, p)
    tap.flush()
    _wait(lambda: tap.stats()["keys"] == 3 and tap.stats()["unwritten"] == 0)
    assert client_of(redis_server).get("position:paper:ES") == encode(poss[half_p - 1])

    redis_server.kill()
    spent = []
    for i, v in enumerate(feats[half_f:], half_f):  # the pipeline goes on; accept never blocks
        t0 = time.perf_counter()
        tap.accept(tn.FEATURES, i, v)
        spent.append(time.perf_counter() - t0)
        if i % 200 == 0:
            time.sleep(0.05)  # let the writer try (and fail) a few times
    assert sorted(spent)[len(spent) // 2] < 50e-6  # no network on the pipeline's thread
    _wait(lambda: tap.stats()["failures"] >= 3)
    rows, behind = tap.lag()  # what the metrics export as the sink's lag
    assert rows >= 1 and behind > 0
    err = capfd.readouterr().err
    assert err.count("warning: redis") == 1, err  # rate-limited: said once, counted always
    assert "trading goes on" in err

    redis_server.start()  # an empty server: the tap must rewrite what it wrote before too
    for i, p in enumerate(poss[half_p:], half_p):
        tap.accept(tn.POSITIONS, i, p)
    _wait(lambda: tap.stats()["reconnects"] == 1 and tap.stats()["unwritten"] == 0)
    assert tap.lag() == (0, 0.0)
    r = client_of(redis_server)
    last = feats[-1]
    entry = msgspec.json.decode(r.get(feature_key(last.symbol, last.timeframe,  # type: ignore[arg-type]
                                                  last.feature_version)), type=FeatureEntry)
    assert entry.ts_event == last.ts_event and 0 < r.ttl(feature_key(
        last.symbol, last.timeframe, last.feature_version)) <= 60
    assert r.get("position:paper:ES") == encode(poss[-1])
    assert r.get(account_key("paper")) is not None
    assert "answering again" in capfd.readouterr().err

    # Redis gone at the end: close neither hangs nor raises; the summary says what is missing
    redis_server.kill()
    tap.accept(tn.POSITIONS, len(poss), poss[-1])
    t0 = time.monotonic()
    tap.close()
    assert time.monotonic() - t0 < 3.0
    s = tap.stats()
    assert s["unwritten"] >= 1 and s["failures"] >= 4 and "Connection" in s["last_error"]


def _wait(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def cli_popen(*args: str) -> subprocess.Popen[str]:
    """``streamquant ARGS`` in the background (stdout and stderr piped)."""
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
