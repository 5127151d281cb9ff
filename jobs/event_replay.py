"""The per-event reference path: one source record at a time through the whole graph."""

from __future__ import annotations

from jobs.graph import Stage
from jobs.local_runner import LocalRunner
from jobs.progress import Progress
from jobs.sources import (
    TickInput,
    iter_records,
)
from jobs.topic_sink import TopicSink
from jobs.topology import tick_graph
from operators.features import (
    WindowFeatures,
)
from operators.normalize import Normalize
from topics.messages import (
    Control,
)


def run_event_ticks(src: TickInput, norm: Normalize, feats: WindowFeatures,
                    chain: tuple[Stage, ...], sink: TopicSink, lateness_ns: int,
                    controls: list[Control], progress: Progress) -> int:
    """The reference path: one source record at a time through the whole graph."""
    runner = LocalRunner(tick_graph(norm, feats, chain), sink, lateness_ns=lateness_ns)
    for c in controls:
        runner.inject("control", c)
    n = 0
    for rec in iter_records(src):
        runner.feed(rec)
        n += 1
        if n & 0x3FFF == 0:
            progress.update(n)
    runner.end_of_stream()
    return n
