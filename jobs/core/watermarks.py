"""The watermark tracker: punctuated watermarks of a source read from one or more partitions.

Per partition, the watermark is ``max event time seen - lateness`` (lateness is a fixed
duration, so which events are late is a function of the data alone), raised further by
heartbeat records (a watermark carried by the stream itself, advancing a partition that has
no data) and set to ``END_OF_STREAM`` by an explicit end of that partition. The combined
watermark is the minimum over the partitions, so a partition that has shown nothing yet holds
the others back (as Flink and Kafka Streams do); once every partition has ended it is
``END_OF_STREAM``, which fires every pending timer.

The event times come from the *watermark topic* (``md.ticks`` in the tick graph: raw records
cannot move time before normalize has parsed them), attributed to the source partition the
record that produced them came from. The local runner has one partition; a Kafka source has
one per topic partition it reads.
"""

from __future__ import annotations

from jobs.core.checkpoint import PartitionWatermark
from operators.contract import END_OF_STREAM, MIN_WATERMARK


class WatermarkTracker:
    """Per-partition watermark inputs and their minimum (``current``, a plain attribute)."""

    __slots__ = ("_ended", "_heartbeat", "_max", "_wm", "current", "lateness_ns")

    def __init__(self, partitions: int = 1, *, lateness_ns: int = 0) -> None:
        if partitions < 1:
            raise ValueError("a source has at least one partition")
        if lateness_ns < 0:
            raise ValueError("lateness must be >= 0")
        self.lateness_ns = lateness_ns
        self._max = [MIN_WATERMARK] * partitions
        self._heartbeat = [MIN_WATERMARK] * partitions
        self._ended = [False] * partitions
        self._wm = [MIN_WATERMARK] * partitions  # each partition's watermark, never lowered
        self.current = MIN_WATERMARK

    @property
    def partitions(self) -> int:
        return len(self._max)

    def observe(self, partition: int, ts: int) -> int:
        """An event time seen on the watermark topic from ``partition``; the new watermark."""
        if ts > self._max[partition]:
            self._max[partition] = ts
            wm = ts - self.lateness_ns
            if wm > self._wm[partition]:  # an ended partition is at END_OF_STREAM already
                self._wm[partition] = wm
                self.current = min(self._wm)
        return self.current

    def heartbeat(self, partition: int, watermark: int) -> int:
        """A watermark record on ``partition``: time passed there without (on-time) data."""
        if watermark > self._heartbeat[partition]:
            self._heartbeat[partition] = watermark
            if watermark > self._wm[partition]:
                self._wm[partition] = watermark
                self.current = min(self._wm)
        return self.current

    def end(self, partition: int) -> int:
        """``partition`` will deliver nothing more (end of a file, a closed partition)."""
        self._ended[partition] = True
        self._wm[partition] = END_OF_STREAM
        self.current = min(self._wm)
        return self.current

    def partition_watermark(self, partition: int) -> int:
        return self._wm[partition]

    def snapshot(self) -> list[PartitionWatermark]:
        return [PartitionWatermark(p, self._max[p], self._heartbeat[p], self._ended[p])
                for p in range(len(self._max))]

    def restore(self, partitions: list[PartitionWatermark]) -> None:
        """Load a snapshot taken with the same number of partitions."""
        if [p.partition for p in partitions] != list(range(len(self._max))):
            raise ValueError(f"checkpoint has partitions {[p.partition for p in partitions]}, "
                             f"this source has {len(self._max)}")
        for p in partitions:
            i = p.partition
            self._max[i] = p.max_ts
            self._heartbeat[i] = p.heartbeat
            self._ended[i] = p.ended
            data = MIN_WATERMARK if p.max_ts == MIN_WATERMARK else p.max_ts - self.lateness_ns
            self._wm[i] = END_OF_STREAM if p.ended else max(data, p.heartbeat)
        self.current = min(self._wm)
