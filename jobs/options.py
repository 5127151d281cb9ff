"""What ``streamquant run`` and ``train`` were asked to do: frozen options from the CLI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.errors import UsageError
from operators.domain.bars import parse_duration
from topics.messages import (
    Algo,
)


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    out: Path
    ticks: Path | None = None
    bars: Path | None = None
    force: bool = False
    summary_json: Path | None = None
    bar: str | None = None
    lateness_ns: int = 0
    symbol: str | None = None
    venue: str | None = None
    tz: str | None = None
    instruments: Path | None = None
    mode: str = "batch"
    write_topics: bool = True
    quiet: bool = False
    models: Path | None = None
    train_fraction: float = 0.3
    risk: Path | None = None
    algo: Algo = "IMMEDIATE"
    periods_per_year: float | None = None  # None: from the bar length
    control: Path | None = None
    no_trade: bool = False
    seed: int = 0
    device: str = "cpu"  # the request (cpu|cuda|auto); run_replay resolves it once
    report_html: bool = True
    max_bar_age_ns: int | None = None  # None: two bar lengths; -1: any age ("off")
    cost_gate: bool = True
    edge_horizon_bars: float | None = None  # None: the models' label horizon

    @classmethod
    def from_args(cls, args: Any) -> ReplayOptions:
        try:
            lateness = parse_duration(args.lateness) if args.lateness not in ("0", "0s") else 0
        except ValueError as exc:
            raise UsageError(f"--lateness: {exc}") from None
        if args.bar is not None:
            try:
                parse_duration(args.bar)
            except ValueError as exc:
                raise UsageError(f"--bar: {exc}") from None
        max_bar_age: int | None = None
        age_arg = getattr(args, "max_bar_age", None)
        if age_arg is not None:
            try:
                max_bar_age = -1 if age_arg == "off" else parse_duration(age_arg)
            except ValueError as exc:
                raise UsageError(f"--max-bar-age: {exc} (or 'off')") from None
        edge_horizon = getattr(args, "edge_horizon", None)
        if edge_horizon is not None and not (math.isfinite(edge_horizon) and edge_horizon > 0):
            raise UsageError(f"--edge-horizon must be a number of bars > 0, got {edge_horizon}")
        return cls(
            out=Path(args.out), ticks=Path(args.ticks) if args.ticks else None,
            bars=Path(args.bars) if args.bars else None, force=args.force,
            summary_json=Path(args.summary_json) if args.summary_json else None,
            bar=args.bar, lateness_ns=lateness, symbol=args.symbol, venue=args.venue,
            tz=args.tz, instruments=Path(args.instruments) if args.instruments else None,
            mode=args.mode, write_topics=not args.no_topic_files, quiet=args.quiet,
            models=Path(args.models) if getattr(args, "models", None) else None,
            train_fraction=getattr(args, "train_fraction", 0.3),
            risk=Path(args.risk) if getattr(args, "risk", None) else None,
            algo=getattr(args, "algo", "IMMEDIATE"),
            periods_per_year=getattr(args, "periods_per_year", None),
            control=Path(args.control) if getattr(args, "control", None) else None,
            no_trade=getattr(args, "no_trade", False), seed=getattr(args, "seed", 0),
            device=getattr(args, "device", "cpu"),
            report_html=not getattr(args, "no_report_html", False),
            max_bar_age_ns=max_bar_age, cost_gate=not getattr(args, "no_cost_gate", False),
            edge_horizon_bars=edge_horizon)
