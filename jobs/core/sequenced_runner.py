"""A graph fed by a sequenced, partitioned source: the core of the live path.

The runtime-neutral half of a broker host (the Kafka host wraps it; a test drives it with no
broker at all). It combines the core's pieces with one rule each:

- records are released in source order (``jobs.core.sequenced.SequencedMerge``);
- each released data record goes through the graph like ``LocalRunner.feed``: its ``md.ticks``
  event times are observed for *its* partition, the other partitions' head marks are applied
  (look-ahead), and the watermark - the minimum over the partitions
  (``jobs.core.watermarks.WatermarkTracker``) - advances the graph if it rose;
- a heartbeat raises its partition's watermark to ``event_time - lateness``; an end mark ends
  the partition; once all have ended the watermark is ``END_OF_STREAM``;
- a control command never waits for the watermark: it takes effect right after the current
  one (``ts_event`` is stamped ``watermark + 1``, so the account orders it after everything the
  graph has seen and before anything later), and the stamped command is emitted on
  ``control.applied``, which a replay (``run --control``) feeds back for the same result.

Checkpoints are the core's (``jobs.core.checkpoint``) with the merge's position as source
offsets and the host's integers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from jobs.core.checkpoint import decode_checkpoint, encode_checkpoint, make_checkpoint
from jobs.core.dispatch import GraphDispatcher, Output
from jobs.core.sequenced import DATA, END, HEARTBEAT, Element, SequencedMerge
from jobs.core.watermarks import WatermarkTracker
from jobs.graph import Graph
from operators.contract import END_OF_STREAM, MIN_WATERMARK
from topics import names as tn
from topics.messages import Control

_SEQ = "source.seq"
_ENDED = "source.ended."
_CONTROL_OFFSET = "control.offset"


class SequencedRunner:
    """Runs a graph whose source is ``partitions`` sequenced partitions of its source topic."""

    def __init__(
        self,
        graph: Graph,
        output: Output,
        *,
        partitions: int,
        lateness_ns: int = 0,
        watermark_topic: str = tn.MD_TICKS,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.graph = graph
        self.output = output
        self.lateness_ns = lateness_ns
        self.merge = SequencedMerge(partitions)
        self.tracker = WatermarkTracker(partitions, lateness_ns=lateness_ns)
        self.core = GraphDispatcher(graph, output, watermark_topic=watermark_topic, clock=clock)
        self._inlets = self.core.inlets(graph.source_topic)
        self._source_is_wm = graph.source_topic == watermark_topic
        self.watermark = MIN_WATERMARK
        self.records = 0
        """Data records released into the graph (this process)."""
        self.control_offset = 0
        """The next offset of the control topic to read (commands before it are applied)."""

    # -- input --------------------------------------------------------------------------------
    def push(self, e: Element) -> None:
        self.merge.push(e)

    def run_ready(self) -> int:
        """Release everything the merge can order now; the number of data records released."""
        n = 0
        merge = self.merge
        while True:
            run = merge.pop_run()
            if not run:
                return n
            p = run[0].partition
            marks = merge.lookahead(p)
            for e in run:
                if e.kind == DATA:
                    self._feed(p, e.payload)
                    n += 1
                    if marks:
                        self._apply_marks(marks)
                        marks = []
                elif e.kind == HEARTBEAT:
                    self.tracker.heartbeat(p, e.payload - self.lateness_ns)
                    self._apply_marks(marks)
                    marks = []
                else:
                    assert e.kind == END
                    self.tracker.end(p)
                self._advance()

    def _feed(self, partition: int, record: msgspec.Struct) -> None:
        core = self.core
        core.seen = record.ts_event if self._source_is_wm else MIN_WATERMARK  # type: ignore[attr-defined]
        deliver = core.deliver
        for inlet in self._inlets:
            for topic, _, out in inlet(record):
                deliver(topic, out)
        if core.seen != MIN_WATERMARK:
            self.tracker.observe(partition, core.seen)
        self.records += 1

    def _apply_marks(self, marks: list[Element]) -> None:
        for m in marks:
            if m.kind == HEARTBEAT:
                self.tracker.heartbeat(m.partition, m.payload - self.lateness_ns)
            else:
                self.tracker.end(m.partition)

    def _advance(self) -> None:
        wm = self.tracker.current
        if wm > self.watermark:
            self.watermark = wm
            self.core.advance(wm)

    def stamp(self) -> int | None:
        """The event time a command read now takes effect at (None: the stream has ended)."""
        return None if self.watermark >= END_OF_STREAM else self.watermark + 1

    def control(self, command: Control, offset: int, stamp: int | None = None
                ) -> Control | None:
        """Apply a control command read at ``offset`` at ``stamp`` (default: now, see
        :meth:`stamp`); the stamped command, or None when the stream has ended.

        A host that recorded a stamp before a crash passes it again: the account orders
        commands by event time, so applying it early with its recorded time is exact."""
        self.control_offset = offset + 1
        if stamp is None:
            stamp = self.stamp()
            if stamp is None:
                return None
        stamped = msgspec.structs.replace(command, ts_event=stamp)
        self.output.emit(tn.CONTROL_APPLIED, stamped)
        self.core.deliver(tn.CONTROL, stamped)
        return stamped

    @property
    def ended(self) -> bool:
        """Every source partition ended and the graph received the end of stream."""
        return self.merge.ended() and self.watermark >= END_OF_STREAM

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint(self, output_positions: dict[str, int]) -> bytes:
        """A consistent checkpoint between two released records."""
        src = self.graph.source_topic
        offsets = {(src, p): o for p, o in enumerate(self.merge.next_offsets)}
        offsets[(tn.CONTROL, 0)] = self.control_offset
        host = {_SEQ: self.merge.released_seq}
        host.update({f"{_ENDED}{p}": 1 for p, e in enumerate(self.merge.ended_partitions) if e})
        cp = make_checkpoint(watermark=self.watermark, partitions=self.tracker.snapshot(),
                             operators=self.core.snapshot(), source_offsets=offsets,
                             output_positions=output_positions, host=host)
        return encode_checkpoint(cp)

    def restore(self, data: bytes) -> dict[str, int]:
        """Load a checkpoint into this fresh runner; the output positions it recorded."""
        cp = decode_checkpoint(data)
        self.core.restore(cp.operators)
        self.tracker.restore(cp.partitions)
        self.watermark = cp.watermark
        src = self.graph.source_topic
        n = self.merge.partitions
        offsets = [0] * n
        for o in cp.source_offsets:
            if o.topic == src:
                if o.partition >= n:
                    raise ValueError(f"checkpoint reads {src} partition {o.partition}; the "
                                     f"topic has {n} partitions")
                offsets[o.partition] = o.offset
            elif o.topic == tn.CONTROL:
                self.control_offset = o.offset
        self.merge.restore(offsets, cp.host.get(_SEQ, -1),
                           [bool(cp.host.get(f"{_ENDED}{p}")) for p in range(n)])
        return dict(cp.output_positions)

    def source_offsets(self) -> dict[tuple[str, int], int]:
        """Where to resume reading: every source partition and the control topic."""
        src = self.graph.source_topic
        out = {(src, p): o for p, o in enumerate(self.merge.next_offsets)}
        out[(tn.CONTROL, 0)] = self.control_offset
        return out
