"""Redis as the pipeline uses it: feature-store and position writes, and a strategy's read.

The feature vectors are the E-mini sample's own (a ``--no-trade`` replay of the bundled file,
2,264 one-minute bars), spread over a universe of ``--symbols`` symbols so that each bar
writes one key per symbol, as a multi-symbol deployment would. A redis-server is started on
a free loopback port (no persistence), like the tests'.

Figures:
- pipelined ``SET`` throughput of feature entries (with their TTL) and of positions, one
  pipeline per bar across the universe (what the tap's writer thread sends);
- the tap end to end: ``accept`` on the pipeline's thread (its cost per message is what the
  hot path pays) until the writer thread has written everything;
- a strategy reading the latest vector: ``GET`` plus decoding the JSON into a struct, timed
  one call at a time (p50 / p99);
- the kill-switch watcher's poll (``MGET`` of version and epoch): its cost every 200 ms;
- a kill switch recorded in Redis until the watcher's command is acknowledged on ``control``
  (a development broker; skipped without the kafka extra).

Run: ``python -m bench.redis_store [--reps N] [--symbols N] [--bars N] [--json PATH]``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

from bench.measure import Row, Stats, arg_parser, finish, fmt_rate, fmt_us, header, percentiles_us
from jobs.errors import UsageError
from jobs.options import ReplayOptions
from jobs.replay import run_replay
from jobs.sinks.redis_client import connect
from jobs.sinks.redis_keys import FeatureEntry, feature_key, position_key
from jobs.sinks.redis_server import RedisServer
from jobs.sinks.redis_store import RedisStoreConfig, RedisTap, feature_entry
from jobs.sinks.redis_switch import latest_version, set_switch
from topics import names as tn
from topics.messages import FeatureVector, Position

BENCH = "redis_store"
Samples = np.ndarray[tuple[int], np.dtype[np.int64]]
TTL_S = 300


def emini_features(work: Path) -> list[FeatureVector]:
    """The sample's feature vectors, from the replay users run (features only)."""
    out = work / "features-run"
    run_replay(ReplayOptions(out=out, quiet=True, no_trade=True, report_html=False))
    dec = msgspec.json.Decoder(FeatureVector)
    return [dec.decode(line) for line in (out / "topics" / "features.jsonl").read_bytes()
            .splitlines()]


def universe(vectors: list[FeatureVector], symbols: int, bars: int) -> list[list[FeatureVector]]:
    """Per bar, one vector per symbol (the sample's bar under each symbol's name)."""
    names = [f"S{i:03d}" for i in range(symbols)]
    return [[msgspec.structs.replace(v, symbol=s) for s in names] for v in vectors[:bars]]


def positions_of(bars: list[list[FeatureVector]]) -> list[list[Position]]:
    """A position update per symbol and bar, priced at the bar's close."""
    return [[Position(ts_event=v.ts_closed, account="paper", symbol=v.symbol, quantity=3.0,
                      avg_price=v.close - 1.25, realized_pnl=-412.5, unrealized_pnl=187.5,
                      fees=25.5, equity=999_749.5, cause="fill") for v in bar] for bar in bars]


def pipelined_sets(server: RedisServer, batches: list[list[tuple[str, bytes]]],
                   ttl: int | None) -> float:
    """Seconds to write every batch, one pipeline (one round trip) per batch."""
    r = connect(server.url)
    t0 = time.perf_counter()
    for batch in batches:
        pipe = r.pipeline(transaction=False)
        for key, value in batch:
            pipe.set(key, value, ex=ttl)
        pipe.execute()
    dt = time.perf_counter() - t0
    r.close()
    return dt


def tap_end_to_end(server: RedisServer, bars: list[list[FeatureVector]],
                   poss: list[list[Position]]) -> tuple[float, float, dict[str, int]]:
    """(seconds until written, accept's mean cost in µs, the tap's counters)."""
    tap = RedisTap(RedisStoreConfig(server.url, feature_ttl_s=TTL_S))
    time.sleep(0.05)  # its first PING done
    n = 0
    t0 = time.perf_counter()
    t_accept = 0.0
    for fb, pb in zip(bars, poss, strict=True):
        a0 = time.perf_counter()
        for v in fb:
            tap.accept(tn.FEATURES, n, v)
            n += 1
        for p in pb:
            tap.accept(tn.POSITIONS, n, p)
            n += 1
        t_accept += time.perf_counter() - a0
    tap.close()  # waits for the last write
    dt = time.perf_counter() - t0
    s = tap.stats()
    return dt, t_accept / n * 1e6, {k: int(s[k]) for k in ("accepted", "writes", "flushes",
                                                            "failures")}


def get_latencies(server: RedisServer, key: str, calls: int) -> Samples:
    r = connect(server.url)
    dec = msgspec.json.Decoder(FeatureEntry)
    pc = time.perf_counter_ns
    out = np.empty(calls, dtype=np.int64)
    get = r.get
    for i in range(calls):
        t0 = pc()
        raw = get(key)
        dec.decode(raw)  # type: ignore[arg-type]
        out[i] = pc() - t0
    r.close()
    return out


def poll_latencies(server: RedisServer, calls: int) -> Samples:
    r = connect(server.url)
    set_switch(r, False, "paper", "bench", None, time.time_ns())
    pc = time.perf_counter_ns
    out = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = pc()
        latest_version(r)
        out[i] = pc() - t0
    r.close()
    return out


def switch_to_control(server: RedisServer, work: Path, changes: int) -> list[float] | None:
    """Seconds from recording a switch in Redis to the watcher's command acknowledged on
    ``control`` (a development broker); None without the kafka extra."""
    try:
        from jobs.live.admin import create_topics
        from jobs.live.broker import Broker
        from jobs.live.kafka_client import KafkaSettings
        from jobs.live.redis_watch import KillSwitchWatcher, WatchConfig
    except UsageError:
        return None
    out: list[float] = []
    with Broker(log_path=work / "tansu.log") as broker:
        settings = KafkaSettings(broker.bootstrap, "bench.")
        create_topics(settings, [tn.CONTROL])
        watcher = KillSwitchWatcher(WatchConfig(server.url), settings, work,
                                    log=lambda _: None)
        watcher.start()
        r = connect(server.url)
        for i in range(changes):
            before = watcher.forwarded
            t0 = time.perf_counter()
            set_switch(r, i % 2 == 0, "paper", "bench", None, time.time_ns())
            while watcher.forwarded == before:
                time.sleep(0.0002)
            out.append(time.perf_counter() - t0)
            time.sleep(0.02)
        watcher.stop()
        r.close()
    return out


def run(reps: int, symbols: int, bars: int, calls: int) -> list[Row]:
    header(f"redis: feature store and positions ({symbols} symbols x {bars} bars), reads")
    with tempfile.TemporaryDirectory(prefix="sq-bench-redis-") as tmp:
        vectors = emini_features(Path(tmp))
        fbars = universe(vectors, symbols, bars)
        pbars = positions_of(fbars)
        enc = msgspec.json.Encoder()
        fbatches = [[(feature_key(v.symbol, v.timeframe, v.feature_version),
                      enc.encode(feature_entry(v, TTL_S))) for v in b] for b in fbars]
        pbatches = [[(position_key(p.account, p.symbol), enc.encode(p)) for p in b]
                    for b in pbars]
        n = symbols * bars
        print(f"   {len(vectors):,} E-mini feature vectors; {n:,} writes per case per rep; "
              f"value sizes: feature entry {len(fbatches[0][0][1])} B, position "
              f"{len(pbatches[0][0][1])} B")
        with RedisServer(log_path=Path(tmp) / "redis.log") as server:
            feats_s, pos_s, tap_s, accept_us = [], [], [], []
            counters: dict[str, int] = {}
            pipelined_sets(server, fbatches[:50], TTL_S)  # warm up
            for _ in range(reps):
                feats_s.append(pipelined_sets(server, fbatches, TTL_S))
                pos_s.append(pipelined_sets(server, pbatches, None))
                dt, acc, counters = tap_end_to_end(server, fbars, pbars)
                tap_s.append(dt)
                accept_us.append(acc)
            v0 = fbars[-1][0]
            key = feature_key(v0.symbol, v0.timeframe, v0.feature_version)
            get_latencies(server, key, calls // 10)  # warm up
            gets = get_latencies(server, key, calls)
            polls = poll_latencies(server, calls)
            switch = switch_to_control(server, Path(tmp), 40)
    rows = []
    fr = Stats.of([n / s for s in feats_s])
    pr = Stats.of([n / s for s in pos_s])
    tr = Stats.of([2 * n / s for s in tap_s])
    ac = Stats.of(accept_us)
    g, p = percentiles_us(gets), percentiles_us(polls)
    print(f"\n   feature entries, pipelined SET EX: {fmt_rate(fr.median, 'writes/s')} "
          f"({fr.spread()})")
    print(f"   positions, pipelined SET:          {fmt_rate(pr.median, 'writes/s')} "
          f"({pr.spread()})")
    print(f"   tap end to end (accept -> written): {fmt_rate(tr.median, 'messages/s')} "
          f"({tr.spread()}); accept {ac.median:.2f} µs/message; last rep {counters}")
    print(f"   strategy GET + decode: p50 {fmt_us(g['p50'])}, p99 {fmt_us(g['p99'])}, "
          f"p99.9 {fmt_us(g['p99.9'])}")
    print(f"   kill-switch poll (MGET): p50 {fmt_us(p['p50'])}, p99 {fmt_us(p['p99'])}")
    if switch is not None:
        sw = percentiles_us([int(x * 1e9) for x in switch])
        print(f"   kill switch set in Redis -> command acknowledged on control: p50 "
              f"{fmt_us(sw['p50'])}, max {fmt_us(sw['max'])} ({len(switch)} changes)")
    how = f"{symbols} symbols x {bars} E-mini bars, one pipeline per bar, loopback"
    rows.append(Row(BENCH, "feature store writes (SET EX, pipelined)",
                    fmt_rate(fr.median, "writes/s"), fr.spread(), how))
    rows.append(Row(BENCH, "position writes (SET, pipelined)", fmt_rate(pr.median, "writes/s"),
                    pr.spread(), how))
    rows.append(Row(BENCH, "Redis tap end to end (features + positions)",
                    fmt_rate(tr.median, "messages/s"), tr.spread(),
                    f"accept() -> written by the writer thread; accept {ac.median:.2f} µs/msg "
                    "on the pipeline's thread"))
    rows.append(Row(BENCH, "strategy reads the latest vector (GET + decode)",
                    f"p50 {fmt_us(g['p50'])}, p99 {fmt_us(g['p99'])}", f"n={calls:,}",
                    "one redis-py client (hiredis), loopback, timed per call"))
    rows.append(Row(BENCH, "kill-switch watcher poll (MGET)",
                    f"p50 {fmt_us(p['p50'])}, p99 {fmt_us(p['p99'])}", f"n={calls:,}",
                    "what the watcher pays every 200 ms"))
    if switch is not None:
        rows.append(Row(BENCH, "kill switch: Redis -> command acknowledged on control",
                        f"p50 {fmt_us(sw['p50'])}, max {fmt_us(sw['max'])}",
                        f"n={len(switch)}", "watcher woken by pub/sub; tansu on loopback"))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = arg_parser("Redis feature store, positions and reads", reps=5)
    p.add_argument("--symbols", type=int, default=100, help="symbols in the universe")
    p.add_argument("--bars", type=int, default=500, help="bars written per symbol")
    p.add_argument("--calls", type=int, default=20_000, help="timed GETs")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.reps, args.symbols, args.bars, args.calls)
    finish(BENCH, rows, t0, args.json)


if __name__ == "__main__":
    main()
