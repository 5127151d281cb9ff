"""The Grafana dashboard: a loadable dashboard model over metrics the runtime exports.

Grafana cannot be installed here, so the test checks what Grafana needs to import the JSON
(schema version, uid, a datasource variable every panel uses, panels on the 24-column grid
without overlaps, unique ids) and that each PromQL expression names only exported metrics
(``jobs.metrics.catalog``) or recording rules of ``deploy/prometheus``. That every expression
parses and runs is checked against a real Prometheus in ``test_metrics_prometheus.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jobs.metrics.catalog import CATALOG, SAMPLE_NAMES

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "streamquant-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "rules"
_NAME = re.compile(r"\b([a-z_]+:)?(streamquant_[a-z0-9_]+)(:[a-z0-9_]+)?\b")


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _recorded() -> dict[str, str]:
    """Recording rule name -> its expression's text (up to the next rule)."""
    out: dict[str, str] = {}
    for p in RULES.glob("*.yml"):
        for block in re.split(r"\n\s*- record: ", p.read_text())[1:]:
            name, _, rest = block.partition("\n")
            out[name.strip()] = rest
    return out


def _exprs(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_is_a_grafana_dashboard_model() -> None:
    d = _dashboard()
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["uid"] == "streamquant-overview" and d["title"]
    assert d["id"] is None  # importable into any Grafana (ids are the server's)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert variables["job"]["query"]["query"] == "label_values(streamquant_run_info, job)"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        own = {(x, y) for x in range(g["x"], g["x"] + g["w"])
               for y in range(g["y"], g["y"] + g["h"])}
        assert not own & cells, f"panel {p['title']!r} overlaps another"
        cells |= own
        if p["type"] == "row":
            continue
        assert p["type"] in ("timeseries", "stat"), p["type"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["refId"], p["title"]
            assert '$job' in t["expr"], f"{p['title']}: not filtered by the job variable"


def test_every_expression_names_exported_metrics_or_recording_rules() -> None:
    recorded = _recorded()
    for expr in _exprs(_dashboard()):
        names = [m.group(0) for m in _NAME.finditer(expr)]
        assert names, expr
        for name in names:
            assert name in SAMPLE_NAMES or name in recorded, f"{name} in {expr!r}"


def test_every_exported_metric_has_a_panel() -> None:
    recorded = _recorded()
    text = " ".join(_exprs(_dashboard()))
    used = {m.group(2) for m in _NAME.finditer(text)}  # recording rules' inner metric too
    for name in list(used):
        for rule, body in recorded.items():
            if rule.split(":")[1] == name:
                used |= {m.group(2) for m in _NAME.finditer(body)}
    missing = [m.name for m in CATALOG if not set(m.samples) & used and m.name not in used]
    assert not missing, missing
