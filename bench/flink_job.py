"""The Flink engine against the embedded runner on the same E-mini slice, in one bench run.

Each engine runs as the user runs it (``streamquant run`` in a fresh process, same ticks,
models and flags): the embedded runner (batch path), and ``--engine flink`` in thread and in
process mode on a local MiniCluster (checkpoints every 2 s, hashmap state). Figures: wall
time of the process, the Flink job's time from submission to the last output, the time to
the first output (start-up: JVM, job graph, Python workers, models), ticks/s over the job and
over the job after its first output, and the median checkpoint duration from the job's log.

Run: ``python -m bench.flink_job [--lines 40000:140000] [--models DIR] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jobs.data import fetch_emini

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("--columns", "ts=DateTime,price=Price,size=Volume", "--tz", "America/Chicago",
         "--symbol", "ES", "--venue", "CME", "--no-cost-gate", "--quiet", "--no-report-html")
_CP = re.compile(r"Completed checkpoint \d+ .*?checkpointDuration=(\d+) ms")


def _slice(directory: Path, start: int, end: int) -> Path:
    lines = fetch_emini(quiet=True).read_text().splitlines(keepends=True)
    path = directory / f"es_{start}_{end}.csv"
    path.write_text(lines[0] + "".join(lines[1 + start:1 + end]))
    return path


def _run(out: Path, ticks: Path, models: Path, *extra: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--ticks", str(ticks), *FLAGS,
                    "--models", str(models), "--out", str(out), *extra], cwd=ROOT, env=env,
                   check=True)
    return time.perf_counter() - t0


def _checkpoint_ms(out: Path) -> float | None:
    found = [int(m.group(1)) for log in (out / "flink" / "log").glob("*.log")
             for m in _CP.finditer(log.read_text(errors="replace"))]
    return statistics.median(found) if found else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flink_job", description=__doc__)
    p.add_argument("--lines", default="40000:140000", help="data lines of the E-mini file")
    p.add_argument("--models", type=Path, default=None, help="a trained strategy bundle")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    start, end = (int(x) for x in args.lines.split(":"))
    n = end - start
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sq-bench-flink-") as tmp:
        d = Path(tmp)
        ticks = _slice(d, start, end)
        models = args.models
        if models is None:
            models = d / "models"
            subprocess.run([sys.executable, "-m", "jobs.cli", "train", "--out", str(models),
                            "--quiet"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           check=True)
        wall = _run(d / "embedded", ticks, models)
        rows.append({"engine": "embedded", "wall_s": round(wall, 2),
                     "ticks_per_s": round(n / wall)})
        for mode in ("thread", "process"):
            out = d / f"flink-{mode}"
            wall = _run(out, ticks, models, "--engine", "flink", "--flink-mode", mode)
            s = json.loads((out / "manifest.json").read_text())["summary"]
            after = s["job_s"] - s["first_output_s"]
            rows.append({"engine": f"flink {mode}", "wall_s": round(wall, 2),
                         "job_s": s["job_s"], "first_output_s": s["first_output_s"],
                         "ticks_per_s": round(n / s["job_s"]),
                         "ticks_per_s_after_first": round(n / after) if after > 0 else None,
                         "checkpoint_ms_median": _checkpoint_ms(out)})
            same = all((out / "topics" / f.name).read_bytes() == f.read_bytes()
                       for f in (d / "embedded" / "topics").glob("*.jsonl"))
            rows[-1]["topics_identical"] = same
    print(f"{n} E-mini ticks (lines {start}-{end}), chain ungated")
    for r in rows:
        print("  " + ", ".join(f"{k}={v}" for k, v in r.items()))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
