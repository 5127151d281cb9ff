"""Population stability index (PSI) of one feature against its reference window.

``PSI = sum_b (cur_b - ref_b) * ln(cur_b / ref_b)`` over bins whose edges are the reference's
deciles, so each bin holds about a tenth of the reference. Empty bins get a small floor so a
feature that leaves its reference range scores high instead of infinite. The seeds' rule of
thumb: below 0.1 stable, 0.1-0.25 moderate, above 0.25 a shift worth an alert.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FLOOR = 1e-4


class PsiReference:
    """Per-feature bin edges and bin fractions of a reference window (rows x features)."""

    __slots__ = ("edges", "fractions", "names")

    def __init__(self, names: Sequence[str], rows: npt.ArrayLike, bins: int = 10) -> None:
        X = np.asarray(rows, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(names) or X.shape[0] < bins:
            raise ValueError(f"PSI reference needs >= {bins} rows of {len(names)} features")
        self.names = tuple(names)
        qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        self.edges = [np.unique(np.quantile(X[:, j], qs)) for j in range(X.shape[1])]
        self.fractions = [_fractions(X[:, j], e) for j, e in enumerate(self.edges)]

    def psi(self, rows: npt.ArrayLike) -> dict[str, float]:
        """PSI of each feature of ``rows`` (the current window) against the reference."""
        X = np.asarray(rows, dtype=np.float64)
        out: dict[str, float] = {}
        for j, name in enumerate(self.names):
            cur = _fractions(X[:, j], self.edges[j])
            ref = self.fractions[j]
            out[name] = float(np.sum((cur - ref) * np.log(cur / ref)))
        return out


def _fractions(col: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]
               ) -> npt.NDArray[np.float64]:
    counts = np.bincount(np.searchsorted(edges, col, side="right"), minlength=len(edges) + 1)
    frac = counts / max(len(col), 1)
    return np.maximum(frac, FLOOR)
