"""What a tap may read from the runtime that feeds it: the run probe, and sink lag.

Most taps need only the messages they accept. Metrics also need the runtime's own figures -
the watermark, records read, each stage's operator and state, checkpoints - which no message
carries. A tap that wants them has a ``bind(probe)`` method; the host calls it once, when it
exists (``bind_taps``: ``LocalRunner`` for every replay path, ``run_live`` for the Kafka host).
The probe is read-only and every call is cheap; a tap may call it from another thread (a
scrape), where values may be a moment old but containers are copied whole (a ``dict`` copy
holds the GIL), never seen half-updated.

A tap that buffers may also have ``lag() -> SinkLag`` (a plain ``(rows, seconds)`` tuple
works): the rows it holds that are not written yet and how many seconds the oldest of them has
waited. Metrics export it per tap (``streamquant_sink_*``), so an alert sees a sink falling
behind before it drops anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from jobs.core.dispatch import GraphDispatcher
from jobs.graph import Graph
from topics import names as tn

if TYPE_CHECKING:
    from jobs.live.host import KafkaHost
    from jobs.local_runner import LocalRunner

RunMode = Literal["replay", "live"]
_PATHS = {tn.MD_TICKS_RAW: "event", tn.MD_TICKS: "batch", tn.MD_BARS: "bars"}


class SinkLag(NamedTuple):
    """How far a buffering tap is behind the output."""

    rows: int
    """Rows accepted and not yet written."""
    seconds: float
    """Wall seconds the oldest of them has waited (0 when none)."""


class CheckpointFigures(NamedTuple):
    """The checkpoints this process wrote."""

    durations_s: Sequence[float]
    """Each checkpoint's wall time, in order (grows; readers remember how far they read)."""
    last_bytes: int
    """Size of the newest checkpoint (0 before the first)."""


class RunProbe(Protocol):
    """Read-only access to a running host, for taps that report on the run itself."""

    @property
    def mode(self) -> RunMode: ...

    @property
    def path(self) -> str:
        """How records enter: ``event`` (raw ticks per event), ``batch`` (the columnar front
        end feeds ``md.ticks``), ``bars`` (a bar file) or ``live``."""
        ...

    @property
    def graph(self) -> Graph: ...

    def dispatcher(self) -> GraphDispatcher:
        """The graph's stage hosts now (a live host builds new ones when it resumes)."""
        ...

    def watermark(self) -> int:
        """The graph's watermark (ns; ``MIN_WATERMARK`` before any data)."""
        ...

    def event_time(self) -> int:
        """The newest event time the graph has seen (``MIN_WATERMARK`` before any): where
        event time stands once the watermark has jumped to the end of stream."""
        ...

    def emitted(self) -> dict[str, int]:
        """Messages emitted per topic by this process (a copy)."""
        ...

    def dead_letters(self) -> dict[str, int]:
        """Dead letters per reason code emitted by this process (a copy)."""
        ...

    def source_records(self) -> int | None:
        """Records of the graph's source topic fed into the graph by this process; None when
        a front end outside the graph reads them (the batched replay's accelerator)."""
        ...

    def read_ns(self) -> int | None:
        """``perf_counter_ns`` when the record being processed was read, where a host reads in
        batches (live: the consumer batch); None: it is being read now (replays)."""
        ...

    def checkpoints(self) -> CheckpointFigures | None:
        """This process's checkpoints; None where the runtime takes none (replays)."""
        ...


class ReplayProbe:
    """The probe of the embedded runner (every replay path builds one ``LocalRunner``)."""

    __slots__ = ("_runner",)

    mode: RunMode = "replay"

    def __init__(self, runner: LocalRunner) -> None:
        self._runner = runner

    @property
    def path(self) -> str:
        return _PATHS.get(self._runner.graph.source_topic, "event")

    @property
    def graph(self) -> Graph:
        return self._runner.graph

    def dispatcher(self) -> GraphDispatcher:
        return self._runner.dispatcher

    def watermark(self) -> int:
        return self._runner.watermark

    def event_time(self) -> int:
        return self._runner.dispatcher.seen  # one partition: the running maximum

    def emitted(self) -> dict[str, int]:
        return dict(self._runner.sink.counts)

    def dead_letters(self) -> dict[str, int]:
        return dict(self._runner.sink.dlq_reasons)

    def source_records(self) -> int | None:
        r = self._runner
        return r.offset if r.offset or r.graph.source_topic not in r.sink.counts else None

    def read_ns(self) -> int | None:
        return None

    def checkpoints(self) -> CheckpointFigures | None:
        return None


class LiveProbe:
    """The probe of the Kafka host: counts are this process's (output positions restored
    from a checkpoint are subtracted, so counters start at 0 with the process)."""

    __slots__ = ("_host",)

    mode: RunMode = "live"

    def __init__(self, host: KafkaHost) -> None:
        self._host = host

    path = "live"

    @property
    def graph(self) -> Graph:
        return self._host.graph

    def dispatcher(self) -> GraphDispatcher:
        return self._host.runner.core

    def watermark(self) -> int:
        return self._host.runner.watermark

    def event_time(self) -> int:
        return max(p.max_ts for p in self._host.runner.tracker.snapshot())

    def emitted(self) -> dict[str, int]:
        out = self._host.output
        counts, base = dict(out.counts), dict(out.restored)
        return {t: n - base.get(t, 0) for t, n in counts.items()}

    def dead_letters(self) -> dict[str, int]:
        return dict(self._host.output.dlq_reasons)

    def source_records(self) -> int | None:
        return self._host.runner.records

    def read_ns(self) -> int | None:
        return self._host.read_ns

    def checkpoints(self) -> CheckpointFigures | None:
        s = self._host.stats
        return CheckpointFigures(s.checkpoint_s, s.checkpoint_bytes)


def bind_taps(taps: Iterable[Any], probe: RunProbe) -> None:
    """Hand ``probe`` to every tap that has ``bind``."""
    for tap in taps:
        bind = getattr(tap, "bind", None)
        if bind is not None:
            bind(probe)


def sink_lag(tap: Any) -> SinkLag | None:
    """A tap's ``lag()`` if it has one (a broken one counts as none: metrics never raise)."""
    lag = getattr(tap, "lag", None)
    if lag is None:
        return None
    try:
        rows, seconds = lag()
    except Exception:
        return None
    return SinkLag(int(rows), float(seconds))
