"""A standalone Flink cluster started from the apache-flink wheel's ``bin`` on 127.0.0.1.

Its configuration, logs and pid files live in a temporary directory, so ``stop-cluster.sh``
stops exactly the JobManager and TaskManager this fixture started.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from jobs.flink.submit import flink_home, submit_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class FlinkCluster:
    rest: str
    """HOST:PORT of the REST endpoint (``flink run -m``)."""
    env: dict[str, str]

    def overview(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://{self.rest}/overview", timeout=5) as r:
            doc = json.loads(r.read())
        assert isinstance(doc, dict)
        return doc


def _configure(conf_dir: Path, rest_port: int) -> None:
    home = flink_home()
    conf = yaml.safe_load((home / "conf" / "config.yaml").read_text())
    conf["jobmanager"]["bind-host"] = "127.0.0.1"
    conf["jobmanager"]["rpc"] = {"address": "127.0.0.1", "port": _free_port()}
    conf["taskmanager"]["bind-host"] = "127.0.0.1"
    conf["taskmanager"]["host"] = "127.0.0.1"
    conf["taskmanager"]["numberOfTaskSlots"] = 2
    conf["rest"] = {"address": "127.0.0.1", "bind-address": "127.0.0.1", "port": rest_port}
    conf_dir.mkdir(parents=True)
    (conf_dir / "config.yaml").write_text(yaml.safe_dump(conf))
    for f in (home / "conf").iterdir():
        if f.name.startswith(("log4j", "logback")):
            shutil.copy(f, conf_dir / f.name)
    (conf_dir / "masters").write_text(f"127.0.0.1:{rest_port}\n")
    (conf_dir / "workers").write_text("127.0.0.1\n")


@pytest.fixture(scope="module", name="flink_cluster")
def flink_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkCluster]:
    base = tmp_path_factory.mktemp("flink-cluster")
    port = _free_port()
    _configure(base / "conf", port)
    env = {**submit_env(), "FLINK_CONF_DIR": str(base / "conf"),
           "FLINK_LOG_DIR": str(base / "log"), "FLINK_PID_DIR": str(base / "pid")}
    (base / "pid").mkdir()
    (base / "log").mkdir()
    bin_dir = flink_home() / "bin"
    subprocess.run([str(bin_dir / "start-cluster.sh")], env=env, check=True,
                   capture_output=True)
    cluster = FlinkCluster(f"127.0.0.1:{port}", env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if int(cluster.overview()["taskmanagers"]) >= 1:  # type: ignore[call-overload]
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Flink cluster did not start: {os.listdir(base / 'log')}")
            time.sleep(0.5)
        yield cluster
    finally:
        subprocess.run([str(bin_dir / "stop-cluster.sh")], env=env, check=False,
                       capture_output=True)
