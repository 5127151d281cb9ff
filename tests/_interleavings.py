"""Random arrival interleavings of several input streams, as a broker could deliver them.

Each stream keeps its own order (Kafka keeps a partition's records in order); between streams
the order is random. Every record arrives within ``lateness`` of its event time: its arrival
is ``ts + U[0, lateness)``, raised to the previous arrival of its stream, so a watermark of
``max event time seen - lateness`` never passes a record before it arrives (an interleaving
that did would make it late, which no ordering rule can undo).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def interleave(streams: Sequence[Sequence[Any]], lateness_ns: int, seed: int
               ) -> list[tuple[int, Any]]:
    """``(stream index, record)`` in one random arrival order; records need ``ts_event``."""
    rng = np.random.default_rng(seed)
    arrivals: list[tuple[int, int, int, Any]] = []
    for s, stream in enumerate(streams):
        last = np.iinfo(np.int64).min
        jitter = rng.integers(0, max(lateness_ns, 1), size=len(stream))
        for i, rec in enumerate(stream):
            if i and rec.ts_event < stream[i - 1].ts_event:
                raise ValueError(f"stream {s} is not in event-time order at {i}")
            last = max(last, rec.ts_event + int(jitter[i]))
            arrivals.append((last, int(rng.integers(1 << 30)), s, rec))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    # equal arrival times of one stream keep their order: re-sequence each stream
    out: list[tuple[int, Any]] = []
    nexts = [0] * len(streams)
    for _, _, s, _ in arrivals:
        out.append((s, streams[s][nexts[s]]))
        nexts[s] += 1
    return out
