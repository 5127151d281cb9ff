"""``streamquant features``: the feature columns of a bar file as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.bar_files import load_bars
from jobs.errors import UsageError
from operators.bar_features import BarFeatures, BarFeaturesConfig
from operators.contract import SimpleContext
from operators.domain.bars import parse_duration
from topics.messages import (
    Bar,
    DeadLetter,
)

FEATURE_CSV_COLUMNS = ("ts", "symbol", "ema_12", "ema_26", "macd", "macd_signal", "macd_hist",
                       "rsi_14", "atr_14", "vol_20", "ret_1", "ret_5", "ret_20", "volume_ratio")


def features_csv(bars_path: Path, out: Path, *, force: bool = False, bar: str | None = None,
                 tz: str | None = None) -> int:
    """``streamquant features``: one row per input bar, empty cells during warm-up."""
    if out.exists() and out.resolve() == bars_path.resolve():
        raise UsageError(f"--out {out} is the input bar file; choose another path")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory")
    if out.exists() and not force:
        raise UsageError(f"{out} exists (use --force to overwrite)")
    items, bar_ns = load_bars(bars_path, bar_ns=parse_duration(bar) if bar else None, tz=tz,
                              default_symbol=None)
    bad = [it for it, _ in items if isinstance(it, DeadLetter)]
    if bad:
        first = bad[0]
        raise UsageError(f"{bars_path}:{first.source.line}: {first.detail} "
                         f"({len(bad)} bad row(s))")
    bf = BarFeatures(BarFeaturesConfig(bar_ns))
    states: dict[str, Any] = {}
    rows = []
    for item, ts_text in items:
        assert isinstance(item, Bar)
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
    return len(rows)
