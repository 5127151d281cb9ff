"""What online learning costs: per bar for each River model, and the whole chain on vs off.

1. **Per model**: every complete one-minute feature vector of the bundled E-mini sample
   (about 2,200 bars), each model learning the previous bar's label (horizon 1) and then
   predicting the current bar, exactly the calls the ``learn`` operator makes; µs per bar.
   Also the whole ``learn`` operator per bar (both models, the champion's ONNX scores, the
   windows, ADWIN, PSI and the checks).
2. **Whole chain**: the E-mini replay through the whole graph on the batched path
   (``run_batch_ticks`` with the decision chain, as ``streamquant run --models DIR``; CSV
   read included, no topic files), interleaved rounds with the ``learn`` stage on and off
   (``--no-online-learning``): ticks/s of each and the ratio.

Run: ``python -m bench.online_learning [--models DIR] [--reps N] [--json PATH]``.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import emini
from bench.measure import Row, Stats, add_models_arg, arg_parser, finish, fmt_rate, header
from jobs.batch_replay import run_batch_ticks
from jobs.progress import Progress
from jobs.sources import TickInput
from jobs.topic_sink import TopicSink
from jobs.topology import chain_stages, learn_stage, opened, tick_graph
from jobs.train_job import features_pass
from operators.contract import SimpleContext
from operators.domain.online_models import KINDS, make_model, prob_up
from topics.messages import FeatureVector

BENCH = "online_learning"


def per_model_us(vectors: list[FeatureVector], kind: str) -> float:
    """µs per bar of learn (previous bar's label) + predict (this bar) for one fresh model."""
    model = make_model(kind, seed=0, learning_rate=0.01)  # type: ignore[arg-type]
    prev: tuple[dict[str, float], float] | None = None
    n = 0
    t0 = time.perf_counter()
    for fv in vectors:
        x = {k: float(v) for k, v in zip(fv.NAMES, fv.values(), strict=True) if v is not None}
        if prev is not None:
            model.learn_one(prev[0], fv.close > prev[1])
        prob_up(model, x)
        prev = (x, fv.close)
        n += 1
    return (time.perf_counter() - t0) / n * 1e6


def operator_us(vectors: list[FeatureVector], src: TickInput, models: Path) -> float:
    """µs per bar of the whole ``learn`` operator (``process`` per vector, all of it)."""
    stage = learn_stage(emini.chain_options(src, models))
    op = stage.operator
    with opened((stage,)):
        state = op.new_state(vectors[0].symbol)
        ctx = SimpleContext()
        t0 = time.perf_counter()
        for fv in vectors:
            state, _ = op.process(state, fv, ctx)
        return (time.perf_counter() - t0) / len(vectors) * 1e6


def chain_run(src: TickInput, models: Path, online: bool) -> Callable[[], int]:
    opts = dataclasses.replace(emini.chain_options(src, models), online_learning=online)

    def go() -> int:
        chain = chain_stages(opts)
        norm, feats = emini.normalizer(src), emini.window_features()
        sink = TopicSink(None, tick_graph(norm, feats, chain).output_topics)
        with opened(chain):
            n = run_batch_ticks(src, norm, feats, chain, sink, 0, [],
                                Progress("", None, enabled=False))
        sink.close()
        return n
    return go


def main(argv: list[str] | None = None) -> None:
    p = arg_parser(__doc__ or "", reps=2)
    add_models_arg(p)
    args = p.parse_args(argv)
    started = time.perf_counter()
    header("online learning: River models per bar, whole chain on vs off")
    src = emini.source()
    with tempfile.TemporaryDirectory(prefix="sq-bench-ol-") as tmp:
        tb = emini.trained_bundle(args.models, Path(tmp))
        vectors = features_pass(src, emini.normalizer(src), emini.BAR_NS, 0)
        complete = [v for v in vectors if v.complete]
        rows: list[Row] = []
        for kind in KINDS:
            st = Stats.of([per_model_us(complete, kind) for _ in range(max(args.reps, 3))])
            print(f"  {kind:<6} learn + predict {st.median:8.1f} µs/bar  ({st.spread()})")
            rows.append(Row(BENCH, f"{kind}: learn + predict per bar", f"{st.median:.1f} µs",
                            st.spread(), f"{len(complete):,} E-mini 1-min bars, horizon 1"))
        st = Stats.of([operator_us(vectors, src, tb.models) for _ in range(max(args.reps, 3))])
        print(f"  learn operator       {st.median:8.1f} µs/bar  ({st.spread()})")
        rows.append(Row(BENCH, "learn operator per bar (both models, champion, checks)",
                        f"{st.median:.1f} µs", st.spread(), f"{len(vectors):,} vectors"))
        on, off = chain_run(src, tb.models, True), chain_run(src, tb.models, False)
        walls: dict[str, list[float]] = {"on": [], "off": []}
        ticks = 0
        for r in range(args.reps):  # interleaved, alternating who goes first
            for name in (("on", "off") if r % 2 == 0 else ("off", "on")):
                t0 = time.perf_counter()
                ticks = (on if name == "on" else off)()
                walls[name].append(time.perf_counter() - t0)
        rates = {k: Stats.of([ticks / w for w in v]) for k, v in walls.items()}
        ratio = Stats.of([a / b for a, b in zip(walls["off"], walls["on"], strict=True)])
        for name, label in (("off", "learning off"), ("on", "learning on")):
            print(f"  chain, {label:<12} {fmt_rate(rates[name].median)}  "
                  f"({rates[name].spread()})")
            rows.append(Row(BENCH, f"whole chain ticks/s, {label}",
                            fmt_rate(rates[name].median), rates[name].spread(),
                            f"{ticks:,} E-mini ticks, batched path, no topic files"))
        rows.append(Row(BENCH, "whole chain: on / off throughput", f"{ratio.median:.3f}",
                        ratio.spread(), "same run, interleaved rounds"))
    finish(BENCH, rows, started, args.json)


if __name__ == "__main__":
    main()
