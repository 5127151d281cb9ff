"""The bundled sample's walk-forward split sits in the Labor Day halt, as the data show.

The E-mini file's last trade before the holiday halt is at 10:29:59.246 CT and the next one at
17:00:00.026 CT, when Globex reopened: training ends at the reopening, so every bar of the
first session trains and no bar of the trading window does. Read with pandas, independently
of the pipeline's parser.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from jobs.train_job import EMINI_TRAIN_END_NS


def test_training_ends_at_the_reopening_after_the_last_pre_halt_trade(
        emini_ticks_path: Path) -> None:
    ts = pd.to_datetime(pd.read_csv(emini_ticks_path, usecols=["DateTime"])["DateTime"])
    ts = ts.dt.tz_localize("America/Chicago")
    gaps = ts.diff()
    i = int(gaps.idxmax())
    before, after = ts.iloc[i - 1], ts.iloc[i]
    assert str(before) == "2013-09-02 10:29:59.246000-05:00"
    assert str(after) == "2013-09-02 17:00:00.026000-05:00"
    end = pd.Timestamp(EMINI_TRAIN_END_NS, tz="UTC")
    assert end == pd.Timestamp("2013-09-02 17:00", tz="America/Chicago")
    assert before < end <= after
