"""arch's real S&P 500 daily bars written as a ``--bars`` CSV: one writer for every test."""

from __future__ import annotations

from pathlib import Path

import arch.data.sp500
import pandas as pd

BAR_HEADER = "ts,symbol,open,high,low,close,volume"


def write_sp500_bars(path: Path, rows: int) -> pd.DataFrame:
    """The first ``rows`` daily bars as symbol ``SPX`` (shortest float repr); the frame back."""
    df = arch.data.sp500.load().iloc[:rows]
    lines = [BAR_HEADER]
    for ts, r in df.iterrows():
        cells = [repr(float(v)) for v in (r.Open, r.High, r.Low, r.Close, r.Volume)]
        lines.append(f"{ts.date().isoformat()},SPX," + ",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return df
