"""A real Prometheus server scrapes a running replay; its PromQL answers equal the topic files.

``/usr/bin/prometheus`` is started by the test with the deployment's rule files and a 200 ms
scrape interval, then ``streamquant run --metrics-port P --metrics-linger 60`` (the per-event
path) as a user runs it. Prometheus scrapes while the replay runs and once after it (which
ends the linger); the test then asks Prometheus, over its HTTP API, for the orders counter,
the recording rules' results and every expression of the Grafana dashboard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._metrics_fixture import free_port, workload

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARD = ROOT / "deploy" / "grafana" / "streamquant-dashboard.json"
PROMETHEUS = "/usr/bin/prometheus"
JOB = "streamquant-replay"


class Prometheus:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.proc = proc
        self.log = log

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:  # a bad query: the API's JSON error body
            return json.loads(exc.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.get("/api/v1/query", query=expr)
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Prometheus, int]]:
    """Prometheus on a free loopback port, scraping the (future) metrics port every 200 ms."""
    port, target = free_port(), free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""
global:
  scrape_interval: 200ms
  scrape_timeout: 200ms
  evaluation_interval: 200ms
rule_files:
  - {RULES / "streamquant-recording.yml"}
  - {RULES / "streamquant-alerts.yml"}
scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ["127.0.0.1:{target}"]
""")
    log = tmp_path / "prometheus.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=f, stderr=subprocess.STDOUT)
    prom = Prometheus(port, proc, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "prometheus did not become ready"
                time.sleep(0.05)
        yield prom, target
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_prometheus_scrapes_a_replay_and_counts_its_orders(
        prometheus: tuple[Prometheus, int], tmp_path: Path) -> None:
    prom, port = prometheus
    w = workload()
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", *w.cli_args(), "--mode", "event",
         "--out", str(out), "--metrics-port", str(port), "--metrics-linger", "60"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert f"serving http://127.0.0.1:{port}/metrics" in run.stderr
    orders = len((out / "topics" / "orders.jsonl").read_bytes().splitlines())
    assert orders > 0

    sel = f'job="{JOB}"'
    # the target is gone, so Prometheus marked its series stale: the last values are read
    # over a range (what a dashboard of batch jobs does)
    assert prom.scalar(f"sum(last_over_time(streamquant_orders_total{{{sel}}}[5m]))") == orders
    # scraped while the replay was going (finished 0) and after it ended (finished 1)
    assert prom.scalar(f"min_over_time(streamquant_run_finished{{{sel}}}[5m])") == 0
    assert prom.scalar(f"max_over_time(streamquant_run_finished{{{sel}}}[5m])") == 1
    seen = prom.scalar(f"count_over_time(streamquant_messages_total{{{sel},"
                       f'topic="md.ticks"}}[5m])')
    assert seen >= 3, "fewer than three scrapes of the run"
    info = prom.query(f"last_over_time(streamquant_run_info{{{sel}}}[5m])")
    assert info[0]["metric"]["path"] == "event"
    # the recording rules run on the scraped series
    deadline = time.monotonic() + 10
    rate = f'job_topic:streamquant_messages:rate1m{{{sel},topic="orders"}}[5m]'
    while not prom.query(f"max_over_time({rate})"):
        assert time.monotonic() < deadline, "recording rule never evaluated"
        time.sleep(0.2)
    p99 = prom.query(f"max_over_time(job:streamquant_tick_to_order_seconds:p99_5m{{{sel}}}[5m])")
    assert p99 and 0 < float(p99[0]["value"][1]) < 10
    # every dashboard expression parses and runs on this server
    for expr in _dashboard_exprs():
        q = expr.replace("$job", JOB).replace("$account", ".*")
        body = prom.get("/api/v1/query", query=q)
        assert body["status"] == "success", (expr, body.get("error"))
    rules = prom.get("/api/v1/rules")["data"]["groups"]
    health = {r["name"]: r["health"] for g in rules for r in g["rules"]}
    assert len(health) == 22 and set(health.values()) <= {"ok", "unknown"}, health
