"""``--risk PATH``: the TOML file with ``[limits]``, ``[account]`` and ``[execution]`` tables.

Unknown tables or keys are errors, not warnings: a misspelt limit silently falling back to its
default is the kind of mistake a risk config must not allow (see docs/risk.md).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import msgspec

from operators.domain.bars import parse_duration
from operators.domain.execution import ExecConfig
from operators.domain.limits import AccountConfig, RiskLimits


def _read_table(path: str | Path, table: str) -> Mapping[str, Any]:
    p = Path(path)
    with p.open("rb") as fh:
        doc = tomllib.load(fh)
    section = doc.get(table)
    if section is None:
        raise ValueError(f"{p}: no [{table}] table")
    if not isinstance(section, dict):
        raise ValueError(f"{p}: [{table}] must be a table")
    return section


def _build(cls: type[Any], section: Mapping[str, Any], where: str) -> Any:
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys are {known}")
    try:
        return cls(**section)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def load_risk_limits(path: str | Path) -> RiskLimits:
    """Read ``[limits]`` from a TOML file; missing keys take their defaults."""
    limits: RiskLimits = _build(RiskLimits, _read_table(path, "limits"), f"{path} [limits]")
    return limits


def load_account_config(path: str | Path) -> AccountConfig:
    """Read ``[account]`` from a TOML file; missing keys take their defaults."""
    cfg: AccountConfig = _build(AccountConfig, _read_table(path, "account"), f"{path} [account]")
    return cfg


@dataclass(frozen=True, slots=True)
class RiskFile:
    """What ``--risk PATH`` configures: limits, the account, execution and the paper broker."""

    limits: RiskLimits = field(default_factory=RiskLimits)
    account: AccountConfig = field(default_factory=AccountConfig)
    execution: ExecConfig = field(default_factory=ExecConfig)


REQUIRED_TABLES = ("limits", "account")


def load_risk_file(path: Path | None) -> RiskFile:
    """``--risk PATH``: TOML with ``[limits]`` and ``[account]`` (required; an empty table
    means its defaults) and optional ``[execution]``.

    A missing required table is an error, as docs/risk.md says: a file without ``[limits]``
    (an empty file, an ``[account]``-only file) would otherwise run on default limits the
    user may never have meant. ``[execution]`` takes ``ExecConfig``'s fields; durations
    (``*_ns``) may be written as strings such as ``"50ms"`` or ``"15s"``. Unknown tables or
    keys are errors. Without ``--risk`` (``path`` None) every default applies.
    """
    if path is None:
        return RiskFile()
    with path.open("rb") as fh:
        doc = tomllib.load(fh)
    unknown = sorted(set(doc) - {"limits", "account", "execution"})
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; known: [limits], [account], [execution]")
    missing = [t for t in REQUIRED_TABLES if t not in doc]
    if missing:
        tables = " and ".join(f"[{t}]" for t in missing)
        raise ValueError(f"no {tables} table; a risk file states [limits] and [account] "
                         "(an empty table means all its defaults; see docs/risk.md)")
    limits = load_risk_limits(path)
    account = load_account_config(path)
    execution = ExecConfig()
    if "execution" in doc:
        raw = {k: parse_duration(v) if k.endswith("_ns") and isinstance(v, str) else v
               for k, v in doc["execution"].items()}
        try:
            execution = msgspec.convert(raw, ExecConfig)
        except (msgspec.ValidationError, ValueError) as exc:
            raise ValueError(f"[execution]: {exc}") from None
    return RiskFile(limits=limits, account=account, execution=execution)
