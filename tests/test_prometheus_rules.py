"""The deployment's Prometheus rules: promtool accepts them and their unit tests pass.

``promtool check rules`` (syntax, templates) and ``promtool test rules`` (the unit tests in
``deploy/prometheus/tests``: every alert firing and not firing on synthetic series) run as
subprocesses, as an operator would run them before a deploy. The rule files may only name
metrics the runtime exports (``jobs.metrics.catalog``) and recording rules they define.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from jobs.metrics.catalog import SAMPLE_NAMES

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))
PROMTOOL = "/usr/bin/promtool"

_NAME = re.compile(r"\b([a-z_]+:)?(streamquant_[a-z0-9_]+)(:[a-z0-9_]+)?\b")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def _blocks(text: str, key: str) -> list[str]:
    """The list items starting with ``- key:`` (each up to the next such item)."""
    parts = re.split(rf"\n\s*- {key}: ", text)
    return [f"{key}: {p}" for p in parts[1:]]


def _exprs(text: str) -> list[str]:
    """Every ``expr:`` value (one line, or a folded block up to the next key)."""
    out = []
    for m in re.finditer(r"expr: (>-\n((?:\s{10,}.*\n)+)|.*)", text):
        out.append(m.group(2) if m.group(2) else m.group(1))
    return out


def test_rule_files_pass_promtool_check() -> None:
    assert len(RULE_FILES) == 2
    r = _promtool("check", "rules", *map(str, RULE_FILES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == 2


def test_alert_unit_tests_pass_promtool_test() -> None:
    assert TEST_FILES
    r = _promtool("test", "rules", *map(str, TEST_FILES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_example_config_passes_promtool_check() -> None:
    r = _promtool("check", "config", str(PROM / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    alerts = re.findall(r"- alert: (\w+)", (PROM / "rules" / "streamquant-alerts.yml").read_text())
    assert len(alerts) == len(set(alerts)) == 11
    firing: set[str] = set()
    silent: set[str] = set()
    for text in (p.read_text() for p in TEST_FILES):
        for case in _blocks(text, "eval_time"):
            name = re.search(r"alertname: (\w+)", case)
            if name is None:
                continue
            (silent if "exp_alerts: []" in case else firing).add(name.group(1))
    assert firing == set(alerts), set(alerts) - firing
    assert silent == set(alerts), set(alerts) - silent


def test_alerts_carry_a_severity_a_summary_and_a_description() -> None:
    text = (PROM / "rules" / "streamquant-alerts.yml").read_text()
    for block in _blocks(text, "alert"):
        name = block.split("\n", 1)[0]
        assert re.search(r"severity: (critical|warning)\n", block), name
        assert "summary: " in block and "description: " in block, name


def test_rules_name_only_exported_metrics_and_defined_recordings() -> None:
    recorded: set[str] = set()
    exprs: list[str] = []
    for p in RULE_FILES:
        text = p.read_text()
        recorded |= set(re.findall(r"- record: (\S+)", text))
        exprs += _exprs(text)
    assert len(exprs) == 22
    for expr in exprs:
        for m in _NAME.finditer(expr):
            name = m.group(0)
            if m.group(1) or m.group(3):
                assert name in recorded, f"{name} is not a recording rule"
            else:
                assert name in SAMPLE_NAMES, f"{name} is not exported"
    for name in recorded:  # level:metric:operations, over an exported metric
        level, metric, _ops = name.split(":")
        assert level.startswith("job") and (metric in SAMPLE_NAMES or f"{metric}_total" in
                                            SAMPLE_NAMES or metric.startswith("streamquant_")), name
