"""The online challenger's River models: built by kind, seeded, and scored as P(up).

Two kinds, because they fail differently: a scaled logistic regression adapts smoothly and
cheaply, a Hoeffding adaptive tree captures interactions and replaces its own branches when
they drift (its bootstrap sampling is what the seed fixes). Nothing here reads a clock or
``hash()``: River's models keep features in insertion-ordered dicts, so the same stream gives
the same model in any process.
"""

from __future__ import annotations

from typing import Any, Literal

from river import compose, linear_model, optim, preprocessing, tree

ModelKind = Literal["logit", "tree"]
KINDS: tuple[ModelKind, ...] = ("logit", "tree")
PROB_FLOOR = 1e-6
"""Probabilities are clipped to [floor, 1 - floor] before a log loss (a sure miss is finite)."""


def make_model(kind: ModelKind, *, seed: int, learning_rate: float,
               grace_period: int = 50) -> Any:
    """A fresh River classifier of ``kind``, learning ``bool`` labels (True: the close rose)."""
    if kind == "logit":
        return compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate)),
        )
    if kind == "tree":
        # Histogram splitters, not River's default Gaussian ones: each Gaussian estimator holds
        # an unseeded random.Random (3.8 KB of pickled state per feature and class, and bytes
        # that differ between runs); 16 bins keep a leaf's state small and seed-free.
        return tree.HoeffdingAdaptiveTreeClassifier(
            grace_period=grace_period, seed=seed,
            splitter=tree.splitter.HistogramSplitter(n_bins=16))
    raise ValueError(f"unknown online model kind {kind!r}; known: {', '.join(KINDS)}")


def prob_up(model: Any, x: dict[str, float]) -> float:
    """P(label True | x); 0.5 while the model has seen no label."""
    return float(model.predict_proba_one(x).get(True, 0.5))
