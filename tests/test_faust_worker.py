"""The Faust worker on a real broker: the embedded run's orders, through SIGKILLs too.

Each test has its own topics (a prefix) on the session's tansu; the worker runs as the CLI
process a data engineer starts (``run --engine faust``), fed by ``produce-ticks`` with a slice
of the real E-mini trades around the session open where the walk-forward bundle starts
trading (a short slice: Faust's per-record path makes the worker far slower than the live
host). The reference is the embedded run of the same file with the same models and flags.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgspec
import pytest

from jobs.live.broker import free_port
from jobs.live.kafka_client import KafkaSettings
from tests._kafka import create_catalog_topics
from tests._live import (
    FILE_FLAGS,
    ROOT,
    TRADE_FLAGS,
    LiveProcess,
    _env,
    by_position,
    checkpoint_mtime,
    cli,
    emini_slice,
    file_lines,
    first_copies,
    kafka_flags,
    produce,
    read_topic,
)
from tests._replay_fixture import ReplayPool, pool_fixture
from topics import names as tn
from topics.messages import Order

replays = pool_fixture()

TRADER_TOPICS = (tn.ORDERS, tn.FILLS, tn.RISK_REJECTS)
FAUST_SLICE = (54_500, 59_000)
"""Late morning before the Labor Day halt (feature warm-up) to the evening after the reopen,
where the bundle trades: 4,500 ticks, tens of orders, fills and rejects."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faust")


@pytest.fixture(scope="module")
def models(replays: ReplayPool) -> Path:
    return replays.models


@pytest.fixture(scope="module")
def ticks(workdir: Path) -> Path:
    return emini_slice(workdir, *FAUST_SLICE)


@pytest.fixture(scope="module")
def embedded(workdir: Path, ticks: Path, models: Path) -> Path:
    """The embedded run's topic files (the reference)."""
    out = workdir / "embedded"
    r = cli("run", "--ticks", str(ticks), *FILE_FLAGS, "--models", str(models), *TRADE_FLAGS,
            "--out", str(out), "--quiet", "--no-report-html")
    assert r.returncode == 0, r.stderr
    for t in TRADER_TOPICS:
        assert file_lines(out / "topics" / f"{t}.jsonl"), f"the reference run has no {t}"
    return out / "topics"


def start_faust(settings: KafkaSettings, models: Path, ckdir: Path, *extra: str,
                env: dict[str, str] | None = None, web_port: int | None = None
                ) -> LiveProcess:
    log = ckdir.parent / f"{ckdir.name}.{time.monotonic_ns()}.log"
    args = [sys.executable, "-m", "jobs.cli", "run", "--engine", "faust",
            *kafka_flags(settings), "--checkpoint-dir", str(ckdir), "--models", str(models),
            *TRADE_FLAGS, "--until-end", "--web-port", str(web_port or free_port()), *extra]
    with log.open("w") as f:
        proc = subprocess.Popen(args, cwd=ROOT, text=True, stdout=f, stderr=subprocess.STDOUT,
                                env=_env(env))
    return LiveProcess(proc, log)


def start_faust_cli(settings: KafkaSettings, models: Path, ckdir: Path, *run_flags: str
                    ) -> LiveProcess:
    """The documented ``faust -A jobs.faust.worker:app worker`` equivalent (docs/faust.md)."""
    log = ckdir.parent / f"{ckdir.name}.{time.monotonic_ns()}.cli.log"
    env = {"STREAMQUANT_BOOTSTRAP": settings.bootstrap, "STREAMQUANT_MODELS": str(models),
           "STREAMQUANT_CHECKPOINT_DIR": str(ckdir),
           "STREAMQUANT_RUN_ARGS": " ".join(("--topic-prefix", settings.topic_prefix,
                                             *TRADE_FLAGS, "--until-end", *run_flags))}
    args = [sys.executable, "-m", "faust", "-A", "jobs.faust.worker:app", "worker", "-l",
            "warn", "--web-port", str(free_port())]
    with log.open("w") as f:
        proc = subprocess.Popen(args, cwd=ROOT, text=True, stdout=f, stderr=subprocess.STDOUT,
                                env=_env(env))
    return LiveProcess(proc, log)


def _get_json(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            data: dict[str, object] = json.loads(r.read())
            return data
    except OSError:
        return None


def test_faust_worker_gives_the_embedded_orders_fills_and_rejects_and_serves_its_watermark(
        kafka_settings: KafkaSettings, tmp_path: Path, ticks: Path, models: Path,
        embedded: Path) -> None:
    create_catalog_topics(kafka_settings)
    produce(kafka_settings, ticks)
    port = free_port()
    summary_path = tmp_path / "summary.json"
    worker = start_faust(kafka_settings, models, tmp_path / "ck", "--summary-json",
                         str(summary_path), web_port=port)
    status: dict[str, object] | None = None
    deadline = time.monotonic() + 120
    while worker.proc.poll() is None and time.monotonic() < deadline:
        st = _get_json(f"http://127.0.0.1:{port}/streamquant/status/")
        if st is not None and st["watermark_ns"] is not None:
            status = st
            health = _get_json(f"http://127.0.0.1:{port}/streamquant/health/")
            assert health == {"status": "running", "error": None}
            break
        time.sleep(0.2)
    assert status is not None, worker.stderr()
    assert status["status"] == "running" and str(status["watermark"]).startswith("2013-09-02")
    assert isinstance(status["watermark_lag_s"], float) and status["watermark_lag_s"] > 0
    assert worker.wait(240) == 0, worker.stderr()
    for t in TRADER_TOPICS:
        copies = first_copies(read_topic(kafka_settings, t, committed=False))
        assert by_position(copies) == file_lines(embedded / f"{t}.jsonl"), t
    summary = json.loads(summary_path.read_text())
    assert summary["mode"] == "faust" and summary["ended"] is True and summary["error"] is None
    assert summary["ticks_released"] == FAUST_SLICE[1] - FAUST_SLICE[0]


def test_faust_worker_killed_at_random_moments_loses_no_order_and_duplicates_are_identical(
        kafka_settings: KafkaSettings, tmp_path: Path, ticks: Path, models: Path,
        embedded: Path) -> None:
    create_catalog_topics(kafka_settings)
    produce(kafka_settings, ticks)
    ck = tmp_path / "ck"
    rng = random.Random(20261203)
    flags = ("--checkpoint-every", "600", "--checkpoint-wall", "0.5")
    # a kill at a random moment, one half-way through writing a checkpoint file, one between
    # a durable checkpoint and the commit of its offsets; then a run to the end
    faults: list[dict[str, str] | None] = [None, {"STREAMQUANT_FAULT": "checkpoint-write:2"},
                                           {"STREAMQUANT_FAULT": "after-checkpoint:2"}]
    for env in faults:
        before = checkpoint_mtime(ck)
        worker = start_faust(kafka_settings, models, ck, *flags, env=env)
        if env is None:
            worker.wait_for_checkpoint(ck, before)
            time.sleep(rng.uniform(0.0, 1.0))
            assert worker.proc.poll() is None, worker.stderr()
            worker.kill()
        else:
            assert worker.wait(120) == -9, worker.stderr()  # the fault point killed it
    # the last run through Faust's own CLI: the same worker, resuming the same checkpoint
    final = start_faust_cli(kafka_settings, models, ck, *flags)
    assert final.wait(240) == 0, final.stderr()
    assert "resuming from" in final.stderr()
    for t in TRADER_TOPICS:
        records = read_topic(kafka_settings, t, committed=False)
        copies = first_copies(records)  # every duplicate equals its first copy
        assert by_position(copies) == file_lines(embedded / f"{t}.jsonl"), t
    orders = [msgspec.json.decode(v, type=Order)
              for v in first_copies(read_topic(kafka_settings, tn.ORDERS)).values()]
    assert len({o.client_order_id for o in orders}) == len(orders)
