"""Several accounts with their own limits in one run: configuration, routing, the E-mini replay.

The replay (``accounts`` in ``tests._replay_fixture``) trades the bundled E-mini sample with
three accounts from one risk file: ``tight`` (ES only, 10 % concentration, 100,000 USD per
order), ``wide`` (every symbol, twice the equity, default limits) and ``rates`` (ZN only,
which the sample never prints); all three inherit a 3-orders-per-10-minutes rate limit from
the top-level ``[limits]``. Expectations come from those limits and the real trades.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobs.errors import UsageError
from jobs.graph import Graph, Stage
from jobs.loaders.risk_file import load_risk_file
from jobs.local_runner import LocalRunner
from jobs.replay import run_replay
from jobs.topic_sink import TopicSink
from operators.account_feed import AccountFeedConfig, AccountFeedRouter
from operators.domain.limits import AccountConfig, AccountSpec, RiskLimits
from tests._replay_fixture import ACCOUNTS_TOML, Replay, ReplayPool, pool_fixture
from topics.messages import AccountFeed, Control, Tick

replays = pool_fixture()

NS = 1_000_000_000
ES_NOTIONAL_MAX = 1700.0 * 50  # the sample trades ES between ~1,620 and ~1,660


def _risk(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "risk.toml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------ configuration


def test_account_tables_inherit_the_top_level_limits_and_settings(tmp_path: Path) -> None:
    r = load_risk_file(_risk(tmp_path, ACCOUNTS_TOML))
    tight, wide, rates = r.accounts
    assert [a.name for a in r.accounts] == ["tight", "wide", "rates"]
    inherited = RiskLimits(max_orders_per_window=3, rate_window_ns=600 * NS)
    assert tight.limits == RiskLimits(max_orders_per_window=3, rate_window_ns=600 * NS,
                                      max_concentration=0.1, max_order_notional=100_000.0)
    assert (tight.symbols, tight.settings) == (("ES",), AccountConfig())
    assert wide.limits == inherited and wide.symbols == ()
    assert wide.settings == AccountConfig(initial_equity=2_000_000.0)
    assert rates.limits == inherited and rates.symbols == ("ZN",)
    assert rates.settings.fee_per_contract == 0.5


def test_without_account_tables_one_paper_account_trades_the_top_level_tables(
        tmp_path: Path) -> None:
    r = load_risk_file(_risk(tmp_path, "[limits]\nmax_concentration = 0.2\n"))
    assert r.accounts == (AccountSpec(name="paper", limits=RiskLimits(max_concentration=0.2)),)
    assert load_risk_file(None).accounts == (AccountSpec(),)


@pytest.mark.parametrize(("text", "match"), [
    ("[accounts]\n", r"at least one \[accounts.NAME\]"),
    ("[accounts.a]\nmax_concentration = 0.1\n", "unknown key.*max_concentration"),
    ("[accounts.a.limits]\nmax_leverage = 2\n", r"\[accounts.a\] \[limits\].*max_leverage"),
    ("[accounts.a]\nsymbols = \"ES\"\n", "list of symbols"),
    ("[accounts.\"a b\"]\n", "account name"),
    ("[accounts.a]\ninitial_equity = -1\n", r"\[accounts.a\].*initial_equity"),
    ("accounts = 3\n", r"\[accounts\] must be a table"),
])
def test_account_table_mistakes_are_named(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_risk_file(_risk(tmp_path, text))


def test_an_account_trading_a_symbol_missing_from_the_instrument_master_is_refused(
        tmp_path: Path, replays: ReplayPool) -> None:
    risk = _risk(tmp_path, "[accounts.a]\nsymbols = [\"NQ\"]\n")
    opts = replays.options("base")
    with pytest.raises(UsageError, match="account 'a' trades \\['NQ'\\]"):
        run_replay(type(opts)(out=tmp_path / "out", models=opts.models, quiet=True, risk=risk))


# ------------------------------------------------------------------------------ routing


def test_trades_reach_only_the_accounts_trading_their_symbol_and_commands_whom_they_name(
        emini_ticks_path: Path) -> None:
    df = pd.read_csv(emini_ticks_path, nrows=5_000)
    ts = (pd.to_datetime(df["DateTime"]).dt.tz_localize("America/Chicago")
          .dt.tz_convert("UTC").astype("int64"))
    ticks = [Tick(ts_event=int(t), symbol="ES", venue="CME", price=float(p), size=float(s))
             for t, p, s in zip(ts, df["Price"], df["Volume"], strict=True)]
    accounts = (AccountSpec(name="tight", symbols=("ES",)), AccountSpec(name="wide"),
                AccountSpec(name="rates", symbols=("ZN",)))
    router = AccountFeedRouter(AccountFeedConfig.of(accounts))
    graph = Graph("md.ticks", (Stage(router, ("md.ticks", "control"), ("account.feed",)),),
                  external=("control",))
    sink = TopicSink(None, ("account.feed",), capture=True)
    runner = LocalRunner(graph, sink)
    t0 = ticks[0].ts_event
    for who in ("*", "rates", "ghost"):
        runner.inject("control", Control(ts_event=t0, command="KILL", account=who))
    for t in ticks:
        runner.feed(t)
    assert sink.captured is not None
    feeds: list[AccountFeed] = sink.captured["account.feed"]  # type: ignore[assignment]
    got: dict[str, list[Any]] = defaultdict(list)
    for f in feeds:
        got[f.account].append(f.tick or f.control)
    assert [x.account for x in got["rates"]] == ["*", "rates"]  # commands only, no trades
    assert got["tight"] == [got["tight"][0], *ticks] and got["wide"] == got["tight"]
    assert router.accounts_for("ES") == ("tight", "wide")
    assert router.accounts_for("ZN") == ("wide", "rates")
    assert router.accounts_for("CL") == ("wide",)


# ------------------------------------------------------------------------------ the replay


@pytest.fixture(scope="module")
def run(replays: ReplayPool) -> Replay:
    return replays.get("accounts")


def _by_account(run: Replay, topic: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for v in run.topic(topic):
        out[v.account].append(v)
    return out


def test_each_account_gets_its_own_intents_sized_on_its_own_equity(run: Replay) -> None:
    intents = _by_account(run, "orders.intents")
    assert set(intents) == {"tight", "wide"}  # rates trades ZN: no signal, no intent
    tight, wide = intents["tight"], intents["wide"]
    assert [i.decision_id for i in tight] == [i.decision_id.replace("@wide", "@tight")
                                              for i in wide]
    assert all(i.decision_id.endswith("@tight") for i in tight)
    for a, b in zip(tight, wide, strict=True):  # same fraction, twice the equity
        assert b.sizing["contracts_raw"] == 2 * a.sizing["contracts_raw"]
    orders = run.topic("orders")
    assert len({o.client_order_id for o in orders}) == len(orders)
    assert {o.venue for o in orders} == {"CME"}  # the instrument master's venue


def test_each_account_trades_within_its_own_limits(run: Replay) -> None:
    positions, rejects = _by_account(run, "positions"), _by_account(run, "risk.rejects")
    tight = max(abs(p.quantity) for p in positions["tight"])
    wide = max(abs(p.quantity) for p in positions["wide"])
    # tight: 10 % of ~1M equity at ~82,000 USD a contract, and 100,000 USD an order
    assert tight == 1
    # wide: 25 % of ~2M equity: several contracts, never more than the limit allows
    assert 1 < wide <= math.floor(0.25 * 2_050_000 / (1620 * 50))
    codes = {name: {r.code for rj in rs for r in rj.reasons} for name, rs in rejects.items()}
    assert "CONCENTRATION_LIMIT" in codes["tight"] and "MAX_NOTIONAL" in codes["tight"]
    assert "MAX_NOTIONAL" not in codes.get("wide", set())
    assert all(rj.allowed_quantity <= 1 for rj in rejects["tight"])
    for rj in rejects["tight"]:
        for r in rj.reasons:
            if r.code == "MAX_NOTIONAL":
                assert r.limit == 100_000.0
    # the inherited rate limit binds each account on its own: <= 3 parents per 10 minutes
    for name, orders in _by_account(run, "orders").items():
        starts = sorted({(o.parent_order_id, o.ts_event) for o in orders
                         if o.slice.startswith("1/")}, key=lambda x: x[1])
        times = [t for _, t in starts]
        for i, t in enumerate(times):
            assert sum(1 for u in times[i:] if u < t + 600 * NS) <= 3, name


def test_an_account_that_trades_no_printed_symbol_receives_no_trades(run: Replay) -> None:
    for topic in ("orders", "fills", "positions", "risk.rejects"):
        assert "rates" not in _by_account(run, topic), topic
    s = run.summary
    # every trade was re-keyed once for tight and once for wide, never for rates
    assert s["topics"]["account.feed"] == 2 * s["ticks_valid"] == 1_000_000
    assert set(s["accounts"]) == {"tight", "wide", "rates"}
    assert s["accounts"]["rates"]["orders"] == 0
    assert s["accounts"]["tight"]["orders"] == len(_by_account(run, "orders")["tight"])
    assert s["orders"] == s["accounts"]["tight"]["orders"]  # the top level: the first account
