"""Where the analysts' database is: ``chdb://DIR`` (ClickHouse's engine in-process, a directory)
or ``clickhouse://[user[:password]@]host:port[/database]`` (a server over HTTP).

One parse for ``run --dsn``, ``clickhouse init`` and ``sql``; errors are usage errors that say
what form is expected. ``clickhouses://`` is the same over HTTPS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jobs.clickhouse.ddl import DATABASE
from jobs.errors import UsageError

DSN_FORMS = "chdb://DIR or clickhouse://[USER[:PASSWORD]@]HOST:PORT[/DATABASE]"
EMBEDDED_DIR = "clickhouse"
"""The embedded database of a run: ``<out>/clickhouse``."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed DSN: an embedded directory, or a server's address and credentials."""

    path: Path | None = None
    host: str | None = None
    port: int | None = None
    user: str = "default"
    password: str = ""
    database: str = DATABASE
    secure: bool = False

    def __post_init__(self) -> None:
        if (self.path is None) == (self.host is None):
            raise UsageError(f"a ClickHouse target is either a directory or a server: {DSN_FORMS}")
        if self.host is not None and not (self.port and 0 < self.port < 65536):
            raise UsageError(f"ClickHouse server {self.host}: port must be 1..65535")
        if not self.database or not self.database.replace("_", "").isalnum():
            raise UsageError(f"ClickHouse database name {self.database!r}: use letters, digits "
                             "and '_'")

    @property
    def embedded(self) -> bool:
        return self.path is not None

    def describe(self) -> str:
        """The DSN without its password (for messages and summaries)."""
        if self.path is not None:
            return f"chdb://{self.path}"
        scheme = "clickhouses" if self.secure else "clickhouse"
        cred = f"{self.user}:***@" if self.password else f"{self.user}@"
        return f"{scheme}://{cred}{self.host}:{self.port}/{self.database}"


def parse_dsn(dsn: str) -> Target:
    """``chdb://DIR`` or ``clickhouse[s]://[user[:pw]@]host:port[/db]`` (usage errors say
    what is wrong)."""
    dsn = dsn.strip()
    if dsn.startswith("chdb://"):
        rest = dsn[len("chdb://"):]
        if not rest:
            raise UsageError(f"--dsn {dsn!r}: chdb:// needs a directory, e.g. "
                             "chdb://out/run/clickhouse or chdb:///abs/dir")
        return Target(path=Path(rest))
    scheme, sep, _ = dsn.partition("://")
    if not sep or scheme not in ("clickhouse", "clickhouses"):
        raise UsageError(f"--dsn {dsn!r}: expected {DSN_FORMS}")
    parts = urlsplit(dsn)
    if parts.query or parts.fragment:
        raise UsageError(f"--dsn {_redact(dsn)}: no ?options or #fragment are understood")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"--dsn {_redact(dsn)}: the port is not a number 1..65535") from None
    if not parts.hostname:
        raise UsageError(f"--dsn {_redact(dsn)}: no host; expected {DSN_FORMS}")
    if port is None:
        raise UsageError(f"--dsn {_redact(dsn)}: no port (the HTTP port: 8123, or 8443 for "
                         "clickhouses://)")
    db = parts.path.strip("/")
    if "/" in db:
        raise UsageError(f"--dsn {_redact(dsn)}: the path is one database name")
    return Target(host=parts.hostname, port=port, user=unquote(parts.username or "default"),
                  password=unquote(parts.password or ""), database=unquote(db) or DATABASE,
                  secure=scheme == "clickhouses")


def _redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    return dsn.replace(f":{parts.password}@", ":***@", 1)


def embedded(out: Path) -> Target:
    """The run's embedded database under ``<out>/clickhouse``."""
    return Target(path=out / EMBEDDED_DIR)


def resolve(dsn: str | None, out: Path | None) -> Target | None:
    """``--dsn`` if given, else the embedded database of ``--out``, else None."""
    if dsn is not None:
        return parse_dsn(dsn)
    if out is not None:
        return embedded(out)
    return None
