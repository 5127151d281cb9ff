"""The Flink Kubernetes Operator manifests are well formed and point at what exists: fields
the operator's CRDs define (v1beta1), string-valued Flink configuration, the installed
flink-python jar, the job module and CLI arguments of this code, and the connector jars."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pyflink
import yaml

from jobs.cli import build_parser
from jobs.flink.jars import JARS

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "flink"
# field names of the operator's CRDs (flink.apache.org/v1beta1) that these manifests may use
DEPLOYMENT_SPEC = {"image", "imagePullPolicy", "flinkVersion", "serviceAccount", "mode",
                   "flinkConfiguration", "logConfiguration", "jobManager", "taskManager",
                   "podTemplate", "ingress", "job", "restartNonce"}
SESSION_JOB_SPEC = {"deploymentName", "flinkConfiguration", "job", "restartNonce"}
JOB_SPEC = {"jarURI", "entryClass", "args", "parallelism", "upgradeMode", "state",
            "allowNonRestoredState", "initialSavepointPath", "savepointTriggerNonce",
            "checkpointTriggerNonce", "savepointRedeployNonce"}
RESOURCE = {"cpu", "memory", "ephemeralStorage"}
FLINK_VERSIONS = {"v1_18", "v1_19", "v1_20", "v2_0", "v2_1"}


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / name).read_text())
    assert isinstance(doc, dict)
    return doc


def _check_job(job: dict[str, Any], conf: dict[str, Any]) -> None:
    assert set(job) <= JOB_SPEC, set(job) - JOB_SPEC
    assert job["upgradeMode"] in {"stateless", "savepoint", "last-state"}
    assert job["state"] in {"running", "suspended"}
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    jar = job["jarURI"].removeprefix("local:///opt/flink/opt/")
    assert (Path(pyflink.__file__).parent / "opt" / jar).is_file(), jar  # this Flink's jar
    args = job["args"]
    assert args[:2] == ["-pym", "jobs.flink.main"]
    assert importlib.util.find_spec(args[1]) is not None
    parsed = build_parser().parse_args(["run", "--engine", "flink", *args[2:]])
    assert parsed.engine == "flink" and parsed.models
    assert all(isinstance(v, str) for v in conf.values()), "flinkConfiguration: strings only"
    jars = conf["pipeline.jars"].split(";")
    assert [j.rsplit("/", 1)[1] for j in jars] == [j.name for j in JARS]
    assert conf["restart-strategy.type"] == "fixed-delay"  # bounded
    assert conf["state.backend.type"] in {"hashmap", "rocksdb"}


def test_flink_deployment_is_an_application_of_this_job_with_bounded_restarts() -> None:
    doc = _load("flink-deployment.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("flink.apache.org/v1beta1", "FlinkDeployment")
    spec = doc["spec"]
    assert set(spec) <= DEPLOYMENT_SPEC, set(spec) - DEPLOYMENT_SPEC
    assert spec["flinkVersion"] in FLINK_VERSIONS
    for role in ("jobManager", "taskManager"):
        res = spec[role]["resource"]
        assert set(res) <= RESOURCE and isinstance(res["cpu"], int | float)
        assert re.fullmatch(r"\d+[mg]", res["memory"])
    conf = spec["flinkConfiguration"]
    assert conf["execution.checkpointing.dir"].startswith("s3://")
    _check_job(spec["job"], conf)
    container = spec["podTemplate"]["spec"]["containers"][0]
    assert container["name"] == "flink-main-container"  # the operator merges into this one


def test_session_job_targets_a_session_deployment_with_the_same_job() -> None:
    doc = _load("flink-session-job.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("flink.apache.org/v1beta1", "FlinkSessionJob")
    spec = doc["spec"]
    assert set(spec) <= SESSION_JOB_SPEC, set(spec) - SESSION_JOB_SPEC
    assert spec["deploymentName"]
    _check_job(spec["job"], spec["flinkConfiguration"])
