"""``infer``'s seams on real E-mini models: no I/O before ``open``, sessions held between
``open`` and ``close``, bytes from a model provider checked against the configured sha256,
and the served model set as config (fingerprint, snapshots, swapping models by a new config).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from jobs.graph import Stage
from jobs.loaders.registry import FileModelProvider, ModelIntegrityError, Registry
from jobs.topology import infer_operator, opened
from jobs.training import TrainParams
from operators.contract import NotOpenError, SimpleContext, StateMismatchError
from operators.infer import Infer, InferConfig
from operators.model_provider import ModelEntry
from tests.test_training import emini_features, to_vectors, train_window
from topics.messages import FeatureVector, Prediction
from topics.serde import encode_many

PARAMS = TrainParams(gbm_n_estimators=30)
ARM = ("bull_linear", "bear_gbm", "sideways_linear")


@pytest.fixture(scope="module")
def emini(emini_ticks_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return emini_features(emini_ticks_path)


@pytest.fixture(scope="module")
def vectors(emini: tuple) -> list[FeatureVector]:
    return to_vectors(*emini, symbol="ES")[-300:]


@pytest.fixture(scope="module")
def trained(emini: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lifecycle-reg")
    train_window(emini, 0, 1200, out, params=PARAMS)
    return out


@pytest.fixture()
def registry(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained registry, free to tamper with."""
    return Path(shutil.copytree(trained, tmp_path / "reg"))


def predictions(op: Infer, vectors: list[FeatureVector]) -> list[Prediction]:
    state = op.new_state("ES")
    out: list[Prediction] = []
    for fv in vectors:
        state, emits = op.process(state, fv, SimpleContext())
        out.extend(e.value for e in emits if isinstance(e.value, Prediction))
    return out


def test_the_constructor_reads_no_model_file_and_process_before_open_fails(
    registry: Path, vectors: list[FeatureVector]
) -> None:
    op = infer_operator(registry, ARM)
    for e in op.config.models:  # after selection, nothing on disk is needed until open()
        (registry / e.path).unlink()
    again = Infer(op.config, op.model_provider)
    assert tuple(again.models) == ARM  # the served set is known from the config alone
    assert again.feature_names == FeatureVector.NAMES
    with pytest.raises(NotOpenError, match=r"call open\(\) before process"):
        again.process(again.new_state("ES"), vectors[-1], SimpleContext())
    with pytest.raises(NotOpenError):
        again.process_batch(again.new_state("ES"), vectors[-3:], SimpleContext())
    with pytest.raises(NotOpenError):
        again.predict_batch(np.zeros((2, len(FeatureVector.NAMES))))
    with pytest.raises(ModelIntegrityError, match="missing"):
        again.open()
    assert not again.is_open


def test_close_releases_the_sessions_and_reopening_gives_the_same_predictions(
    registry: Path, vectors: list[FeatureVector]
) -> None:
    op = infer_operator(registry, ARM)
    op.open()
    op.open()  # idempotent: the same sessions
    session = op.session("bull_linear")
    assert op.session("bull_linear") is session
    first = predictions(op, vectors)
    op.close()
    op.close()
    assert not op.is_open
    with pytest.raises(NotOpenError):
        op.session("bull_linear")
    op.open()
    assert op.session("bull_linear") is not session
    assert encode_many(list(predictions(op, vectors))) == encode_many(list(first))


def test_opened_opens_every_stage_and_closes_them_also_when_the_run_fails(
    registry: Path, vectors: list[FeatureVector]
) -> None:
    a = infer_operator(registry, ARM)
    b = infer_operator(registry, ("bull_gbm",))
    stages = (Stage(a, ("features",), ("predictions",)), Stage(b, ("features",), ("predictions",)))
    with opened(stages):
        assert a.is_open and b.is_open
        assert len(predictions(a, vectors)) > 0
    assert not a.is_open and not b.is_open
    with pytest.raises(ValueError, match="non-finite"), opened(stages):
        bad = FeatureVector(**{**_fields(vectors[-1]), "rsi_14": float("nan")})
        a.process(a.new_state("ES"), bad, SimpleContext())
    assert not a.is_open and not b.is_open
    # an open that fails closes what was already opened
    (registry / b.config.models[0].path).write_bytes(b"not a model")
    with pytest.raises(ModelIntegrityError), opened(stages):
        pass
    assert not a.is_open


def _fields(fv: FeatureVector) -> dict[str, object]:
    return {f: getattr(fv, f) for f in fv.__struct_fields__}


def test_a_tampered_model_file_is_refused_when_the_operator_opens(registry: Path) -> None:
    op = infer_operator(registry, ARM)
    path = registry / op.config.models[1].path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"does not match the registry.*sha256"):
        op.open()


class StoreBytes:
    """Another provider: bytes from a model store that hands them over unchecked."""

    def __init__(self, entries: tuple[ModelEntry, ...], blobs: dict[str, bytes]) -> None:
        self._entries = entries
        self._blobs = blobs

    def entries(self) -> tuple[ModelEntry, ...]:
        return self._entries

    def load(self, entry: ModelEntry) -> bytes:
        return self._blobs[entry.name]


def test_any_provider_serves_and_infer_checks_its_bytes_against_the_config(
    registry: Path, vectors: list[FeatureVector]
) -> None:
    reference = infer_operator(registry, ARM)
    reference.open()
    entries = reference.config.models
    blobs = {e.name: (registry / e.path).read_bytes() for e in entries}
    store = StoreBytes(entries, blobs)
    op = Infer(InferConfig(models=store.entries(), arm_a=ARM), store)
    op.open()
    assert encode_many(list(predictions(op, vectors))) == encode_many(
        list(predictions(reference, vectors)))
    swapped = StoreBytes(entries, {**blobs, "bull_linear": blobs["sideways_linear"]})
    with pytest.raises(ModelIntegrityError, match="bull_linear@"):
        Infer(InferConfig(models=entries, arm_a=ARM), swapped).open()


def test_the_served_set_is_config_so_a_snapshot_names_the_models_it_was_taken_under(
    emini: tuple, registry: Path, vectors: list[FeatureVector]
) -> None:
    op = infer_operator(registry, ARM)
    same = infer_operator(registry, ARM)
    assert same.config == op.config
    assert same.config_fingerprint() == op.config_fingerprint()
    op.open()
    state, _ = op.process_batch(op.new_state("ES"), vectors, SimpleContext())
    assert same.restore(op.snapshot(state)) == state
    # a retraining adds newer versions: selecting again serves them, under another config
    old = {e.name: e for e in op.config.models}
    new = {e.name: e for e in train_window(emini, 300, 1500, registry, params=PARAMS)}
    pinned = {"bear_gbm": old["bear_gbm"].version}
    fresh = infer_operator(registry, ARM, pins=pinned)
    assert {e.name: e.version for e in fresh.config.models} == {
        "bull_linear": new["bull_linear"].version, "bear_gbm": old["bear_gbm"].version,
        "sideways_linear": new["sideways_linear"].version}
    assert fresh.config_fingerprint() != op.config_fingerprint()
    with pytest.raises(StateMismatchError, match="another config"):
        fresh.restore(op.snapshot(state))
    # the running operator still serves what its config names; the new one the new versions
    fresh.open()
    served = {(p.model, p.model_version) for p in predictions(fresh, vectors[-5:])}
    assert served == {("bull_linear", new["bull_linear"].version),
                      ("bear_gbm", old["bear_gbm"].version),
                      ("sideways_linear", new["sideways_linear"].version)}
    assert {(p.model, p.model_version) for p in predictions(op, vectors[-5:])} == {
        (e.name, e.version) for e in op.config.models}


def test_the_file_provider_serves_the_selection_it_was_built_with(registry: Path) -> None:
    reg = Registry.load(registry)
    provider = FileModelProvider.select(registry, ARM)
    assert provider.entries() == reg.select(ARM)
    assert [e.name for e in provider.entries()] == list(ARM)
    for e in provider.entries():
        assert provider.load(e) == (registry / e.path).read_bytes()
