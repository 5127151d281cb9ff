"""``--risk PATH``: one TOML file configures limits, the account and the paper broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.cli import main
from jobs.loaders.risk_file import load_risk_file
from operators.domain.limits import AccountConfig
from tests._emini_slice import TZ_ARGS, slice_fixtures


def test_execution_table_sets_latency_slippage_and_slicing(tmp_path: Path) -> None:
    f = tmp_path / "risk.toml"
    f.write_text("""
[limits]
max_concentration = 0.1

[account]
initial_equity = 250000.0
fee_per_contract = 2.25

[execution]
latency_ns = "200ms"
slippage_ticks = 1.0
participation = 0.5
slices = 6
slice_interval_ns = "10s"
child_ttl_ns = "2m"
""")
    r = load_risk_file(f)
    assert r.limits.max_concentration == 0.1
    assert (r.account.initial_equity, r.account.fee_per_contract) == (250_000.0, 2.25)
    e = r.execution
    assert e.latency_ns == 200_000_000
    assert (e.slippage_ticks, e.participation, e.slices) == (1.0, 0.5, 6)
    assert e.slice_interval_ns == 10_000_000_000 and e.child_ttl_ns == 120_000_000_000


def test_empty_tables_mean_the_defaults_as_without_a_file(tmp_path: Path) -> None:
    f = tmp_path / "defaults.toml"
    f.write_text("# defaults, stated\n[limits]\n[account]\n")
    assert load_risk_file(f) == load_risk_file(None)
    assert load_risk_file(None).execution.latency_ns == 50_000_000


@pytest.mark.parametrize(("text", "match"), [
    ("[limits]\n[account]\n[execution]\nlatency = 5\n", "latency"),
    ("[limits]\n[account]\n[execution]\nparticipation = 1.5\n", "participation"),
    ("[risk]\nx = 1\n", "unknown table"),
    ("[account]\n[limits]\nmax_leverage = 2\n", "max_leverage"),
])
def test_mistakes_are_named(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_risk_file(f)


# ------------------------------------------------------- the run refuses what docs/risk.md refuses

emini_slice, _ = slice_fixtures()


@pytest.mark.parametrize("text", [
    "",
    "# limits come later\n",
    "[account]\nfee_per_contract = 2.5\n",
])
def test_a_risk_file_without_limits_is_refused_as_docs_say(
        tmp_path: Path, emini_slice: Path, text: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """docs/risk.md: a file states its limits ([limits] or [accounts.NAME]; an empty table
    means all defaults), so an empty or ``[account]``-only file never trades on limits nobody
    wrote down."""
    risk = tmp_path / "risk.toml"
    risk.write_text(text)
    code = main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--risk", str(risk), "--out",
                 str(tmp_path / "out"), "--quiet"])
    assert code == 2
    assert "no [limits] table" in capsys.readouterr().err


def test_a_limits_only_risk_file_takes_the_default_account(tmp_path: Path) -> None:
    risk = tmp_path / "risk.toml"
    risk.write_text("[limits]\nmax_concentration = 0.1\n")
    rf = load_risk_file(risk)
    assert rf.limits.max_concentration == 0.1
    assert rf.account == AccountConfig()
