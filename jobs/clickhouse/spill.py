"""Batches the sink could not write yet, on disk: one Arrow IPC stream file per batch.

The file keeps the table and the deduplication token in its schema metadata, so reading it back
(:func:`read_spilled`, ``streamquant clickhouse load``) inserts exactly what the sink would have,
and a batch loaded twice is dropped by the server's insert deduplication. Names sort in the
order the batches were made.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pyarrow as pa
from pyarrow import ipc

SUFFIX = ".arrows"
_seq = itertools.count()


def write_spilled(directory: Path, table: str, token: str, data: pa.Table) -> Path:
    """Write a batch atomically (a temporary name, then renamed); returns its path."""
    name = f"{time.time_ns():020d}-{next(_seq):06d}-{table}{SUFFIX}"
    path = directory / name
    tmp = directory / f".{name}.tmp"
    meta = {b"streamquant.table": table.encode(), b"streamquant.token": token.encode()}
    data = data.replace_schema_metadata({**(data.schema.metadata or {}), **meta})
    with pa.OSFile(str(tmp), "wb") as f, ipc.new_stream(f, data.schema) as w:
        w.write_table(data)
    os.replace(tmp, path)
    return path


def read_spilled(path: Path) -> pa.Table:
    with pa.OSFile(str(path), "rb") as f:
        return ipc.open_stream(f).read_all()


def spilled_meta(data: pa.Table) -> tuple[str, str]:
    """``(table, token)`` of a spilled batch."""
    meta = data.schema.metadata or {}
    try:
        return meta[b"streamquant.table"].decode(), meta[b"streamquant.token"].decode()
    except KeyError:
        raise ValueError("not a streamquant spill file (no table/token metadata)") from None


def spilled_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"*{SUFFIX}") if p.is_file())
