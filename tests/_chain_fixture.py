"""One real replay per test session, recorded message by message, for the operator contract.

The contract suite needs each operator's *real* input: what it consumes when the whole
pipeline runs on real data. This module runs it once (cached per process): a prefix of the
E-mini trade file goes through ``jobs.replay``'s reference event path (normalize, window
features and the decision chain of ``jobs.pipeline.chain_stages``) with a walk-forward bundle
trained by ``jobs.strategy.train_bundle`` on the prefix's first bars, and a sink that records
every ``(topic, value)`` in dispatch order. The local runner dispatches depth first and a
consumer processes a message right after the sink sees it, so the recorded order of a stage's
input topics *is* the order that stage consumed them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import msgspec

from jobs.bar_files import load_bars
from jobs.data import EMINI_SYMBOL, EMINI_TZ, EMINI_VENUE, fetch_emini
from jobs.graph import Graph
from jobs.loaders.instruments import instrument_master
from jobs.local_runner import LocalRunner
from jobs.sources import (
    EMINI_COLUMN_MAP,
    TickInput,
    inspect_tick_file,
    iter_records,
    normalize_config,
)
from jobs.strategy import StrategyBundle, train_bundle
from jobs.topic_sink import TopicSink
from jobs.topology import ChainOptions, chain_stages, opened, tick_graph
from jobs.train_job import features_pass
from operators.contract import Operator
from operators.domain.limits import AccountSpec, RiskLimits
from operators.features import FeaturesConfig, WindowFeatures
from operators.normalize import Normalize, RawRecord
from tests._sp500 import write_sp500_bars
from topics.messages import Bar

MINUTE_NS = 60_000_000_000
DAY_NS = 86_400_000_000_000

PREFIX_LINES = 60_000
"""Data lines of the E-mini file replayed: Sunday 17:00 CT to Monday 19:36 CT, 1,182 bars."""
TRAIN_FRACTION = 0.6
"""The bundle trains on the first 60 % of the prefix's bars; the rest is the trading window."""
LIMITS = RiskLimits(max_concentration=0.2)
"""Tighter than the 25 % default: at ~1,650 x 50 USD per contract and 1M equity, the sizer's
3-contract targets exceed the 2 contracts allowed, so the concentration rule binds often."""
SP500_BARS = 500


class RecordingSink(TopicSink):
    """A topic sink that also keeps every ``(topic, value)`` in dispatch order."""

    def __init__(self, topics: tuple[str, ...]) -> None:
        super().__init__(None, topics)
        self.log: list[tuple[str, msgspec.Struct]] = []

    def emit(self, topic: str, value: msgspec.Struct) -> None:
        self.log.append((topic, value))
        super().emit(topic, value)


@dataclass(frozen=True, slots=True)
class ChainRun:
    """The recorded replay and everything needed to rebuild its operators."""

    workdir: Path
    records: tuple[RawRecord, ...]
    log: tuple[tuple[str, msgspec.Struct], ...]
    bundle: StrategyBundle
    operators: dict[str, Operator[Any, Any]]
    """The run's operators by UID (their ``config`` rebuilds identical fresh instances)."""
    graph: Graph
    """The run's graph (its stages hold the run's operator instances)."""

    def consumed(self, topics: Iterable[str]) -> list[msgspec.Struct]:
        """The messages of ``topics`` in the order the run dispatched them."""
        wanted = frozenset(topics)
        return [v for t, v in self.log if t in wanted]


@cache
def _workdir() -> tempfile.TemporaryDirectory[str]:
    # Held by the cache for the whole session: the model registry must outlive every case.
    return tempfile.TemporaryDirectory(prefix="streamquant-contract-")


def _emini_prefix(directory: Path) -> TickInput:
    lines = fetch_emini(quiet=True).read_text().splitlines(keepends=True)
    path = directory / "es_prefix.csv"
    path.write_text("".join(lines[: PREFIX_LINES + 1]))
    spec = inspect_tick_file(path, column_map=EMINI_COLUMN_MAP, has_default_symbol=True)
    return TickInput(path=path, label=path.name, spec=spec, column_map=EMINI_COLUMN_MAP,
                     tz=EMINI_TZ, default_symbol=EMINI_SYMBOL, default_venue=EMINI_VENUE,
                     bundled=False)


@cache
def chain_run() -> ChainRun:
    """Train on the prefix's first bars, then replay it per event through the whole graph."""
    workdir = Path(_workdir().name)
    src = _emini_prefix(workdir)
    norm = Normalize(normalize_config(src, None))
    vectors = features_pass(src, norm, MINUTE_NS, 0)
    ends = sorted({fv.ts_event for fv in vectors})
    train_end = ends[int(len(ends) * TRAIN_FRACTION) - 1]
    models = workdir / "models"
    bundle = train_bundle(vectors, train_end=train_end, bar_ns=MINUTE_NS, out_dir=models,
                          quiet=True)
    # Issue 7, item 18: without the cost gate, so that the prefix reaches orders, fills and
    # rejects (gated, the models' one-bar edge rarely covers a round trip and nothing trades)
    opts = ChainOptions(models=models, bundle=bundle,
                        instruments=instrument_master(None, bundle.symbols, quiet=True),
                        accounts=(AccountSpec(name="paper", limits=LIMITS),),
                        session_tz=EMINI_TZ, cost_gate=False)
    feats = WindowFeatures(FeaturesConfig(bar_ns=MINUTE_NS))
    graph = tick_graph(norm, feats, chain_stages(opts))
    sink = RecordingSink(graph.output_topics)
    runner = LocalRunner(graph, sink)
    records = tuple(iter_records(src))
    with opened(graph.stages):
        for rec in records:
            runner.feed(rec)
        runner.end_of_stream()
    return ChainRun(workdir=workdir, records=records, log=tuple(sink.log), bundle=bundle,
                    operators={st.uid: st.operator for st in graph.stages}, graph=graph)


@cache
def sp500_bars() -> tuple[Bar, ...]:
    """The first daily S&P 500 bars of ``arch``'s sample, read by the ``--bars`` file loader."""
    path = Path(_workdir().name) / "sp500.csv"
    df = write_sp500_bars(path, SP500_BARS)
    items, bar_ns = load_bars(path, bar_ns=DAY_NS, tz=None, default_symbol=None)
    bars = tuple(item for item, _ in items if isinstance(item, Bar))
    if bar_ns != DAY_NS or len(bars) != len(df):
        raise RuntimeError(f"sp500 bars: {len(bars)} of {len(df)} rows loaded as bars")
    return bars
