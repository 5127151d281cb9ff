"""Operator call latency, timed on samples so the hot path does not pay per event.

A stage host calls its operator through ``host.op``. To time a window of calls, the sampler
puts a stand-in there (``_Timed``) that forwards every call to the operator and times
``process``, ``process_batch`` and ``on_timer``; after ``calls`` timed calls the stand-in puts
the operator back. Outside windows the hosts run exactly as without metrics (no wrapper, no
counter, no branch). Results cannot change: the stand-in passes the same arguments to the same
operator and returns what it returns.

Windows open on the main thread when a bar closes (the metrics tap's ``features`` handler
calls ``arm``), at most one per ``min_gap_s`` of wall time: on a live feed nearly every bar
close opens one, while a replay closing bars every millisecond or two opens twenty a second.
Tick-rate stages are timed on the ``calls`` calls that follow a bar close, bar-rate stages
(infer, blend, size) on most of theirs (a window stays open until it has timed ``calls``).
The wall-time gap bounds the cost whatever the bar rate: at most ``calls`` x stages timed
calls per gap (16 x 7 every 50 ms, about 0.2-0.5 % of one core at 1-2 µs a timed call).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from jobs.core.dispatch import GraphDispatcher
from jobs.core.stage import StageHost
from jobs.metrics.catalog import CALL_BUCKETS
from jobs.metrics.histogram import LiteHistogram

_now = time.perf_counter_ns
INFER_UID = "infer"
"""``operators.infer.Infer.UID`` (not imported: a run without the chain has no onnxruntime)."""
CALLS = ("process", "batch", "timer")


class _Timed:
    """Stands in for one stage's operator for a window of calls (see module doc)."""

    __slots__ = ("also", "b", "host", "key", "left", "new_state", "op", "p", "t")

    def __init__(self, host: StageHost, op: Any, hists: Sequence[LiteHistogram],
                 calls: int, also: LiteHistogram | None) -> None:
        self.host = host
        self.op = op
        self.key = op.key  # called with every event: kept off the __getattr__ path
        self.new_state = op.new_state
        self.p, self.b, self.t = hists
        self.also = also
        self.left = calls

    def _done(self, ns: int) -> None:
        if self.also is not None:
            self.also.observe_ns(ns)
        self.left -= 1
        if self.left <= 0 and _current(self.host) is self:
            self.host.op = self.op

    def process(self, state: Any, event: Any, ctx: Any) -> Any:
        t0 = _now()
        r = self.op.process(state, event, ctx)
        ns = _now() - t0
        self.p.observe_ns(ns)
        self._done(ns)
        return r

    def process_batch(self, state: Any, events: Any, ctx: Any) -> Any:
        t0 = _now()
        r = self.op.process_batch(state, events, ctx)
        ns = _now() - t0
        self.b.observe_ns(ns)
        self._done(ns)
        return r

    def on_timer(self, state: Any, ts: int, ctx: Any) -> Any:
        t0 = _now()
        r = self.op.on_timer(state, ts, ctx)
        ns = _now() - t0
        self.t.observe_ns(ns)
        self._done(ns)
        return r

    def __getattr__(self, name: str) -> Any:  # envelope, encode_state, UID... (rare)
        return getattr(self.op, name)


def _current(host: StageHost) -> object:
    return host.op


def unwrap(op: Any) -> Any:
    """The operator behind a host's ``op`` (which may be a sampling stand-in)."""
    return op.op if isinstance(op, _Timed) else op


class OperatorSampler:
    """Per-operator call histograms, filled in windows of ``calls`` calls, one window at most
    every ``min_gap_s`` seconds."""

    def __init__(self, *, calls: int = 16, min_gap_s: float = 0.05) -> None:
        if calls < 1 or not min_gap_s >= 0:
            raise ValueError("calls must be >= 1 and min_gap_s >= 0")
        self.calls = calls
        self.min_gap_ns = round(min_gap_s * 1e9)
        self.hists: dict[tuple[str, str], LiteHistogram] = {}
        """(operator uid, call kind) → histogram of seconds."""
        self.inference = LiteHistogram(CALL_BUCKETS)
        self.windows = 0
        self._last = -self.min_gap_ns

    def _for(self, uid: str) -> tuple[LiteHistogram, ...]:
        hs = self.hists
        out = []
        for call in CALLS:
            h = hs.get((uid, call))
            if h is None:
                h = hs[(uid, call)] = LiteHistogram(CALL_BUCKETS)
            out.append(h)
        return tuple(out)

    def arm(self, dispatcher: GraphDispatcher) -> None:
        """Open a window on every stage, unless one opened less than ``min_gap_s`` ago."""
        now = _now()
        if now - self._last < self.min_gap_ns:
            return
        self._last = now
        self.windows += 1
        for host in dispatcher.hosts:
            op = host.op
            if isinstance(op, _Timed):
                op.left = self.calls
                continue
            timed: Any = _Timed(host, op, self._for(op.UID), self.calls,
                                self.inference if op.UID == INFER_UID else None)
            host.op = timed  # stands in for the operator (same interface, see _Timed)

    def disarm(self, dispatcher: GraphDispatcher) -> None:
        """Put every operator back (the run ended; nothing else is timed)."""
        for host in dispatcher.hosts:
            host.op = unwrap(host.op)
