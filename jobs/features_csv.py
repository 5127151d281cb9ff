"""``streamquant features``: the feature columns of a bar file as CSV.

Rows that are not valid bars do not stop the command: they are written as dead letters (the
``md.ticks.dlq`` format) to ``<OUT>.dlq.jsonl`` and counted, like ``run --bars`` does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.bar_files import OHLC_TOLERANCE, load_bars
from jobs.errors import UsageError
from operators.bar_features import BarFeatures, BarFeaturesConfig
from operators.contract import SimpleContext
from operators.domain.bars import parse_duration
from topics.messages import Bar, DeadLetter
from topics.serde import encode_many

FEATURE_CSV_COLUMNS = ("ts", "symbol", "ema_12", "ema_26", "macd", "macd_signal", "macd_hist",
                       "rsi_14", "atr_14", "vol_20", "ret_1", "ret_5", "ret_20", "volume_ratio")


@dataclass(frozen=True, slots=True)
class FeaturesCsvResult:
    rows: int
    dead_letters: Counter[str]
    dlq_path: Path | None


def dlq_path_for(out: Path) -> Path:
    return out.with_name(out.name + ".dlq.jsonl")


def features_csv(bars_path: Path, out: Path, *, force: bool = False, bar: str | None = None,
                 tz: str | None = None, ohlc_tolerance: float = OHLC_TOLERANCE
                 ) -> FeaturesCsvResult:
    """``streamquant features``: one row per valid input bar, empty cells during warm-up."""
    if out.exists() and out.resolve() == bars_path.resolve():
        raise UsageError(f"--out {out} is the input bar file; choose another path")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory")
    dlq = dlq_path_for(out)
    for p in (out, dlq):
        if p.exists() and not force:
            raise UsageError(f"{p} exists (use --force to overwrite)")
    try:
        bar_ns = parse_duration(bar) if bar else None
    except ValueError as exc:
        raise UsageError(f"--bar: {exc}") from None
    items, bar_ns = load_bars(bars_path, bar_ns=bar_ns, tz=tz, default_symbol=None,
                              ohlc_tolerance=ohlc_tolerance)
    bad = [it for it, _ in items if isinstance(it, DeadLetter)]
    bf = BarFeatures(BarFeaturesConfig(bar_ns))
    states: dict[str, Any] = {}
    rows = []
    for item, ts_text in items:
        if not isinstance(item, Bar):
            continue
        st = states.get(item.symbol) or bf.new_state(item.symbol)
        st, emits = bf.process(st, item, SimpleContext())
        states[item.symbol] = st
        fv = emits[0].value
        cells = [ts_text, item.symbol]
        for name in FEATURE_CSV_COLUMNS[2:]:
            v = getattr(fv, name)
            cells.append("" if v is None else repr(v))
        rows.append(",".join(cells))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(",".join(FEATURE_CSV_COLUMNS) + "\n" + "".join(r + "\n" for r in rows))
    if bad:
        dlq.write_bytes(encode_many(list(bad)))
    elif dlq.exists():
        dlq.unlink()  # a stale one from an earlier --force run would mislead
    return FeaturesCsvResult(len(rows), Counter(d.reason for d in bad), dlq if bad else None)
