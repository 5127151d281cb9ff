"""Risk limits and account config: documented defaults, TOML loading, validation errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from jobs.loaders.risk_file import load_account_config, load_risk_limits
from operators.domain.limits import AccountConfig, RiskLimits


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "risk.toml"
    p.write_text(text)
    return p


def test_defaults_are_the_documented_seed_limits() -> None:
    d = RiskLimits.defaults()
    assert d == RiskLimits()
    assert d.max_order_notional == 5_000_000.0
    assert d.price_collar_pct == 0.05
    assert d.max_concentration == 0.25
    assert d.max_gross_leverage == 1.5
    assert d.max_group_exposure == 0.5
    assert d.daily_loss_limit == 0.02
    assert d.max_orders_per_window == 10
    assert d.rate_window_ns == 60_000_000_000
    assert d.restricted_symbols == ()
    a = AccountConfig()
    assert (a.initial_equity, a.fee_per_contract, a.fee_bps, a.allow_short) == (
        1_000_000.0,
        1.0,
        0.0,
        True,
    )


def test_empty_tables_load_the_defaults(tmp_path: Path) -> None:
    p = _write(tmp_path, "[limits]\n[account]\n")
    assert load_risk_limits(p) == RiskLimits.defaults()
    assert load_account_config(p) == AccountConfig()


def test_toml_overrides_replace_only_the_keys_given(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        """
[limits]
max_order_notional = 2_500_000      # an int in TOML: stored as float
max_concentration = 0.2
max_orders_per_window = 5
rate_window_ns = 1_000_000_000
restricted_symbols = ["ZN", "GC", "ZN"]

[account]
initial_equity = 250000
fee_per_contract = 2.25
allow_short = false

[something_else]
ignored = true
""",
    )
    lim = load_risk_limits(p)
    assert lim.max_order_notional == 2_500_000.0
    assert isinstance(lim.max_order_notional, float)
    assert lim.max_concentration == 0.2
    assert lim.max_orders_per_window == 5
    assert lim.rate_window_ns == 1_000_000_000
    assert lim.restricted_symbols == ("GC", "ZN")  # sorted, deduplicated
    assert lim.max_gross_leverage == RiskLimits().max_gross_leverage
    acct = load_account_config(p)
    assert acct == AccountConfig(initial_equity=250_000.0, fee_per_contract=2.25, allow_short=False)


@pytest.mark.parametrize("table", ["limits", "account"])
def test_unknown_key_is_rejected_naming_the_key(tmp_path: Path, table: str) -> None:
    p = _write(tmp_path, f"[{table}]\nmax_concentraton = 0.3\n")
    loader = load_risk_limits if table == "limits" else load_account_config
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_concentraton'\]"):
        loader(p)


def test_missing_table_is_an_error_not_silent_defaults(tmp_path: Path) -> None:
    p = _write(tmp_path, "[limit]\nmax_concentration = 0.3\n")
    with pytest.raises(ValueError, match=r"no \[limits\] table"):
        load_risk_limits(p)
    with pytest.raises(ValueError, match=r"no \[account\] table"):
        load_account_config(p)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("max_order_notional = 0", "max_order_notional"),
        ("max_order_notional = -5.0", "max_order_notional"),
        ('max_concentration = "25%"', "max_concentration"),
        ("max_gross_leverage = inf", "max_gross_leverage"),
        ("max_group_exposure = nan", "max_group_exposure"),
        ("price_collar_pct = 1.5", "price_collar_pct"),
        ("daily_loss_limit = 0.0", "daily_loss_limit"),
        ("max_orders_per_window = 0", "max_orders_per_window"),
        ("max_orders_per_window = 2.5", "max_orders_per_window"),
        ("max_orders_per_window = true", "max_orders_per_window"),
        ("rate_window_ns = -1", "rate_window_ns"),
        ('restricted_symbols = "ES"', "restricted_symbols"),
        ('restricted_symbols = ["ES", ""]', "restricted_symbols"),
    ],
)
def test_invalid_limit_values_raise_naming_the_field(tmp_path: Path, line: str, field: str) -> None:
    p = _write(tmp_path, f"[limits]\n{line}\n")
    with pytest.raises(ValueError, match=field):
        load_risk_limits(p)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("initial_equity = 0", "initial_equity"),
        ("fee_per_contract = -1.0", "fee_per_contract"),
        ("fee_bps = -0.5", "fee_bps"),
        ('allow_short = "no"', "allow_short"),
    ],
)
def test_invalid_account_values_raise_naming_the_field(
    tmp_path: Path, line: str, field: str
) -> None:
    p = _write(tmp_path, f"[account]\n{line}\n")
    with pytest.raises(ValueError, match=field):
        load_account_config(p)


def test_limits_are_frozen() -> None:
    lim = RiskLimits()
    with pytest.raises(AttributeError):
        lim.max_concentration = 0.9  # type: ignore[misc]


def test_fee_is_per_contract_plus_basis_points_of_notional() -> None:
    cfg = AccountConfig(fee_per_contract=1.5, fee_bps=2.0)
    # 4 ES at 1640: 4 * 1.5 + 4 * 1640 * 50 * 0.0002
    assert cfg.fee(4.0, 1640.0, 50.0) == pytest.approx(6.0 + 65.6, rel=1e-12)


def test_config_encoding_is_identical_across_processes() -> None:
    """The operator contract fingerprints config via msgspec; sets would vary per process."""
    code = (
        "import msgspec; from operators.domain.limits import RiskLimits;"
        "print(msgspec.json.encode(RiskLimits(restricted_symbols="
        "frozenset({'ES','NQ','ZN','GC','CL','YM'}))).decode())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": str(seed)},
            cwd=Path(__file__).resolve().parents[1],
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(outs) == 1
    decoded = msgspec.json.decode(outs.pop())
    assert decoded["restricted_symbols"] == ["CL", "ES", "GC", "NQ", "YM", "ZN"]
