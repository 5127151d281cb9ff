"""Inference latency: the specialists through onnxruntime (CPU, one thread) and ``Infer.process``.

The bundle is the one ``streamquant run`` trades with: trained walk-forward on the E-mini
sample's first session (``jobs.train_job.train_models``), or loaded with ``--models DIR``. Inputs
are the sample's real feature vectors (warm-up rows dropped), cycled.

Measured, in interleaved rounds (samples pooled for percentiles; spread of per-round medians):
- ``session.run`` per model kind (linear, gbm) at batch 1, batch 2 (``Infer.process`` pads a
  single row to two so it runs the same kernel as ``predict_batch``) and batch 256;
- ``Infer.process`` per decision for the bundle's A/B configuration and for each arm alone
  (three models per decision; the linear arm also computes per-feature contributions), back
  to back ("hot") and with a bar's worth of other work (220 ticks through normalize, untimed)
  before each call ("cold"), as inside a replay;
- ``Infer.predict_batch`` over 256 rows and all six models.

Run: ``python -m bench.inference_latency [--models DIR] [--reps N] [--json PATH]``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import emini
from bench.measure import (
    Row,
    Stats,
    add_models_arg,
    arg_parser,
    finish,
    fmt_us,
    header,
    percentiles_us,
)
from jobs import train_job
from jobs.topology import infer_operator
from operators.contract import SimpleContext
from operators.infer import Infer

BENCH = "inference_latency"
GAP_TICKS = 220  # ticks per 1-minute bar in the E-mini sample (500,000 / 2,264)
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def timed(fn: Callable[[int], object], calls: int,
          pre: Callable[[int], object] | None = None) -> I64:
    """Nanoseconds of ``fn(i)`` per call; ``pre(i)`` runs untimed before each."""
    out = np.empty(calls, dtype=np.int64)
    pc = time.perf_counter_ns
    for i in range(calls):
        if pre is not None:
            pre(i)
        t0 = pc()
        fn(i)
        out[i] = pc() - t0
    return out


class Collector:
    """Samples per case over rounds: pooled percentiles plus the spread of round medians."""

    def __init__(self) -> None:
        self.runs: dict[str, list[I64]] = {}

    def add(self, case: str, samples: I64) -> None:
        self.runs.setdefault(case, []).append(samples)

    def summary(self, case: str) -> tuple[dict[str, float], Stats, int]:
        runs = self.runs[case]
        pooled = np.concatenate(runs)
        return (percentiles_us(pooled), Stats.of([float(np.median(r)) for r in runs]),
                len(pooled))


def run(models: Path | None, reps: int) -> list[Row]:
    header("inference latency: specialists on onnxruntime CPU (1 thread), Infer.process")
    with tempfile.TemporaryDirectory(prefix="sq-bench-") as tmpdir:
        tb = emini.trained_bundle(models, Path(tmpdir))
        return _run(tb, reps)


def _run(tb: emini.TrainedBundle, reps: int) -> list[Row]:
    b = tb.bundle
    if tb.train_s:
        print(f"   trained the bundle in {tb.train_s:.1f} s (train_models: features pass, HMM, "
              f"GARCH, 6 specialists)")
    src = emini.source()
    vectors = train_job.features_pass(src, emini.normalizer(src), emini.BAR_NS, 0)
    complete = [v for v in vectors if v.complete]
    mixed = infer_operator(tb.models, b.arm_a, b.arm_b, b.ab_split)
    linear = infer_operator(tb.models, b.arm_a)
    gbm = infer_operator(tb.models, b.arm_b)
    for op in (mixed, linear, gbm):
        op.open()  # the benchmark process is their host: sessions live until it exits
    names = mixed.feature_names
    X: F32 = np.array([[getattr(v, n) for n in names] for v in complete], dtype=np.float32)
    print(f"   models {tb.models}: A={','.join(b.arm_a)} B={','.join(b.arm_b)} "
          f"(B share {b.ab_split:.0%}); providers {','.join(mixed.providers)}, "
          f"intra_op_num_threads {mixed.config.intra_op_num_threads}")
    print(f"   inputs: {len(complete):,} complete feature vectors of {len(vectors):,} bars "
          f"({X.shape[1]} features); {reps} rounds")

    kinds = {"linear": b.arm_a, "gbm": b.arm_b}
    rows_n = len(X)
    singles = [X[i:i + 1] for i in range(rows_n)]
    pairs = [np.ascontiguousarray(np.stack([X[i], X[i]])) for i in range(rows_n)]
    starts = [(i * 256) % (rows_n - 256) for i in range(64)]
    blocks = [np.ascontiguousarray(X[s:s + 256]) for s in starts]
    col = Collector()

    def session_case(sess: Any, inputs: list[F32]) -> Callable[[int], object]:
        run_ = sess.run
        k = len(inputs)
        return lambda i: run_(None, {"features": inputs[i % k]})

    def process_case(op: Infer) -> Callable[[int], object]:
        st = op.new_state("ES")
        ctx = SimpleContext()
        proc = op.process
        k = len(complete)
        return lambda i: proc(st, complete[i % k], ctx)

    def predict_case(op: Infer) -> Callable[[int], object]:
        return lambda i: op.predict_batch(blocks[i % len(blocks)])

    # In a replay ~220 ticks of other work separate two decisions and evict what inference
    # left in the caches: the "cold" case re-creates that gap (untimed) before every call.
    gap_recs = emini.records(src)[:GAP_TICKS]
    gap_norm = emini.normalizer(src)
    gap_state = gap_norm.new_state("ES")
    gap_ctx = SimpleContext()

    def other_work(_: int) -> None:
        for r in gap_recs:
            gap_norm.process(gap_state, r, gap_ctx)

    cases: list[tuple[str, Callable[[int], object], int]] = []
    for kind, arm in kinds.items():
        for name in arm:
            s = mixed.session(name)
            cases += [(f"{kind}|b1|{name}", session_case(s, singles), 2000),
                      (f"{kind}|b2|{name}", session_case(s, pairs), 2000),
                      (f"{kind}|b256|{name}", session_case(s, blocks), 150)]
    cases += [("process|A/B mixed", process_case(mixed), rows_n),
              ("process|linear arm", process_case(linear), rows_n),
              ("process|gbm arm", process_case(gbm), rows_n),
              ("predict_batch|256 rows x 6 models", predict_case(mixed), 60)]
    cold = ("process|A/B mixed, cold", process_case(mixed), 400)
    for _, fn, calls in cases:  # warm up every session and code path
        timed(fn, max(10, calls // 10))
    for _ in range(reps):
        for case, fn, calls in cases:
            col.add(case, timed(fn, calls))
        col.add(cold[0], timed(cold[1], cold[2], pre=other_work))

    rows: list[Row] = []
    print(f"\n   {'session.run':<40} {'p50':>10} {'p99':>10} {'p99.9':>10}   per row (p50)")
    for kind in kinds:
        for batch, label in (("b1", "batch 1"), ("b2", "batch 2 (operator pad)"),
                             ("b256", "batch 256")):
            rows_per = {"b1": 1, "b2": 1, "b256": 256}[batch]
            merged = Collector()
            for case, runs in col.runs.items():
                if case.startswith(f"{kind}|{batch}|"):
                    print_case(f"  {case.split('|')[2]} {label}", col, case, rows_per)
                    for r in runs:
                        merged.add("all", r)
            p, spread, n = merged.summary("all")
            print_case(f"{kind} {label} (3 models)", merged, "all", rows_per)
            per_row = f", {p['p50'] * 1e3 / rows_per:,.0f} ns/row" if rows_per > 1 else ""
            rows.append(Row(BENCH, f"{kind} session.run, {label}",
                            f"p50 {fmt_us(p['p50'])}, p99 {fmt_us(p['p99'])}{per_row}",
                            spread.spread(), f"{n:,} calls over 3 models, 1 thread"))
    print(f"\n   {'Infer':<40} {'p50':>10} {'p99':>10} {'p99.9':>10}   decisions/s (1/mean)")
    for case in ("process|A/B mixed", "process|linear arm", "process|gbm arm",
                 "process|A/B mixed, cold", "predict_batch|256 rows x 6 models"):
        p, spread, n = col.summary(case)
        pooled = np.concatenate(col.runs[case])
        rate = 1e9 / float(pooled.mean())
        what = case.replace("|", " ")
        print(f"   {what:<40} {fmt_us(p['p50']):>10} {fmt_us(p['p99']):>10} "
              f"{fmt_us(p['p99.9']):>10}   {rate:,.0f}")
        label = ("Infer.predict_batch, 256 rows x 6 models" if case.startswith("predict")
                 else f"Infer.process per decision, {case.split('|')[1]}")
        how = f"{n:,} calls" + (", 3 models per decision" if case.startswith("process")
                                else "")
        if case.endswith("cold"):
            how += f"; {GAP_TICKS} normalize calls (untimed) before each"
        rows.append(Row(BENCH, label, f"p50 {fmt_us(p['p50'])}, p99 {fmt_us(p['p99'])}",
                        spread.spread(), how))
    return rows


def print_case(label: str, col: Collector, case: str, rows_per: int) -> None:
    p, spread, _ = col.summary(case)
    extra = f"   {p['p50'] * 1e3 / rows_per:,.0f} ns/row" if rows_per > 1 else ""
    print(f"   {label:<40} {fmt_us(p['p50']):>10} {fmt_us(p['p99']):>10} "
          f"{fmt_us(p['p99.9']):>10}{extra}   (p50 {spread.spread()})")


def main(argv: list[str] | None = None) -> None:
    p = arg_parser("inference latency", reps=5)
    add_models_arg(p)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.models, args.reps)
    finish(BENCH, rows, t0, args.json)


if __name__ == "__main__":
    main()
