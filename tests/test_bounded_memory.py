"""Memory does not grow with the input: the batched replay of 4x the E-mini sample peaks at
the same resident size as the sample itself.

Each replay is ``streamquant run --no-trade`` in a fresh child process over the sample
repeated with shifted dates (``bench.scaling`` builds it). The child reports its own peak
(``VmHWM``): ``getrusage``'s ``ru_maxrss`` of a child carries the parent's peak across
``fork``/``exec`` on Linux, and pytest's process may be the bigger one. Before streaming, the
4x replay peaked about 1.1 GiB above the 1x one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.scaling import canonical_body, write_repeated

GROWTH_BOUND_MIB = 64
"""Generous: one chunk of the file and the per-symbol states are what a replay holds."""

CHILD = """
import sys
from jobs.cli import main
code = main(sys.argv[1:])
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(int(hwm[0].split()[1]) // 1024 if code == 0 else -1)
"""


def peak_mib(ticks: Path, out: Path) -> int:
    """Peak resident MiB of one ``run --no-trade --no-topic-files --sink none`` in a fresh
    process (the memory target is without sinks: a database sink buffers by its own bound)."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "run", "--no-trade", "--no-topic-files", "--sink", "none",
         "--quiet",
         "--ticks", str(ticks), "--tz", "America/Chicago", "--out", str(out)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    peak = int(proc.stdout.strip().splitlines()[-1])
    assert peak > 0, proc.stderr
    return peak


def test_peak_memory_does_not_grow_with_the_input(tmp_path: Path,
                                                  emini_ticks_path: Path) -> None:
    body = canonical_body(emini_ticks_path)
    once = tmp_path / "x1.csv"
    four = tmp_path / "x4.csv"
    write_repeated(body, 1, once)
    write_repeated(body, 4, four)
    del body
    peak1 = peak_mib(once, tmp_path / "out1")
    peak4 = peak_mib(four, tmp_path / "out4")
    assert four.stat().st_size > 3.9 * once.stat().st_size
    assert peak4 - peak1 < GROWTH_BOUND_MIB, (peak1, peak4)
