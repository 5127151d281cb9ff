"""The Kafka connector jars: extracted from the wheel once, verified, refused when altered."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jobs.flink.jars import JARS, JarHashError, connector_jars, jar_urls, jars_dir


def test_connector_jars_are_extracted_verified_and_altered_ones_refused(tmp_path: Path) -> None:
    paths = connector_jars()  # the shared cache: the wheel is downloaded once per machine
    assert [p.name for p in paths] == ["flink-connector-kafka.jar", "kafka-clients.jar"]
    assert sorted(p.name for p in jars_dir().iterdir() if p.suffix == ".jar") == \
        sorted(j.name for j in JARS)
    assert all(u.startswith("file:///") and u.endswith(".jar") for u in jar_urls(paths))
    copy = tmp_path / "jars"
    copy.mkdir()
    for p in paths:
        shutil.copy(p, copy / p.name)
    assert connector_jars(copy) == tuple(copy / p.name for p in paths)  # verified, kept
    with (copy / paths[0].name).open("ab") as f:
        f.write(b"tampered")
    with pytest.raises(JarHashError, match="sha256"):
        connector_jars(copy)
