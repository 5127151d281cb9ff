"""Opening the analysts' database and making its schema this code's (``clickhouse init``).

:func:`connect` returns a clickhouse-connect client whose current database is the target's,
for an embedded directory (chdb) or a server. :func:`ensure_schema` creates what is missing
(every statement ``IF NOT EXISTS``) and refuses a database whose tables differ from the ones
this code writes: a schema change is reported with the differing columns, never mixed.

chdb allows one process per directory (a file lock) and one directory per process; both are
reported as usage errors that say what holds the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.clickhouse import ddl
from jobs.clickhouse.schema import TABLES
from jobs.clickhouse.target import Target
from jobs.errors import UsageError

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

EXTRA_HINT = "pip install 'streamquant[clickhouse]'"


class DatabaseUnavailableError(UsageError):
    """The database cannot be opened for a reason retrying will not fix (locked, missing)."""


class SchemaMismatchError(UsageError):
    """The database holds tables of another schema."""


def missing_extra(embedded: bool) -> str | None:
    """What is not installed for this kind of target (None: all there)."""
    mods = ["clickhouse_connect", "pyarrow", *(["chdb"] if embedded else [])]
    import importlib.util

    missing = [m for m in mods if importlib.util.find_spec(m) is None]
    if missing:
        return f"{', '.join(missing)} not installed ({EXTRA_HINT})"
    return None


def lock_holder(path: Path) -> str:
    """Who holds an embedded database: the pid in chdb's status file, when readable."""
    try:
        text = (path / "status").read_text(errors="replace")
    except OSError:
        return "another process"
    m = re.search(r"PID:\s*(\d+)", text)
    return f"process {m.group(1)}" if m else "another process"


def held_elsewhere(path: Path) -> bool:
    """Whether another process holds the embedded database ``path`` (chdb's lock on its
    ``status`` file, as ClickHouse takes it: ``flock``)."""
    import fcntl
    import os

    status = path / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return False  # no status file: nobody has it open
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return lock_holder(path) != f"process {os.getpid()}"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _locked(target: Target) -> DatabaseUnavailableError:
    assert target.path is not None
    return DatabaseUnavailableError(
        f"the embedded database {target.path} is open in {lock_holder(target.path)} (chdb "
        "allows one process per directory): wait for that run or query to finish, or give a "
        "running pipeline's analysts a ClickHouse server (docs/clickhouse.md)")


def _open_error(target: Target, exc: Exception) -> Exception:
    msg = str(exc)
    assert target.path is not None
    if "Cannot lock file" in msg or "Another server instance" in msg or \
            held_elsewhere(target.path):
        return _locked(target)
    if "already initialized with path" in msg:
        return DatabaseUnavailableError(
            f"this process already has another embedded database open, so it cannot open "
            f"{target.path} (chdb allows one directory per process)")
    return exc


def connect(target: Target, *, create: bool = True, timeout_s: float = 10.0) -> Client:
    """A client on ``target`` with its database current (created first when ``create``).

    Raises :class:`DatabaseUnavailableError` for a locked or missing embedded database; server
    errors (refused connections...) propagate as clickhouse-connect's exceptions, which the
    sink retries.
    """
    import clickhouse_connect

    if target.path is not None:
        path = target.path.resolve()
        if not create and not path.is_dir():
            raise DatabaseUnavailableError(
                f"no database at {target.path}: a run writes one under <out>/clickhouse "
                "unless it ran with --sink none or without the clickhouse extra (is --out "
                "the run's directory?)")
        if held_elsewhere(path):  # before chdb tries (and logs its own error on stderr)
            raise _locked(target)
        try:
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        except Exception as exc:
            raise _open_error(target, exc) from None
    else:
        client = clickhouse_connect.get_client(
            host=target.host, port=target.port, username=target.user,
            password=target.password, secure=target.secure,
            connect_timeout=max(1, round(timeout_s)),  # whole seconds (the client's rule)
            send_receive_timeout=max(30, round(timeout_s)))
    try:
        if _exists(client, target.database):
            pass  # (a user without CREATE rights can write an existing database)
        elif create:
            client.command(f"CREATE DATABASE IF NOT EXISTS {target.database}")
        else:
            raise DatabaseUnavailableError(
                f"{target.describe()} has no database {target.database!r} (streamquant "
                "clickhouse init creates it)")
        client.database = target.database
    except BaseException:
        client.close()
        raise
    return client


def _exists(client: Client, database: str) -> bool:
    return bool(client.command(f"EXISTS DATABASE {database}"))


@dataclass(slots=True)
class SchemaReport:
    """What :func:`ensure_schema` found and did."""

    created: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    version: int = ddl.SCHEMA_VERSION
    fingerprint: str = ""
    ticks_ttl: str = ""


def _norm(t: str) -> str:
    return re.sub(r"[`\s]", "", t)


def column_differences(client: Client) -> dict[str, list[str]]:
    """Per existing table of ours, how its columns differ from this code's (empty: same)."""
    rows = client.query(
        "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
        "ORDER BY table, position").result_rows
    have: dict[str, list[tuple[str, str]]] = {}
    for table, name, typ in rows:
        have.setdefault(str(table), []).append((str(name), str(typ)))
    out: dict[str, list[str]] = {}
    for spec in TABLES:
        got = have.get(spec.name)
        if got is None:
            continue
        want = [(c.name, c.type) for c in spec.columns]
        diffs: list[str] = []
        got_map = dict(got)
        want_map = dict(want)
        for n, t in want:
            if n not in got_map:
                diffs.append(f"missing column {n} {t}")
            elif _norm(got_map[n]) != _norm(t):
                diffs.append(f"column {n} is {got_map[n]}, this code writes {t}")
        diffs += [f"extra column {n} {t}" for n, t in got if n not in want_map]
        if not diffs and [n for n, _ in got] != [n for n, _ in want]:
            diffs.append("columns in another order")
        if diffs:
            out[spec.name] = diffs
    return out


def recorded_schema(client: Client) -> tuple[int, str] | None:
    """The latest ``(version, fingerprint)`` in the schema table, or None."""
    if not client.command(f"EXISTS TABLE {ddl.SCHEMA_TABLE}"):
        return None
    rows = client.query(f"SELECT version, fingerprint FROM {ddl.SCHEMA_TABLE} "
                        "ORDER BY applied_at DESC LIMIT 1").result_rows
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def _existing_tables(client: Client) -> set[str]:
    rows = client.query("SELECT name FROM system.tables WHERE database = currentDatabase()"
                        ).result_rows
    return {str(r[0]) for r in rows}


def check_schema(client: Client, where: str) -> None:
    """Raise :class:`SchemaMismatchError` if the database holds another schema's tables."""
    fp = ddl.fingerprint()
    recorded = recorded_schema(client)
    diffs = column_differences(client)
    if (recorded is not None and recorded[1] != fp) or diffs:
        lines = [f"{where} holds another streamquant schema than this code writes"]
        if recorded is not None:
            lines.append(f"  database: schema {recorded[0]} (fingerprint {recorded[1]}); "
                         f"this code: schema {ddl.SCHEMA_VERSION} (fingerprint {fp})")
        for table, d in sorted(diffs.items()):
            lines += [f"  {table}: {x}" for x in d[:5]]
            if len(d) > 5:
                lines.append(f"  {table}: ... {len(d) - 5} more")
        lines.append("  use another database (or --out), or migrate it (docs/clickhouse.md, "
                     "'Schema changes')")
        raise SchemaMismatchError("\n".join(lines))


TTL_KEEP = "keep"


def ensure_schema(client: Client, where: str, *, embedded: bool,
                  ticks_ttl_days: int | str | None = TTL_KEEP,
                  tool: str = "streamquant") -> SchemaReport:
    """Create what is missing and record the schema version.

    The raw ticks' TTL: ``ticks_ttl_days`` days, None for none, :data:`TTL_KEEP` for the
    table's own — which for a table created here is the DDL's default on a server and none in
    an embedded database (a finished run's record: nothing expires under an analyst).
    """
    check_schema(client, where)
    before = _existing_tables(client)
    report = SchemaReport(fingerprint=ddl.fingerprint())
    complete = before >= {ddl.SCHEMA_TABLE, *(t.name for t in TABLES), *ddl.VIEW_NAMES}
    if not complete:  # (checked above: what exists is this schema's)
        # an embedded database is a run's output: its DDL needs no fsync per table (~0.3 s)
        settings = {"fsync_metadata": 0} if embedded else None
        for stmt in ddl.schema_statements():
            client.command(stmt, settings=settings)
    for name in [ddl.SCHEMA_TABLE, *(t.name for t in TABLES), *ddl.VIEW_NAMES]:
        (report.present if name in before else report.created).append(name)
    if recorded_schema(client) is None:
        client.command(f"INSERT INTO {ddl.SCHEMA_TABLE} (version, fingerprint, tool) VALUES "
                       f"({ddl.SCHEMA_VERSION}, '{report.fingerprint}', "
                       f"'{tool.replace(chr(39), '')}')")
    if ticks_ttl_days == TTL_KEEP:
        if embedded and "md_ticks" in report.created:
            set_ticks_ttl(client, None)
    else:
        set_ticks_ttl(client, ticks_ttl_days if isinstance(ticks_ttl_days, int) else None)
    report.ticks_ttl = ticks_ttl(client)
    return report


def set_ticks_ttl(client: Client, days: int | None) -> None:
    if days is None:
        if ticks_ttl(client) != "none":
            client.command("ALTER TABLE md_ticks REMOVE TTL")
    else:
        if days <= 0:
            raise UsageError(f"--ticks-ttl must be a positive number of days, got {days}")
        client.command(f"ALTER TABLE md_ticks MODIFY TTL {ddl.ticks_ttl_expr(days)}")


def ticks_ttl(client: Client) -> str:
    """The raw ticks' retention as the table has it (``30 days`` or ``none``)."""
    q: Any = client.command("SELECT create_table_query FROM system.tables WHERE database = "
                            "currentDatabase() AND name = 'md_ticks'")
    m = re.search(r"TTL .*?(?:INTERVAL (\d+) DAY|toIntervalDay\((\d+)\))", str(q))
    return f"{m.group(1) or m.group(2)} days" if m else "none"
