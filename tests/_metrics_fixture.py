"""The metrics tests' workload: a slice of the real E-mini trades, a bundle trained on it.

The first 60,000 trades (Sunday 17:00 CT to Monday 19:36 CT, 1,182 one-minute bars) with a few
malformed lines spliced in (so the DLQ has reasons to count), a walk-forward bundle trained on
the first 30 % of the bars (``jobs.strategy.train_bundle``, ~3 s), tight limits (10 %
concentration: the gate rejects often) and a kill switch tripped near the end and never
reset. Built once per session; the runs read it with the same flags as a user's ``run``.
"""

from __future__ import annotations

import socket
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from jobs.data import EMINI_SYMBOL, EMINI_TZ, EMINI_VENUE, fetch_emini
from jobs.sources import EMINI_COLUMN_MAP, TickInput, inspect_tick_file, normalize_config
from jobs.strategy import train_bundle
from jobs.train_job import features_pass
from operators.normalize import Normalize
from topics.messages import Control

MINUTE_NS = 60_000_000_000
PREFIX_LINES = 60_000
TRAIN_FRACTION = 0.3
BAD_LINES = {  # data line index -> the malformed line spliced in before it
    100: "2013-09-01 17:01:00.000,abc,3\n",  # BAD_PRICE
    200: "2013-09-01 17:02:00.000,-5,3\n",  # BAD_PRICE
    300: "not a time,1640.25,3\n",  # BAD_TIMESTAMP
    400: "2013-09-01 17:03:00.000,1640.25\n",  # BAD_CSV
    500: "2013-09-01 17:04:00.000,1640.25,-1\n",  # BAD_SIZE
}
RISK_TOML = "[limits]\nmax_concentration = 0.1\n\n[account]\n"
FILE_FLAGS = ("--columns", "ts=DateTime,price=Price,size=Volume", "--tz", EMINI_TZ,
              "--symbol", EMINI_SYMBOL, "--venue", EMINI_VENUE)


@dataclass(frozen=True, slots=True)
class Workload:
    directory: Path
    ticks: Path
    models: Path
    risk: Path
    control: Path
    kill_at: int

    def cli_args(self) -> tuple[str, ...]:
        """``run`` flags for this workload (add --out and the metrics flags)."""
        return ("--ticks", str(self.ticks), *FILE_FLAGS, "--models", str(self.models),
                "--risk", str(self.risk), "--control", str(self.control), "--no-cost-gate",
                "--no-report-html", "--sink", "none", "--quiet")


@cache
def _tmp() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="streamquant-metrics-")


@cache
def workload() -> Workload:
    d = Path(_tmp().name)
    lines = fetch_emini(quiet=True).read_text().splitlines(keepends=True)
    clean = d / "es_clean.csv"
    clean.write_text("".join(lines[: PREFIX_LINES + 1]))
    ticks = d / "es_prefix.csv"
    with ticks.open("w") as f:
        f.write(lines[0])
        for i, line in enumerate(lines[1: PREFIX_LINES + 1]):
            bad = BAD_LINES.get(i)
            if bad is not None:
                f.write(bad)
            f.write(line)
    spec = inspect_tick_file(clean, column_map=EMINI_COLUMN_MAP, has_default_symbol=True)
    src = TickInput(path=clean, label=clean.name, spec=spec, column_map=EMINI_COLUMN_MAP,
                    tz=EMINI_TZ, default_symbol=EMINI_SYMBOL, default_venue=EMINI_VENUE,
                    bundled=False)
    vectors = features_pass(src, Normalize(normalize_config(src, None)), MINUTE_NS, 0)
    ends = sorted({fv.ts_event for fv in vectors})
    train_end = ends[int(len(ends) * TRAIN_FRACTION) - 1]
    models = d / "models"
    train_bundle(vectors, train_end=train_end, bar_ns=MINUTE_NS, out_dir=models, quiet=True)
    risk = d / "risk.toml"
    risk.write_text(RISK_TOML)
    kill_at = ends[int(len(ends) * 0.95)]
    control = d / "control.jsonl"
    control.write_bytes(msgspec.json.encode(
        Control(ts_event=kill_at, command="KILL", account="paper", reason="desk stop")) + b"\n")
    return Workload(d, ticks, models, risk, control, kill_at)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""(series name, sorted labels) -> value."""


def parse(text: str) -> tuple[set[str], Samples]:
    """A scrape's family names and its samples."""
    families: set[str] = set()
    samples: Samples = {}
    for fam in text_string_to_metric_families(text):
        families.add(fam.name if fam.type != "counter" else f"{fam.name}_total")
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body: bytes = r.read()
    return body.decode()


def scrape_final(port: int, timeout: float = 60.0) -> tuple[set[str], Samples, list[str]]:
    """Poll the endpoint until the run has finished; the final scrape parsed, and every
    earlier scrape's text (taken while the run was going)."""
    deadline = time.monotonic() + timeout
    during: list[str] = []
    while time.monotonic() < deadline:
        try:
            text = scrape(port)
        except OSError:
            time.sleep(0.05)
            continue
        families, samples = parse(text)
        if samples.get(("streamquant_run_finished", ())) == 1.0:
            return families, samples, during
        during.append(text)
        time.sleep(0.1)
    raise TimeoutError(f"the run on port {port} did not finish within {timeout} s")


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` keyed by one label's value."""
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name:
            out[dict(labels)[label]] = v
    return out
