"""Driving the live path the way a user does: CLI processes against a real broker.

A slice of the real E-mini trades (from before the Labor Day halt, where the walk-forward bundle
stops training, to some hours into the trading window) is written as a vendor CSV; the
embedded reference run and the live runs read it with the same flags. Live runs are
``python -m jobs.cli run --bootstrap ...`` subprocesses, so a test can SIGKILL or SIGTERM them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from jobs.data import fetch_emini
from jobs.live import wire
from jobs.live.kafka_client import KafkaSettings
from jobs.live.reading import TopicReader, headers_of
from topics.catalog import CATALOG

ROOT = Path(__file__).resolve().parents[1]
SLICE = (40_000, 160_000)
"""Data lines of the E-mini file: Monday morning (before the halt) to Tuesday early hours."""
FILE_FLAGS = ("--columns", "ts=DateTime,price=Price,size=Volume", "--tz", "America/Chicago",
              "--symbol", "ES", "--venue", "CME")
TRADE_FLAGS = ("--no-cost-gate",)
"""Ungated, the bundle trades often (hundreds of orders, fills and rejects in the slice)."""


@cache
def emini_slice(directory: Path, start: int = SLICE[0], end: int = SLICE[1]) -> Path:
    lines = fetch_emini(quiet=True).read_text().splitlines(keepends=True)
    path = directory / f"es_{start}_{end}.csv"
    path.write_text(lines[0] + "".join(lines[1 + start:1 + end]))
    return path


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, env=_env(env), check=False)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("STREAMQUANT_FAULT", None)
    env.update(extra or {})
    return env


def kafka_flags(settings: KafkaSettings) -> tuple[str, ...]:
    return ("--bootstrap", settings.bootstrap, "--topic-prefix", settings.topic_prefix)


def produce(settings: KafkaSettings, ticks: Path, *extra: str) -> None:
    r = cli("produce-ticks", *kafka_flags(settings), "--ticks", str(ticks), *FILE_FLAGS,
            "--quiet", *extra)
    assert r.returncode == 0, r.stderr


@dataclass
class LiveProcess:
    proc: subprocess.Popen[str]
    log: Path

    def wait(self, timeout: float = 300) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stderr(self) -> str:
        return self.log.read_text()

    def wait_for_checkpoint(self, ckdir: Path, newer_than_ns: int = 0,
                            timeout: float = 120) -> None:
        """Until the run writes a checkpoint newer than ``newer_than_ns`` (mtime): it is
        consuming and trading, whatever the machine's speed (a fixed sleep is not: a fast
        machine finishes the stream first)."""
        path = ckdir / "checkpoint.msgpack"
        deadline = time.monotonic() + timeout
        while not (path.exists() and path.stat().st_mtime_ns > newer_than_ns):
            assert time.monotonic() < deadline and self.proc.poll() is None, self.stderr()
            time.sleep(0.02)


def checkpoint_mtime(ckdir: Path) -> int:
    """The checkpoint file's mtime in ns (0: none yet)."""
    path = ckdir / "checkpoint.msgpack"
    return path.stat().st_mtime_ns if path.exists() else 0


def start_live(settings: KafkaSettings, models: Path, ckdir: Path, *extra: str,
               env: dict[str, str] | None = None, until_end: bool = True) -> LiveProcess:
    log = ckdir.parent / f"{ckdir.name}.{time.monotonic_ns()}.log"
    args = [sys.executable, "-m", "jobs.cli", "run", *kafka_flags(settings),
            "--checkpoint-dir", str(ckdir), "--models", str(models), *TRADE_FLAGS, *extra]
    if until_end:
        args.append("--until-end")
    with log.open("w") as f:
        proc = subprocess.Popen(args, cwd=ROOT, text=True, stdout=f, stderr=subprocess.STDOUT,
                                env=_env(env))
    return LiveProcess(proc, log)


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    msg_id: str
    value: bytes
    committed: bool = True


def read_topic(settings: KafkaSettings, topic: str, *, committed: bool = True,
               timeout: float = 30.0) -> list[Record]:
    """Every record of ``topic`` from the beginning to each partition's end, in partition and
    offset order (``committed=False``: aborted transactions' records too)."""
    kt = settings.topic(topic)
    out: list[Record] = []
    with TopicReader(settings, kt, CATALOG[topic].partitions, read_committed=committed) as r:
        deadline = time.monotonic() + timeout
        while not r.all_eof:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kt}: partitions {sorted(r.eof)} reached their end only")
            for m in r.poll(0.2):
                if r.is_record(m):
                    h = headers_of(m)
                    out.append(Record(m.partition(), m.offset(),
                                      h.get(wire.ID, b"").decode(), m.value() or b""))
    out.sort(key=lambda x: (x.partition, x.offset))
    return out


def file_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def first_copies(records: list[Record]) -> dict[str, bytes]:
    """Each message id's value; asserts every duplicate is identical to its first copy."""
    seen: dict[str, bytes] = {}
    for r in records:
        assert r.msg_id, f"record at {r.partition}@{r.offset} has no {wire.ID} header"
        first = seen.setdefault(r.msg_id, r.value)
        assert first == r.value, f"{r.msg_id}: a duplicate differs from its first copy"
    return seen


def by_position(copies: dict[str, bytes]) -> list[bytes]:
    """Values in emission order (``<topic>:<n>`` ids), asserting no position is missing."""
    pos = sorted((int(i.rsplit(":", 1)[1]), v) for i, v in copies.items())
    assert [p for p, _ in pos] == list(range(len(pos))), "a message position is missing"
    return [v for _, v in pos]


def count_by(records: list[Record]) -> dict[str, int]:
    c: dict[str, int] = defaultdict(int)
    for r in records:
        c[r.msg_id] += 1
    return c
