"""The Flink SQL functions of ``udfs.flink`` equal TA-Lib on real bars, and the regime
posterior equals the pipeline's filter, when an analyst queries them in ``OVER`` windows."""

from __future__ import annotations

import math
import sys

import arch.data.sp500
import numpy as np
import talib
from pyflink.table import EnvironmentSettings, TableEnvironment

from operators.domain.regime_filter import HmmParams, RegimeFilter, label_regimes
from udfs.flink import register_udfs

ROWS = 120
HMM = HmmParams(means=(-1.0, 0.05, 1.0), variances=(4.0, 0.5, 2.0),
                transition=((0.9, 0.08, 0.02), (0.05, 0.9, 0.05), (0.02, 0.08, 0.9)),
                initial=(0.2, 0.6, 0.2))

QUERY = """
SELECT ts, {cols}
FROM bars
WINDOW w AS (PARTITION BY symbol ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
"""


def _same(got: list[float | None], want: np.ndarray) -> bool:
    return all((g is None and math.isnan(w)) or (g is not None and g == w)
               for g, w in zip(got, want.tolist(), strict=True))


def test_sql_indicators_equal_talib_and_the_regime_posterior_equals_the_filter() -> None:
    df = arch.data.sp500.load().iloc[:ROWS]
    high, low, close = (df[c].to_numpy(dtype=np.float64) for c in ("High", "Low", "Close"))
    ret = np.concatenate([[0.0], 100.0 * np.diff(close) / close[:-1]])
    env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    env.get_config().set("python.executable", sys.executable)
    env.get_config().set("parallelism.default", "1")
    names = register_udfs(env, hmm=HMM)
    regimes = [f"regime_p_{label}" for label in label_regimes(HMM)]
    assert set(names) >= {"ema_12", "rsi_14", "macd", "atr_14", *regimes}
    rows = [("SPX", i, float(high[i]), float(low[i]), float(close[i]), float(ret[i]))
            for i in range(ROWS)]
    env.create_temporary_view("bars", env.from_elements(
        rows, ["symbol", "ts", "high", "low", "close", "ret"]))
    calls = {"ema_12": "ema_12(`close`)", "ema_26": "ema_26(`close`)",
             "rsi_14": "rsi_14(`close`)", "atr_14": "atr_14(high, low, `close`)",
             "macd": "macd(`close`)", "macd_signal": "macd_signal(`close`)",
             "macd_hist": "macd_hist(`close`)", **{r: f"{r}(ret)" for r in regimes}}
    sql = QUERY.format(cols=", ".join(f"{call} OVER w AS {name}"
                                      for name, call in calls.items()))
    with env.execute_sql(sql).collect() as it:
        got = sorted((tuple(r) for r in it), key=lambda r: r[0])
    assert [r[0] for r in got] == list(range(ROWS))
    col = {name: [r[1 + j] for r in got] for j, name in enumerate(calls)}
    macd, signal, hist = talib.MACD(close, 12, 26, 9)
    assert _same(col["ema_12"], talib.EMA(close, 12))
    assert _same(col["ema_26"], talib.EMA(close, 26))
    assert _same(col["rsi_14"], talib.RSI(close, 14))
    assert _same(col["atr_14"], talib.ATR(high, low, close, 14))
    assert _same(col["macd"], macd) and _same(col["macd_signal"], signal)
    assert _same(col["macd_hist"], hist)
    assert sum(v is not None for v in col["macd"]) == ROWS - 33  # TA-Lib's warm-up
    probs, _ = RegimeFilter(HMM).run(ret)
    for j, r in enumerate(regimes):
        assert col[r] == probs[:, j].tolist(), r
