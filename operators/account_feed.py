"""Account feed: re-key trades and commands for the account-keyed account operator.

Trades on ``md.ticks`` are keyed by symbol and commands on ``control`` may name every account
(``*``); the account operator is keyed by account and keeps each account's state apart. This
stateless stage emits each trade once per account that trades its symbol, and each command
once per account it names, onto ``account.feed`` keyed by that account: market data reaches
exactly the accounts that need it (a Kafka or Flink host repartitions here).
"""

from __future__ import annotations

import msgspec

from operators.contract import Context, Emit, Operator
from operators.domain.limits import AccountSpec
from topics import names as tn
from topics.messages import AccountFeed, Control, Tick

FEED_TOPIC = tn.ACCOUNT_FEED


class AccountFeedConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    accounts: tuple[str, ...]
    """Every account, in the order copies are emitted."""
    symbols: dict[str, tuple[str, ...]] = {}
    """Account -> the symbols it trades; an account not listed trades every symbol."""

    def __post_init__(self) -> None:
        if not self.accounts or len(set(self.accounts)) != len(self.accounts):
            raise ValueError(f"accounts must be non-empty and unique, got {self.accounts}")
        unknown = sorted(set(self.symbols) - set(self.accounts))
        if unknown:
            raise ValueError(f"symbols given for unknown account(s) {unknown}")

    @classmethod
    def of(cls, accounts: tuple[AccountSpec, ...]) -> AccountFeedConfig:
        return cls(accounts=tuple(a.name for a in accounts),
                   symbols={a.name: a.symbols for a in accounts if a.symbols})


class AccountFeedState(msgspec.Struct, kw_only=True):
    """Nothing: the routing is config."""


class AccountFeedRouter(Operator[AccountFeedState, Tick | Control]):
    UID = "account_feed"
    STATE_VERSION = 1
    State = AccountFeedState

    def __init__(self, config: AccountFeedConfig) -> None:
        self.config = config
        self._any = tuple(a for a in config.accounts if a not in config.symbols)
        self._routes: dict[str, tuple[str, ...]] = {}
        for a in config.accounts:
            for s in config.symbols.get(a, ()):
                self._routes.setdefault(s, ())
        for s in self._routes:  # config order within a symbol
            self._routes[s] = tuple(a for a in config.accounts
                                    if a in self._any or s in config.symbols.get(a, ()))

    def accounts_for(self, symbol: str) -> tuple[str, ...]:
        """The accounts that receive a trade of ``symbol``."""
        return self._routes.get(symbol, self._any)

    def key(self, event: Tick | Control) -> str:
        return event.symbol if type(event) is Tick else event.account  # type: ignore[union-attr]

    def new_state(self, key: str) -> AccountFeedState:
        return AccountFeedState()

    def process(
        self, state: AccountFeedState, event: Tick | Control, ctx: Context
    ) -> tuple[AccountFeedState, list[Emit]]:
        if type(event) is Tick:
            ts = event.ts_event
            to = self._routes.get(event.symbol, self._any)
            if len(to) == 1:  # the usual case
                a = to[0]
                return state, [Emit(FEED_TOPIC, a, AccountFeed(ts_event=ts, account=a,
                                                               tick=event))]
            return state, [Emit(FEED_TOPIC, a, AccountFeed(ts_event=ts, account=a, tick=event))
                           for a in to]
        assert isinstance(event, Control)
        names = self.config.accounts if event.account == "*" else (
            (event.account,) if event.account in self.config.accounts else ())
        return state, [Emit(FEED_TOPIC, a, AccountFeed(ts_event=event.ts_event, account=a,
                                                       control=event)) for a in names]
