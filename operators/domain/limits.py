"""Pre-trade risk limits and account settings: frozen and validated at construction.

Both configs live in one TOML file (``[limits]`` and ``[account]`` tables, see docs/risk.md).
Unknown keys are errors, not warnings: a misspelt limit silently falling back to its default
is the kind of mistake a risk config must not allow.

``restricted_symbols`` is kept as a sorted tuple rather than a frozenset: the operator
contract fingerprints its config with ``msgspec.json.encode``, and a set of strings encodes
in a per-process (hash-salted) order, which would make a snapshot taken by one process look
foreign to the next one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from operators.domain.money import fee_amount

NS_PER_SECOND = 1_000_000_000


def _number(name: str, value: object) -> float:
    """A finite float from an int/float config value, else a ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return f


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    return value


def _symbols(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of symbols, got {value!r}")
    out: set[str] = set()
    for s in value:
        if not isinstance(s, str) or not s:
            raise ValueError(f"{name} must hold non-empty strings, got {s!r}")
        out.add(s)
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Account-level pre-trade limits (fractions are of current equity unless stated).

    Defaults follow the seed documents: 25 % concentration, 50 % per group, 1.5x gross,
    2 % daily loss, a 5 % fat-finger collar, $5M per order, 10 orders per minute.
    """

    max_order_notional: float = 5_000_000.0
    """Largest notional (qty * price * multiplier, USD) of a single order."""
    price_collar_pct: float = 0.05
    """Largest |order price / last trade - 1| accepted (fat-finger check)."""
    max_concentration: float = 0.25
    """Largest |position notional| of one symbol after the order, as a fraction of equity."""
    max_gross_leverage: float = 1.5
    """Largest sum of |position notional| over all symbols after the order / equity."""
    max_group_exposure: float = 0.5
    """Largest gross |position notional| of one instrument group after the order / equity."""
    daily_loss_limit: float = 0.02
    """Day loss (fraction of start-of-day equity) at which the account turns reduce-only."""
    max_orders_per_window: int = 10
    """Orders accepted within any ``rate_window_ns`` of event time."""
    rate_window_ns: int = 60 * NS_PER_SECOND
    """Length of the order-rate window in event-time nanoseconds."""
    restricted_symbols: tuple[str, ...] = ()
    """Symbols that may not be traded at all (normalised to sorted, unique)."""

    def __post_init__(self) -> None:
        positive = (
            "max_order_notional",
            "max_concentration",
            "max_gross_leverage",
            "max_group_exposure",
        )
        for name in positive:
            v = _number(name, getattr(self, name))
            if v <= 0.0:
                raise ValueError(f"{name} must be > 0, got {v!r}")
            object.__setattr__(self, name, v)
        for name in ("price_collar_pct", "daily_loss_limit"):
            v = _number(name, getattr(self, name))
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
            object.__setattr__(self, name, v)
        for name in ("max_orders_per_window", "rate_window_ns"):
            n = _integer(name, getattr(self, name))
            if n < 1:
                raise ValueError(f"{name} must be >= 1, got {n!r}")
        object.__setattr__(
            self, "restricted_symbols", _symbols("restricted_symbols", self.restricted_symbols)
        )

    @classmethod
    def defaults(cls) -> RiskLimits:
        return cls()


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """How a new account starts and what its trades cost."""

    initial_equity: float = 1_000_000.0
    """Starting cash in USD (the seeds' portfolio size)."""
    fee_per_contract: float = 1.0
    """Fee in USD per contract/unit traded (exchange + clearing for futures)."""
    fee_bps: float = 0.0
    """Fee in basis points of traded notional (crypto/FX venues)."""
    allow_short: bool = True
    """Whether sells may take a position below zero."""

    def __post_init__(self) -> None:
        eq = _number("initial_equity", self.initial_equity)
        if eq <= 0.0:
            raise ValueError(f"initial_equity must be > 0, got {eq!r}")
        object.__setattr__(self, "initial_equity", eq)
        for name in ("fee_per_contract", "fee_bps"):
            v = _number(name, getattr(self, name))
            if v < 0.0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
            object.__setattr__(self, name, v)
        if not isinstance(self.allow_short, bool):
            raise ValueError(f"allow_short must be true or false, got {self.allow_short!r}")

    def fee(self, quantity: float, price: float, multiplier: float) -> float:
        """Fee in USD of one fill: per-contract plus basis points of notional, computed on the
        decimals and rounded half-up to the cent (``operators.domain.money``)."""
        return fee_amount(quantity, price, multiplier, self.fee_per_contract, self.fee_bps)


DEFAULT_ACCOUNT = "paper"
"""The account a run trades when the risk file configures none."""

_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """One configured account: its name, its limits, its settings and what it trades.

    Several accounts trade side by side in one run, each with its own ledger, limits and
    orders; ``symbols`` says which instruments an account trades (empty: every instrument of
    the run), so market data reaches only the accounts that need it.
    """

    name: str = DEFAULT_ACCOUNT
    limits: RiskLimits = field(default_factory=RiskLimits)
    settings: AccountConfig = field(default_factory=AccountConfig)
    symbols: tuple[str, ...] = ()
    """Symbols the account trades (normalised to sorted, unique); empty: all of them."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _ACCOUNT_NAME.match(self.name):
            raise ValueError(f"account name must be letters, digits, '_', '.' or '-' (not "
                             f"starting with a punctuation mark), got {self.name!r}")
        if not isinstance(self.limits, RiskLimits):
            raise ValueError(f"{self.name}: limits must be RiskLimits")
        if not isinstance(self.settings, AccountConfig):
            raise ValueError(f"{self.name}: settings must be AccountConfig")
        object.__setattr__(self, "symbols", _symbols(f"{self.name}: symbols", self.symbols))

    def trades(self, symbol: str) -> bool:
        return not self.symbols or symbol in self.symbols
