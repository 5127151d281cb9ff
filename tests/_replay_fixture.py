"""Shared replays of the bundled E-mini sample for the decision-chain acceptance tests.

One walk-forward model bundle is trained once per session (``jobs.replay.train_models``) and
every replay trades it (``--models``), so no test retrains. The replays are ``streamquant run``
(``jobs.replay.run_replay``) in two worker processes (the machine has two cores),
queued together the first time any of them is asked for; a test waits only for the run it
reads. Tests read results the way a trader or analyst would: from the topic files
``<out>/topics/*.jsonl`` decoded with ``topics.serde.decode``, ``summary.json`` and
``equity.csv``.

Pytest instantiates a fixture once per module that defines or imports it, so the pool itself is
a process-wide singleton (``shared_pool``); a test module gets the session fixture ``replays``
with ``replays = pool_fixture()`` (a conftest.py can do the same once for every module).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from jobs.options import ReplayOptions
from jobs.replay import run_replay
from jobs.sinks.options import SinkOptions
from jobs.strategy import StrategyBundle, load_bundle
from jobs.train_job import EMINI_TRAIN_END_NS, train_models
from topics.messages import Control
from topics.serde import decode

NS = 1_000_000_000
MINUTE = 60 * NS
TRAIN_END = EMINI_TRAIN_END_NS  # 2013-09-02 22:00 UTC: Globex reopens after Labor Day

# The tight limits of the risk replay: ES ~ 1640 x 50 = 82,000 USD a contract on 1,000,000 USD,
# so 10 % concentration admits one contract and a 100,000 USD order cap one contract per order;
# three orders per ten minutes binds against roughly one decision a minute.
RISK_LIMITS = {
    "max_concentration": 0.1,
    "max_order_notional": 100_000.0,
    "max_orders_per_window": 3,
    "rate_window_ns": 600 * NS,
}
RISK_TOML = "\n".join(
    ["[limits]", *(f"{k} = {v!r}" for k, v in RISK_LIMITS.items()), "", "[account]", ""]
)

# Three accounts in one run: "tight" trades ES under the tight limits above (one contract),
# "wide" trades everything with twice the equity under the default limits, and "rates" trades
# only ZN, which the E-mini sample never prints. The rate limit is set once at the top
# level and inherited by every account.
ACCOUNTS_TOML = """
[limits]
max_orders_per_window = 3
rate_window_ns = 600_000_000_000

[accounts.tight]
symbols = ["ES"]
[accounts.tight.limits]
max_concentration = 0.1
max_order_notional = 100_000.0

[accounts.wide]
initial_equity = 2_000_000.0

[accounts.rates]
symbols = ["ZN"]
fee_per_contract = 0.5
"""
INSTRUMENTS_CSV = """symbol,venue,multiplier,tick_size,lot_size,group,session_start
ES,CME,50,0.25,1,equity-index,17:00
ZN,CBOT,1000,0.015625,1,rates,17:00
"""

# The kill switch trips three hours into the trading window and is reset one hour later.
KILL_AT = TRAIN_END + 3 * 60 * MINUTE
RESET_AT = KILL_AT + 60 * MINUTE
CONTROLS = (
    Control(ts_event=KILL_AT, command="KILL", account="paper", reason="desk stop"),
    Control(ts_event=RESET_AT, command="RESET", account="paper", reason="all clear"),
)

# Issue 7, item 18: by default the sizer adds exposure only when the models' expected edge beats
# the expected round-trip cost, and on the sample that leaves ~15 orders. The runs that test the
# mechanics of sizing, routing, the risk rules and the paper broker need a busy tape, so they
# replay the ungated strategy (``--no-cost-gate``); ``default`` is the replay a user gets.
UNGATED = {"cost_gate": False}
RUNS: dict[str, dict[str, Any]] = {
    "base": {**UNGATED},
    "guarded": {"risk": True, "control": True, **UNGATED},
    "guarded_again": {"risk": True, "control": True, **UNGATED},
    "twap": {"algo": "TWAP", **UNGATED},
    "iceberg": {"algo": "ICEBERG", **UNGATED},
    "vwap": {"algo": "VWAP", **UNGATED},
    "default": {},
    "default_again": {},
    "accounts": {"accounts": True, **UNGATED},
    "frozen": {"online_learning": False},
}
"""Replay name -> options beyond the defaults: ``default`` is ``streamquant run`` as shipped
(the golden acceptance replay reads it and ``default_again``); ``guarded`` trades under the
tight limits and the kill switch (twice, for determinism); ``twap``, ``iceberg`` and ``vwap``
run one execution algorithm each; ``accounts`` trades three accounts with different limits side
by side; ``frozen`` is ``default`` with ``--no-online-learning``; all but ``default`` and
``frozen`` run without the cost gate."""


@dataclass(frozen=True, slots=True)
class Replay:
    """A finished replay's output directory with typed readers of what it wrote."""

    name: str
    out: Path

    def topic(self, name: str) -> list[Any]:
        return read_topic(self.out, name)

    @property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "summary.json").read_text())
        return data

    def raw(self, name: str) -> bytes:
        return (self.out / "topics" / f"{name}.jsonl").read_bytes()


def _replay_job(opts: ReplayOptions) -> None:
    """Worker body: ``streamquant run`` in process (the worker inherits the imports)."""
    run_replay(opts)


def _warm_up() -> None:
    """Worker initializer: import the pipeline once per worker, not once per replay."""
    import jobs.strategy  # noqa: F401  (scikit-learn, skl2onnx)
    import operators.infer  # noqa: F401  (onnxruntime)


class ReplayPool:
    """Runs the named replays in two worker processes and hands out finished ones.

    The workers are spawned, not forked: the test process may hold onnxruntime sessions and
    BLAS thread pools from earlier tests, which a fork would copy mid-flight. Each worker
    imports the pipeline once and then replays one run after another (about 5 s each).
    """

    def __init__(self, base: Path, models: Path, bundle: StrategyBundle) -> None:
        self.base = base
        self.models = models
        self.bundle = bundle
        self.risk_file = base / "risk.toml"
        self.risk_file.write_text(RISK_TOML)
        self.control_file = base / "control.jsonl"
        self.control_file.write_bytes(b"".join(msgspec.json.encode(c) + b"\n" for c in CONTROLS))
        self.accounts_file = base / "accounts.toml"
        self.accounts_file.write_text(ACCOUNTS_TOML)
        self.instruments_file = base / "instruments.csv"
        self.instruments_file.write_text(INSTRUMENTS_CSV)
        self._executor = ProcessPoolExecutor(
            max_workers=2, mp_context=multiprocessing.get_context("spawn"), initializer=_warm_up)
        self._futures: dict[str, Future[None]] = {}

    def options(self, name: str) -> ReplayOptions:
        spec = RUNS[name]
        out = self.base / name
        return ReplayOptions(
            out=out, models=self.models, quiet=True, summary_json=out / "summary.json",
            risk=(self.risk_file if spec.get("risk")
                  else self.accounts_file if spec.get("accounts") else None),
            instruments=self.instruments_file if spec.get("accounts") else None,
            control=self.control_file if spec.get("control") else None,
            algo=spec.get("algo", "IMMEDIATE"), cost_gate=spec.get("cost_gate", True),
            online_learning=spec.get("online_learning", True),
            # these tests read topic files; the database has its own tests (and costs CPU)
            sinks=SinkOptions(sink="none"))

    def start(self, *names: str) -> None:
        """Queue replays (idempotent); they run in the background in the order given."""
        for name in names:
            if name not in self._futures:
                self._futures[name] = self._executor.submit(_replay_job, self.options(name))

    def get(self, name: str) -> Replay:
        """The finished replay ``name`` (started now if it was not queued)."""
        self.start(name)
        self._futures[name].result()
        return Replay(name, self.base / name)

    def close(self) -> None:
        """Cancel queued replays and stop the workers (only the processes we started)."""
        procs = list(getattr(self._executor, "_processes", {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
        # keep the runs for a post-mortem, but not their 100 MB copies of the input ticks
        for ticks in self.base.glob("*/topics/md.ticks.jsonl"):
            ticks.unlink()


_POOL: list[ReplayPool] = []  # the session's pool (a list: no ``global`` statement needed)
_POOL_LOCK = threading.Lock()


def shared_pool(tmp_path_factory: pytest.TempPathFactory) -> ReplayPool:
    """The session's replay pool: the bundle is trained on first use and every run queued."""
    with _POOL_LOCK:
        if not _POOL:
            base = tmp_path_factory.mktemp("replays")
            models = base / "models"
            train_models(ReplayOptions(out=base / "train", quiet=True), models)
            pool = ReplayPool(base, models, load_bundle(models))
            pool.start(*RUNS)
            _POOL.append(pool)
        return _POOL[0]


def close_shared_pool() -> None:
    with _POOL_LOCK:
        while _POOL:
            _POOL.pop().close()


def pool_fixture() -> Callable[..., Any]:
    """A session fixture (for a test module's namespace) yielding the shared pool."""

    @pytest.fixture(scope="session")
    def replays(tmp_path_factory: pytest.TempPathFactory, emini_ticks_path: Path
                ) -> Iterator[ReplayPool]:
        assert emini_ticks_path.is_file()  # fetched before any replay needs it
        yield shared_pool(tmp_path_factory)
        close_shared_pool()

    return replays


# ------------------------------------------------------------------------------ readers


@cache
def read_topic(out: Path, name: str) -> list[Any]:
    """Every record of ``<out>/topics/<name>.jsonl``, decoded with the topic's schema."""
    data = (out / "topics" / f"{name}.jsonl").read_bytes()
    return [decode(name, line) for line in data.splitlines()]


class _Src(msgspec.Struct):
    line: int


class _TickRow(msgspec.Struct):
    ts_event: int
    price: float
    size: float
    source: _Src


@dataclass(frozen=True, slots=True)
class Ticks:
    """``md.ticks`` as columns (file order, which is event-time order for this sample)."""

    ts: npt.NDArray[np.int64]
    price: npt.NDArray[np.float64]
    size: npt.NDArray[np.float64]
    line: npt.NDArray[np.int64]

    def lines_between(self, start: int, end: int) -> list[int]:
        """Source lines of the trades with ``start <= ts < end`` (one bar)."""
        lo, hi = np.searchsorted(self.ts, [start, end], side="left")
        out: list[int] = self.line[lo:hi].tolist()
        return out

    def at(self, ts: int) -> slice:
        """Rows with exactly this event time."""
        lo = int(np.searchsorted(self.ts, ts, side="left"))
        hi = int(np.searchsorted(self.ts, ts, side="right"))
        return slice(lo, hi)

    def last_at_or_before(self, ts: int) -> int:
        """Row of the last trade with event time <= ts."""
        return int(np.searchsorted(self.ts, ts, side="right")) - 1

    def seen_at_decision(self, ts: int) -> int:
        """Row of the last trade the account had seen when deciding at ``ts``.

        A decision is stamped with its bar's closing tick: the first trade at or after the bar's
        end. Trades printed later with the same timestamp arrive after the decision.
        """
        i = int(np.searchsorted(self.ts, ts, side="left"))
        return i if i < len(self.ts) and self.ts[i] == ts else i - 1


@cache
def read_ticks(out: Path) -> Ticks:
    data = (out / "topics" / "md.ticks.jsonl").read_bytes()
    rows = msgspec.json.Decoder(list[_TickRow]).decode(b"[" + b",".join(data.splitlines()) + b"]")
    ts = np.fromiter((r.ts_event for r in rows), dtype=np.int64, count=len(rows))
    assert np.all(np.diff(ts) >= 0), "md.ticks is expected in event-time order"
    return Ticks(ts=ts,
                 price=np.fromiter((r.price for r in rows), dtype=np.float64, count=len(rows)),
                 size=np.fromiter((r.size for r in rows), dtype=np.float64, count=len(rows)),
                 line=np.fromiter((r.source.line for r in rows), dtype=np.int64,
                                  count=len(rows)))
