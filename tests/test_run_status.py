"""A run's manifest says whether it finished: ``running``, ``complete``, ``interrupted``,
``failed``; SIGTERM stops a run like Ctrl-C; a rerun replaces an incomplete run's output
without ``--force`` (a complete run still needs it).

Real data: a slice of the E-mini sample replayed by the CLI in a child process that the test
signals once the run has started writing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import main
from tests._emini_slice import TZ_ARGS, slice_fixtures

emini_slice, slice_models = slice_fixtures()
ROOT = Path(__file__).resolve().parent.parent


def _manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return data


def _start_run(ticks: Path, out: Path) -> subprocess.Popen[str]:
    """``streamquant run`` (per-event path, features only) in a child process, returned once
    it has written its manifest and opened its topic files."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "run", "--ticks", str(ticks), *TZ_ARGS, "--out",
         str(out), "--mode", "event", "--no-trade", "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "topics" / "md.bars.jsonl").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.005)
    assert _manifest(out)["status"] == "running"
    return proc


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_run_is_marked_interrupted_and_a_rerun_replaces_it_without_force(
        tmp_path: Path, emini_slice: Path, sig: signal.Signals, code: int) -> None:
    out = tmp_path / "out"
    proc = _start_run(emini_slice, out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "interrupted" in err
    m = _manifest(out)
    assert m["status"] == "interrupted"
    assert "input" not in m  # the run never got to its end
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--out", str(out),
                 "--no-trade", "--quiet"]) == 0
    assert _manifest(out)["status"] == "complete"
    fresh = tmp_path / "fresh"
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--out", str(fresh),
                 "--no-trade", "--quiet"]) == 0
    for name in ("md.bars.jsonl", "features.jsonl", "md.ticks.jsonl"):
        assert (out / "topics" / name).read_bytes() == (fresh / "topics" / name).read_bytes()


def test_a_killed_run_stays_running_and_is_replaced_once_its_process_is_gone(
        tmp_path: Path, emini_slice: Path) -> None:
    """SIGKILL leaves no chance to close the manifest: ``running`` with a dead pid is stale."""
    out = tmp_path / "out"
    proc = _start_run(emini_slice, out)
    proc.kill()
    proc.communicate(timeout=60)
    assert _manifest(out)["status"] == "running"
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--out", str(out),
                 "--no-trade", "--quiet"]) == 0
    assert _manifest(out)["status"] == "complete"


def test_a_failed_run_is_marked_failed_with_its_error_and_replaced_without_force(
        tmp_path: Path, emini_slice: Path, slice_models: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "tampered"
    shutil.copytree(slice_models, bad)
    model = sorted((bad / "models").glob("*.onnx"))[0]
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    out = tmp_path / "out"
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--models", str(bad), "--out",
                 str(out), "--quiet"]) == 1
    m = _manifest(out)
    assert m["status"] == "failed"
    assert "ModelIntegrityError" in m["error"] and model.name in m["error"]
    capsys.readouterr()
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--models", str(slice_models),
                 "--out", str(out), "--quiet"]) == 0
    assert _manifest(out)["status"] == "complete"
    # a complete run is replaced only with --force
    assert main(["run", "--ticks", str(emini_slice), *TZ_ARGS, "--models", str(slice_models),
                 "--out", str(out), "--quiet"]) == 2
    assert "complete run" in capsys.readouterr().err
