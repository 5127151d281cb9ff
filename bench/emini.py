"""The benchmarks' workload: the bundled E-mini sample as ``streamquant run`` sees it.

Everything is built through the replay job's own functions (``resolve_ticks``,
``normalize_config``, ``iter_records``, ``load_tick_columns``, ``train_models``, the chain
options of ``run --models``), so a benchmark times the code path users run, not a copy of it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from jobs import replay, train_job
from jobs.accel.normalize_columns import RawTickColumns
from jobs.graph import Stage
from jobs.options import ReplayOptions
from jobs.sources import TickInput, iter_records, normalize_config, resolve_ticks
from jobs.strategy import StrategyBundle, load_bundle
from jobs.tick_files import load_tick_columns
from jobs.topology import ChainOptions, chain_stages
from operators.domain.bars import parse_duration
from operators.features import FeaturesConfig, WindowFeatures
from operators.normalize import Normalize, RawRecord

BAR = "1m"
BAR_NS = parse_duration(BAR)


def source() -> TickInput:
    """The bundled E-mini trades (fetched and verified on first use)."""
    return resolve_ticks(ReplayOptions(out=Path("unused"), quiet=True))


def normalizer(src: TickInput) -> Normalize:
    return Normalize(normalize_config(src, None))


def window_features() -> WindowFeatures:
    return WindowFeatures(FeaturesConfig(bar_ns=BAR_NS))


def records(src: TickInput) -> list[RawRecord]:
    """Every data line as the per-event path's source records, held in memory."""
    return list(iter_records(src))


def columns(src: TickInput) -> RawTickColumns:
    """The file as the batched path loads it (``run_batch_ticks``'s first step)."""
    cols = load_tick_columns(src.path, src.column_map, src.tz, src.default_symbol,
                             src.default_venue)
    return dataclasses.replace(cols, file=src.label)


@dataclasses.dataclass(frozen=True, slots=True)
class TrainedBundle:
    models: Path
    bundle: StrategyBundle
    train_s: float
    """Wall seconds of ``train_models`` (0 when an existing bundle was loaded)."""


def trained_bundle(models: Path | None, work: Path) -> TrainedBundle:
    """Load ``models`` or train the walk-forward bundle as ``streamquant train`` does."""
    if models is not None:
        return TrainedBundle(models, load_bundle(models), 0.0)
    out = work / "models"
    t0 = time.perf_counter()
    bundle = train_job.train_models(ReplayOptions(out=work, quiet=True), out)
    return TrainedBundle(out, bundle, time.perf_counter() - t0)


def chain_options(src: TickInput, models: Path) -> ChainOptions:
    """The decision chain's options exactly as ``streamquant run --models DIR`` builds them."""
    opts = ReplayOptions(out=Path("unused"), quiet=True, models=models)
    return replay.chain_options(opts, window_features().feature_version, BAR_NS, src.tz)


def chain(src: TickInput, models: Path) -> tuple[Stage, ...]:
    """Fresh chain operators (infer, regime blend, size, account) over the bundle, open: the
    benchmark process is their host, and their sessions live until it exits."""
    stages = chain_stages(chain_options(src, models))
    for st in stages:
        st.operator.open()
    return stages


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.emini train DIR``: train the bundle once for several benchmarks."""
    import argparse

    p = argparse.ArgumentParser(description="train the benchmarks' strategy bundle")
    p.add_argument("command", choices=("train",))
    p.add_argument("work", type=Path, help="directory; the bundle goes to WORK/models")
    args = p.parse_args(argv)
    tb = trained_bundle(None, args.work)
    print(f"trained {tb.models} in {tb.train_s:.1f} s")


if __name__ == "__main__":
    main()
