"""The batched whole chain writes the per-event path's topic files, byte for byte.

Real E-mini trades as two instruments (alternate rows, the second 100 points lower), traded by
three accounts (one per instrument, one for both with a daily-loss limit tight enough to trip)
under a kill switch tripped and reset for one account, a symbol halted for another and a final
kill for all. The batched path applies the stretches where the accounts are quiet over columns
(``jobs.accel.account_columns``) and the rest per event; the per-event path (``--mode event``)
is the reference. Every execution algorithm, out-of-order trades with lateness, and small read
blocks (VWAP runs there: its volume buckets see trades out of order).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from jobs.accel.account_columns import ChainStats
from jobs.batch_replay import run_batch_ticks
from jobs.cli import main
from jobs.event_replay import run_event_ticks
from jobs.graph import Stage
from jobs.options import ReplayOptions
from jobs.progress import Progress
from jobs.replay import chain_options
from jobs.sources import normalize_config, resolve_ticks
from jobs.topic_sink import TopicSink
from jobs.topology import chain_stages, opened, tick_graph
from operators.domain.bars import parse_duration
from operators.features import FeaturesConfig, WindowFeatures
from operators.normalize import Normalize
from topics.messages import Algo, Control
from topics.serde import decode

TZ = "America/Chicago"
ROWS = 60_000
"""Sunday 17:00 CT to Monday 19:36 CT: the session rolls at Monday 17:00 CT, after the halt."""
BAR_NS = parse_duration("1m")
INSTRUMENTS = ("symbol,multiplier,tick_size,lot_size,group\n"
               "ES,50,0.25,1,equity-index\nEX,50,0.25,1,equity-index\n")
RISK = """[limits]
max_concentration = 0.3

[accounts.es]
symbols = ["ES"]

[accounts.ex]
symbols = ["EX"]

[accounts.both]
[accounts.both.limits]
daily_loss_limit = 0.0002
"""


def _ns(local: str) -> int:
    dt = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(TZ))
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1_000


def _shifted(local: str, ms: int) -> str:
    return (datetime.fromisoformat(local) + timedelta(milliseconds=ms)).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:-3]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, emini_ticks_path: Path) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("chain_batch")
    with emini_ticks_path.open() as f:
        f.readline()
        trades = [line.rstrip("\n").split(",") for _, line in zip(range(ROWS), f, strict=False)]
    rows = [(ts, "ES" if n % 2 == 0 else "EX",
             price if n % 2 == 0 else f"{float(price) - 100:.2f}", size)
            for n, (ts, price, size) in enumerate(trades)]
    ticks = base / "two.csv"
    ticks.write_text("ts,symbol,price,size\n" + "".join(f"{a},{b},{c},{d}\n"
                                                        for a, b, c, d in rows))
    rng = np.random.default_rng(5)  # out of order: each trade moved by up to +-3 s
    jitter = rng.integers(-3000, 3000, len(rows)).tolist()
    jittered = base / "jittered.csv"
    jittered.write_text("ts,symbol,price,size\n" + "".join(
        f"{_shifted(a, j)},{b},{c},{d}\n"
        for (a, b, c, d), j in zip(rows, jitter, strict=True)))
    models = base / "models"
    assert main(["train", "--ticks", str(ticks), "--tz", TZ, "--out", str(models),
                 "--train-fraction", "0.5", "--quiet"]) == 0
    (base / "instruments.csv").write_text(INSTRUMENTS)
    (base / "risk.toml").write_text(RISK)
    at = [_ns(trades[int(ROWS * q)][0]) for q in (0.7, 0.8, 0.85, 0.97)]
    controls = [
        Control(ts_event=at[0], command="KILL", account="es", reason="desk stop"),
        Control(ts_event=at[1], command="HALT_SYMBOL", account="both", symbol="EX"),
        Control(ts_event=at[2], command="RESET", account="es"),
        Control(ts_event=at[3], command="KILL", account="*", reason="end of day"),
    ]
    return {"base": base, "ticks": ticks, "jittered": jittered, "models": models,
            "controls": controls}


def _replay(work: dict[str, Any], out: Path, mode: str, algo: Algo, *, jittered: bool = False,
            **chunking: Any) -> tuple[dict[str, bytes], ChainStats]:
    base: Path = work["base"]
    lateness = 2_000_000_000 if jittered else 0
    opts = ReplayOptions(out=out, ticks=work["jittered" if jittered else "ticks"],
                         tz=TZ, quiet=True, models=work["models"],
                         cost_gate=False, algo=algo, risk=base / "risk.toml",
                         instruments=base / "instruments.csv", lateness_ns=lateness)
    src = resolve_ticks(opts)
    norm = Normalize(normalize_config(src, None))
    feats = WindowFeatures(FeaturesConfig(bar_ns=BAR_NS, lateness_ns=lateness))
    chain: tuple[Stage, ...] = chain_stages(chain_options(opts, feats.feature_version, BAR_NS,
                                                          TZ))
    sink = TopicSink(out, tick_graph(norm, feats, chain).output_topics)
    stats = ChainStats()
    with opened(chain):
        if mode == "batch":
            run_batch_ticks(src, norm, feats, chain, sink, lateness, list(work["controls"]),
                            Progress("", None, enabled=False), stats=stats, **chunking)
        else:
            run_event_ticks(src, norm, feats, chain, sink, lateness, list(work["controls"]),
                            Progress("", None, enabled=False), **chunking)
    sink.close()
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.jsonl"))}, stats


def _codes(topics: dict[str, bytes]) -> set[str]:
    return {r.code for ln in topics["risk.rejects.jsonl"].splitlines()
            for r in decode("risk.rejects", ln).reasons}


@pytest.mark.parametrize("algo", ["IMMEDIATE", "TWAP", "ICEBERG"])
def test_batched_chain_writes_the_event_paths_bytes_for_every_algo(
        tmp_path: Path, work: dict[str, Any], algo: Algo) -> None:
    event, _ = _replay(work, tmp_path / "event", "event", algo)
    batch, stats = _replay(work, tmp_path / "batch", "batch", algo)
    assert batch == event
    # the premises: it traded in both instruments and accounts, the daily loss and the kill
    # switch bound, and most trades went over columns
    assert event["orders.jsonl"].count(b"\n") > 30
    accounts = {decode("orders", ln).account for ln in event["orders.jsonl"].splitlines()}
    assert accounts == {"es", "ex", "both"}
    assert {"DAILY_LOSS_LIMIT", "KILL_SWITCH"} <= _codes(event), _codes(event)
    assert stats.columnar_share > 0.5, stats


def test_batched_chain_agrees_on_out_of_order_trades_in_small_blocks(
        tmp_path: Path, work: dict[str, Any]) -> None:
    event, _ = _replay(work, tmp_path / "event", "event", "VWAP", jittered=True)
    batch, stats = _replay(work, tmp_path / "batch", "batch", "VWAP", jittered=True,
                           block_bytes=4096)
    assert event["md.ticks.late.jsonl"].count(b"\n") > 100  # the premise: disorder
    assert event["fills.jsonl"].count(b"\n") > 30
    assert batch == event
    assert stats.columnar_share > 0.3, stats
