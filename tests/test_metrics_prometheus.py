"""A real Prometheus server scrapes runs; its PromQL answers equal what the runs wrote.

``/usr/bin/prometheus`` is started by the test with the deployment's rule files and a 200 ms
scrape interval, with two targets: a live run and a replay, each started as a user starts it
(``streamquant run ... --metrics-port P --metrics-linger 60``).

- The live run (``--bootstrap`` on a real tansu broker, no ``--until-end``) runs until it is
  stopped: Prometheus scrapes it while it trades, the test waits (asking Prometheus) until the
  stream has ended, stops it with SIGTERM, and the linger lets Prometheus take the final values
  (the last checkpoint). Counters, checkpoints and the watermark lag are checked against the
  run's summary and the orders topic.
- The replay lingers after it ends until Prometheus has scraped its final values; being gone
  afterwards, its series are stale, so the test reads them with ``last_over_time`` as a
  dashboard of batch jobs does. The recording rules' results and every Grafana expression are
  queried on the same server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.live.kafka_client import KafkaSettings
from tests._kafka import create_catalog_topics
from tests._live import produce, read_topic, start_live
from tests._metrics_fixture import free_port, workload
from topics import names as tn

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARD = ROOT / "deploy" / "grafana" / "streamquant-dashboard.json"
PROMETHEUS = "/usr/bin/prometheus"
REPLAY = "streamquant-replay"
LIVE = "streamquant-live"
YEAR_S = 365 * 86_400


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

    def wait_for(self, expr: str, timeout: float = 90.0) -> list[dict[str, Any]]:
        """Poll until ``expr`` returns something (the run got that far, as Prometheus saw)."""
        deadline = time.monotonic() + timeout
        while not (result := self.query(expr)):
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"{expr}: nothing within {timeout} s"
            time.sleep(0.2)
        return result


Server = tuple[Prometheus, dict[str, int]]
"""The server and the metrics port of each scrape job."""


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Prometheus on a free loopback port, scraping the (future) metrics ports every 200 ms."""
    tmp = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    targets = {REPLAY: free_port(), LIVE: free_port()}
    cfg = tmp / "prometheus.yml"
    jobs = "".join(f"""
  - job_name: {job}
    static_configs:
      - targets: ["127.0.0.1:{p}"]""" for job, p in targets.items())
    cfg.write_text(f"""
global:
  scrape_interval: 200ms
  scrape_timeout: 200ms
  evaluation_interval: 200ms
rule_files:
  - {RULES / "streamquant-recording.yml"}
  - {RULES / "streamquant-alerts.yml"}
scrape_configs:{jobs}
""")
    log = tmp / "prometheus.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
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
        yield prom, targets
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


def test_prometheus_scrapes_a_live_run_and_its_counters_equal_the_run(
        prometheus: Server, kafka_settings: KafkaSettings,
        tmp_path: Path) -> None:
    prom, targets = prometheus
    w = workload()
    create_catalog_topics(kafka_settings)
    produce(kafka_settings, w.ticks)
    live = start_live(kafka_settings, w.models, tmp_path / "ck", "--out", str(tmp_path / "out"),
                      "--risk", str(w.risk), "--checkpoint-every", "10000", "--metrics-port",
                      str(targets[LIVE]), "--metrics-linger", "60", until_end=False)
    sel = f'job="{LIVE}"'
    try:
        prom.wait_for(f"streamquant_stream_ended{{{sel}}} == 1")  # every record processed
        assert live.proc.poll() is None, "the live run stopped by itself"
        running_orders = prom.scalar(f"sum(streamquant_orders_total{{{sel}}})")
        live.proc.send_signal(signal.SIGTERM)
        assert live.wait(60) == 0, live.stderr()
    finally:
        if live.proc.poll() is None:
            live.kill()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    orders = read_topic(kafka_settings, tn.ORDERS)
    assert running_orders == len(orders) == summary["topics"]["orders"] > 0

    def last(expr: str) -> float:
        return prom.scalar(f"last_over_time({expr}[5m])")

    # the final values, scraped during the linger after SIGTERM's last checkpoint
    assert last(f"streamquant_run_finished{{{sel}}}") == 1
    assert last(f'streamquant_run_info{{{sel},mode="live",path="live"}}') == 1
    assert summary["checkpoints"] >= 6  # every 10,000 of the 60,005 records, and at the end
    assert last(f"streamquant_checkpoints_total{{{sel}}}") == summary["checkpoints"]
    assert last(f"streamquant_checkpoint_seconds_count{{{sel}}}") == summary["checkpoints"]
    assert last(f"streamquant_checkpoint_bytes{{{sel}}}") == summary["checkpoint_bytes"] > 0
    assert last(f"streamquant_source_records_total{{{sel}}}") == summary["ticks_released"]
    for topic, n in summary["topics"].items():
        assert last(f'streamquant_messages_total{{{sel},topic="{topic}"}}') == n, topic
    # one tick -> order latency per order, counted from the consumer batch that read the tick
    assert last(f"streamquant_tick_to_order_seconds_count{{{sel}}}") == len(orders)
    assert 0 < last(f"streamquant_tick_to_order_seconds_sum{{{sel}}}") < 10 * len(orders)
    dlq = prom.query(f"last_over_time(streamquant_dead_letters_total{{{sel}}}[5m]) > 0")
    assert {r["metric"]["reason"]: float(r["value"][1]) for r in dlq} == summary["dlq_by_reason"]
    # event time stopped at the slice's last trade (Monday 2013-09-02, 19:36 CT)
    assert 1_378_072_800 < last(f"streamquant_watermark_seconds{{{sel}}}") < 1_378_170_000
    # while it ran, the watermark trailed the wall clock by the years since the 2013 sample
    lag = prom.scalar(f"max_over_time(streamquant_watermark_lag_seconds{{{sel}}}[5m])")
    assert 12 * YEAR_S < lag < time.time() - 1.3e9
    assert not prom.query(f"streamquant_watermark_lag_seconds{{{sel}}} and "
                          f"streamquant_stream_ended{{{sel}}} == 1")  # no lag once ended


def test_prometheus_scrapes_a_replay_that_lingers_until_its_final_values_are_read(
        prometheus: Server, tmp_path: Path) -> None:
    prom, targets = prometheus
    port = targets[REPLAY]
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

    sel = f'job="{REPLAY}"'
    # the target is gone, so Prometheus marked its series stale: the last values are read
    # over a range (what a dashboard of batch jobs does)
    assert prom.scalar(f"sum(last_over_time(streamquant_orders_total{{{sel}}}[5m]))") == orders
    assert prom.scalar(f"max_over_time(streamquant_run_finished{{{sel}}}[5m])") == 1
    info = prom.query(f"last_over_time(streamquant_run_info{{{sel}}}[5m])")
    assert info[0]["metric"]["path"] == "event"
    # the recording rules run on the scraped series
    rate = f'job_topic:streamquant_messages:rate1m{{{sel},topic="orders"}}[5m]'
    prom.wait_for(f"max_over_time({rate})", timeout=10)
    p99 = prom.query(f"max_over_time(job:streamquant_tick_to_order_seconds:p99_5m{{{sel}}}[5m])")
    assert p99 and 0 < float(p99[0]["value"][1]) < 10
    # every dashboard expression parses and runs on this server
    for expr in _dashboard_exprs():
        q = expr.replace("$job", REPLAY).replace("$account", ".*")
        body = prom.get("/api/v1/query", query=q)
        assert body["status"] == "success", (expr, body.get("error"))
    rules = prom.get("/api/v1/rules")["data"]["groups"]
    health = {r["name"]: r["health"] for g in rules for r in g["rules"]}
    assert len(health) == 22 and set(health.values()) <= {"ok", "unknown"}, health
