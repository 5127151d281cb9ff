"""A histogram in plain ints, folded into Prometheus' form only when scraped.

``prometheus_client.Histogram.observe`` takes a lock per bucket and sum update; on the run's
thread that is pure overhead, since only one thread observes. Here an observation is a bisect
and two additions; the scrape thread reads the counts (a list copy holds the GIL) and makes
them cumulative. The count is the sum of the copied buckets, so ``_count`` always equals the
``+Inf`` bucket, even if an observation lands mid-scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence


class LiteHistogram:
    __slots__ = ("bounds", "bounds_ns", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be increasing")
        self.bounds = tuple(float(b) for b in bounds)
        self.bounds_ns = tuple(round(b * 1e9) for b in self.bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le semantics: value <= bound
        self.total += value

    def observe_ns(self, ns: int) -> None:
        """A duration in integer nanoseconds (compared with integer bounds: no rounding)."""
        self.counts[bisect_left(self.bounds_ns, ns)] += 1
        self.total += ns * 1e-9

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """``(le, cumulative count)`` pairs ending with ``+Inf``, and the sum."""
        counts = list(self.counts)
        total = self.total
        out: list[tuple[str, float]] = []
        acc = 0
        for b, c in zip((*(repr(b) for b in self.bounds), "+Inf"), counts, strict=True):
            acc += c
            out.append((b, float(acc)))
        return out, total

    @property
    def count(self) -> int:
        return sum(self.counts)
