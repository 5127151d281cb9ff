"""The CLI's contract: help, version, exit codes, topic listing and schema export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import main


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True,
                          text=True, check=False)


def test_version_prints_package_version() -> None:
    r = _cli("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("streamquant ")


def test_unknown_flag_is_a_usage_error_exit_2() -> None:
    r = _cli("run", "--no-such-flag")
    assert r.returncode == 2
    assert "unrecognized arguments" in r.stderr


def test_topics_list_names_every_trader_topic(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("orders", "fills", "risk.rejects", "md.ticks.dlq"):
        assert f"\n{name} " in out


def test_topics_schema_exports_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "schema", "fills"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "fill_id" in schema["$defs"]["Fill"]["properties"]


def test_topics_schema_of_unknown_topic_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "schema", "nope"]) == 2
    assert "unknown topic 'nope'" in capsys.readouterr().err


def test_missing_tick_file_is_a_usage_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--ticks", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "absent.csv: no such file" in capsys.readouterr().err


def test_wrong_columns_are_named_in_the_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "t.csv"
    f.write_text("time,symbol,px,size\n2024-01-02T00:00:00Z,ES,1,1\n")
    code = main(["run", "--ticks", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing column(s): ts, price" in err
    assert "unknown column(s): time, px" in err
