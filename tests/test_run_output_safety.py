"""``streamquant run`` never deletes or overwrites a user's files.

``--force`` replaces only what a previous run wrote (its manifest lists it), never an input and
never a directory that holds no run; every output path is checked before the run starts.
Real data: a slice of the E-mini sample as the user's tick file and a bundle trained on it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from jobs.cli import main
from tests._emini_slice import TZ_ARGS, slice_fixtures
from tests._sp500 import write_sp500_bars

emini_slice, slice_models = slice_fixtures()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha(p) for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_force_in_a_directory_that_holds_no_run_refuses_and_deletes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emini_slice: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "project"
    (work / "src").mkdir(parents=True)
    (work / "src" / "strategy.py").write_text("print('mine')\n")
    shutil.copy(emini_slice, work / "es.csv")
    before = _tree(work)
    monkeypatch.chdir(work)
    assert main(["run", "--ticks", "es.csv", *TZ_ARGS, "--out", ".", "--force", "--no-trade",
                 "--quiet"]) == 2
    assert "holds no previous run" in capsys.readouterr().err
    assert _tree(work) == before


def test_force_keeps_the_tick_file_and_models_bundle_inside_out(
        tmp_path: Path, emini_slice: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The user trains inside --out (run without --models), then reruns with the bundle and
    the tick file both inside --out: --force replaces the old run's outputs, not the inputs."""
    out = tmp_path / "out"
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--out", str(out),
                 "--quiet"]) == 0
    first = json.loads((out / "manifest.json").read_text())
    assert first["status"] == "complete" and "models" in first["outputs"]
    ticks = out / "es.csv"
    shutil.copy(emini_slice, ticks)
    (out / "notes.txt").write_text("my notes\n")
    bundle_before = _tree(out / "models")
    ticks_sha = _sha(ticks)
    old_fills = (out / "topics" / "fills.jsonl").read_bytes()
    assert main(["run", "--ticks", str(ticks), *TZ_ARGS, "--models", str(out / "models"),
                 "--out", str(out), "--force", "--quiet"]) == 0
    assert _sha(ticks) == ticks_sha
    assert _tree(out / "models") == bundle_before
    assert (out / "notes.txt").read_text() == "my notes\n"  # not a run's output: kept
    second = json.loads((out / "manifest.json").read_text())
    assert second["status"] == "complete"
    assert second["input"]["path"] == str(ticks)
    assert "models" not in second["outputs"]  # this run trained nothing
    # the same bundle and ticks: the rerun's topic files are the first run's
    assert (out / "topics" / "fills.jsonl").read_bytes() == old_fills


def test_force_leaves_files_the_previous_run_did_not_write(tmp_path: Path, emini_slice: Path
                                                           ) -> None:
    out = tmp_path / "out"
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--out", str(out), "--no-trade",
                 "--quiet"]) == 0
    listed = set(json.loads((out / "manifest.json").read_text())["outputs"])
    (out / "topics" / "my_query.sql").write_text("select 1\n")
    (out / "analysis").mkdir()
    (out / "analysis" / "chart.png").write_bytes(b"\x89PNG")
    assert {"topics/my_query.sql", "analysis", "analysis/chart.png"}.isdisjoint(listed)
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--out", str(out), "--no-trade",
                 "--force", "--quiet"]) == 0
    assert (out / "topics" / "my_query.sql").read_text() == "select 1\n"
    assert (out / "analysis" / "chart.png").read_bytes() == b"\x89PNG"


def test_summary_json_that_is_the_tick_file_is_refused_before_the_run(
        tmp_path: Path, emini_slice: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ticks = tmp_path / "es.csv"
    shutil.copy(emini_slice, ticks)
    sha = _sha(ticks)
    out = tmp_path / "out"
    assert main(["run", "--ticks", str(ticks), *TZ_ARGS, "--out", str(out), "--no-trade",
                 "--quiet", "--summary-json", str(ticks)]) == 2
    assert "is an input" in capsys.readouterr().err
    assert _sha(ticks) == sha
    assert not out.exists()  # refused before the run started


def test_summary_json_inside_the_models_bundle_is_refused(
        tmp_path: Path, emini_slice: Path, slice_models: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "bundle"
    shutil.copytree(slice_models, models)
    before = _tree(models)
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--models", str(models),
                 "--out", str(tmp_path / "out"), "--quiet",
                 "--summary-json", str(models / "strategy.json")]) == 2
    assert "is an input" in capsys.readouterr().err
    assert _tree(models) == before


@pytest.mark.parametrize("where", ["a directory", "a topic file", "the manifest"])
def test_output_paths_are_checked_before_the_run_starts(
        tmp_path: Path, emini_slice: Path, where: str, capsys: pytest.CaptureFixture[str]
        ) -> None:
    out = tmp_path / "out"
    summary = {"a directory": tmp_path, "a topic file": out / "topics" / "fills.jsonl",
               "the manifest": out / "manifest.json"}[where]
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--out", str(out), "--no-trade",
                 "--quiet", "--summary-json", str(summary)]) == 2
    err = capsys.readouterr().err
    assert "--summary-json" in err
    assert not out.exists()


def test_out_that_is_a_file_is_refused_and_kept(tmp_path: Path, emini_slice: Path) -> None:
    out = tmp_path / "results"
    out.write_text("not a directory\n")
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--out", str(out), "--no-trade",
                 "--quiet"]) == 2
    assert out.read_text() == "not a directory\n"


def test_an_input_where_the_run_writes_a_topic_file_is_refused(
        tmp_path: Path, emini_slice: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Replaying an earlier run's md.ticks into the same --out would truncate it while read."""
    out = tmp_path / "out"
    (out / "topics").mkdir(parents=True)
    ticks = out / "topics" / "md.ticks.jsonl"
    ticks.write_text('{"ts": 1378072800083000000, "symbol": "ES", "price": 1640.25, '
                     '"size": 8}\n')
    sha = _sha(ticks)
    assert main(["run", "--ticks", str(ticks), "--out", str(out), "--no-trade", "--force",
                 "--quiet"]) == 2
    assert "would be overwritten" in capsys.readouterr().err
    assert _sha(ticks) == sha


def test_features_refuses_to_write_over_its_input_bar_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bars = tmp_path / "sp500.csv"
    write_sp500_bars(bars, 60)
    assert main(["features", "--bars", str(bars), "--out", str(tmp_path / "f.csv")]) == 0
    sha = _sha(bars)
    assert main(["features", "--bars", str(bars), "--out", str(bars), "--force"]) == 2
    assert "is the input bar file" in capsys.readouterr().err
    assert _sha(bars) == sha
