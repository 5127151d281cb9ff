"""One table's messages as an Arrow table for ``insert_arrow``, built column by column.

The sink's hot path only appends messages; this runs on its worker thread. Each column is one
``map(attrgetter)`` pass over the batch: no per-row dicts or tuples (they cost time and, with
hundreds of thousands of live objects, garbage-collector passes). Numbers go through numpy;
times stay integer nanoseconds until Arrow reinterprets them as ``timestamp[ns, UTC]``
(chdb's column inserts reject numpy datetime64, Arrow's timestamps are fine).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.clickhouse.schema import Column, TableSpec

TS = pa.timestamp("ns", tz="UTC")
_SCALAR: dict[str, pa.DataType] = {"ts": TS, "int": pa.int64(), "float": pa.float64(),
                                   "str": pa.string(), "bool": pa.bool_()}
_MAP_VALUE: dict[str, pa.DataType] = {"float": pa.float64(), "nfloat": pa.float64(),
                                      "str": pa.string(), "bool": pa.bool_()}
_NP = {"int": np.int64, "float": np.float64, "ts": np.int64}
_json = msgspec.json.Encoder()


def warm_up() -> None:
    """pyarrow imports pandas on its first conversion of a Python sequence (only to check for
    pandas inputs; ~0.5 s): the writer thread does it while the pipeline starts."""
    pa.array([0.0])


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows ready to insert: the Arrow table, its dedup token and where they came from."""

    table: str
    data: pa.Table
    token: str
    first: str
    last: str

    @property
    def rows(self) -> int:
        return int(self.data.num_rows)


def arrow_type(c: Column) -> pa.DataType:
    if c.kind in _SCALAR:
        return _SCALAR[c.kind]
    if c.kind == "json":
        return pa.binary()
    if c.kind == "map":
        return pa.map_(pa.string(), _MAP_VALUE[c.value])
    if c.kind == "strs":
        return pa.list_(pa.string())
    if c.kind == "records":
        return pa.list_(pa.struct([(f.name, arrow_type(f)) for f in c.fields]))
    raise ValueError(f"{c.name}: no Arrow type for kind {c.kind}")


def _scalars(c: Column, vals: list[Any]) -> pa.Array:
    if c.unset is not None:
        vals = [c.unset if v is msgspec.UNSET else v for v in vals]
    kind = c.kind
    if kind in _NP and not c.nullable:
        arr = np.fromiter(vals, dtype=_NP[kind], count=len(vals))
        out = pa.array(arr)
        return out.cast(TS) if kind == "ts" else out
    if kind == "ts":
        return pa.array(vals, pa.int64()).cast(TS)
    return pa.array(vals, _SCALAR[kind])


def _column(c: Column, vals: list[Any]) -> pa.Array:
    kind = c.kind
    if kind in _SCALAR:
        return _scalars(c, vals)
    if kind == "json":
        return pa.array([b"" if v is None else _json.encode(v) for v in vals], pa.binary())
    if kind == "map":
        return pa.array([v if v else {} for v in vals], arrow_type(c))
    if kind == "strs":
        return pa.array(vals, arrow_type(c))
    if kind == "records":
        names = [f.name for f in c.fields]
        rows = [[{n: getattr(r, n) for n in names} for r in v] for v in vals]
        return pa.array(rows, arrow_type(c))
    raise ValueError(f"{c.name}: cannot convert kind {kind}")


def _field(records: list[Any], name: str) -> list[Any]:
    """``name`` of each record; None where the record is None (an optional nested record)."""
    try:
        return list(map(attrgetter(name), records))
    except AttributeError:  # some are None: the slower pass
        return [None if r is None else getattr(r, name) for r in records]


class BatchBuilder:
    """Builds one table's Arrow batches; ``job`` and ``sq_id`` are added here."""

    def __init__(self, spec: TableSpec, job: str) -> None:
        self.spec = spec
        self.job = job
        self._prefix = f"{spec.topic}:"
        self._schema = pa.schema([(c.name, pa.string() if c.name in ("job", "sq_id")
                                   else arrow_type(c)) for c in spec.inserted])
        self._cols = [c for c in spec.inserted if c.path]

    def build(self, ns: Sequence[int], values: Sequence[msgspec.Struct]) -> Batch:
        n = len(values)
        if n != len(ns) or n == 0:
            raise ValueError(f"{self.spec.name}: {n} values for {len(ns)} positions")
        ids = self._ids(ns, values)
        job = pa.array([self.job], pa.string()).take(pa.array(np.zeros(n, dtype=np.int32)))
        arrays: dict[str, pa.Array] = {"job": job, "sq_id": ids}
        tops: dict[str, list[Any]] = {}
        nested: dict[tuple[str, ...], list[Any]] = {}
        for c in self._cols:
            top = tops.get(c.path[0])
            if top is None:
                top = tops[c.path[0]] = list(map(attrgetter(c.path[0]), values))
            vals = top
            for depth in range(1, len(c.path)):
                key = c.path[:depth + 1]
                got = nested.get(key)
                if got is None:
                    got = nested[key] = _field(vals, c.path[depth])
                vals = got
            arrays[c.name] = _column(c, vals)
        data = pa.Table.from_arrays([arrays[f.name] for f in self._schema],
                                    schema=self._schema)
        return Batch(self.spec.name, data, self._token(data, ids), ids[0].as_py(),
                     ids[n - 1].as_py())

    def _ids(self, ns: Sequence[int], values: Sequence[msgspec.Struct]) -> pa.Array:
        if self.spec.id_from_source:  # dead letters: the source coordinate, as live
            return pa.array([f"{self._prefix}{v.source.describe()}"  # type: ignore[attr-defined]
                             for v in values], pa.string())
        pos = pa.array(np.fromiter(ns, dtype=np.int64, count=len(ns)))
        out: pa.Array = pc.binary_join_element_wise(self._prefix, pc.cast(pos, pa.string()), "")
        return out

    def _token(self, data: pa.Table, ids: pa.Array) -> str:
        """Deterministic per content: a re-sent batch (a retry, or the same rows again after
        a recovery) is dropped by the server's insert deduplication; different rows with the
        same ids (another run under the same job name) are not."""
        h = hashlib.sha1(usedforsecurity=False)  # the fastest here (hardware); not a secret
        for col in data.columns:
            for chunk in col.chunks:
                for buf in chunk.buffers():
                    if buf is not None:
                        h.update(memoryview(buf))
        return f"{self.job}/{self.spec.name}/{ids[0].as_py()}..{len(ids)}/{h.hexdigest()}"
