"""``python -m bench``: every benchmark in turn, then one table of all their figures.

Each benchmark runs in its own process (so peak-RSS figures are its own) and writes its rows
as JSON; the strategy bundle the inference and chain benchmarks need is trained once, in a
separate process, and passed to both with ``--models``.

Options: ``--only NAME[,NAME]`` to run some (``scaling``, half an hour at 20M ticks, runs only
when named), ``--models DIR`` to reuse a bundle, ``--reps N`` to override every benchmark's
repetitions.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import Row, header, print_table, read_rows

BENCHES = ("pipeline_throughput", "risk_latency", "inference_latency", "chain_latency",
           "chain_batched", "live_broker", "sink_clickhouse", "redis_store", "metrics_overhead",
           "online_learning", "faust_worker")
OPT_IN = ("scaling",)
"""Run only when named with ``--only`` (the 20M-tick scaling run takes half an hour)."""
NEEDS_MODELS = ("inference_latency", "chain_latency", "chain_batched", "live_broker",
                "sink_clickhouse", "metrics_overhead", "online_learning", "scaling",
                "faust_worker")
NO_REPS = ("scaling",)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--only", default=",".join(BENCHES),
                   help=f"comma-separated subset of {', '.join(BENCHES + OPT_IN)} (default: "
                        f"all but {', '.join(OPT_IN)})")
    p.add_argument("--models", type=Path, default=None, help="a trained strategy bundle")
    p.add_argument("--reps", type=int, default=None, help="repetitions for every benchmark")
    args = p.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BENCHES) - set(OPT_IN))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHES + OPT_IN)}")

    header("streamquant benchmarks")
    t0 = time.perf_counter()
    rows: list[Row] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sq-bench-all-") as tmpdir:
        tmp = Path(tmpdir)
        models = args.models
        if models is None and any(b in NEEDS_MODELS for b in chosen):
            sys.stdout.flush()
            subprocess.run([sys.executable, "-m", "bench.emini", "train", str(tmp)], check=True)
            models = tmp / "models"
        walls: dict[str, float] = {}
        for name in chosen:
            out = tmp / f"{name}.json"
            cmd = [sys.executable, "-m", f"bench.{name}", "--json", str(out)]
            if args.reps is not None and name not in NO_REPS:
                cmd += ["--reps", str(args.reps)]
            if name in NEEDS_MODELS and models is not None:
                cmd += ["--models", str(models)]
            print(flush=True)
            t1 = time.perf_counter()
            proc = subprocess.run(cmd, check=False)
            walls[name] = time.perf_counter() - t1
            if proc.returncode != 0 or not out.exists():
                failed.append(name)
                continue
            rows += read_rows(out)
    total = time.perf_counter() - t0
    print(f"\n== all figures ({', '.join(f'{k} {v:.0f} s' for k, v in walls.items())}; "
          f"total {total:.0f} s)")
    print_table(rows, with_bench=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
