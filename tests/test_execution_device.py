"""The execution device: chosen once per run (``--device``), CPU the reference, recorded in the
manifest and carried from each prediction into the decision trace; never a silent fallback."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import msgspec
import onnxruntime as ort
import pytest

from jobs.cli import main
from jobs.device import cuda_available, resolve_device
from jobs.errors import UsageError
from operators.contract import SimpleContext
from operators.infer import CPU, CUDA, Infer
from operators.regime_blend import RegimeBlend
from tests._chain_fixture import chain_run
from tests._sp500 import write_sp500_bars
from topics.messages import Prediction, Signal
from topics.serde import decode, encode


def test_cpu_is_the_default_and_auto_takes_cuda_only_when_a_session_runs_on_it() -> None:
    assert resolve_device("cpu") == "cpu"
    works = cuda_available()
    if CUDA not in ort.get_available_providers():
        assert works is False  # this machine: the CPU wheel, no GPU
    assert resolve_device("auto") == ("cuda" if works else "cpu")
    with pytest.raises(UsageError, match="--device must be one of cpu, cuda, auto"):
        resolve_device("gpu")


def test_cuda_without_a_usable_gpu_is_a_usage_error_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if cuda_available():
        assert resolve_device("cuda") == "cuda"
        return
    with pytest.raises(UsageError, match="CUDA is not usable"):
        resolve_device("cuda")
    out = tmp_path / "out"
    assert main(["run", "--device", "cuda", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is not usable by onnxruntime" in err
    assert "use --device cpu (the reference)" in err
    assert not out.exists()  # resolved at startup: not even the output directory was made


def test_a_cuda_config_never_runs_silently_on_the_cpu() -> None:
    run = chain_run()
    served: Infer = run.operators["infer"]  # type: ignore[assignment]
    op = Infer(dataclasses.replace(served.config, device="cuda"), served.model_provider)
    assert op.providers == (CUDA, CPU)
    if CUDA in ort.get_available_providers():
        return
    with pytest.raises(RuntimeError, match="device 'cuda' needs CUDAExecutionProvider"):
        op.open()
    assert not op.is_open


def test_the_manifest_records_the_resolved_device_and_the_served_models(tmp_path: Path) -> None:
    bars = tmp_path / "sp500.csv"
    write_sp500_bars(bars, 600)
    out = tmp_path / "out"
    assert main(["run", "--bars", str(bars), "--device", "auto", "--out", str(out),
                 "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    resolved = "cuda" if cuda_available() else "cpu"
    assert manifest["device"] == {
        "requested": "auto", "resolved": resolved,
        "providers": [CUDA, CPU] if resolved == "cuda" else [CPU]}
    registry = json.loads((out / "models" / "registry.json").read_text())
    served = manifest["config"]["served_models"]
    strategy = json.loads((out / "models" / "strategy.json").read_text())
    assert [m["name"] for m in served] == list(dict.fromkeys(strategy["arm_a"]
                                                             + strategy["arm_b"]))
    by_ref = {(e["name"], e["version"]): e["sha256"] for e in registry["entries"]}
    assert all(by_ref[(m["name"], m["version"])] == m["sha256"] for m in served)
    assert len(manifest["config"]["infer_config_fingerprint"]) == 16
    preds = (out / "topics" / "predictions.jsonl").read_bytes().splitlines()
    assert preds
    # the CPU reference leaves the field out: its topic bytes do not depend on it
    assert all(b'"device"' not in ln for ln in preds) == (resolved == "cpu")


def test_cpu_predictions_omit_the_device_and_other_devices_write_it_last() -> None:
    p = Prediction(ts_event=1, symbol="ES", decision_id="d", model="m", model_version="v",
                   variant="A", regime="bull", score=0.2, prob_up=0.6)
    assert p.device is msgspec.UNSET
    assert b"device" not in encode(p)
    on_gpu = msgspec.structs.replace(p, device="cuda")
    assert encode(on_gpu) == encode(p)[:-1] + b',"device":"cuda"}'
    assert decode("predictions", encode(on_gpu)) == on_gpu
    assert decode("predictions", encode(p)).device is msgspec.UNSET


def test_the_decision_trace_carries_the_device_its_predictions_ran_on() -> None:
    run = chain_run()
    blend: RegimeBlend = run.operators["regime_blend"]  # type: ignore[assignment]

    def traces(device: str | None) -> list[Signal]:
        op = RegimeBlend(blend.config)
        states: dict[str, object] = {}
        signals: list[Signal] = []
        for msg in run.consumed(("features", "predictions"))[:3000]:
            if device is not None and isinstance(msg, Prediction):
                msg = msgspec.structs.replace(msg, device=device)
            key = op.key(msg)
            st, emits = op.process(states.get(key) or op.new_state(key), msg, SimpleContext())
            states[key] = st
            signals.extend(e.value for e in emits if isinstance(e.value, Signal))
        return [s for s in signals if s.trace is not None and s.trace.model_versions]

    cpu, gpu = traces(None), traces("cuda")
    assert len(cpu) == len(gpu) > 100
    assert all(s.trace is not None and s.trace.device is msgspec.UNSET for s in cpu)
    assert all(s.trace is not None and s.trace.device == "cuda" for s in gpu)
    assert all(b"device" not in encode(s) for s in cpu)
