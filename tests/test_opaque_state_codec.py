"""Opaque operator state through an explicit, versioned codec: a River online logistic
regression per symbol (``tests/river_online.py``) on real E-mini feature vectors, checkpointed
and restored by the local runner like any other state."""

from __future__ import annotations

import pickle
from pathlib import Path

import msgspec
import numpy as np
import pytest

from jobs.graph import Graph, Stage
from jobs.local_runner import LocalRunner
from jobs.topic_sink import TopicSink
from operators.contract import SimpleContext, StateMismatchError
from operators.domain.codecs import MAGIC, OpaqueStateError, PickleCodec
from tests.river_online import OnlineConfig, OnlineLogit, OnlineState
from tests.test_training import emini_features, to_vectors
from topics.messages import FeatureVector, Prediction
from topics.serde import encode

CONFIG = OnlineConfig(learning_rate=0.02)


@pytest.fixture(scope="module")
def vectors(emini_ticks_path: Path) -> list[FeatureVector]:
    """Two keys from the real session: alternate bars relabelled ES and EX, time ordered."""
    out = to_vectors(*emini_features(emini_ticks_path), symbol="ES")[:900]
    return [msgspec.structs.replace(fv, symbol="EX") if i % 2 else fv
            for i, fv in enumerate(out)]


def runner(op: OnlineLogit) -> LocalRunner:
    graph = Graph("features", (Stage(op, ("features",), ("predictions",)),))
    return LocalRunner(graph, TopicSink(None, ("predictions",), capture=True),
                       watermark_topic="features")


def feed(r: LocalRunner, events: list[FeatureVector]) -> list[bytes]:
    for ev in events:
        r.feed(ev)
    assert r.sink.captured is not None
    return [encode(v) for v in r.sink.captured.get("predictions", [])]


def test_a_river_model_state_round_trips_through_the_snapshot(
    vectors: list[FeatureVector]
) -> None:
    op = OnlineLogit(CONFIG)
    r = runner(op)
    feed(r, vectors[:600])
    states = r.states(op.UID)
    assert sorted(states) == ["ES", "EX"]
    nxt = [fv for fv in vectors[600:] if fv.symbol == "ES"][:50]
    for key, state in states.items():
        assert state.learned > 200
        blob = op.snapshot(state)
        restored = op.restore(blob)
        assert isinstance(restored, OnlineState) and restored is not state
        assert op.snapshot(restored) == blob  # a restored state encodes to the same bytes
        if key == "ES":  # and behaves the same: same predictions, same learning
            a, b = state, restored
            for fv in nxt:
                a, out_a = op.process(a, fv, SimpleContext())
                b, out_b = op.process(b, fv, SimpleContext())
                assert [encode(e.value) for e in out_a] == [encode(e.value) for e in out_b]
            assert op.snapshot(a) == op.snapshot(b)


def test_a_split_and_restored_run_equals_the_uninterrupted_run(
    vectors: list[FeatureVector]
) -> None:
    whole = feed(runner(OnlineLogit(CONFIG)), vectors)
    probs = [msgspec.json.decode(p, type=Prediction).prob_up for p in whole]
    assert len(set(probs)) > 100 and np.std(probs) > 0  # the model really learns
    for cut in (1, 37, 450, 899):
        first = runner(OnlineLogit(CONFIG))
        head = feed(first, vectors[:cut])
        blob = first.checkpoint()
        second = runner(OnlineLogit(CONFIG))  # a fresh operator, as after a restart
        second.restore(blob)
        assert head + feed(second, vectors[cut:]) == whole, f"split at {cut}"


def test_the_codec_name_pins_type_version_and_library_release(
    vectors: list[FeatureVector]
) -> None:
    op = OnlineLogit(CONFIG)
    name = op.envelope().codec
    assert name == "pickle:tests.river_online.OnlineState:v1;river==0.23.0"
    r = runner(op)
    feed(r, vectors[:100])
    blob = r.checkpoint()
    bumped = OnlineLogit(CONFIG, PickleCodec(OnlineState, version=2, libraries=("river",)))
    with pytest.raises(StateMismatchError, match=r"encoded with 'pickle:.*:v1;river==0\.23\.0'"):
        runner(bumped).restore(blob)
    state = r.states(op.UID)["ES"]
    with pytest.raises(StateMismatchError, match=r"operator uses 'pickle:.*:v2"):
        bumped.restore(op.snapshot(state))
    # raw per-key bytes (a checkpoint's, without the envelope) carry the codec name too
    with pytest.raises(OpaqueStateError, match="state written by codec"):
        bumped.decode_state(op.encode_state(state))


def test_decoding_refuses_other_types_other_frames_and_forbidden_classes() -> None:
    codec = PickleCodec(OnlineState, libraries=("river",))
    frame = codec.encode(OnlineState(0.01))
    header_len = 4 + 2 + 2 + len(codec.name.encode())  # magic, version, name length, name
    assert frame.startswith(MAGIC)
    with pytest.raises(OpaqueStateError, match="cannot encode a dict"):
        codec.encode({"model": None})  # type: ignore[arg-type]
    with pytest.raises(OpaqueStateError, match="decoded a dict, expected OnlineState"):
        codec.decode(frame[:header_len] + pickle.dumps({"a": 1.0}, protocol=5))
    with pytest.raises(OpaqueStateError, match="does not load"):
        codec.decode(frame[:header_len] + pickle.dumps(Path("x"), protocol=5))
    with pytest.raises(OpaqueStateError, match="not a pickled-state frame"):
        codec.decode(pickle.dumps(OnlineState(0.01), protocol=5))
