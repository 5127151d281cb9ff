"""The per-event reference path: one source record at a time through the whole graph."""

from __future__ import annotations

from jobs.graph import Stage
from jobs.local_runner import LocalRunner
from jobs.progress import Progress
from jobs.sources import (
    TickInput,
    iter_records,
)
from jobs.text_files import BLOCK_BYTES
from jobs.topic_sink import TopicSink
from jobs.topology import opened, tick_graph
from operators.features import (
    WindowFeatures,
)
from operators.normalize import Normalize
from topics import names as tn
from topics.messages import (
    Control,
)


def run_event_ticks(src: TickInput, norm: Normalize, feats: WindowFeatures,
                    chain: tuple[Stage, ...], sink: TopicSink, lateness_ns: int,
                    controls: list[Control], progress: Progress, *,
                    block_bytes: int | None = BLOCK_BYTES, max_lines: int | None = None) -> int:
    """The reference path: one source record at a time through the whole graph.

    The file streams in blocks of about ``block_bytes`` (at most ``max_lines`` lines).
    """
    graph = tick_graph(norm, feats, chain)
    runner = LocalRunner(graph, sink, lateness_ns=lateness_ns)
    n = 0
    with opened(graph.stages):
        for c in controls:
            runner.inject(tn.CONTROL, c)
        for rec in iter_records(src, block_bytes=block_bytes, max_lines=max_lines):
            runner.feed(rec)
            n += 1
            if n & 0x3FFF == 0:
                progress.update(n)
        runner.end_of_stream()
    return n
