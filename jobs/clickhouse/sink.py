"""The ClickHouse sink: a tap that writes the topics' messages to the analysts' tables.

The pipeline's thread only appends each message to its topic's list (:meth:`accept`); a full
list (``batch_rows``), ``batch_seconds`` of age, :meth:`flush` or :meth:`close` hands it to a
writer thread, which turns it into an Arrow table (``arrow_batch``) and inserts it with
``insert_arrow`` and a deduplication token. Rows are keyed by message id in ReplacingMergeTree
tables, so a re-sent batch, a replay or a recovery never double-counts (docs/clickhouse.md).

Trading never waits for the database. When the server is down or refuses an insert, the writer
keeps the batches in order, retries with exponential backoff, says so on stderr (at most every
``report_every_s``) and counts it in :meth:`stats`; beyond ``max_buffer_rows`` in memory it
spills batches to ``spill_dir`` as Arrow IPC files (read back in order). Only when the spill
cannot keep up does the pipeline wait, with a message. :meth:`close` writes everything or says
exactly what was not written and where it is kept (``streamquant clickhouse load`` inserts it).
"""

from __future__ import annotations

import logging
import re
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from jobs.clickhouse.database import (
    DatabaseUnavailableError,
    SchemaMismatchError,
    connect,
    ensure_schema,
    held_elsewhere,
)
from jobs.clickhouse.schema import TABLES, TableSpec
from jobs.clickhouse.target import Target
from topics import names as tn

if TYPE_CHECKING:  # pyarrow and the client load on the writer thread (see ClickHouseTap)
    from clickhouse_connect.driver.client import Client

    from jobs.clickhouse.arrow_batch import Batch, BatchBuilder


class SinkNotWrittenError(RuntimeError):
    """Rows the sink could not write by the end (kept on disk when possible; the message says
    where)."""


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """Batching, buffering and retry policy of the sink (validated here, once)."""

    ticks: bool = True
    """Fill ``md_ticks`` (the largest table by far)."""
    batch_rows: int = 65_536
    batch_seconds: float = 1.0
    max_buffer_rows: int = 1_000_000
    """Rows waiting in memory before batches spill to disk."""
    spill_dir: Path | None = None
    """Where batches spill (None: a temporary directory, made when first needed)."""
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    close_timeout_s: float = 60.0
    """How long :meth:`ClickHouseTap.close` keeps retrying before it spills what is left."""
    flush_wait_s: float = 5.0
    """How long :meth:`ClickHouseTap.flush` (a live checkpoint) waits for the rows to be
    written while the database answers: a checkpoint's rows are then in the database before
    the next one, so a crash does not lose them (a failing database is not waited for)."""
    report_every_s: float = 10.0
    connect_timeout_s: float = 5.0
    insert_threads: int = 1
    """ClickHouse threads per insert: the embedded engine shares the pipeline's cores."""

    def __post_init__(self) -> None:
        if self.batch_rows < 1 or self.max_buffer_rows < self.batch_rows:
            raise ValueError("batch_rows must be >= 1 and <= max_buffer_rows")
        if min(self.batch_seconds, self.retry_initial_s, self.report_every_s,
               self.connect_timeout_s) <= 0 or self.retry_max_s < self.retry_initial_s:
            raise ValueError("sink times must be positive (retry_max_s >= retry_initial_s)")
        if min(self.close_timeout_s, self.flush_wait_s) < 0 or self.insert_threads < 1:
            raise ValueError("close_timeout_s and flush_wait_s must be >= 0, insert_threads "
                             ">= 1")


@dataclass(frozen=True, slots=True)
class Spilled:
    """A batch kept on disk while the database is away."""

    table: str
    path: Path
    token: str
    rows: int


@dataclass(slots=True)
class _Stats:
    rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    failures: int = 0
    retries: int = 0
    spilled_rows: int = 0
    lost_rows: int = 0
    last_error: str | None = None
    convert_s: float = 0.0
    insert_s: float = 0.0
    waited_s: float = 0.0


def _short(exc: BaseException) -> str:
    """One line: the OS error at the root of a connection failure, else the message's start."""
    text = " ".join(str(exc).split())
    m = re.search(r"\[Errno \d+\] [^'\")\]]+", text)
    if m:
        return f"{type(exc).__name__}: {m.group(0).strip()}"
    return f"{type(exc).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}"


def _quiet_client_logs() -> None:
    """clickhouse-connect and urllib3 log a warning per failed request; the sink reports
    failures itself, once per ``report_every_s``."""
    for name in ("clickhouse_connect.driver", "urllib3.connectionpool"):
        log = logging.getLogger(name)
        if log.level == logging.NOTSET:
            log.setLevel(logging.ERROR)


class ClickHouseTap:
    """Writes the tapped topics to their tables on ``target`` (see the module doc)."""

    name = "clickhouse"

    def __init__(self, target: Target, job: str, config: SinkConfig | None = None, *,
                 quiet: bool = False, log: IO[str] | None = None) -> None:
        self.target = target
        self.job = job
        self.config = cfg = config or SinkConfig()
        self._log = log or sys.stderr
        self._quiet = quiet
        specs = [t for t in TABLES if cfg.ticks or t.topic != tn.MD_TICKS]
        self.topics = frozenset(t.topic for t in specs)
        self._specs: dict[str, TableSpec] = {t.topic: t for t in specs}
        self._builders: dict[str, BatchBuilder] = {}
        self._ns: dict[str, list[int]] = {t: [] for t in self.topics}
        self._vals: dict[str, list[msgspec.Struct]] = {t: [] for t in self.topics}
        self._batch_rows = cfg.batch_rows
        self._accepted = 0
        self._deadline = time.monotonic() + cfg.batch_seconds
        self._closed = False
        # shared with the writer thread, under _cond
        self._cond = threading.Condition()
        self._inbox: deque[tuple[str, list[int], list[msgspec.Struct]]] = deque()
        self._inbox_rows = 0
        self._unwritten = 0  # handed over, not yet written
        self._failing_since: float | None = None
        self._stop = False
        # the writer's own
        self._outbox: deque[Batch | Spilled] = deque()
        self._memory_rows = 0
        self._spill_dir = cfg.spill_dir
        self._stats = _Stats()
        self._client: Client | None = None
        self._schema_ok = False
        self._attempt = 0
        self._next_try = 0.0
        self._last_report = 0.0
        self._unsaved: dict[str, int] = {}
        if not target.embedded:
            _quiet_client_logs()
        if target.path is not None and held_elsewhere(target.path):
            connect(target)  # raises the usage error that names the holder
        # A new embedded database has no schema to disagree with and nobody else can reach it:
        # the writer thread opens it (imports, engine start, DDL) while the pipeline starts.
        # Anything else is opened now, so a locked or different database stops the run here.
        self._open_later = target.path is not None and not _has_data(target.path)
        if not self._open_later:
            self._connect()
        self._thread = threading.Thread(target=self._run, name="clickhouse-sink", daemon=True)
        self._thread.start()
        if not quiet:
            ticks = "" if cfg.ticks else " (md_ticks left empty)"
            print(f"clickhouse: writing {len(self.topics)} topics to {target.describe()} as job "
                  f"{job!r}{ticks}", file=self._log)

    def _resume_spilled(self) -> None:
        """Batches an earlier run (a crash, a server outage) left in ``spill_dir`` go first."""
        from jobs.clickhouse.spill import spilled_files, spilled_info

        d = self._spill_dir
        files = spilled_files(d) if d is not None and d.is_dir() else []
        rows = 0
        for path in files:
            try:
                table, token, n = spilled_info(path)
            except (OSError, ValueError) as exc:
                self._report(f"skipping {path}: {_short(exc)}", force=True)
                continue
            self._outbox.append(Spilled(table, path, token, n))
            rows += n
        if rows:
            with self._cond:
                self._unwritten += rows
            self._report(f"{rows:,} rows an earlier run left in {d} are written first",
                         force=True)

    # ------------------------------------------------------------------ the pipeline's side

    def accept(self, topic: str, n: int, value: msgspec.Struct, /) -> None:
        ns = self._ns[topic]
        ns.append(n)
        self._vals[topic].append(value)
        if len(ns) >= self._batch_rows:
            self._handoff(topic)
        self._accepted += 1
        if not self._accepted & 255 and time.monotonic() >= self._deadline:
            self._handoff_all()

    def flush(self, wait_s: float | None = None) -> None:
        """Hand everything buffered to the writer and wait up to ``wait_s`` (default
        ``flush_wait_s``) for it to be written; never waits while the database is failing."""
        self._handoff_all()
        if wait_s is None:
            wait_s = self.config.flush_wait_s
        if wait_s > 0:
            end = time.monotonic() + wait_s
            with self._cond:
                while self._unwritten and self._failing_since is None and not self._stop:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)

    def close(self) -> None:
        """Write everything (retrying up to ``close_timeout_s``); raise :class:`SinkNotWrittenError`
        naming what was not written and where it is kept."""
        if self._closed:
            return
        self._closed = True
        self._handoff_all()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
        if self._unsaved or self._stats.lost_rows:
            raise SinkNotWrittenError(self._not_written_message())

    def lag(self) -> tuple[int, float]:
        """Rows accepted and not yet in the database, and how long inserts have been failing
        (0 while they succeed: rows waiting for a full batch are not lag). Read by the metrics
        (``streamquant_sink_buffered_rows``, ``streamquant_sink_lag_seconds``)."""
        with self._cond:
            rows = self._unwritten  # handed to the writer (inbox included), not yet written
            since = self._failing_since
        rows += sum(len(v) for v in self._ns.values())
        return rows, (time.monotonic() - since if since is not None else 0.0)

    def stats(self) -> dict[str, Any]:
        s = self._stats
        with self._cond:
            waiting = self._unwritten
        out: dict[str, Any] = {
            "target": self.target.describe(), "job": self.job,
            "rows": dict(sorted(s.rows.items())), "rows_total": sum(s.rows.values()),
            "batches": s.batches, "failures": s.failures, "retries": s.retries,
            "waiting_rows": waiting, "spilled_rows": s.spilled_rows,
            "convert_s": round(s.convert_s, 3), "insert_s": round(s.insert_s, 3)}
        if s.waited_s:
            out["pipeline_waited_s"] = round(s.waited_s, 3)
        if s.last_error:
            out["last_error"] = s.last_error
        if self._unsaved:
            out["unwritten_rows"] = dict(sorted(self._unsaved.items()))
            out["spill_dir"] = str(self._spill_dir)
        if s.lost_rows:
            out["lost_rows"] = s.lost_rows
        return out

    def _handoff(self, topic: str) -> None:
        ns = self._ns[topic]
        vals = self._vals[topic]
        self._ns[topic] = []
        self._vals[topic] = []
        rows = len(ns)
        with self._cond:
            self._inbox.append((topic, ns, vals))
            self._inbox_rows += rows
            self._unwritten += rows
            self._cond.notify_all()
            if self._inbox_rows > self.config.max_buffer_rows and not self._stop:
                self._wait_for_room()

    def _wait_for_room(self) -> None:
        """The writer is behind by more than the memory bound: wait (said once a report)."""
        t = time.monotonic()
        self._report(f"{self._inbox_rows:,} rows wait for the writer (more than "
                     f"{self.config.max_buffer_rows:,}): the pipeline waits for the sink")
        while self._inbox_rows > self.config.max_buffer_rows and self._thread.is_alive():
            self._cond.wait(1.0)
        self._stats.waited_s += time.monotonic() - t

    def _handoff_all(self) -> None:
        for topic, ns in self._ns.items():
            if ns:
                self._handoff(topic)
        self._deadline = time.monotonic() + self.config.batch_seconds

    # ------------------------------------------------------------------ the writer thread

    def _start(self) -> None:
        """The writer's first work: Arrow, the database (when opened late), leftovers."""
        from jobs.clickhouse import arrow_batch  # noqa: F401  (pyarrow, numpy)

        if self._open_later:
            from jobs.clickhouse.template import copy_empty_database

            assert self.target.path is not None
            copy_empty_database(self.target.path)  # else the schema is created in place
            try:
                self._connect()
            except (DatabaseUnavailableError, SchemaMismatchError) as exc:
                self._fail(exc)
        self._resume_spilled()

    def _run(self) -> None:
        close_by: float | None = None
        try:
            self._start()
            while True:
                with self._cond:
                    while not self._inbox and not self._stop and not self._due():
                        self._cond.wait(self._wait_s())
                    raw = list(self._inbox)
                    self._inbox.clear()
                    self._inbox_rows = 0
                    stopping = self._stop
                    self._cond.notify_all()
                for topic, ns, vals in raw:
                    self._build(topic, ns, vals)
                self._spill_over()
                if stopping and close_by is None:
                    close_by = time.monotonic() + self.config.close_timeout_s
                    self._next_try = 0.0  # one immediate try at close
                self._send()
                if stopping:
                    assert close_by is not None
                    if not self._outbox:
                        break
                    if time.monotonic() >= close_by:
                        self._give_up()
                        break
                    pause = max(0.0, min(self._next_try, close_by) - time.monotonic())
                    time.sleep(min(pause, 0.5))
        except BaseException as exc:  # a bug here must not pass silently
            self._stats.last_error = _short(exc)
            print(f"clickhouse: the writer stopped: {_short(exc)}", file=self._log)
            self._give_up()
        finally:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception as exc:
                    print(f"clickhouse: closing the client: {_short(exc)}", file=self._log)
                self._client = None
            with self._cond:
                self._stop = True
                self._cond.notify_all()

    def _due(self) -> bool:
        return bool(self._outbox) and time.monotonic() >= self._next_try

    def _wait_s(self) -> float:
        if self._outbox:
            return max(0.01, self._next_try - time.monotonic())
        return 1.0

    def _build(self, topic: str, ns: list[int], vals: list[msgspec.Struct]) -> None:
        from jobs.clickhouse.arrow_batch import BatchBuilder

        t = time.perf_counter()
        try:
            builder = self._builders.get(topic)
            if builder is None:
                builder = self._builders[topic] = BatchBuilder(self._specs[topic], self.job)
            batch = builder.build(ns, vals)
        except Exception as exc:  # a conversion bug: loud, counted, never silent
            self._stats.lost_rows += len(ns)
            self._stats.last_error = _short(exc)
            print(f"clickhouse: {len(ns):,} rows of {topic} could not be converted and are "
                  f"lost: {_short(exc)}", file=self._log)
            self._written(0, len(ns))
            return
        self._stats.convert_s += time.perf_counter() - t
        self._outbox.append(batch)
        self._memory_rows += batch.rows

    def _spill_over(self) -> None:
        """Keep at most ``max_buffer_rows`` in memory: the newest batches go to disk."""
        if self._memory_rows <= self.config.max_buffer_rows:
            return
        items = list(self._outbox)
        for i in range(len(items) - 1, -1, -1):
            if self._memory_rows <= self.config.max_buffer_rows:
                break
            b = items[i]
            if not isinstance(b, Spilled):
                spilled = self._spill(b)
                if spilled is not None:
                    items[i] = spilled
        self._outbox = deque(items)

    def _spill(self, b: Batch) -> Spilled | None:
        from jobs.clickhouse.spill import write_spilled

        try:
            if self._spill_dir is None:
                self._spill_dir = Path(tempfile.mkdtemp(prefix="streamquant-clickhouse-spill-"))
            self._spill_dir.mkdir(parents=True, exist_ok=True)
            path = write_spilled(self._spill_dir, b.table, b.token, b.data)
        except OSError as exc:
            self._report(f"cannot spill to {self._spill_dir}: {_short(exc)}; rows stay in "
                         "memory", force=True)
            return None
        self._memory_rows -= b.rows
        self._stats.spilled_rows += b.rows
        return Spilled(b.table, path, b.token, b.rows)

    def _connect(self) -> bool:
        """Open the client and ensure the schema; False (reported) if the server is away."""
        try:
            if self._client is None:
                self._client = connect(self.target, timeout_s=self.config.connect_timeout_s)
            if not self._schema_ok:
                ensure_schema(self._client, self.target.describe(),
                              embedded=self.target.embedded)
                self._schema_ok = True
            return True
        except (DatabaseUnavailableError, SchemaMismatchError):
            raise  # at start: the run stops with a usage error; later: _send retries
        except Exception as exc:
            self._fail(exc)
            return False

    def _fail(self, exc: BaseException) -> None:
        self._stats.failures += 1
        self._stats.last_error = _short(exc)
        self._schema_ok = False  # a server that lost the database gets it back on retry
        now = time.monotonic()
        with self._cond:
            first = self._failing_since is None
            if first:
                self._failing_since = now
            self._cond.notify_all()
        self._attempt += 1
        delay = min(self.config.retry_initial_s * 2 ** (self._attempt - 1),
                    self.config.retry_max_s)
        self._next_try = now + delay
        waiting = sum(b.rows for b in self._outbox)
        self._report(f"{self.target.describe()} is not taking rows ({_short(exc)}); "
                     f"{waiting:,} rows wait ({self._stats.spilled_rows:,} spilled so far), "
                     f"retry #{self._attempt} in {delay:.1f}s", force=first)

    def _send(self) -> None:
        if not self._outbox or time.monotonic() < self._next_try:
            return
        if self._attempt:
            self._stats.retries += 1
        try:
            ok = self._connect()
        except (DatabaseUnavailableError, SchemaMismatchError) as exc:
            self._fail(exc)
            return
        if not ok:
            return
        from jobs.clickhouse.spill import read_spilled

        client = self._client
        assert client is not None
        # optimize_on_insert=0: no ReplacingMergeTree pass over each block as it is written
        # (half the insert's CPU); duplicates go at merges and FINAL reads all the same
        settings = {"max_insert_threads": self.config.insert_threads,
                    "max_threads": self.config.insert_threads, "optimize_on_insert": 0}
        while self._outbox:
            item = self._outbox[0]
            t = time.perf_counter()
            try:
                data = read_spilled(item.path) if isinstance(item, Spilled) else item.data
                client.insert_arrow(item.table, data,
                                    settings={**settings, "insert_deduplication_token":
                                              item.token})
            except Exception as exc:
                self._fail(exc)
                return
            self._stats.insert_s += time.perf_counter() - t
            self._outbox.popleft()
            if isinstance(item, Spilled):
                item.path.unlink(missing_ok=True)
            else:
                self._memory_rows -= item.rows
            self._stats.batches += 1
            self._stats.rows[item.table] = self._stats.rows.get(item.table, 0) + item.rows
            self._written(item.rows, 0)
        if self._attempt:
            with self._cond:
                since = self._failing_since or time.monotonic()
            self._report(f"{self.target.describe()} is back after "
                         f"{time.monotonic() - since:.1f}s and {self._attempt} retries; "
                         "the waiting rows are written", force=True)
        self._attempt = 0
        with self._cond:
            self._failing_since = None
            self._cond.notify_all()

    def _written(self, rows: int, lost: int) -> None:
        with self._cond:
            self._unwritten -= rows + lost
            self._cond.notify_all()

    def _give_up(self) -> None:
        """At close: what is still not written goes to the spill directory (or is counted
        lost with a message if even that fails)."""
        with self._cond:
            raw = list(self._inbox)
            self._inbox.clear()
            self._inbox_rows = 0
        for topic, ns, vals in raw:
            self._build(topic, ns, vals)
        for item in self._outbox:
            kept = item if isinstance(item, Spilled) else self._spill(item)
            if kept is None:
                self._stats.lost_rows += item.rows
            else:
                self._unsaved[item.table] = self._unsaved.get(item.table, 0) + item.rows
        self._outbox.clear()

    def _not_written_message(self) -> str:
        total = sum(self._unsaved.values())
        parts = [f"{self.target.describe()}: {total:,} rows were not written "
                 f"({', '.join(f'{t} {n:,}' for t, n in sorted(self._unsaved.items()))})"]
        if total:
            parts.append(f"they are kept in {self._spill_dir}; insert them with 'streamquant "
                         f"clickhouse load {self._spill_dir} --dsn DSN' when the server is up")
        if self._stats.lost_rows:
            parts.append(f"{self._stats.lost_rows:,} rows are lost (see the messages above)")
        if self._stats.last_error:
            parts.append(f"last error: {self._stats.last_error}")
        return "; ".join(parts)

    def _report(self, msg: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= self.config.report_every_s:
            self._last_report = now
            print(f"clickhouse: {msg}", file=self._log, flush=True)


def _has_data(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def spill_default(out: Path | None) -> Path | None:
    """Where a run's sink spills: ``<out>/clickhouse-spill`` (None: a temporary directory)."""
    return None if out is None else out / "clickhouse-spill"

