"""``streamquant run --bootstrap B``: the graph as a long-lived service on a Kafka cluster.

The same graph as the embedded run (``jobs.topology``), fed from ``md.ticks.raw`` and
``control`` and writing every output topic, with the specialists from the registry (``--models``
is required: a live run never trains from the stream). ``--checkpoint-dir`` holds the
checkpoint; a restart with the same command line resumes from it. ``--out`` (optional) gets a
manifest and the summary.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import data
from jobs.device import device_record, resolve_device
from jobs.errors import UsageError
from jobs.live.admin import check_topics
from jobs.live.host import CheckpointPolicy, KafkaHost, LiveStats
from jobs.live.kafka_client import KafkaSettings
from jobs.manifest import code_version
from jobs.options import ReplayOptions
from jobs.replay import chain_options
from jobs.sinks.attach import RunContext, open_taps
from jobs.sinks.probe import LiveProbe, bind_taps
from jobs.topology import chain_stages, opened, tick_graph
from operators.domain.bars import parse_duration
from operators.features import FeaturesConfig, WindowFeatures
from operators.normalize import Normalize, NormalizeConfig
from topics import names as tn
from topics.catalog import CATALOG

if TYPE_CHECKING:
    from jobs.live.redis_watch import KillSwitchWatcher

LIVE_MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """What a live run was asked to do (the trading options reuse ``ReplayOptions``)."""

    settings: KafkaSettings
    checkpoint_dir: Path
    replay: ReplayOptions
    out: Path | None = None
    until_end: bool = False
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    job_id: str = "streamquant"

    def __post_init__(self) -> None:
        if self.replay.models is None:
            raise UsageError("a live run needs --models DIR (a bundle from 'streamquant "
                             "train'): it never trains from the stream")
        if self.replay.bars is not None or self.replay.ticks is not None:
            raise UsageError("--ticks/--bars replay files; with --bootstrap the ticks come from "
                             f"the {tn.MD_TICKS_RAW} topic (see 'streamquant produce-ticks')")
        if self.replay.no_trade:
            raise UsageError("--no-trade is for replays; a live run trades")
        if not self.job_id or any(c not in _ID_CHARS for c in self.job_id):
            raise UsageError(f"--job-id {self.job_id!r}: use letters, digits, '.', '_', '-'")


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def live_tz(opts: ReplayOptions) -> str:
    """The zone of naive timestamps and of the trading session (CME's by default)."""
    return opts.tz or data.EMINI_TZ


def build_live_graph(opts: ReplayOptions) -> tuple[Any, dict[str, Any]]:
    """The graph of a live run and the config its manifest records."""
    tz = live_tz(opts)
    bar_ns = parse_duration(opts.bar or "1m")
    norm = Normalize(NormalizeConfig(tz=tz, default_symbol=opts.symbol,
                                     default_venue=opts.venue or "UNKNOWN",
                                     max_forward_jump_ns=opts.max_forward_jump_ns,
                                     dedupe_window_ns=opts.dedupe_window_ns))
    feats = WindowFeatures(FeaturesConfig(bar_ns=bar_ns, lateness_ns=opts.lateness_ns))
    device = resolve_device(opts.device)
    chain = chain_options(opts, feats.feature_version, bar_ns, tz, device=device)
    graph = tick_graph(norm, feats, chain_stages(chain))
    config = {"bar_ns": bar_ns, "lateness_ns": opts.lateness_ns, "tz": tz,
              "models": str(chain.models), "algo": chain.algo,
              "feature_version": feats.feature_version,
              "device": device_record(opts.device, device)}
    return graph, config


def _check_out(out: Path, checkpoint_dir: Path) -> None:
    """``--out`` is new, empty, or this live run's own (a restart)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"--out {out} is not a directory")
    manifest = out / LIVE_MANIFEST
    if manifest.exists():
        try:
            m = json.loads(manifest.read_text())
        except ValueError:
            m = {}
        if m.get("mode") == "live" and m.get("checkpoint_dir") == str(checkpoint_dir.resolve()):
            return
        raise UsageError(f"--out {out} holds another run; choose another directory")
    if any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty and is not this live run's")


def run_live(opts: LiveOptions) -> dict[str, Any]:
    """Run until the source ends (``--until-end``) or SIGTERM/SIGINT; the summary."""
    if opts.out is not None:
        _check_out(opts.out, opts.checkpoint_dir)
    graph, config = build_live_graph(opts.replay)
    settings = opts.settings
    needed = (tn.MD_TICKS_RAW, tn.CONTROL, tn.CONTROL_APPLIED,
              *(t for t in graph.output_topics if not CATALOG[t].internal))
    check_topics(settings, needed)
    manifest: dict[str, Any] = {
        "mode": "live", "code_version": code_version(), "status": "running",
        "checkpoint_dir": str(opts.checkpoint_dir.resolve()), "job_id": opts.job_id,
        "kafka": settings.redacted(), "config": config,
        "checkpoint_policy": {"every_records": opts.policy.every_records,
                              "every_event_ns": opts.policy.every_event_ns,
                              "every_wall_s": opts.policy.every_wall_s}}
    _write_manifest(opts.out, manifest)
    t0 = time.perf_counter()
    try:
        with open_taps(opts.replay.sinks, RunContext(out=opts.out, job=opts.job_id,
                                                     quiet=opts.replay.quiet)) as taps:
            host = KafkaHost(graph, settings, opts.checkpoint_dir,
                             lateness_ns=opts.replay.lateness_ns, policy=opts.policy,
                             job_id=opts.job_id, until_end=opts.until_end,
                             progress=not opts.replay.quiet, taps=taps)
            bind_taps(taps, LiveProbe(host))  # taps that report on the run (metrics)
            host.install_signals()
            watcher = _kill_switch_watcher(opts)
            try:
                with opened(graph.stages):
                    stats = host.run()
            finally:
                if watcher is not None:
                    watcher.stop()
    except BaseException as exc:
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        _write_manifest(opts.out, manifest)
        raise
    summary = live_summary(stats, host, time.perf_counter() - t0)
    if taps:
        summary["sinks"] = {t.name: t.stats() for t in taps}
    if watcher is not None:
        summary["kill_switch_watch"] = watcher.stats()
    manifest.update(status="complete" if host.runner.ended else "stopped")
    _write_manifest(opts.out, manifest)
    if opts.out is not None:
        (opts.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True)
                                               + "\n")
    if opts.replay.summary_json is not None:
        opts.replay.summary_json.parent.mkdir(parents=True, exist_ok=True)
        opts.replay.summary_json.write_text(json.dumps(summary, indent=2, sort_keys=True)
                                            + "\n")
    if not opts.replay.quiet:
        print_live_summary(summary)
    return summary


def _kill_switch_watcher(opts: LiveOptions) -> KillSwitchWatcher | None:
    """With ``--redis``: kill switches set in Redis become commands on ``control``
    (``jobs.live.redis_watch``); started before the host reads ``control``."""
    if opts.replay.sinks.redis is None:
        return None
    from jobs.live.redis_watch import KillSwitchWatcher, WatchConfig

    watcher = KillSwitchWatcher(WatchConfig(opts.replay.sinks.redis), opts.settings,
                                opts.checkpoint_dir)
    watcher.start()
    return watcher


def live_summary(stats: LiveStats, host: KafkaHost, wall_s: float) -> dict[str, Any]:
    out = host.output
    cps = stats.checkpoint_s
    return {
        "mode": "live",
        "records_consumed": stats.consumed,
        "ticks_released": stats.released,
        "controls": stats.controls,
        "dlq": sum(out.dlq_reasons.values()),
        "dlq_by_reason": dict(sorted(out.dlq_reasons.items())),
        "ended": host.runner.ended,
        "checkpoints": stats.checkpoints,
        "checkpoint_bytes": stats.checkpoint_bytes,
        "checkpoint_ms_p50": round(sorted(cps)[len(cps) // 2] * 1e3, 2) if cps else None,
        "checkpoint_ms_max": round(max(cps) * 1e3, 2) if cps else None,
        "resumed": stats.restored_from is not None,
        "wall_s": round(wall_s, 3),
        "ticks_per_s": round(stats.released / wall_s, 1) if wall_s > 0 else 0.0,
        "first_order_s": (round(stats.first_output_s, 3) if stats.first_output_s is not None
                          else None),
        "topics": dict(sorted(out.counts.items())),
        "written": dict(sorted(out.written.items())),
    }


def print_live_summary(s: dict[str, Any]) -> None:
    print("streamquant live run summary")
    print(f"  records consumed {s['records_consumed']:>12,}")
    print(f"  ticks released   {s['ticks_released']:>12,}   ({s['ticks_per_s']:,.0f}/s)")
    reasons = ", ".join(f"{k} {v:,}" for k, v in s["dlq_by_reason"].items()) or "none"
    print(f"  dead letters     {s['dlq']:>12,}   ({reasons})")
    for t in (tn.ORDERS, tn.FILLS, tn.RISK_REJECTS):
        print(f"  {t:<16} {s['topics'].get(t, 0):>12,}   (since the stream began)")
    print(f"  checkpoints      {s['checkpoints']:>12,}   (last {s['checkpoint_bytes']:,} bytes)")
    print(f"  source ended     {'yes' if s['ended'] else 'no':>12}")


def _write_manifest(out: Path | None, manifest: dict[str, Any]) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{LIVE_MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / LIVE_MANIFEST)


def main_live(args: Any, settings: KafkaSettings) -> int:
    """The CLI's ``run --bootstrap`` entry point."""
    replay = ReplayOptions.from_args(args)
    every_event = (None if args.checkpoint_interval in ("off", "none")
                   else parse_duration(args.checkpoint_interval))
    try:
        policy = CheckpointPolicy(every_records=args.checkpoint_every,
                                  every_event_ns=every_event,
                                  every_wall_s=args.checkpoint_wall)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.checkpoint_dir is None:
        raise UsageError("--bootstrap needs --checkpoint-dir DIR (where the live run keeps its "
                         "checkpoint; a restart resumes from it)")
    opts = LiveOptions(settings=settings, checkpoint_dir=Path(args.checkpoint_dir),
                       replay=replay, out=Path(args.out) if args.out_given else None,
                       until_end=args.until_end, policy=policy, job_id=args.job_id)
    summary = run_live(opts)
    if not replay.quiet:
        print(f"  resume with the same command line; state in {opts.checkpoint_dir}",
              file=sys.stderr)
    return 0 if summary else 1
