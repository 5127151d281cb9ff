"""The scrape-time collector: every metric family, built when Prometheus asks.

It runs on the endpoint's thread and reads, without locking: the output's counts through the
run probe (copied whole), the tap's counters, the sampler's histograms and the account
operator's state. Each read is a copy taken under the GIL, so a scrape may be a message behind
the run but never sees a torn container. Nothing here writes to the run.

Per-operator event counts come from the topics: an operator receives every message of its
input topics (the source stage: the source records), and emits the messages of its output
topics. ``audit.decisions`` has two producers: size writes the records of decisions it skips
(``skipped`` set), the account those of the rest; the tap counts the skipped ones, so each
operator gets its own share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from jobs.metrics import catalog as m
from jobs.metrics.catalog import CHECKPOINT_BUCKETS, MetricSpec
from jobs.metrics.histogram import LiteHistogram
from jobs.metrics.sampler import CALLS, unwrap
from jobs.sinks.probe import RunProbe, sink_lag
from operators.contract import END_OF_STREAM, MIN_WATERMARK
from topics import names as tn
from topics.dlq import DlqReason

if TYPE_CHECKING:
    from jobs.metrics.tap import MetricsTap

REGIMES = ("bull", "bear", "sideways")
NS = 1e-9


def family(spec: MetricSpec) -> Any:
    """An empty family for ``spec`` (labels from the catalog)."""
    labels = list(spec.labels)
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    if spec.kind == "gauge":
        return GaugeMetricFamily(spec.name, spec.help, labels=labels)
    return HistogramMetricFamily(spec.name, spec.help, labels=labels)


def add_histogram(fam: Any, labels: Sequence[str], h: LiteHistogram) -> None:
    buckets, total = h.cumulative()
    fam.add_metric(list(labels), buckets, total)


class RunCollector(Collector):
    """Builds every family from the tap and its probe (see module doc)."""

    def __init__(self, tap: MetricsTap) -> None:
        self.tap = tap
        self.checkpoint_hist = LiteHistogram(CHECKPOINT_BUCKETS)
        self._checkpoints_read = 0
        self._lock = threading.Lock()  # two scrapes at once must not fold a duration twice

    def describe(self) -> Iterable[Metric]:
        return ()  # families vary with the run; no registration-time collect

    def collect(self) -> Iterator[Metric]:
        tap = self.tap
        probe = tap.probe
        yield from self._run(probe)
        yield from self._tap_counts()
        if probe is not None:
            yield from self._operators(probe)
            yield from self._accounts(probe)
            yield from self._checkpoints(probe)
        yield from self._sinks()

    # -- the run ------------------------------------------------------------------------------
    def _run(self, probe: RunProbe | None) -> Iterator[Metric]:
        info = family(m.RUN_INFO)
        if probe is not None:
            info.add_metric([probe.mode, probe.path], 1.0)
        yield info
        fin = family(m.RUN_FINISHED)
        fin.add_metric([], 1.0 if self.tap.finished else 0.0)
        yield fin
        if probe is None:
            return
        emitted = probe.emitted()
        msgs = family(m.MESSAGES)
        for topic in sorted(emitted):
            msgs.add_metric([topic], float(emitted[topic]))
        yield msgs
        late = family(m.LATE)
        late.add_metric([], float(emitted.get(tn.MD_TICKS_LATE, 0)))
        yield late
        dlq = family(m.DEAD_LETTERS)
        reasons = probe.dead_letters()
        for r in sorted({*(x.value for x in DlqReason), *reasons}):  # zeros too: increase()
            dlq.add_metric([r], float(reasons.get(r, 0)))
        yield dlq
        records = probe.source_records()
        if records is not None:
            src = family(m.SOURCE_RECORDS)
            src.add_metric([], float(records))
            yield src
        yield from self._watermark(probe)

    def _watermark(self, probe: RunProbe) -> Iterator[Metric]:
        wm = probe.watermark()
        ended = wm >= END_OF_STREAM
        end = family(m.STREAM_ENDED)
        end.add_metric([], 1.0 if ended else 0.0)
        yield end
        if ended:
            wm = probe.event_time()  # where event time stopped
        if wm == MIN_WATERMARK:
            return
        g = family(m.WATERMARK)
        g.add_metric([], wm * NS)
        yield g
        if probe.mode == "live" and not ended:
            lag = family(m.WATERMARK_LAG)
            lag.add_metric([], time.time() - wm * NS)
            yield lag

    # -- what the tap counted -----------------------------------------------------------------
    def _tap_counts(self) -> Iterator[Metric]:
        tap = self.tap
        c = tap.counts
        chain = self._has_chain()
        if not chain:
            return
        for spec, src in ((m.ORDERS, c.orders), (m.FILLS, c.fills), (m.REJECTS, c.rejects),
                          (m.DECISIONS, c.decisions), (m.CONTROLS, c.controls)):
            fam = family(spec)
            values = dict(src)
            for k in sorted(values):
                fam.add_metric([k], float(values[k]))
            yield fam
        codes = family(m.REJECT_CODES)
        known = dict(c.reject_codes)
        for code in sorted({*_rule_codes(), *known}):  # zeros too: increase() sees the first
            codes.add_metric([code], float(known.get(code, 0)))
        yield codes
        preds = family(m.PREDICTIONS)
        pv = dict(c.predictions)
        for model, variant in sorted(pv):
            preds.add_metric([model, variant], float(pv[(model, variant)]))
        yield preds
        ent = family(m.REGIME_ENTROPY)
        probs = family(m.REGIME_PROB)
        bits = dict(c.entropy_bits)
        rp = dict(c.regime_probs)
        for sym in sorted(bits):
            ent.add_metric([sym], bits[sym])
        for sym in sorted(rp):
            for name, p in zip(REGIMES, rp[sym], strict=True):
                probs.add_metric([sym, name], p)
        yield ent
        yield probs
        t2o = family(m.TICK_TO_ORDER)
        add_histogram(t2o, [], c.tick_to_order)
        yield t2o
        inf = family(m.INFERENCE)
        add_histogram(inf, [], tap.sampler.inference)
        yield inf

    def _has_chain(self) -> bool:
        probe = self.tap.probe
        return probe is not None and tn.ORDERS in probe.graph.output_topics

    # -- operators ----------------------------------------------------------------------------
    def _operators(self, probe: RunProbe) -> Iterator[Metric]:
        graph = probe.graph
        emitted = probe.emitted()
        records = probe.source_records()
        producers: dict[str, list[str]] = {}
        for st in graph.stages:
            for t in st.outputs:
                producers.setdefault(t, []).append(st.uid)
        skipped = self.tap.counts.skipped_decisions
        online = sum(v for (model, _), v in self.tap.counts.predictions.items()
                     if model == _ONLINE_MODEL)
        ins, outs = family(m.OP_IN), family(m.OP_OUT)
        for st in graph.stages:
            n_in = 0
            for t in st.inputs:
                if t == graph.source_topic and t not in emitted:
                    n_in += records or 0
                else:
                    n_in += emitted.get(t, 0)
            n_out = 0
            for t in st.outputs:
                n = emitted.get(t, 0)
                if len(producers[t]) > 1 and t == tn.AUDIT_DECISIONS:
                    n = skipped if st.uid == _SIZE_UID else n - skipped
                elif len(producers[t]) > 1 and t == tn.PREDICTIONS:  # infer and the learner
                    n = online if st.uid == _LEARN_UID else n - online
                n_out += n
            ins.add_metric([st.uid], float(n_in))
            outs.add_metric([st.uid], float(n_out))
        yield ins
        yield outs
        calls = family(m.OP_CALL)
        hists = dict(self.tap.sampler.hists)
        for uid, call in sorted(hists):
            h = hists[(uid, call)]
            if call in CALLS and h.count:  # call kinds an operator never made: no series
                add_histogram(calls, [uid, call], h)
        yield calls

    # -- accounts (the pre-trade gate's state) ------------------------------------------------
    def _accounts(self, probe: RunProbe) -> Iterator[Metric]:
        if not self._has_chain():
            return
        from operators.account import AccountOperator
        from operators.domain import ledger as lg
        from operators.domain.money import from_units

        op: Any = None
        states: list[tuple[str, Any]] = []
        for host in probe.dispatcher().hosts:
            o = unwrap(host.op)
            if isinstance(o, AccountOperator):
                op = o
                states = list(host.states.items())
                break
        if op is None:
            return
        specs = {a.name: a for a in op.config.accounts}
        fams = {s.name: family(s) for s in (m.EQUITY, m.PNL, m.DRAWDOWN, m.MAX_DRAWDOWN,
                                            m.DAY_PNL, m.DAILY_LOSS, m.CONCENTRATION,
                                            m.CONCENTRATION_LIMIT, m.KILL_SWITCH,
                                            m.REDUCE_ONLY)}
        figures = dict(self.tap.counts.accounts)
        for name in sorted(figures):
            f = figures[name]
            spec = specs.get(name)
            fams[m.EQUITY.name].add_metric([name], f.equity)
            if spec is not None:
                fams[m.PNL.name].add_metric([name], f.equity - spec.settings.initial_equity)
            fams[m.DRAWDOWN.name].add_metric([name], f.drawdown)
            fams[m.MAX_DRAWDOWN.name].add_metric([name], f.max_drawdown)
        for _, st in sorted(states, key=lambda kv: kv[0]):
            spec = specs.get(st.account)
            if spec is None:
                continue
            led = lg.copy_state(st.ledger)  # dict copies: a consistent view of the ledger
            eq = lg.equity(led)
            start = led.start_equity
            name = st.account
            fams[m.DAY_PNL.name].add_metric([name], eq - start)
            loss = max(0.0, start - eq)
            limit = spec.limits.daily_loss_limit * start
            fams[m.DAILY_LOSS.name].add_metric([name], loss / limit if limit > 0 else 0.0)
            fams[m.CONCENTRATION_LIMIT.name].add_metric([name], spec.limits.max_concentration)
            fams[m.KILL_SWITCH.name].add_metric([name], 1.0 if led.halted else 0.0)
            fams[m.REDUCE_ONLY.name].add_metric([name], 1.0 if led.reduce_only else 0.0)
            for sym in sorted(led.positions):
                pos = led.positions[sym]
                if pos.quantity == 0.0 or eq <= 0.0:
                    continue
                value = abs(from_units(lg.market_value_units(led, sym, pos)))
                fams[m.CONCENTRATION.name].add_metric([name, sym], value / eq)
        yield from fams.values()

    # -- checkpoints and sinks ----------------------------------------------------------------
    def _checkpoints(self, probe: RunProbe) -> Iterator[Metric]:
        cps = probe.checkpoints()
        if cps is None:
            return
        n, h = family(m.CHECKPOINTS), family(m.CHECKPOINT_SECONDS)
        with self._lock:  # only scrapes fold durations into this histogram
            durations = list(cps.durations_s[self._checkpoints_read:])
            self._checkpoints_read += len(durations)
            for d in durations:
                self.checkpoint_hist.observe(d)
            n.add_metric([], float(self._checkpoints_read))
            add_histogram(h, [], self.checkpoint_hist)
        yield n
        yield h
        b = family(m.CHECKPOINT_BYTES)
        b.add_metric([], float(cps.last_bytes))
        yield b

    def _sinks(self) -> Iterator[Metric]:
        rows, secs = family(m.SINK_ROWS), family(m.SINK_LAG)
        for t in list(self.tap.siblings):
            lag = sink_lag(t)
            if lag is None:
                continue
            rows.add_metric([t.name], float(lag.rows))
            secs.add_metric([t.name], lag.seconds)
        yield rows
        yield secs


_SIZE_UID = "size"
_LEARN_UID = "learn"  # operators.learn.Learn.UID (not imported: River stays out of metrics)
_ONLINE_MODEL = "online"  # operators.learn.ONLINE_MODEL, the learner's predictions
"""``operators.size.Size.UID``: the producer of skipped decisions' audit records."""


def _rule_codes() -> tuple[str, ...]:
    from operators.domain.risk_rules import RULE_CODES

    return RULE_CODES
