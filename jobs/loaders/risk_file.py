"""``--risk PATH``: the TOML file with ``[limits]``, ``[account]``, ``[execution]`` and
``[accounts.NAME]`` tables.

Without ``[accounts.*]`` tables the run trades one account, ``paper``, under ``[limits]`` and
``[account]``. Each ``[accounts.NAME]`` table configures one account instead: ``symbols`` (the
instruments it trades; absent: all), ``[account]`` keys (``initial_equity``, fees,
``allow_short``) and an ``[accounts.NAME.limits]`` sub-table; what it does not set comes
from the top-level ``[limits]`` and ``[account]`` tables, which become every account's
defaults.

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
from operators.domain.limits import DEFAULT_ACCOUNT, AccountConfig, AccountSpec, RiskLimits


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
    """What ``--risk PATH`` configures: the accounts, execution and the simulated venue.

    ``limits`` and ``account`` are the top-level tables (every account's defaults);
    ``accounts`` are the accounts the run trades, resolved.
    """

    limits: RiskLimits = field(default_factory=RiskLimits)
    account: AccountConfig = field(default_factory=AccountConfig)
    execution: ExecConfig = field(default_factory=ExecConfig)
    accounts: tuple[AccountSpec, ...] = (AccountSpec(),)


def _table(doc: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    section = doc.get(name, {})
    if not isinstance(section, dict):
        raise ValueError(f"{where}: [{name}] must be a table")
    return section


def _accounts(doc: Mapping[str, Any], where: str) -> tuple[AccountSpec, ...]:
    """The ``[accounts.NAME]`` tables, each over the top-level ``[limits]`` and ``[account]``."""
    tables = _table(doc, "accounts", where)
    if not tables:
        raise ValueError(f"{where}: [accounts] needs at least one [accounts.NAME] table")
    base_limits = _table(doc, "limits", where)
    base_account = _table(doc, "account", where)
    account_keys = [f.name for f in fields(AccountConfig)]
    known = ["symbols", "limits", *account_keys]
    specs = []
    for name, table in tables.items():
        at = f"{where} [accounts.{name}]"
        if not isinstance(table, dict):
            raise ValueError(f"{at} must be a table")
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ValueError(f"{at}: unknown key(s) {unknown}; known keys are {known}")
        limits = _build(RiskLimits, {**base_limits, **_table(table, "limits", at)},
                        f"{at} [limits]")
        settings = _build(AccountConfig, {**base_account, **{
            k: v for k, v in table.items() if k in account_keys}}, at)
        try:
            specs.append(AccountSpec(name=name, limits=limits, settings=settings,
                                     symbols=table.get("symbols", ())))
        except ValueError as exc:
            raise ValueError(f"{at}: {exc}") from None
    return tuple(specs)




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
    unknown = sorted(set(doc) - {"limits", "account", "execution", "accounts"})
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; known: [limits], [account], [execution], "
                         "[accounts.NAME]")
    if "limits" not in doc and "accounts" not in doc:
        raise ValueError("no [limits] table; a risk file states its limits, in [limits] or in "
                         "[accounts.NAME] tables (an empty table means all its defaults; see "
                         "docs/risk.md)")
    limits = load_risk_limits(path) if "limits" in doc else RiskLimits()
    account = load_account_config(path) if "account" in doc else AccountConfig()
    execution = ExecConfig()
    if "execution" in doc:
        raw = {k: parse_duration(v) if k.endswith("_ns") and isinstance(v, str) else v
               for k, v in doc["execution"].items()}
        try:
            execution = msgspec.convert(raw, ExecConfig)
        except (msgspec.ValidationError, ValueError) as exc:
            raise ValueError(f"[execution]: {exc}") from None
    accounts = (_accounts(doc, str(path)) if "accounts" in doc
                else (AccountSpec(name=DEFAULT_ACCOUNT, limits=limits, settings=account),))
    return RiskFile(limits=limits, account=account, execution=execution, accounts=accounts)
