"""docs/analysts.md's worked queries and ``streamquant explain``, on real replays.

Two replays of the bundled E-mini sample share one embedded database (``--dsn chdb://DIR``):
IMMEDIATE with the raw ticks table, TWAP without it. Every worked query is read out of the
document, run through ``streamquant sql --format json`` (a subprocess: chdb opens one
directory per process) and its answer compared with what the topic files say.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests._replay_fixture import ReplayPool, pool_fixture, read_topic
from topics import names as tn

DOC = Path(__file__).resolve().parents[1] / "docs" / "analysts.md"
NS = 1_000_000_000

replays = pool_fixture()


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True,
                          text=True, check=check, timeout=600)


class Db:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.dsn = f"chdb://{base / 'db'}"
        self.immediate = base / "immediate"
        self.twap = base / "twap"

    def sql(self, query: str) -> list[dict[str, Any]]:
        out = _cli("sql", "--dsn", self.dsn, "--format", "json", query).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def db(replays: ReplayPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    d = Db(tmp_path_factory.mktemp("analysts"))
    common = ("--models", str(replays.models), "--dsn", d.dsn, "--quiet", "--no-report-html",
              "--sink", "clickhouse")
    _cli("run", "--out", str(d.immediate), *common)
    _cli("run", "--out", str(d.twap), "--algo", "TWAP", "--no-clickhouse-ticks", *common)
    yield d


def worked(name: str) -> str:
    """The SQL of the document's block marked ``-- worked: name``."""
    text = DOC.read_text()
    m = re.search(rf"```sql\n-- worked: {name}\n(.*?)```", text, re.S)
    assert m is not None, f"docs/analysts.md has no worked query {name!r}"
    return m.group(1)


def _ns(text: str) -> int:
    """A DateTime64(9) as ClickHouse prints it in JSON: 'YYYY-MM-DD hh:mm:ss.fffffffff'."""
    whole, _, frac = text.partition(".")
    dt = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return int(dt.timestamp()) * NS + int((frac or "0").ljust(9, "0"))


def test_every_worked_query_in_the_doc_is_checked_here() -> None:
    names = re.findall(r"-- worked: (\w+)", DOC.read_text())
    tested = {n.removeprefix("test_worked_") for n in globals() if n.startswith("test_worked_")}
    assert sorted(names) == sorted(tested)


def test_worked_ohlcv_per_minute(db: Db) -> None:
    rows = db.sql(worked("ohlcv_per_minute"))
    bars = read_topic(db.immediate, tn.MD_BARS)
    assert len(rows) == len(bars) == 2264
    for r, b in zip(rows, bars, strict=True):
        assert r["symbol"] == b.symbol
        assert _ns(r["minute"]) == b.ts_event
        got = (float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]),
               float(r["volume"]), int(r["trades"]))
        assert got == (b.open, b.high, b.low, b.close, b.volume, b.trade_count)


def _daily(out: Path) -> list[tuple[str, float]]:
    """(UTC day, equity at the day's last position update) per day, from the topic file."""
    last: dict[str, float] = {}
    for p in read_topic(out, tn.POSITIONS):
        day = datetime.fromtimestamp(p.ts_event / NS, UTC).strftime("%Y-%m-%d")
        last[day] = p.equity
    return sorted(last.items())


def test_worked_daily_pnl(db: Db) -> None:
    rows = db.sql(worked("daily_pnl"))
    for job, out in (("immediate", db.immediate), ("twap", db.twap)):
        mine = [r for r in rows if r["job"] == job]
        days = _daily(out)
        assert [r["day"] for r in mine] == [d for d, _ in days]
        peak = float(mine[0]["open_equity"])  # the equity before the first update
        for r, (_, close) in zip(mine, days, strict=True):
            peak = max(peak, close)
            assert float(r["close_equity"]) == pytest.approx(close, abs=1e-6)
            assert float(r["pnl"]) == pytest.approx(close - float(r["open_equity"]), abs=1e-6)
            assert float(r["drawdown"]) == pytest.approx(close / peak - 1, abs=1e-12)
        for prev, cur in itertools.pairwise(mine):
            assert cur["open_equity"] == prev["close_equity"]
    assert {r["job"] for r in rows} == {"immediate", "twap"}


def _slippage(out: Path) -> tuple[int, float, float]:
    orders = {o.client_order_id: o for o in read_topic(out, tn.ORDERS)}
    ref = {i.decision_id: i.reference_price for i in read_topic(out, tn.ORDERS_INTENTS)}
    n, qty, cost = 0, 0.0, 0.0
    for f in read_topic(out, tn.FILLS):
        o = orders[f.client_order_id]
        sign = 1 if f.side == "BUY" else -1
        n += 1
        qty += f.quantity
        cost += f.quantity * sign * (f.price - ref[o.decision_id])
    return n, qty, cost / qty


def test_worked_slippage_by_algo(db: Db) -> None:
    rows = {r["algo"]: r for r in db.sql(worked("slippage_by_algo"))}
    assert set(rows) == {"IMMEDIATE", "TWAP"}
    for algo, out in (("IMMEDIATE", db.immediate), ("TWAP", db.twap)):
        n, qty, per_contract = _slippage(out)
        r = rows[algo]
        assert int(r["fills"]) == n > 0
        assert float(r["contracts"]) == qty
        assert float(r["slippage_per_contract"]) == pytest.approx(per_contract, rel=1e-9)


def test_worked_rejects_by_code(db: Db) -> None:
    rows = db.sql(worked("rejects_by_code"))
    expected: Counter[str] = Counter()
    cut: defaultdict[str, float] = defaultdict(float)
    for out in (db.immediate, db.twap):
        for r in read_topic(out, tn.RISK_REJECTS):
            for reason in r.reasons:
                expected[reason.code] += 1
                cut[reason.code] += r.requested_quantity - r.allowed_quantity
    assert expected, "the replays reject nothing: the query is not exercised"
    assert {r["code"]: int(r["rejects"]) for r in rows} == dict(expected)
    for r in rows:
        assert float(r["contracts_cut"]) == pytest.approx(cut[r["code"]])


def test_worked_regime_timeline(db: Db) -> None:
    rows = db.sql(worked("regime_timeline"))
    stretches: list[tuple[str, int, int, int]] = []
    for g in read_topic(db.immediate, tn.REGIMES):
        if g.prob_bull >= max(g.prob_bear, g.prob_sideways):
            name = "bull"
        elif g.prob_bear >= g.prob_sideways:
            name = "bear"
        else:
            name = "sideways"
        if stretches and stretches[-1][0] == name:
            s = stretches[-1]
            stretches[-1] = (name, s[1], g.ts_event, s[3] + 1)
        else:
            stretches.append((name, g.ts_event, g.ts_event, 1))
    for job in ("immediate", "twap"):  # both saw the same bars, so the same regimes
        got = [(r["regime"], _ns(r["first_bar"]), _ns(r["last_bar"]), int(r["bars"]))
               for r in rows if r["job"] == job]
        assert got == stretches
    assert len({s[0] for s in stretches}) == 3


def test_worked_why_order(db: Db) -> None:
    order = next(o for o in read_topic(db.immediate, tn.ORDERS))
    sql = worked("why_order").replace("{order:String}", f"'{order.client_order_id}'")
    rows = db.sql(sql)
    assert {r["job"] for r in rows} == {"immediate", "twap"}  # the same input, two jobs
    rows = [r for r in rows if r["job"] == "immediate"]
    assert {r["decision_id"] for r in rows} == {order.decision_id}
    fills = [f for f in read_topic(db.immediate, tn.FILLS)
             if f.client_order_id == order.client_order_id]
    decision = next(d for d in read_topic(db.immediate, tn.AUDIT_DECISIONS)
                    if d.decision_id == order.decision_id)
    assert fills
    assert [r["fill_id"] for r in rows] == [f.fill_id for f in fills]
    assert [float(r["price"]) for r in rows] == [f.price for f in fills]
    assert {r["action"] for r in rows} == {decision.action}
    assert {float(r["quantity"]) for r in rows} == {order.quantity}


# ------------------------------------------------------------------------------ explain


def _explain(db: Db, some_id: str, *args: str, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
    return _cli("explain", some_id, "--dsn", db.dsn, *args, check=check)


def test_explain_json_is_the_decision_as_the_topics_hold_it(db: Db) -> None:
    out = db.immediate
    order = next(o for o in read_topic(out, tn.ORDERS))
    rec = json.loads(_explain(db, order.decision_id, "--job", "immediate",
                              "--format", "json").stdout)
    d = next(x for x in read_topic(out, tn.AUDIT_DECISIONS)
             if x.decision_id == order.decision_id)
    assert (rec["action"], rec["quantity"], rec["confidence"]) == (d.action, d.quantity,
                                                                   d.confidence)
    assert rec["features"] == d.features
    assert rec["model_versions"] == d.model_versions
    assert rec["regime_probs"] == d.regime_probs
    assert rec["risk_checks"] == d.risk_checks
    preds = [p for p in read_topic(out, tn.PREDICTIONS) if p.decision_id == d.decision_id]
    assert sorted((p["model"], p["prob_up"]) for p in rec["predictions"]) == \
        sorted((p.model, p.prob_up) for p in preds)
    bar = next(b for b in read_topic(out, tn.MD_BARS)
               if b.symbol == d.symbol and b.ts_end == rec["bar_ts"])
    assert (rec["bar"]["close"], rec["bar"]["volume"]) == (bar.close, bar.volume)
    assert rec["inputs"]["count"] == bar.trade_count  # the bar's ticks, from md_ticks
    orders = [o for o in read_topic(out, tn.ORDERS) if o.decision_id == d.decision_id]
    assert [o["client_order_id"] for o in rec["orders"]] == [o.client_order_id for o in orders]
    fills = [f for f in read_topic(out, tn.FILLS) if f.client_order_id == order.client_order_id]
    first = rec["orders"][0]
    assert [(f["fill_id"], f["price"]) for f in first["fills"]] == \
        [(f.fill_id, f.price) for f in fills]
    rejects = [r for r in read_topic(out, tn.RISK_REJECTS) if r.decision_id == d.decision_id]
    assert len(rec["rejects"]) == len(rejects)


def test_explain_finds_the_decision_from_an_order_or_a_fill_id(db: Db) -> None:
    fill = read_topic(db.immediate, tn.FILLS)[0]
    order = next(o for o in read_topic(db.immediate, tn.ORDERS)
                 if o.client_order_id == fill.client_order_id)
    for some_id in (fill.fill_id, order.client_order_id):
        text = _explain(db, some_id, "--job", "immediate").stdout
        assert text.startswith(f"Decision {order.decision_id}  ")
        assert f"fill {fill.fill_id}" in text
        for section in ("Input", "Bar", "Features", "Specialists", "Regime blend", "Sizing",
                        "Pre-trade check", "Orders"):
            assert f"\n{section}" in text


def test_explain_shows_why_an_order_was_cut(db: Db) -> None:
    reject = read_topic(db.immediate, tn.RISK_REJECTS)[0]
    text = _explain(db, reject.decision_id, "--job", "immediate").stdout
    for reason in reject.reasons:
        assert f"{reason.code}: {reason.message}" in text
    assert "FAIL" in text


def test_explain_asks_for_a_job_when_several_hold_the_decision(db: Db) -> None:
    d = read_topic(db.immediate, tn.AUDIT_DECISIONS)[-1]
    res = _explain(db, d.decision_id, check=False)
    assert res.returncode == 1
    assert "several jobs (immediate, twap)" in res.stderr and "--job" in res.stderr


def test_explain_of_an_unknown_id_says_what_exists(db: Db) -> None:
    res = _explain(db, "ES-1378198560000000000-000000000000", "--job", "immediate",
                   check=False)
    assert res.returncode == 1
    assert "no decision ES-1378198560000000000-000000000000" in res.stderr
    assert "latest ES decisions" in res.stderr
    res = _explain(db, "not-an-id", check=False)
    assert res.returncode == 1 and "neither a decision id" in res.stderr
