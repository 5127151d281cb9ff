"""Tick files as they come from vendors and editors: byte-order marks, old Mac line endings,
blank lines, stray bytes, gzip mix-ups and bad settings.

Every file is a real E-mini extract in some vendor's clothing. A file that can be read gives
the same topic bytes on the batch and the event path; one that cannot is a usage error (exit 2)
with a message that names the problem, the same on both paths.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
from pathlib import Path

import pytest

from jobs.cli import main
from topics.serde import decode

ROWS = 3_000


@pytest.fixture(scope="module")
def extract(emini_ticks_path: Path) -> list[bytes]:
    """Header ``ts,price,size`` and the first ``ROWS`` E-mini trades, as raw lines."""
    with emini_ticks_path.open("rb") as f:
        lines = [f.readline().rstrip(b"\r\n") for _ in range(ROWS + 1)]
    return [b"ts,price,size", *lines[1:]]


def replay(tmp_path: Path, ticks: Path, mode: str, *extra: str
           ) -> tuple[int, dict[str, str], dict, str]:
    """Exit code, topic digests, summary and stderr of one ``run --no-trade``."""
    out = tmp_path / f"out-{mode}"
    summary = tmp_path / f"summary-{mode}.json"
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        code = main(["run", "--ticks", str(ticks), "--symbol", "ES", "--tz", "America/Chicago",
                     "--out", str(out), "--mode", mode, "--no-trade", "--quiet",
                     "--summary-json", str(summary), *extra])
    if code != 0:
        return code, {}, {}, buf.getvalue()
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted((out / "topics").glob("*.jsonl"))}
    return code, digests, json.loads(summary.read_text()), buf.getvalue()


def both_paths(tmp_path: Path, ticks: Path, *extra: str) -> tuple[int, dict, str]:
    batch = replay(tmp_path, ticks, "batch", *extra)
    event = replay(tmp_path, ticks, "event", *extra)
    assert batch[0] == event[0]
    assert batch[1] == event[1]  # the same topic bytes
    assert batch[3] == event[3]  # and the same message
    if batch[0] == 0:
        for k in ("ticks_in", "ticks_valid", "dlq_by_reason", "bars"):
            assert batch[2][k] == event[2][k], k
    return batch[0], batch[2], batch[3]


def dlq(tmp_path: Path) -> list:
    path = tmp_path / "out-event" / "topics" / "md.ticks.dlq.jsonl"
    return [decode("md.ticks.dlq", ln) for ln in path.read_bytes().splitlines()]


def test_a_utf8_byte_order_mark_is_not_part_of_the_header(tmp_path: Path,
                                                          extract: list[bytes]) -> None:
    ticks = tmp_path / "bom.csv"
    ticks.write_bytes(b"\xef\xbb\xbf" + b"\n".join(extract) + b"\n")
    code, s, _ = both_paths(tmp_path, ticks)
    assert code == 0 and s["ticks_valid"] == ROWS and s["dlq"] == 0


def test_cr_only_line_endings_keep_every_row(tmp_path: Path, extract: list[bytes]) -> None:
    ticks = tmp_path / "mac.csv"
    ticks.write_bytes(b"\r".join(extract) + b"\r")
    code, s, _ = both_paths(tmp_path, ticks)
    assert code == 0 and s["ticks_valid"] == ROWS and s["bars"] > 10


def test_blank_and_whitespace_only_lines_are_skipped_alike(tmp_path: Path,
                                                           extract: list[bytes]) -> None:
    lines = list(extract)
    for i, filler in ((5, b""), (50, b"   "), (500, b"\t"), (1_500, b" \t "), (2_999, b"")):
        lines.insert(i, filler)
    ticks = tmp_path / "blank.csv"
    ticks.write_bytes(b"\r\n".join(lines) + b"\r\n")
    code, s, _ = both_paths(tmp_path, ticks)
    assert code == 0 and s["ticks_in"] == ROWS and s["ticks_valid"] == ROWS and s["dlq"] == 0


def test_an_invalid_byte_is_a_dead_letter_for_its_row_wherever_it_is(
        tmp_path: Path, extract: list[bytes]) -> None:
    lines = list(extract)
    lines[3] = lines[3].replace(b",", b"\xff,", 1)  # line 4, in the first 8 KB
    lines[2_500] = lines[2_500][:-1] + b"\xc3"  # line 2501, a cut multi-byte sequence
    ticks = tmp_path / "bytes.csv"
    ticks.write_bytes(b"\n".join(lines) + b"\n")
    code, s, _ = both_paths(tmp_path, ticks)
    assert code == 0 and s["ticks_valid"] == ROWS - 2
    assert [(d.reason, d.source.line) for d in dlq(tmp_path)] == [
        ("BAD_ENCODING", 4), ("BAD_ENCODING", 2_501)]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("header.csv", b"ts,price,size\n", "a header but no data rows"),
    ("header_blank.csv", b"ts,price,size\r\n  \r\n", "a header but no data rows"),
    ("bad_header.csv", b"ts,pr\xffice,size\n1,2,3\n", "header holds bytes that are not UTF-8"),
    ("packed.csv", None, "holds gzip-compressed data but is not named *.gz"),
    ("plain.csv.gz", b"ts,price,size\n1,2,3\n", "is named *.gz but is not gzip data"),
    ("cut.csv.gz", "truncate", "truncated or corrupt gzip data"),
])
def test_unreadable_files_are_usage_errors_naming_the_problem(
        tmp_path: Path, extract: list[bytes], name: str, content: bytes | str | None,
        message: str) -> None:
    ticks = tmp_path / name
    whole = b"\n".join(extract) + b"\n"
    if content is None:
        ticks.write_bytes(gzip.compress(whole))
    elif content == "truncate":
        packed = gzip.compress(whole)
        ticks.write_bytes(packed[: len(packed) * 2 // 3])
    else:
        assert isinstance(content, bytes)
        ticks.write_bytes(content)
    code, _, err = both_paths(tmp_path, ticks)
    assert code == 2
    assert f"streamquant: error: {ticks}" in err and message in err


def test_bad_settings_are_usage_errors(tmp_path: Path, extract: list[bytes]) -> None:
    ticks = tmp_path / "ok.csv"
    ticks.write_bytes(b"\n".join(extract) + b"\n")
    cases: list[tuple[list[str], str]] = [
        (["--tz", "America/Chikago"], "--tz: unknown time zone 'America/Chikago'"),
        (["--train-fraction", "1.5"], "--train-fraction must be in [0.05, 0.95]"),
    ]
    instruments = tmp_path / "instruments.csv"
    instruments.write_text("symbol,session_start\nES,5pm\n")
    cases.append((["--instruments", str(instruments)], "session_start must be HH:MM"))
    for extra, message in cases:
        code, _, err = both_paths(tmp_path, ticks, *extra)
        assert code == 2 and message in err, (extra, err)


def test_a_bad_strategy_file_is_a_usage_error(tmp_path: Path, extract: list[bytes]) -> None:
    ticks = tmp_path / "ok.csv"
    ticks.write_bytes(b"\n".join(extract) + b"\n")
    models = tmp_path / "models"
    models.mkdir()
    for content in ('{"feature_version": 7', '{"feature_version": "fv1-x"}'):
        (models / "strategy.json").write_text(content)
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            code = main(["run", "--ticks", str(ticks), "--symbol", "ES", "--models",
                         str(models), "--out", str(tmp_path / "out"), "--force", "--quiet"])
        assert code == 2, buf.getvalue()
        assert "strategy.json is not a valid strategy file" in buf.getvalue()
