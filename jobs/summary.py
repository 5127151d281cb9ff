"""The run summary: counts per topic, dead letters by reason, throughput, printed and as JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.topic_sink import TopicSink
from topics import names as tn


@dataclass(slots=True)
class RunStats:
    ticks_in: int = 0
    bars_in: int = 0
    wall_s: float = 0.0
    train_s: float = 0.0
    replay_s: float = 0.0
    """The replay itself: reading the input, the graph and writing the topic files (not
    start-up, training, loading models or building the report)."""
    topic_files: bool = True
    files_s: float = 0.0
    """Of ``replay_s``, encoding and writing the topic files (``TopicSink.files_s``)."""


def build_summary(sink: TopicSink, stats: RunStats, dlq: Counter[str]) -> dict[str, Any]:
    c = sink.counts
    ticks = c.get(tn.MD_TICKS, 0)
    replay_s = stats.replay_s or stats.wall_s - stats.train_s
    return {
        "ticks_in": stats.ticks_in,
        "ticks_valid": ticks if stats.bars_in == 0 else 0,  # bar replays: derived prints only
        "dlq": sum(dlq.values()),
        "dlq_by_reason": dict(sorted(dlq.items())),
        "late_ticks": c.get(tn.MD_TICKS_LATE, 0),
        "bars_in": stats.bars_in,
        "bars": c.get(tn.MD_BARS, 0) if stats.bars_in == 0 else stats.bars_in,
        tn.FEATURES: c.get(tn.FEATURES, 0),
        "wall_s": round(stats.wall_s, 3),
        "train_s": round(stats.train_s, 3),
        # replay throughput, with or without topic files (``topic_files``): training, model
        # loading and the report are not part of it
        "ticks_per_s": round(stats.ticks_in / replay_s, 1) if replay_s > 0 else 0.0,
        "bars_per_s": round(stats.bars_in / replay_s, 1) if replay_s > 0 else 0.0,
        "topic_files": stats.topic_files,
        # the same replay less the time spent encoding and writing the topic files
        "topic_files_s": round(stats.files_s, 3),
        "ticks_per_s_without_files": (round(stats.ticks_in / (replay_s - stats.files_s), 1)
                                      if replay_s - stats.files_s > 0 else 0.0),
        "topics": dict(c),
    }


def print_summary(summary: dict[str, Any], out: Path) -> None:
    print("streamquant run summary")
    if summary["bars_in"]:
        print(f"  bars in         {summary['bars_in']:>12,}")
    else:
        print(f"  ticks in        {summary['ticks_in']:>12,}")
        print(f"  ticks valid     {summary['ticks_valid']:>12,}")
    reasons = ", ".join(f"{k} {v:,}" for k, v in summary["dlq_by_reason"].items()) or "none"
    print(f"  dead letters    {summary['dlq']:>12,}   ({reasons})")
    if not summary["bars_in"]:
        print(f"  late ticks      {summary['late_ticks']:>12,}")
        print(f"  bars            {summary['bars']:>12,}")
    print(f"  feature vectors {summary['features']:>12,}")
    train = f", of which training {summary['train_s']:.1f} s" if summary["train_s"] else ""
    rate = (f"{summary['bars_per_s']:,.0f} bars/s" if summary["bars_in"]
            else f"{summary['ticks_per_s']:,.0f} ticks/s")
    files = "no topic files"
    if summary.get("topic_files", True):
        files = "writing topic files"
        if not summary["bars_in"] and summary.get("topic_files_s"):
            files += (f"; {summary['ticks_per_s_without_files']:,.0f} ticks/s without the "
                      f"{summary['topic_files_s']:.1f} s of encoding and writing them")
    print(f"  wall time       {summary['wall_s']:>12.3f} s   (replay {rate}, {files}{train})")
    print(f"  topics          {out / 'topics'}")
    ch = summary.get("sinks", {}).get("clickhouse")
    if ch:  # the analysts' database (docs/clickhouse.md)
        embedded = ch["target"] == f"chdb://{out / 'clickhouse'}"
        where = f"query: streamquant sql --out {out} \"SELECT ...\"" if embedded \
            else ch["target"]
        print(f"  clickhouse      {ch['rows_total']:>12,} rows   ({where})")
