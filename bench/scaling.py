"""Scaling: ``streamquant run`` over the E-mini sample repeated to 500k, 5M and 20M ticks.

Memory must not grow with the input and throughput must not fall with it. The benchmark builds
its own inputs in a temporary directory: the bundled sample under canonical column names
(``ts,symbol,price,size``, as a user's ``--ticks`` file), copy ``k`` shifted by ``7 k`` days
(weekday and session structure kept; the gap between copies stays under normalize's 7-day
forward-jump limit, so nothing is dead-lettered). Every case is one ``run`` in a fresh child
process:

- ``no-trade``: normalize + bars + features, topic files off (the target's measure) and on;
- ``chain``: the whole decision chain (``--models``; trained once when not given), topic files
  off and on.

Per case: ticks/s of the replay (the run summary's ``ticks_per_s``: reading, the graph and
the topic files, without start-up, model loading and the report), the child's wall and CPU
time (``ticks per CPU s`` over the whole process is the figure least moved by other load on
shared cores), and its peak RSS, read two ways: ``VmHWM`` of the child itself and
``ru_maxrss`` from ``wait4`` (which Linux carries over from the parent across fork and exec).
Figures only; nothing is asserted.

Run: ``python -m bench.scaling [--sizes 500k,5M,20M] [--cases ...] [--models DIR] [--json P]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import Row, finish, header, peak_rss_mib
from jobs import data

BENCH = "scaling"
SAMPLE_TICKS = 500_000
SHIFT_DAYS = 7
CASES = ("no-trade", "no-trade+files", "chain", "chain+files")
_DATE = re.compile(rb"^(\d{4}-\d{2}-\d{2})", re.MULTILINE)


def parse_size(text: str) -> int:
    """``500k``, ``5M``, ``20M`` or a plain count; a multiple of the sample's 500k ticks."""
    t = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    n = int(float(t[:-1] if scale > 1 else t) * scale)
    if n <= 0 or n % SAMPLE_TICKS:
        raise argparse.ArgumentTypeError(f"size {text!r} must be a multiple of {SAMPLE_TICKS:,}")
    return n


def canonical_body(sample: Path) -> bytes:
    """The sample's data lines as ``ts,ES,price,size`` (its header dropped)."""
    raw = sample.read_bytes()
    body = raw[raw.index(b"\n") + 1:]
    return re.sub(rb"^([^,\n]*),", rb"\1,ES,", body, flags=re.MULTILINE)


def write_repeated(body: bytes, copies: int, dest: Path) -> int:
    """The sample ``copies`` times, copy ``k`` shifted by ``7 k`` days; returns the bytes."""
    dates = sorted(set(_DATE.findall(body)))
    first, last = (dt.date.fromisoformat(d.decode()) for d in (dates[0], dates[-1]))
    if (last - first).days >= SHIFT_DAYS:
        raise ValueError("the sample spans a week: shifted copies would overlap")
    with dest.open("wb") as f:
        f.write(b"ts,symbol,price,size\n")
        for k in range(copies):
            chunk = body
            for d in dates:  # new dates are all later than every old one: no re-replacement
                new = dt.date.fromisoformat(d.decode()) + dt.timedelta(days=SHIFT_DAYS * k)
                chunk = chunk.replace(d, new.isoformat().encode())
            f.write(chunk)
    return dest.stat().st_size


@dataclass(frozen=True, slots=True)
class Result:
    size: int
    case: str
    replay_ticks_per_s: float
    wall_s: float
    child_wall_s: float
    child_cpu_s: float
    vmhwm_mib: float
    ru_maxrss_mib: float
    topic_mib: float
    orders: int


def run_case(ticks: Path, size: int, case: str, models: Path | None, work: Path) -> Result:
    out = work / f"out-{case}"
    shutil.rmtree(out, ignore_errors=True)
    report = work / f"child-{case}.json"
    args = ["run", "--ticks", str(ticks), "--tz", "America/Chicago", "--out", str(out),
            "--quiet", "--no-report-html", "--summary-json", str(work / "summary.json"),
            "--sink", "none"]  # the targets are without a database sink (issue 10)
    if case.startswith("no-trade"):
        args.append("--no-trade")
    else:
        assert models is not None
        args += ["--models", str(models)]
    if not case.endswith("+files"):
        args.append("--no-topic-files")
    cmd = [sys.executable, "-m", "bench.scaling", "--child", str(report), "--", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{case} at {size:,} ticks failed with exit code {proc.returncode}")
    child = json.loads(report.read_text())
    summary = child["summary"]
    topics = out / "topics"
    topic_bytes = sum(p.stat().st_size for p in topics.glob("*.jsonl")) if topics.is_dir() else 0
    shutil.rmtree(out, ignore_errors=True)
    rate = summary["ticks_per_s"]
    return Result(size, case, float(rate), float(summary["wall_s"]), wall,
                  usage.ru_utime + usage.ru_stime, float(child["vmhwm_mib"]),
                  usage.ru_maxrss / 1024.0, topic_bytes / 2**20, int(summary.get("orders", 0)))


def child(report: Path, argv: list[str]) -> int:
    """Run ``streamquant`` with ``argv`` in this process; record its summary and peak RSS."""
    from jobs.cli import main as cli_main

    code = cli_main(argv)
    summary_path = Path(argv[argv.index("--summary-json") + 1])
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if code == 0 else {}
    report.write_text(json.dumps({"summary": summary, "vmhwm_mib": peak_rss_mib()}))
    return code


def _train(work: Path) -> Path:
    subprocess.run([sys.executable, "-m", "bench.emini", "train", str(work)], check=True)
    return work / "models"


def run(sizes: list[int], cases: list[str], models: Path | None, keep: Path | None) -> list[Row]:
    header("scaling: run over the E-mini sample repeated with shifted dates")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sq-scaling-") as tmpdir:
        work = keep or Path(tmpdir)
        work.mkdir(parents=True, exist_ok=True)
        if models is None and any(c.startswith("chain") for c in cases):
            models = _train(work)
        body = canonical_body(data.fetch_emini(quiet=True))
        results: list[Result] = []
        for size in sizes:
            ticks = work / f"ticks-{size}.csv"
            if not ticks.exists():
                n_bytes = write_repeated(body, size // SAMPLE_TICKS, ticks)
            else:
                n_bytes = ticks.stat().st_size
            print(f"\n-- {size:,} ticks ({n_bytes / 2**20:,.0f} MiB CSV)", flush=True)
            for case in cases:
                r = run_case(ticks, size, case, models, work)
                results.append(r)
                print(f"   {case:<15} {r.replay_ticks_per_s:>11,.0f} ticks/s   wall "
                      f"{r.child_wall_s:7.1f} s   CPU {r.child_cpu_s:7.1f} s "
                      f"({r.size / r.child_cpu_s:,.0f} ticks per CPU s)   "
                      f"peak RSS {r.vmhwm_mib:7,.0f} MiB (VmHWM), "
                      f"{r.ru_maxrss_mib:7,.0f} MiB (ru_maxrss)   topic files "
                      f"{r.topic_mib:7,.0f} MiB   orders {r.orders:,}", flush=True)
            if keep is None:
                ticks.unlink()
        print("\n-- ticks/s at each size relative to the smallest, per case")
        for case in cases:
            by = {r.size: r for r in results if r.case == case}
            base = by[sizes[0]].replay_ticks_per_s
            rel = ", ".join(f"{s // 1000:,}k {by[s].replay_ticks_per_s / base:.2f}x"
                            for s in sizes)
            print(f"   {case:<15} {rel}")
        for r in results:
            rows.append(Row(BENCH, f"{r.case} @ {r.size / 1e6:g}M ticks",
                            f"{r.replay_ticks_per_s:,.0f} ticks/s, peak RSS {r.vmhwm_mib:,.0f} MiB",
                            "n=1", f"child wall {r.child_wall_s:.1f} s, CPU "
                            f"{r.child_cpu_s:.1f} s; ru_maxrss "
                            f"{r.ru_maxrss_mib:,.0f} MiB; topic files {r.topic_mib:,.0f} MiB"))
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(Path(argv[1]), argv[3:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else BENCH)
    p.add_argument("--sizes", default="500k,5M,20M",
                   help="comma-separated tick counts, multiples of 500k (default 500k,5M,20M)")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--models", type=Path, default=None,
                   help="a trained bundle for the chain cases (default: train one)")
    p.add_argument("--keep", type=Path, default=None,
                   help="build inputs in this directory and keep them (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    t0 = time.perf_counter()
    rows = run(sizes, cases, args.models, args.keep)
    finish(BENCH, rows, t0, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
