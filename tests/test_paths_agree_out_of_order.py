"""Out-of-order input through the whole chain: both paths agree byte for byte.

Real E-mini trades with timestamps jittered by up to ±3 s (a seeded shuffle of arrival order),
replayed with 2 s of allowed lateness: some ticks are late, bars close behind the watermark,
and the account's event-time buffer has to order ticks against decisions.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.cli import main


def test_batch_and_event_paths_agree_on_jittered_ticks(tmp_path: Path,
                                                       emini_ticks_path: Path) -> None:
    df = pd.read_csv(emini_ticks_path, nrows=100_000)
    rng = np.random.default_rng(11)
    ts = pd.to_datetime(df["DateTime"]) + pd.to_timedelta(rng.integers(-3000, 3000, len(df)),
                                                          unit="ms")
    jittered = tmp_path / "jittered.csv"
    pd.DataFrame({"ts": ts.dt.strftime("%Y-%m-%d %H:%M:%S.%f"), "price": df["Price"],
                  "size": df["Volume"]}).to_csv(jittered, index=False)
    digests = []
    for mode in ("batch", "event"):
        out = tmp_path / mode
        assert main(["run", "--ticks", str(jittered), "--symbol", "ES", "--tz",
                     "America/Chicago", "--lateness", "2s", "--train-fraction", "0.5",
                     "--algo", "TWAP", "--out", str(out), "--mode", mode, "--quiet",
                     # issue 7, item 18: the cost gate leaves ~9 orders on this tape; the
                     # comparison needs the busy, ungated one
                     "--no-cost-gate"]) == 0
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted((out / "topics").glob("*.jsonl"))})
        late = (out / "topics" / "md.ticks.late.jsonl").read_bytes().count(b"\n")
        orders = (out / "topics" / "orders.jsonl").read_bytes().count(b"\n")
        assert late > 100 and orders > 50  # the premise: disorder and trading both happened
    assert digests[0] == digests[1]
