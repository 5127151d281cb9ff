"""Pre-trade check latency: ``check_order`` p50 / p99 / p99.9, approved and rejected orders.

The account holds one lot of each of 1, 4 or 10 futures (ES first, at ~1640 with multiplier 50)
and has recorded a few orders, so every rule (concentration, sector, leverage, rate, collar,
...) does its real work. The approved order buys 1 ES; the rejected one buys 10 ES, which
breaks the concentration limit, so the check also searches the ``allowed_quantity``. Each
call is timed alone with ``perf_counter_ns`` (its own overhead is printed); rounds interleave
every case, samples are pooled for the percentiles and the spread is that of the per-round
medians. The design budget is tens of microseconds per check.

Run: ``python -m bench.risk_latency [--reps N] [--calls N] [--json PATH]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bench.measure import (
    Row,
    Stats,
    arg_parser,
    finish,
    fmt_us,
    header,
    percentiles_us,
)
from operators.domain.ledger import (
    AccountState,
    InstrumentSpec,
    apply_fill,
    mark,
    new_account,
    record_order,
    register_instrument,
)
from operators.domain.limits import AccountConfig, RiskLimits
from operators.domain.risk_gate import RiskDecision, check_order
from operators.domain.risk_rules import OrderProposal

BENCH = "risk_latency"
NS = 1_000_000_000
# symbol, multiplier, price, group
BOOK = (("ES", 50.0, 1640.0, "equity_index"), ("NQ", 20.0, 3100.0, "equity_index"),
        ("ZN", 1000.0, 126.0, "rates"), ("GC", 100.0, 1390.0, "metals"),
        ("CL", 1000.0, 107.0, "energy"), ("YM", 5.0, 14800.0, "equity_index"),
        ("6E", 125000.0, 1.32, "fx"), ("ZB", 1000.0, 132.0, "rates"),
        ("SI", 5000.0, 23.0, "metals"), ("NG", 10000.0, 3.6, "energy"))
SYMBOL_COUNTS = (1, 4, 10)
ORDERS = (("approved", 1.0), ("rejected", 10.0))


@dataclass(frozen=True, slots=True)
class Case:
    symbols: int
    kind: str
    order: OrderProposal
    state: AccountState
    limits: RiskLimits
    spec: InstrumentSpec

    def check(self) -> RiskDecision:
        return check_order(self.order, self.state, self.limits, self.spec)


def build_cases() -> list[Case]:
    limits = RiskLimits()
    cases = []
    for k in SYMBOL_COUNTS:
        specs = {s: InstrumentSpec(symbol=s, multiplier=m, tick_size=0.01, lot_size=1.0, group=g)
                 for s, m, _, g in BOOK[:k]}
        state = new_account(AccountConfig())
        for s, m, px, _ in BOOK[:k]:
            register_instrument(state, specs[s])
            apply_fill(state, s, "BUY", 1.0, px, 1.0, m)
            mark(state, s, px)
        for i in range(5):
            record_order(state, i * NS, limits)
        for kind, qty in ORDERS:
            order = OrderProposal("ES", "BUY", qty, 1640.25, 30 * NS)
            cases.append(Case(k, kind, order, state, limits, specs["ES"]))
    return cases


def time_calls(case: Case, calls: int) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    out = np.empty(calls, dtype=np.int64)
    pc = time.perf_counter_ns
    check = check_order
    o, st, lim, spec = case.order, case.state, case.limits, case.spec
    for i in range(calls):
        t0 = pc()
        check(o, st, lim, spec)
        out[i] = pc() - t0
    return out


def timer_overhead_ns(calls: int = 100_000) -> float:
    pc = time.perf_counter_ns
    out = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = pc()
        out[i] = pc() - t0
    return float(np.median(out))


def run(reps: int, calls: int) -> list[Row]:
    header("pre-trade check latency: check_order on an ES order, 1 / 4 / 10 symbols held")
    cases = build_cases()
    for c in cases:
        d = c.check()
        want = c.kind == "approved"
        if d.approved != want:
            raise SystemExit(f"scenario broken: {c.symbols} symbols, {c.kind} order got "
                             f"approved={d.approved} {d.codes}")
    rej = cases[1].check()
    print(f"   rejected order: buy 10 ES @ 1640.25 -> {', '.join(rej.codes)}; allowed_quantity "
          f"{rej.allowed_quantity:g}")
    overhead = timer_overhead_ns()
    print(f"   timer overhead (perf_counter_ns pair, included below): {overhead:.0f} ns; "
          f"{reps} rounds x {calls:,} calls per case")
    for c in cases:  # warm up
        time_calls(c, calls // 10)
    samples: dict[tuple[int, str], list[np.ndarray[tuple[int], np.dtype[np.int64]]]] = {
        (c.symbols, c.kind): [] for c in cases}
    for _ in range(reps):
        for c in cases:
            samples[(c.symbols, c.kind)].append(time_calls(c, calls))

    print(f"\n   {'symbols':>7}  {'order':<9} {'p50':>10} {'p99':>10} {'p99.9':>10} "
          f"{'max':>10}  checks/s (1/mean)  p50 spread")
    rows = []
    for (k, kind), runs in samples.items():
        pooled = np.concatenate(runs)
        p = percentiles_us(pooled)
        p50s = Stats.of([float(np.median(r)) / 1e3 for r in runs])
        rate = 1e9 / float(pooled.mean())
        print(f"   {k:>7}  {kind:<9} {fmt_us(p['p50']):>10} {fmt_us(p['p99']):>10} "
              f"{fmt_us(p['p99.9']):>10} {fmt_us(p['max']):>10}  {rate:>14,.0f}     "
              f"{p50s.spread()}")
        rows.append(Row(BENCH, f"check_order, {kind}, {k} symbol{'s' * (k > 1)}",
                        f"p50 {fmt_us(p['p50'])}, p99 {fmt_us(p['p99'])}, "
                        f"p99.9 {fmt_us(p['p99.9'])}", p50s.spread(),
                        f"{len(pooled):,} timed calls, pooled over rounds"))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = arg_parser("pre-trade check latency", reps=5)
    p.add_argument("--calls", type=int, default=20_000, help="timed calls per case per round")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.reps, args.calls)
    finish(BENCH, rows, t0, args.json)


if __name__ == "__main__":
    main()
