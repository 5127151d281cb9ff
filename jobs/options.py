"""What ``streamquant run`` and ``train`` were asked to do: frozen options from the CLI."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.bar_files import OHLC_TOLERANCE, check_tolerance
from jobs.errors import UsageError
from jobs.sinks.options import SinkOptions
from operators.domain.bars import parse_duration
from operators.domain.tick_fields import TICK_FIELDS
from operators.domain.timeparse import load_zone
from operators.normalize import DEDUPE_WINDOW_NS, MAX_FORWARD_JUMP_NS
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
    ohlc_tolerance: float = OHLC_TOLERANCE
    max_forward_jump_ns: int = MAX_FORWARD_JUMP_NS
    dedupe_window_ns: int = DEDUPE_WINDOW_NS
    columns: tuple[tuple[str, str], ...] = ()  # --columns: (canonical field, vendor header)
    delimiter: str = ","
    device: str = "cpu"  # the request (cpu|cuda|auto); run_replay resolves it once
    report_html: bool = True
    max_bar_age_ns: int | None = None  # None: two bar lengths; -1: any age ("off")
    cost_gate: bool = True
    edge_horizon_bars: float | None = None  # None: the models' label horizon
    online_learning: bool = True  # --no-online-learning: frozen models only
    sinks: SinkOptions = field(default_factory=SinkOptions)  # ClickHouse, Redis, Prometheus

    @property
    def column_map(self) -> dict[str, str]:
        """Vendor header → canonical field (what the tick loaders take)."""
        return {header: field for field, header in self.columns}

    def __post_init__(self) -> None:
        """Input settings are checked here, so every command refuses them the same way."""
        input_tz(self.tz)
        check_tolerance(self.ohlc_tolerance)
        if not 0.05 <= self.train_fraction <= 0.95:
            raise UsageError(f"--train-fraction must be in [0.05, 0.95], got "
                             f"{self.train_fraction}")
        if self.bar is not None:
            try:
                parse_duration(self.bar)
            except ValueError as exc:
                raise UsageError(f"--bar: {exc}") from None
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise UsageError(f"--delimiter must be one character (not a quote or newline), "
                             f"got {self.delimiter!r}")
        if self.max_forward_jump_ns <= self.lateness_ns:
            raise UsageError("--max-forward-jump must exceed --lateness")

    @classmethod
    def from_args(cls, args: Any) -> ReplayOptions:
        try:
            lateness = parse_duration(args.lateness) if args.lateness not in ("0", "0s") else 0
        except ValueError as exc:
            raise UsageError(f"--lateness: {exc}") from None
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
            ohlc_tolerance=getattr(args, "ohlc_tolerance", OHLC_TOLERANCE),
            max_forward_jump_ns=duration_arg("--max-forward-jump",
                                             getattr(args, "max_forward_jump", None),
                                             MAX_FORWARD_JUMP_NS),
            dedupe_window_ns=duration_arg("--dedupe-window", getattr(args, "dedupe_window", None),
                                          DEDUPE_WINDOW_NS),
            columns=parse_columns(getattr(args, "columns", None)),
            delimiter=getattr(args, "delimiter", None) or ",",
            device=getattr(args, "device", "cpu"),
            report_html=not getattr(args, "no_report_html", False),
            max_bar_age_ns=max_bar_age, cost_gate=not getattr(args, "no_cost_gate", False),
            edge_horizon_bars=edge_horizon,
            online_learning=not getattr(args, "no_online_learning", False),
            sinks=SinkOptions.from_args(args))


def parse_columns(text: str | None) -> tuple[tuple[str, str], ...]:
    """``--columns ts=DateTime,price=Price,size=Volume``: (canonical field, vendor header)."""
    if not text:
        return ()
    out: list[tuple[str, str]] = []
    for part in text.split(","):
        field, sep, header = (x.strip() for x in part.partition("="))
        if not sep or not field or not header:
            raise UsageError(f"--columns: {part.strip()!r} is not FIELD=COLUMN (e.g. "
                             "--columns ts=DateTime,price=Price,size=Volume)")
        if field not in TICK_FIELDS:
            raise UsageError(f"--columns: {field!r} is not a tick field; fields are "
                             f"{', '.join(TICK_FIELDS)}")
        out.append((field, header))
    for what, idx in (("field", 0), ("column", 1)):
        names = [p[idx] for p in out]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UsageError(f"--columns: {what} {', '.join(dup)} given twice")
    return tuple(out)


def duration_arg(flag: str, value: str | None, default: int) -> int:
    """A duration flag in ns (``default`` when not given), or a usage error naming the flag."""
    if value is None:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def input_tz(tz: str | None) -> str | None:
    """``--tz``: a known IANA zone name (or None for UTC), else a usage error."""
    try:
        load_zone(tz)
    except ValueError as exc:
        raise UsageError(f"--tz: {exc} (use an IANA name such as America/Chicago)") from None
    return tz
