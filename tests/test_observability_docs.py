"""docs/observability.md documents every exported metric and every alert, as they are."""

from __future__ import annotations

import re
from pathlib import Path

from jobs.metrics.catalog import CATALOG

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "observability.md").read_text()
ALERTS = (ROOT / "deploy" / "prometheus" / "rules" / "streamquant-alerts.yml").read_text()


def _rows() -> dict[str, list[str]]:
    """Table rows whose first cell is a code span: name -> cells."""
    out: dict[str, list[str]] = {}
    for line in DOC.splitlines():
        m = re.match(r"\| `([a-zA-Z_:]+)`[^|]* \|(.*)\|$", line)
        if m:
            out[m.group(1)] = [c.strip() for c in m.group(2).split(" | ")]
    return out


def test_every_metric_has_a_row_with_its_type_labels_and_availability() -> None:
    rows = _rows()
    for m in CATALOG:
        assert m.name in rows, f"{m.name} is not documented"
        kind, labels, _meaning, where = rows[m.name]
        assert kind == m.kind, m.name
        assert labels == (", ".join(f"`{x}`" for x in m.labels) or "—"), m.name
        assert where == {"all": "all", "chain": "chain", "live": "live"}[m.where], m.name


def test_every_alert_is_documented_with_its_severity() -> None:
    rows = _rows()
    alerts = dict(re.findall(r"- alert: (\w+)\n(?:.*\n)*?\s+severity: (\w+)", ALERTS))
    assert len(alerts) == 11
    for name, severity in alerts.items():
        assert name in rows, f"{name} is not documented"
        assert rows[name][2] == severity, name
