"""The model registry: round trip, integrity (sha256), selection, immutability, hot reload."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest

from jobs.loaders.registry import (
    ModelEntry,
    ModelIntegrityError,
    Registry,
    RegistryError,
)
from jobs.training import TrainParams
from tests.test_training import sp500_features, train_window

TINY = TrainParams(gbm_n_estimators=10)


@pytest.fixture(scope="module")
def sp500() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return sp500_features()


@pytest.fixture(scope="module")
def two_windows(
    sp500: tuple, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[ModelEntry], list[ModelEntry]]:
    """One registry holding the specialists of two consecutive training windows."""
    out = tmp_path_factory.mktemp("reg")
    old = train_window(sp500, 0, 1500, out, params=TINY)
    new = train_window(sp500, 250, 1750, out, params=TINY)
    return out, old, new


def copy_registry(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_registry_round_trips_through_its_json_file(two_windows: tuple, tmp_path: Path) -> None:
    out, old, new = two_windows
    reg = Registry.load(out)
    refs = sorted(e.ref for e in reg.entries)
    assert refs == sorted(e.ref for e in [*old, *new])
    assert all(reg.get(e.name, e.version) == e for e in [*old, *new])
    # re-encoding what was read gives the same bytes; a registry built from the entries in
    # another order serializes identically (deterministic ordering)
    assert reg.encode() == (out / "registry.json").read_bytes()
    shuffled = Registry(tmp_path, [*reversed(new), *old])
    assert shuffled.encode() == reg.encode()
    doc = json.loads((out / "registry.json").read_bytes())
    assert doc["format_version"] == 1 and len(doc["entries"]) == 12
    first = doc["entries"][0]
    for field in (
        "name",
        "version",
        "kind",
        "regime",
        "path",
        "sha256",
        "feature_names",
        "feature_version",
        "train_start",
        "train_end",
        "horizon_bars",
        "metrics",
        "n_train",
        "n_dropped",
        "created_by",
        "opset",
    ):
        assert field in first


def test_entry_sha256_is_the_sha256_of_the_model_file(two_windows: tuple) -> None:
    out, old, new = two_windows
    for e in [*old, *new]:
        assert e.sha256 == hashlib.sha256((out / e.path).read_bytes()).hexdigest()
        assert not Path(e.path).is_absolute()


def test_a_tampered_model_file_fails_the_load_naming_file_and_digests(
    two_windows: tuple, tmp_path: Path
) -> None:
    out, old, _ = two_windows
    reg_dir = copy_registry(out, tmp_path / "r")
    victim = reg_dir / old[0].path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, e.g. a coefficient
    victim.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"does not match the registry.*sha256") as exc:
        Registry.load(reg_dir)
    assert old[0].ref in str(exc.value) and old[0].sha256 in str(exc.value)


def test_a_missing_model_file_fails_the_load_clearly(two_windows: tuple, tmp_path: Path) -> None:
    out, _, new = two_windows
    reg_dir = copy_registry(out, tmp_path / "r")
    (reg_dir / new[3].path).unlink()
    with pytest.raises(ModelIntegrityError, match="missing") as exc:
        Registry.load(reg_dir)
    assert new[3].ref in str(exc.value)


def test_missing_or_malformed_registry_file_is_a_registry_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no model registry"):
        Registry.load(tmp_path)
    (tmp_path / "registry.json").write_text('{"format_version": 1, "entries": [{"name": 3}]}')
    with pytest.raises(RegistryError, match="malformed registry"):
        Registry.load(tmp_path)
    (tmp_path / "registry.json").write_text('{"format_version": 99, "entries": []}')
    with pytest.raises(RegistryError, match="format 99"):
        Registry.load(tmp_path)


def test_paths_escaping_the_registry_directory_are_rejected(two_windows: tuple) -> None:
    _, old, _ = two_windows
    with pytest.raises(RegistryError, match="relative"):
        Registry("/tmp/x", [msgspec.structs.replace(old[0], path="../elsewhere.onnx")])


def test_latest_version_is_the_newest_training_window_and_pins_override(
    two_windows: tuple,
) -> None:
    out, old, new = two_windows
    reg = Registry.load(out)
    by_name_old = {e.name: e for e in old}
    by_name_new = {e.name: e for e in new}
    assert new[0].train_end > old[0].train_end
    for name, newest in by_name_new.items():
        assert reg.get(name) == newest
        assert [e.version for e in reg.versions(name)] == [
            by_name_old[name].version,
            newest.version,
        ]
    picked = reg.select(["bear_gbm", "bull_linear"], pins={"bull_linear": old[0].version})
    assert picked == (by_name_new["bear_gbm"], by_name_old["bull_linear"])
    with pytest.raises(RegistryError, match="no version"):
        reg.get("bull_linear", "nope")
    with pytest.raises(RegistryError, match="no model named 'crash_gbm'"):
        reg.get("crash_gbm")


def test_a_registered_version_cannot_be_overwritten_with_other_content(
    two_windows: tuple,
) -> None:
    out, old, _ = two_windows
    reg = Registry.load(out)
    reg.add(old[0])  # identical: idempotent
    assert len(reg.entries) == 12
    forged = msgspec.structs.replace(old[0], sha256="0" * 64)
    with pytest.raises(RegistryError, match="versions are immutable"):
        reg.add(forged)


def test_reload_if_changed_picks_up_a_new_training_and_ignores_no_change(
    sp500: tuple, tmp_path: Path
) -> None:
    first = train_window(sp500, 0, 1500, tmp_path, params=TINY)
    reader = Registry.load(tmp_path)
    assert reader.reload_if_changed() is False
    assert reader.get("bull_gbm") == first[1]
    second = train_window(sp500, 300, 1800, tmp_path, params=TINY)
    assert reader.reload_if_changed() is True
    assert reader.get("bull_gbm") == second[1]
    on_disk = (tmp_path / "registry.json").read_bytes()
    assert reader.content_hash == hashlib.sha256(on_disk).hexdigest()
    assert reader.reload_if_changed() is False


def test_a_broken_update_keeps_the_current_entries_in_service(sp500: tuple, tmp_path: Path) -> None:
    train_window(sp500, 0, 1500, tmp_path, params=TINY)
    reader = Registry.load(tmp_path)
    before = reader.entries
    newer = train_window(sp500, 300, 1800, tmp_path, params=TINY)
    (tmp_path / newer[0].path).unlink()  # the deploy lost a file
    with pytest.raises(ModelIntegrityError, match="missing"):
        reader.reload_if_changed()
    assert reader.entries == before
