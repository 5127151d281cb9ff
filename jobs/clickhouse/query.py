"""``streamquant sql``: one query against the analysts' database, printed for people or tools.

ClickHouse formats the values (full nanosecond times, exact floats); this module only lays
them out: ``table`` (aligned columns, numbers to the right, long cells cut with ``…``),
``csv`` (``CSVWithNames``) or ``json`` (JSON Lines: one object per row, 64-bit integers as
numbers). Queries run with ``final=1`` by default, so ReplacingMergeTree tables show each
message once even before the engine has merged away a re-sent copy (docs/clickhouse.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

FORMATS = ("table", "csv", "json")
MAX_CELL = 60
"""Widest cell of the table format (``csv`` and ``json`` print everything)."""
_NUMERIC = re.compile(r"^(Nullable\()?(U?Int\d+|Float\d+|Decimal.*|Bool)\)?$")
_CH_FORMAT = {"table": "TabSeparatedWithNamesAndTypes", "csv": "CSVWithNames",
              "json": "JSONEachRow"}


class QueryError(RuntimeError):
    """ClickHouse refused the query; the message is ClickHouse's."""


def settings(final: bool) -> dict[str, int]:
    out = {"output_format_json_quote_64bit_integers": 0}
    if final:
        out["final"] = 1
    return out


def run_query(client: Client, sql: str, fmt: str = "table", *, final: bool = True) -> bytes:
    """The query's result in ClickHouse's output format for ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    from clickhouse_connect.driver.exceptions import DatabaseError

    try:
        return client.raw_query(sql, settings=settings(final), fmt=_CH_FORMAT[fmt])
    except DatabaseError as exc:
        raise QueryError(_clean(str(exc))) from None


def _clean(msg: str) -> str:
    """ClickHouse's message without the client's decorations."""
    msg = msg.strip()
    msg = re.sub(r"\s*FORMAT \w+(\s*\.)?", "", msg)
    return msg.split("\n\n")[0]


_UNESCAPE = {"t": "\t", "n": "\n", "\\": "\\", "0": "\0", "b": "\b", "f": "\f", "r": "\r",
             "'": "'"}


def _tsv_cell(raw: str) -> str | None:
    if raw == "\\N":
        return None
    if "\\" not in raw:
        return raw
    return re.sub(r"\\(.)", lambda m: _UNESCAPE.get(m.group(1), m.group(1)), raw)


@dataclass(frozen=True, slots=True)
class Result:
    """A result as text cells: names, ClickHouse types, rows (None for NULL)."""

    names: list[str]
    types: list[str]
    rows: list[list[str | None]]


def parse_tsv(data: bytes) -> Result:
    """``TabSeparatedWithNamesAndTypes`` → :class:`Result`."""
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        return Result([], [], [])
    names = [_tsv_cell(c) or "" for c in lines[0].split("\t")]
    types = [_tsv_cell(c) or "" for c in lines[1].split("\t")]
    rows = [[_tsv_cell(c) for c in ln.split("\t")] for ln in lines[2:]]
    return Result(names, types, rows)


def _cut(s: str) -> str:
    s = s.replace("\n", "\\n").replace("\t", " ")
    return s if len(s) <= MAX_CELL else s[:MAX_CELL - 1] + "…"


def format_table(res: Result) -> str:
    """Aligned columns under a header and a rule; numbers right-aligned, NULL as ``NULL``."""
    if not res.names:
        return ""
    cells = [[_cut("NULL" if v is None else v) for v in row] for row in res.rows]
    heads = [_cut(n) for n in res.names]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(heads)]
    right = [bool(_NUMERIC.match(t)) for t in res.types]

    def line(vals: list[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w)
                         for v, w, r in zip(vals, widths, right, strict=True)).rstrip()

    out = [line(heads), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out) + "\n"


def write_result(data: bytes, fmt: str, out: IO[str]) -> int:
    """Print ``data`` (from :func:`run_query`) to ``out``; returns the number of rows."""
    if fmt == "table":
        res = parse_tsv(data)
        out.write(format_table(res))
        return len(res.rows)
    text = data.decode("utf-8", errors="replace")
    out.write(text)
    lines = text.count("\n")
    return lines - 1 if fmt == "csv" and lines else lines
