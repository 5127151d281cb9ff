"""The Flink engine is the same pipeline: ``run --engine flink`` on a real E-mini slice writes
the embedded run's topic files byte for byte, also when a stage fails mid-run and the job
recovers from its last Flink checkpoint.

The slice (14,000 trades from Monday morning across the Labor Day reopen, where the bundle
starts trading) gives ~400 bars and ~90 orders; both Flink runs are CLI processes on a local
MiniCluster in thread mode.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests._flink_cluster import FlinkCluster, flink_cluster_fixture  # noqa: F401 (fixture)
from tests._live import FILE_FLAGS, TRADE_FLAGS, cli, emini_slice, file_lines
from tests._replay_fixture import ReplayPool, pool_fixture
from topics import names as tn

replays = pool_fixture()

SLICE = (50_000, 64_000)
COMPARED = (tn.ORDERS, tn.FILLS, tn.MD_BARS, tn.FEATURES)
FLINK_ENV = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
"""Thread mode needs the venv's ``bin`` first on PATH (INFRA.md)."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flink")


@pytest.fixture(scope="module")
def ticks(workdir: Path) -> Path:
    return emini_slice(workdir, *SLICE)


def _run(workdir: Path, ticks: Path, models: Path, name: str, *extra: str,
         env: dict[str, str] | None = None) -> Path:
    out = workdir / name
    r = cli("run", "--ticks", str(ticks), *FILE_FLAGS, "--models", str(models), *TRADE_FLAGS,
            "--out", str(out), "--quiet", "--no-report-html", *extra, env=env, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def embedded(workdir: Path, ticks: Path, replays: ReplayPool) -> Path:
    topics = _run(workdir, ticks, replays.models, "embedded") / "topics"
    for t in (tn.ORDERS, tn.FILLS):
        assert len(file_lines(topics / f"{t}.jsonl")) > 50, f"the reference run has few {t}"
    return topics


def _assert_same_topics(reference: Path, topics: Path) -> None:
    for t in COMPARED:
        assert file_lines(topics / f"{t}.jsonl") == file_lines(reference / f"{t}.jsonl"), t
    names = sorted(p.name for p in reference.glob("*.jsonl"))
    assert sorted(p.name for p in topics.glob("*.jsonl")) == names
    for n in names:  # every other topic too, byte for byte
        assert (topics / n).read_bytes() == (reference / n).read_bytes(), n


def test_flink_run_writes_the_embedded_runs_orders_fills_bars_and_features(
        workdir: Path, ticks: Path, replays: ReplayPool, embedded: Path) -> None:
    out = _run(workdir, ticks, replays.models, "flink", "--engine", "flink", env=FLINK_ENV)
    _assert_same_topics(embedded, out / "topics")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["engine"] == "flink"
    assert manifest["summary"]["ticks_in"] == SLICE[1] - SLICE[0]


def test_flink_job_recovers_from_a_failed_stage_without_losing_or_changing_an_order(
        workdir: Path, ticks: Path, replays: ReplayPool, embedded: Path) -> None:
    marker = workdir / "fault"
    env = {**FLINK_ENV, "STREAMQUANT_FLINK_FAULT": f"account:20:{marker}"}
    out = _run(workdir, ticks, replays.models, "flink-fault", "--engine", "flink",
               "--flink-checkpoint-interval", "100ms", "--flink-block", "256",
               "--flink-state-backend", "rocksdb", env=env)
    restored = marker.read_text().split("\n")
    assert "restored account" in restored  # the account's state came back from a checkpoint
    _assert_same_topics(embedded, out / "topics")


def test_job_submitted_to_a_standalone_cluster_writes_the_embedded_topics(
        workdir: Path, ticks: Path, replays: ReplayPool, embedded: Path,
        flink_cluster: FlinkCluster) -> None:
    out = workdir / "cluster"
    r = cli("flink", "submit", "--jobmanager", flink_cluster.rest, "--", "--ticks", str(ticks),
            *FILE_FLAGS, "--models", str(replays.models), *TRADE_FLAGS, "--out", str(out),
            "--quiet", "--no-report-html", env=FLINK_ENV, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    overview = flink_cluster.overview()
    assert overview["jobs-finished"] == 1  # it ran on the cluster, not a MiniCluster
    _assert_same_topics(embedded, out / "topics")
