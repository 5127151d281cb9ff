"""Prequential ("test, then train") scores of the online model and the frozen champion.

Every label is scored on the prediction made *before* the model learned from it, so these
are honest out-of-sample figures. Both models are scored on the same labelled bars: accuracy
of the sign, log loss of P(up), and the PnL and Sharpe of trading one unit in the direction
of each model's own signal over the label's horizon (gross, per-bar; no costs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from operators.domain.online_models import PROB_FLOOR


class Scored(NamedTuple):
    """One labelled bar: both models' P(up) as predicted, the forward return, the label."""

    online: float
    champion: float | None
    forward_return: float
    up: bool


def log_loss(p: float, up: bool) -> float:
    q = min(max(p, PROB_FLOOR), 1.0 - PROB_FLOOR)
    return -math.log(q if up else 1.0 - q)


def hit(p: float, up: bool) -> bool:
    """The model called the sign: P(up) > 0.5 and the close rose, or <= 0.5 and it did not."""
    return (p > 0.5) == up


def signal_pnl(p: float, forward_return: float) -> float:
    """One unit long above 0.5, short below, flat at exactly 0.5."""
    return ((p > 0.5) - (p < 0.5)) * forward_return


def _sharpe(pnl: list[float]) -> float:
    n = len(pnl)
    if n < 2:
        return 0.0
    mean = math.fsum(pnl) / n
    var = math.fsum((v - mean) ** 2 for v in pnl) / (n - 1)
    return mean / math.sqrt(var) if var > 0 else 0.0


def window_metrics(window: Iterable[Scored]) -> dict[str, float]:
    """Scores over a window: ``online_*`` and, where the champion scored, ``champion_*``."""
    rows = list(window)
    n = len(rows)
    if n == 0:
        return {"n": 0.0}
    ups = sum(r.up for r in rows)
    out = {"n": float(n), "majority_accuracy": max(ups, n - ups) / n}
    for name in ("online", "champion"):
        ps = [(getattr(r, name), r) for r in rows if getattr(r, name) is not None]
        if not ps:
            continue
        pnl = [signal_pnl(p, r.forward_return) for p, r in ps]
        out[f"{name}_accuracy"] = sum(hit(p, r.up) for p, r in ps) / len(ps)
        out[f"{name}_log_loss"] = math.fsum(log_loss(p, r.up) for p, r in ps) / len(ps)
        out[f"{name}_pnl"] = math.fsum(pnl)
        out[f"{name}_sharpe"] = _sharpe(pnl)
    return out
