"""The validation metrics do not see the validation period through the regime fit.

The specialists' rows are weighted by regime posteriors; if the regime HMM were fit on the
whole training window, validation bars' returns would shape those weights and so the very
models the validation metrics score. Here the E-mini training window is trained twice, once
with the returns of late validation bars replaced by wild ones: the specialists (and so what
their validation scores measure) are identical, while the HMM the bundle trades, refit on the
whole window, does change.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import onnxruntime as ort
import pytest

from jobs.loaders.registry import Registry
from jobs.options import ReplayOptions
from jobs.regime_fit import fit_gaussian_hmm
from jobs.sources import normalize_config, resolve_ticks
from jobs.strategy import StrategyBundle, train_bundle
from jobs.train_job import EMINI_TRAIN_END_NS, features_pass
from jobs.training import KINDS, REGIMES, matrix_from_vectors
from operators.normalize import Normalize
from topics.messages import FeatureVector

MINUTE_NS = 60_000_000_000


@pytest.fixture(scope="module")
def training_vectors(emini_ticks_path: Path, tmp_path_factory: pytest.TempPathFactory
                     ) -> list[FeatureVector]:
    """The pipeline's feature vectors of the E-mini sample's training window."""
    assert emini_ticks_path.is_file()
    src = resolve_ticks(ReplayOptions(out=tmp_path_factory.mktemp("unused")))
    vectors = features_pass(src, Normalize(normalize_config(src, None)), MINUTE_NS, 0)
    return [fv for fv in vectors if fv.ts_event <= EMINI_TRAIN_END_NS]


def _train(vectors: list[FeatureVector], out: Path) -> tuple[StrategyBundle, Registry]:
    bundle = train_bundle(vectors, train_end=EMINI_TRAIN_END_NS, bar_ns=MINUTE_NS,
                          out_dir=out, quiet=True)
    return bundle, Registry.load(out)


def _probabilities(reg: Registry, name: str, X: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(reg.read_model(reg.get(name)),
                                providers=["CPUExecutionProvider"])
    out: np.ndarray = sess.run(["probabilities"], {"features": X})[0]
    return out


def test_the_validated_specialists_do_not_depend_on_validation_period_returns(
    training_vectors: list[FeatureVector], tmp_path: Path
) -> None:
    vectors = training_vectors
    # the last 10 % of the window's bars lie inside the 20 % validation split
    cut = vectors[int(len(vectors) * 0.9)].ts_event
    wild = [msgspec.structs.replace(fv, ret_1=-3.0 * fv.ret_1)
            if fv.ts_event >= cut and fv.ret_1 is not None else fv for fv in vectors]
    changed = sum(a is not b for a, b in zip(vectors, wild, strict=True))
    assert changed > 50
    bundle_a, reg_a = _train(vectors, tmp_path / "a")
    bundle_b, reg_b = _train(wild, tmp_path / "b")

    X, _, _ = matrix_from_vectors(vectors)
    X = X[np.all(np.isfinite(X), axis=1)].astype(np.float32)
    for regime in REGIMES:
        for kind in KINDS:
            name = f"{regime}_{kind}"
            a, b = reg_a.get(name), reg_b.get(name)
            assert a.n_train == b.n_train
            if kind == "linear":
                assert a.linear == b.linear, f"{name}: coefficients moved with validation returns"
            pa, pb = _probabilities(reg_a, name, X), _probabilities(reg_b, name, X)
            assert np.array_equal(pa, pb), f"{name}: predictions moved with validation returns"

    # the traded bundle's regime model is refit on the whole window, validation bars included
    rets = np.array([fv.ret_1 for fv in vectors if fv.ret_1 is not None])
    assert bundle_a.hmm == fit_gaussian_hmm(rets)
    assert bundle_a.hmm != bundle_b.hmm
    assert bundle_a.vol != bundle_b.vol
