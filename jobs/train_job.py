"""``streamquant train``: features over the input, then the walk-forward fit of the bundle."""

from __future__ import annotations

from pathlib import Path

from jobs.bar_files import load_bars
from jobs.batch_replay import run_batch_ticks
from jobs.bundle_dir import write_bundle_dir
from jobs.errors import UsageError
from jobs.event_replay import run_event_ticks
from jobs.options import ReplayOptions
from jobs.progress import Progress, data_lines
from jobs.sources import (
    TickInput,
    normalize_config,
    resolve_ticks,
)
from jobs.strategy import StrategyBundle, train_bundle
from jobs.topic_sink import TopicSink
from operators.domain.bars import parse_duration
from operators.features import (
    FeaturesConfig,
    WindowFeatures,
    features_from_bars,
)
from operators.normalize import Normalize
from topics import names as tn
from topics.messages import (
    Bar,
    FeatureVector,
)

# Labor Day 2013 (2 September): the sample's last trade before the holiday halt is at
# 10:29:59.246 CT (15:29:59 UTC); Globex reopened at 17:00 CT (22:00 UTC), the next trade
# 17:00:00.026 CT. The session before the halt trains; the rest of the sample trades.
EMINI_TRAIN_END_NS = 1_378_159_200_000_000_000


def features_pass(src: TickInput, norm: Normalize, bar_ns: int, lateness_ns: int,
                  *, quiet: bool = True) -> list[FeatureVector]:
    """Feature vectors of the whole input (batched, nothing written): the training data."""
    feats = WindowFeatures(FeaturesConfig(bar_ns=bar_ns, lateness_ns=lateness_ns))
    sink = TopicSink(None, (tn.MD_TICKS, tn.MD_TICKS_DLQ, tn.MD_BARS, tn.FEATURES,
                            tn.MD_TICKS_LATE),
                     capture=(tn.FEATURES,))
    progress = Progress("training features", data_lines(src.path, header=src.spec.fmt == "csv"),
                        enabled=not quiet)
    run = run_batch_ticks if src.spec.fmt == "csv" else run_event_ticks
    run(src, norm, feats, (), sink, lateness_ns, [], progress)
    assert sink.captured is not None
    return [fv for fv in sink.captured[tn.FEATURES] if isinstance(fv, FeatureVector)]


def train_end_for(bundled: bool, vectors: list[FeatureVector], train_fraction: float) -> int:
    """The walk-forward split: the bundled sample's first session, else a fraction of bars."""
    if bundled:
        return EMINI_TRAIN_END_NS
    ends = sorted({fv.ts_event for fv in vectors})
    if len(ends) < 200:
        raise UsageError(f"only {len(ends)} bars: too few to train and trade; pass --models")
    return ends[max(0, int(len(ends) * train_fraction) - 1)]


def train_models(opts: ReplayOptions, out_dir: Path) -> StrategyBundle:
    """``streamquant train``: features over the input, then fit on the training window; the
    bundle is written whole into a temporary directory that then replaces ``out_dir``."""
    inputs = [p for p in (opts.ticks, opts.bars, opts.instruments) if p is not None]
    return write_bundle_dir(out_dir, lambda tmp: _train(opts, tmp), inputs)


def _train(opts: ReplayOptions, out_dir: Path) -> StrategyBundle:
    if opts.bars is not None:
        bars, bar_ns = _good_bars(opts)
        vectors = features_from_bars(bars, FeaturesConfig(bar_ns=bar_ns))
        train_end = train_end_for(False, vectors, opts.train_fraction)
    else:
        src = resolve_ticks(opts)
        norm = Normalize(normalize_config(src, opts.instruments,
                                          max_forward_jump_ns=opts.max_forward_jump_ns,
                                          dedupe_window_ns=opts.dedupe_window_ns))
        bar_ns = parse_duration(opts.bar or "1m")
        vectors = features_pass(src, norm, bar_ns, opts.lateness_ns, quiet=opts.quiet)
        train_end = train_end_for(src.bundled, vectors, opts.train_fraction)
    return train_bundle(vectors, train_end=train_end, bar_ns=bar_ns, out_dir=out_dir,
                        seed=opts.seed, quiet=opts.quiet)


def _good_bars(opts: ReplayOptions) -> tuple[list[Bar], int]:
    assert opts.bars is not None
    items, bar_ns = load_bars(opts.bars, bar_ns=parse_duration(opts.bar) if opts.bar else None,
                              tz=opts.tz, default_symbol=opts.symbol,
                              ohlc_tolerance=opts.ohlc_tolerance)
    return [it for it, _ in items if isinstance(it, Bar)], bar_ns
