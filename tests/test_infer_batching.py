"""Bars that close together are scored in one ONNX call per model, with per-event results.

Two symbols built from the real E-mini trades (alternate rows) close their bars on the same
watermark, so the runner hands `infer` both vectors at once (`process_many`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.strategy import load_bundle
from operators.contract import SimpleContext
from operators.infer import Infer, InferConfig
from topics.serde import decode

ROWS = 120_000


@pytest.fixture(scope="module")
def two_symbols(tmp_path_factory: pytest.TempPathFactory, emini_ticks_path: Path
                ) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("two")
    ticks = base / "two.csv"
    with emini_ticks_path.open() as src, ticks.open("w") as dst:
        src.readline()
        dst.write("ts,symbol,price,size\n")
        for n, line in enumerate(src):
            if n >= ROWS:
                break
            ts, price, size = line.rstrip("\n").split(",")
            sym = "ES" if n % 2 == 0 else "EX"
            dst.write(f"{ts},{sym},{price},{size}\n")
    instruments = base / "instruments.csv"
    instruments.write_text("symbol,multiplier,tick_size,lot_size,group\n"
                           "ES,50,0.25,1,equity-index\nEX,50,0.25,1,equity-index\n")
    models = base / "models"
    assert main(["train", "--ticks", str(ticks), "--tz", "America/Chicago", "--out",
                 str(models), "--train-fraction", "0.5", "--quiet"]) == 0
    outs = {"models": models}
    for mode in ("batch", "event"):
        out = base / mode
        assert main(["run", "--ticks", str(ticks), "--tz", "America/Chicago", "--models",
                     str(models), "--instruments", str(instruments), "--out", str(out),
                     "--mode", mode, "--quiet"]) == 0
        outs[mode] = out
    return outs


def test_both_paths_write_identical_topics_with_batched_inference(two_symbols: dict[str, Path]
                                                                  ) -> None:
    def digests(out: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((out / "topics").glob("*.jsonl"))}

    assert digests(two_symbols["batch"]) == digests(two_symbols["event"])


def test_batched_predictions_equal_one_vector_at_a_time(two_symbols: dict[str, Path]) -> None:
    out, models = two_symbols["batch"], two_symbols["models"]
    bundle = load_bundle(models)
    op = Infer(InferConfig(registry_dir=str(models), arm_a=bundle.arm_a, arm_b=bundle.arm_b,
                           ab_split=bundle.ab_split))
    features = [decode("features", ln) for ln in
                (out / "topics" / "features.jsonl").read_bytes().splitlines()]
    # bars of both symbols closed on the same watermark step: they were scored together
    ends = [fv.ts_closed for fv in features]
    assert len(ends) - len(set(ends)) > 100
    expected = []
    states: dict[str, object] = {}
    for fv in features:
        st = states.get(fv.symbol) or op.new_state(fv.symbol)
        st, emits = op.process(st, fv, SimpleContext())
        states[fv.symbol] = st
        expected.extend(e.value for e in emits)
    got = [decode("predictions", ln) for ln in
           (out / "topics" / "predictions.jsonl").read_bytes().splitlines()]
    assert {p.symbol for p in got} == {"ES", "EX"}
    assert sorted(got, key=lambda p: (p.decision_id, p.model)) == sorted(
        expected, key=lambda p: (p.decision_id, p.model))
