"""``train --out DIR`` writes a bundle whole, never merged into what DIR held, and ``run``
serves exactly the models ``strategy.json`` names: a bundle whose registry disagrees is refused.

A merged registry served the newest window's models while ``strategy.json`` announced an
earlier one: decisions by models that had seen the trading window (silent lookahead). Real
data: a slice of the E-mini sample trained twice with different training windows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import main
from jobs.loaders.registry import Registry
from operators.learn import ONLINE_MODEL, ONLINE_REGIME
from tests._emini_slice import TZ_ARGS, slice_fixtures
from topics.serde import decode

emini_slice, slice_models = slice_fixtures()  # slice_models: --train-fraction 0.3


def _train(ticks: Path, out: Path, fraction: float) -> int:
    return main(["train", "--ticks", str(ticks), *TZ_ARGS, "--out", str(out),
                 "--train-fraction", str(fraction), "--quiet"])


@pytest.fixture(scope="module")
def later_window(tmp_path_factory: pytest.TempPathFactory, emini_slice: Path) -> Path:
    """A bundle of the same slice whose training window ends later (half the bars)."""
    out = tmp_path_factory.mktemp("later") / "bundle"
    assert _train(emini_slice, out, 0.5) == 0
    return out


def _strategy(bundle: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((bundle / "strategy.json").read_text())
    return doc


def test_training_into_an_existing_bundle_replaces_it_whole(
        tmp_path: Path, emini_slice: Path, later_window: Path) -> None:
    bundle = tmp_path / "es"
    shutil.copytree(later_window, bundle)
    assert _train(emini_slice, bundle, 0.3) == 0
    strategy = _strategy(bundle)
    reg = Registry.load(bundle)
    assert len(reg.entries) == 6  # not 12: the later window's models are gone
    assert {(e.train_start, e.train_end) for e in reg.entries} == {
        (strategy["train_start"], strategy["train_end"])}
    assert strategy["train_end"] < _strategy(later_window)["train_end"]
    on_disk = {p.name for p in (bundle / "models").iterdir()}
    assert on_disk == {Path(e.path).name for e in reg.entries}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_a_run_serves_exactly_the_models_its_strategy_names(
        tmp_path: Path, emini_slice: Path, slice_models: Path, later_window: Path) -> None:
    """Retrain an earlier window into the later bundle's directory, then trade it: every
    prediction comes from a model of the announced window."""
    bundle = tmp_path / "es"
    shutil.copytree(later_window, bundle)
    assert _train(emini_slice, bundle, 0.3) == 0
    out = tmp_path / "out"
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--models", str(bundle),
                 "--out", str(out), "--quiet"]) == 0
    pins = {(m["name"], m["version"]) for m in _strategy(bundle)["models"]}
    assert pins == {(m["name"], m["version"]) for m in _strategy(slice_models)["models"]}
    preds = [decode("predictions", ln) for ln in
             (out / "topics" / "predictions.jsonl").read_bytes().splitlines()]
    # the online learner's predictions come from River models trained in the stream, not
    # from the bundle: they name their own update, never a bundle file
    served = {(p.model, p.model_version) for p in preds if p.regime != ONLINE_REGIME}
    assert served and served <= pins
    assert all(p.model == ONLINE_MODEL for p in preds if p.regime == ONLINE_REGIME)


def test_a_bundle_whose_registry_and_strategy_disagree_is_refused(
        tmp_path: Path, emini_slice: Path, slice_models: Path, later_window: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """strategy.json of one training, registry.json and model files of another."""
    mixed = tmp_path / "mixed"
    shutil.copytree(slice_models, mixed)
    shutil.rmtree(mixed / "models")
    shutil.copytree(later_window / "models", mixed / "models")
    shutil.copy(later_window / "registry.json", mixed / "registry.json")
    out = tmp_path / "out"
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--models", str(mixed),
                 "--out", str(out), "--quiet"]) == 2
    assert "strategy.json and registry.json disagree" in capsys.readouterr().err


def test_a_merged_bundle_without_pinned_versions_is_refused(
        tmp_path: Path, emini_slice: Path, slice_models: Path, later_window: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A format-1 strategy.json (no pinned versions) over a registry that also holds a
    later window: the latest models are not the announced window's."""
    merged = tmp_path / "merged"
    shutil.copytree(slice_models, merged)
    reg = Registry.load(merged)
    for e in Registry.load(later_window).entries:
        shutil.copy(later_window / e.path, merged / e.path)
        reg.add(e)
    reg.save()
    doc = _strategy(merged)
    del doc["models"]
    doc["format_version"] = 1
    (merged / "strategy.json").write_text(json.dumps(doc))
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--models", str(merged),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "merged bundle" in capsys.readouterr().err


def test_train_refuses_a_directory_that_is_not_a_bundle(
        tmp_path: Path, emini_slice: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "work"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    assert _train(emini_slice, target, 0.3) == 2
    assert "not a model bundle" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
