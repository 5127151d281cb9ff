"""Timing, statistics and reporting shared by the benchmarks.

Two shared cores make any single timing noisy, so the helpers here only ever report medians
with their spread, run the cases being compared interleaved (A B A B ...) so drifting load hits
both alike, and leave pass/fail judgements to the reader: nothing here asserts on a time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Stats:
    """Median and spread of repeated measurements (any unit).

    The spread is half the interquartile range from five samples on (one stray run on a
    shared core should not define it), half the full range below that.
    """

    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("no measurements")
        if len(values) >= 5:
            q1, q3 = np.percentile(values, [25, 75])
            return cls(statistics.median(values), float(q1), float(q3), len(values))
        return cls(statistics.median(values), min(values), max(values), len(values))

    @property
    def spread_pct(self) -> float:
        """Half the spread relative to the median: ``±`` this many percent."""
        return 50.0 * (self.hi - self.lo) / self.median if self.median else 0.0

    def spread(self) -> str:
        kind = "IQR" if self.n >= 5 else "range"
        return f"±{self.spread_pct:.1f}% {kind} n={self.n}"


@dataclass(frozen=True, slots=True)
class Row:
    """One figure for the combined table and ``docs/performance.md``."""

    bench: str
    what: str
    figure: str
    spread: str
    how: str


def interleaved(
    cases: Mapping[str, Callable[[], object]],
    reps: int,
    *,
    warmup: bool = True,
    before: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Wall seconds of each case, run ``reps`` times in turn (A B C, B C A, C A B, ...).

    A full collection before every run keeps one case's garbage from being charged to the
    next; the collector stays enabled inside the run because production runs with it.
    ``before`` runs untimed before every run (e.g. clearing an output directory).
    """
    if warmup:
        for fn in cases.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(reps):
        k = r % len(names)  # rotate who goes first: no case always runs on a cold start
        for name in names[k:] + names[:k]:
            fn = cases[name]
            if before is not None:
                before()
            gc.collect()
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def percentiles_us(samples_ns: Sequence[int] | np.ndarray[Any, Any]) -> dict[str, float]:
    """p50 / p99 / p99.9 / max of nanosecond samples, in microseconds."""
    a = np.asarray(samples_ns, dtype=np.float64) / 1e3
    if a.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "p99.9": float("nan"),
                "max": float("nan")}
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p99.9": float(p999), "max": float(a.max())}


def fmt_us(v: float) -> str:
    return f"{v:,.1f} µs" if v < 1000 else f"{v / 1000:,.2f} ms"


def fmt_rate(per_s: float, unit: str = "ticks/s") -> str:
    return f"{per_s:,.0f} {unit}"


def peak_rss_mib() -> float:
    """Peak resident set size of this process image so far.

    ``VmHWM`` from /proc where there is one: Linux carries ``getrusage``'s ``ru_maxrss``
    across fork and exec, so a fresh child started by a big parent would report the parent's
    peak. Elsewhere ``ru_maxrss`` (KiB on Linux).
    """
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def ru_maxrss_mib() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` as is (see ``peak_rss_mib`` for its caveat)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    """Resident set size right now (0 where /proc is absent)."""
    rss = _proc_status_kib("VmRSS")
    return 0.0 if rss is None else rss / 1024.0


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return None


def machine() -> str:
    """CPU model, usable cores and interpreter: what a figure was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    return (f"{cpu}, {cores} cores{mem}, Python {platform.python_version()}, "
            f"numpy {np.__version__}")


def today() -> str:
    return datetime.now(tz=UTC).date().isoformat()


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   {machine()}; {today()}; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def print_table(rows: Sequence[Row], *, with_bench: bool = False) -> None:
    cols = ["what", "figure", "spread", "how"]
    if with_bench:
        cols.insert(0, "bench")
    table = [[getattr(r, c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c)
              for i, c in enumerate(cols)]
    widths[-1] = len(cols[-1])  # the last column runs free
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())


def arg_parser(description: str, *, reps: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--reps", type=int, default=reps, help=f"repetitions (default {reps})")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    return p


def write_rows(path: Path | None, rows: Sequence[Row]) -> None:
    if path is not None:
        path.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")


def add_models_arg(p: argparse.ArgumentParser) -> None:
    """``--models DIR`` for the benchmarks that need a trained bundle."""
    p.add_argument("--models", type=Path, default=None,
                   help="a trained bundle (default: train one into a temporary directory)")


def finish(bench: str, rows: Sequence[Row], started: float, json_path: Path | None) -> None:
    """Every benchmark's ending: the figures table, and the rows as JSON when asked."""
    print(f"\n== {bench} figures (bench wall time {time.perf_counter() - started:.0f} s)")
    print_table(rows)
    write_rows(json_path, rows)


def read_rows(path: Path) -> list[Row]:
    return [Row(**d) for d in json.loads(path.read_text())]
