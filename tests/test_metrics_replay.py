"""The metrics of a real replay equal what its topic files say.

``streamquant run`` (in process, batched path) over a slice of the real E-mini trades with bad
lines, tight limits and a kill switch, serving metrics on a loopback port with a linger; the
test scrapes the endpoint over HTTP until the run has finished (which ends the linger) and
compares every count with the topic files the same run wrote.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from jobs.metrics.catalog import BY_NAME, CATALOG, SAMPLE_NAMES
from jobs.metrics.serve import serve
from jobs.metrics.tap import MetricsTap
from jobs.options import ReplayOptions
from jobs.replay import run_replay
from jobs.sinks.options import SinkOptions
from jobs.sinks.probe import SinkLag
from tests._metrics_fixture import (
    BAD_LINES,
    Samples,
    free_port,
    labelled,
    parse,
    scrape,
    scrape_final,
    workload,
)
from topics import names as tn
from topics.catalog import CATALOG as TOPICS

NS = 1e-9


class Run:
    def __init__(self, out: Path, families: set[str], samples: Samples, during: list[str],
                 summary: dict[str, Any]) -> None:
        self.out = out
        self.families = families
        self.samples = samples
        self.during = during
        self.summary = summary

    def topic(self, name: str) -> list[dict[str, Any]]:
        path = self.out / "topics" / f"{name}.jsonl"
        return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def by(self, name: str, label: str) -> dict[str, float]:
        return labelled(self.samples, name, label)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    w = workload()
    out = tmp_path_factory.mktemp("metrics-replay") / "out"
    port = free_port()
    opts = ReplayOptions(
        out=out, ticks=w.ticks, columns=(("ts", "DateTime"), ("price", "Price"),
                                         ("size", "Volume")),
        tz="America/Chicago", symbol="ES", venue="CME", models=w.models, risk=w.risk,
        control=w.control, cost_gate=False, report_html=False, quiet=True,
        sinks=SinkOptions(sink="none", metrics_port=port, metrics_linger_s=60.0))
    result: dict[str, Any] = {}

    def replay() -> None:
        try:
            result["summary"] = run_replay(opts)
        except BaseException as exc:  # surfaced by the test thread
            result["error"] = exc

    t = threading.Thread(target=replay)
    t.start()
    families, samples, during = scrape_final(port)
    t.join(60)
    assert not t.is_alive(), "the replay did not end once its final values were scraped"
    assert "error" not in result, result.get("error")
    return Run(out, families, samples, during, result["summary"])


def test_every_topic_count_equals_its_topic_file(run: Run) -> None:
    msgs = run.by("streamquant_messages_total", "topic")
    written = [t for t in msgs if not TOPICS[t].internal and t != tn.CONTROL]
    assert tn.ORDERS in written and tn.FILLS in written and tn.RISK_REJECTS in written
    for t in written:
        assert msgs[t] == len(run.topic(t)), t
    assert msgs[tn.ORDERS] > 0 and msgs[tn.RISK_REJECTS] > 0
    assert run.value("streamquant_late_ticks_total") == len(run.topic(tn.MD_TICKS_LATE))


def test_dead_letters_by_reason_equal_the_dlq_file(run: Run) -> None:
    want = Counter(d["reason"] for d in run.topic(tn.MD_TICKS_DLQ))
    assert sum(want.values()) == len(BAD_LINES) and len(want) >= 3
    got = run.by("streamquant_dead_letters_total", "reason")
    assert {r: v for r, v in got.items() if v} == want
    assert got["DUPLICATE"] == 0  # every known reason is exported, zero included


def test_orders_fills_rejects_and_decisions_equal_the_trader_topics(run: Run) -> None:
    for metric, topic in (("streamquant_orders_total", tn.ORDERS),
                          ("streamquant_fills_total", tn.FILLS),
                          ("streamquant_risk_rejects_total", tn.RISK_REJECTS)):
        assert run.by(metric, "account") == Counter(r["account"] for r in run.topic(topic))
    codes = Counter(r["code"] for rej in run.topic(tn.RISK_REJECTS) for r in rej["reasons"])
    assert codes["CONCENTRATION_LIMIT"] > 0 and codes["KILL_SWITCH"] > 0
    got = run.by("streamquant_risk_reject_reasons_total", "code")
    assert {c: v for c, v in got.items() if v} == codes
    assert run.by("streamquant_decisions_total", "action") == Counter(
        d["action"] for d in run.topic(tn.AUDIT_DECISIONS))
    assert run.by("streamquant_control_commands_total", "command") == {"KILL": 1}


def test_predictions_count_per_model_and_ab_arm(run: Run) -> None:
    want = Counter((p["model"], p["variant"]) for p in run.topic(tn.PREDICTIONS))
    assert {v for _, v in want} == {"A", "B", "challenger"}  # the online learner's too
    got = {(dict(labels)["model"], dict(labels)["variant"]): v
           for (n, labels), v in run.samples.items() if n == "streamquant_predictions_total"}
    assert got == want


def test_regime_gauges_are_the_newest_posterior_in_bits(run: Run) -> None:
    last = run.topic(tn.REGIMES)[-1]
    assert run.value("streamquant_regime_entropy_bits", symbol="ES") == pytest.approx(
        last["entropy"] / math.log(2), rel=1e-12)
    for regime in ("bull", "bear", "sideways"):
        assert run.value("streamquant_regime_probability", symbol="ES",
                         regime=regime) == last[f"prob_{regime}"]


def test_account_gauges_follow_the_positions_and_the_gate(run: Run) -> None:
    positions = run.topic(tn.POSITIONS)
    equity = [p["equity"] for p in positions]
    peak, max_dd = equity[0], 0.0
    for e in equity:
        peak = max(peak, e)
        max_dd = max(max_dd, 1 - e / peak)
    assert run.value("streamquant_account_equity_usd", account="paper") == equity[-1]
    assert run.value("streamquant_account_pnl_usd", account="paper") == pytest.approx(
        equity[-1] - 1_000_000.0)
    assert run.value("streamquant_account_max_drawdown_ratio", account="paper") == max_dd
    assert max_dd > 0
    # the gate's state: the kill switch tripped by the control file, never reset
    assert run.value("streamquant_account_kill_switch", account="paper") == 1.0
    assert run.value("streamquant_account_concentration_limit_ratio", account="paper") == 0.1
    util = run.value("streamquant_account_daily_loss_utilization_ratio", account="paper")
    day_pnl = run.value("streamquant_account_day_pnl_usd", account="paper")
    assert util == pytest.approx(max(0.0, -day_pnl) / (0.02 * (equity[-1] - day_pnl)))
    open_qty = {p["symbol"]: p["quantity"] for p in positions}
    conc = run.by("streamquant_position_concentration_ratio", "symbol")
    assert set(conc) == {s for s, q in open_qty.items() if q != 0.0}


def test_operator_counts_equal_their_topics(run: Run) -> None:
    msgs = run.by("streamquant_messages_total", "topic")
    ins = run.by("streamquant_operator_events_in_total", "operator")
    outs = run.by("streamquant_operator_events_out_total", "operator")
    assert ins["infer"] == msgs[tn.FEATURES]
    assert ins["regime_blend"] == msgs[tn.FEATURES] + msgs[tn.PREDICTIONS]
    assert ins["account_feed"] == msgs[tn.MD_TICKS] + msgs[tn.CONTROL]
    # the online learner (on by default) adds its prediction and its models.updates events
    assert ins["learn"] == msgs[tn.FEATURES]
    online = sum(1 for p in run.topic(tn.PREDICTIONS) if p["model"] == "online")
    assert outs["infer"] == msgs[tn.PREDICTIONS] - online
    assert outs["learn"] == online + msgs[tn.MODELS_UPDATES]
    assert msgs[tn.MODELS_UPDATES] > 0
    assert outs["size"] + outs["account"] == (
        msgs[tn.ORDERS_INTENTS] + msgs[tn.AUDIT_DECISIONS] + msgs[tn.ORDERS] + msgs[tn.FILLS]
        + msgs[tn.RISK_REJECTS] + msgs[tn.POSITIONS])  # decisions split, not counted twice
    skipped = sum(1 for d in run.topic(tn.AUDIT_DECISIONS) if d.get("skipped"))
    assert outs["size"] == msgs[tn.ORDERS_INTENTS] + skipped
    timed = {dict(labels)["operator"] for (n, labels), _ in run.samples.items()
             if n == "streamquant_operator_call_seconds_count"}
    assert timed == set(ins)  # every stage was sampled


def test_tick_to_order_latency_is_observed_once_per_order(run: Run) -> None:
    orders = run.topic(tn.ORDERS)
    assert run.value("streamquant_tick_to_order_seconds_count") == len(orders)
    p_inf = run.value("streamquant_tick_to_order_seconds_bucket", le="+Inf")
    assert p_inf == len(orders)
    assert 0 < run.value("streamquant_tick_to_order_seconds_sum") < len(orders) * 1.0
    assert run.value("streamquant_inference_seconds_count") > 0


def test_event_time_and_run_state(run: Run) -> None:
    last_tick = max(t["ts_event"] for t in run.topic(tn.MD_TICKS))
    assert run.value("streamquant_watermark_seconds") == last_tick * NS
    assert run.value("streamquant_stream_ended") == 1.0
    assert run.value("streamquant_run_info", mode="replay", path="batch") == 1.0
    # scrapes taken while the run was going saw it unfinished (and the linger then ended it)
    assert run.during, "no scrape while the run was going"
    assert all("streamquant_run_finished 0.0" in t for t in run.during)
    assert json.loads((run.out / "manifest.json").read_text())["status"] == "complete"
    assert run.summary["sinks"]["metrics"]["orders"] == len(run.topic(tn.ORDERS))


def test_scrape_holds_exactly_the_catalogued_families(run: Run) -> None:
    assert run.families <= {m.name for m in CATALOG}
    expected = {m.name for m in CATALOG if m.where != "live"} - {"streamquant_source_records_total"}
    assert run.families == expected  # batched path: source records are read by the front end
    for name, _labels in run.samples:
        assert name in SAMPLE_NAMES, name
    for (name, labels), _ in run.samples.items():
        spec = BY_NAME.get(name) or BY_NAME[name.rsplit("_", 1)[0]]
        assert {k for k, _ in labels} - {"le"} == set(spec.labels), name


class BufferingTap:
    """A sink that has accepted rows it has not written (a real tap implementing ``lag``)."""

    name = "slowdb"
    topics = frozenset({tn.ORDERS})

    def __init__(self, rows: int, seconds: float) -> None:
        self._lag = SinkLag(rows, seconds)

    def lag(self) -> SinkLag:
        return self._lag


class LaglessTap:
    name = "files"
    topics = frozenset({tn.ORDERS})


def test_sink_lag_is_read_from_taps_that_report_it() -> None:
    tap = MetricsTap(siblings=[BufferingTap(1234, 7.5), LaglessTap()])
    ep = serve(0, tap=tap)
    try:
        _, samples = parse(scrape(ep.port))
    finally:
        ep.stop()
    assert labelled(samples, "streamquant_sink_buffered_rows", "sink") == {"slowdb": 1234.0}
    assert labelled(samples, "streamquant_sink_lag_seconds", "sink") == {"slowdb": 7.5}
    assert samples[("streamquant_run_finished", ())] == 0.0  # unbound: no run figures yet
