"""PyFlink aggregate functions for Flink SQL and the Table API, registered by one call.

``register_udfs(t_env)`` registers, for use in ``OVER`` windows over a bar table
(``PARTITION BY symbol ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW``):

- ``ema_12(close)``, ``ema_26(close)``, ``rsi_14(close)``, ``atr_14(high, low, close)``,
- ``macd(close)``, ``macd_signal(close)``, ``macd_hist(close)`` (12, 26, 9),
- with ``hmm=`` a bundle's ``HmmParams``: ``regime_p_<label>(x)`` per regime (the filtered
  posterior of that regime given the observations so far).

They are vectorized (pandas) aggregates: each row's window is handed over as a column and the
streaming indicators run over it (``udfs.series``), so values equal TA-Lib's and the pipeline's
features exactly; the cost is quadratic in the history, which is what an analyst's query over
days of minute bars affords (the pipeline itself keeps the indicators incremental).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyflink.table import DataTypes
from pyflink.table.udf import udaf

from operators.domain.regime_filter import HmmParams, label_regimes
from udfs.series import atr_last, ema_last, macd_last, regime_posterior_last, rsi_last


def _double(fn: Callable[..., float | None]) -> Any:
    return udaf(fn, result_type=DataTypes.DOUBLE(), func_type="pandas")


def _none_safe(x: float | None) -> float | None:
    return None if x is None else float(x)


def udf_table(hmm: HmmParams | None = None) -> dict[str, Any]:
    """Name -> PyFlink aggregate function (what ``register_udfs`` registers)."""
    fns: dict[str, Any] = {
        "ema_12": _double(lambda c: _none_safe(ema_last(c, 12))),
        "ema_26": _double(lambda c: _none_safe(ema_last(c, 26))),
        "rsi_14": _double(lambda c: _none_safe(rsi_last(c, 14))),
        "atr_14": _double(lambda h, lo, c: _none_safe(atr_last(h, lo, c, 14))),
        "macd": _double(lambda c: _none_safe(macd_last(c)[0])),
        "macd_signal": _double(lambda c: _none_safe(macd_last(c)[1])),
        "macd_hist": _double(lambda c: _none_safe(macd_last(c)[2])),
    }
    if hmm is not None:
        for i, label in enumerate(label_regimes(hmm)):
            fns[f"regime_p_{label}"] = _double(
                lambda x, i=i: float(regime_posterior_last(x, hmm)[i]))
    return fns


def register_udfs(t_env: Any, *, hmm: HmmParams | None = None) -> tuple[str, ...]:
    """Register every function on a ``TableEnvironment``; the names back."""
    fns = udf_table(hmm)
    for name, fn in fns.items():
        t_env.create_temporary_function(name, fn)
    return tuple(fns)
