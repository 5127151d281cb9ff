"""One table's messages as an Arrow table for ``insert_arrow``, built column by column.

The sink's hot path only appends messages; this runs on its writer thread. Each column is one
``map(attrgetter)`` pass over the batch: no per-row dicts or tuples (they cost time and, with
hundreds of thousands of live objects, garbage-collector passes). Arrays are assembled from
numpy buffers (``pa.Array.from_buffers``), never by pyarrow's conversion of Python sequences:
that conversion imports pandas the first time (~0.5 s of the pipeline's CPU, to look for pandas
types we never pass), and numpy is faster anyway. Times stay integer nanoseconds until Arrow
reinterprets them as ``timestamp[ns, UTC]`` (chdb's column inserts reject numpy datetime64).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, is_not
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from jobs.clickhouse.schema import Column, TableSpec

TS = pa.timestamp("ns", tz="UTC")
_SCALAR: dict[str, pa.DataType] = {"ts": TS, "int": pa.int64(), "float": pa.float64(),
                                   "str": pa.string(), "bool": pa.bool_()}
_MAP_VALUE: dict[str, pa.DataType] = {"float": pa.float64(), "nfloat": pa.float64(),
                                      "str": pa.string(), "bool": pa.bool_()}
_json = msgspec.json.Encoder()


def _validity(vals: Sequence[Any]) -> tuple[Any, int]:
    """Arrow's validity bitmap of ``vals`` (None: missing) and the null count."""
    n = len(vals)
    nulls = list(vals).count(None) if not isinstance(vals, list) else vals.count(None)
    if nulls == 0:
        return None, 0
    if nulls == n:
        return pa.py_buffer(np.zeros((n + 7) // 8, dtype=np.uint8)), n
    valid = np.fromiter(map(is_not, vals, repeat(None)), dtype=np.bool_, count=n)
    return pa.py_buffer(np.packbits(valid, bitorder="little")), nulls


def _numbers(vals: Sequence[Any], dtype: type[np.generic], typ: pa.DataType,
             nullable: bool) -> pa.Array:
    n = len(vals)
    validity, nulls = _validity(vals) if nullable else (None, 0)
    if nulls == n and n:
        arr = np.zeros(n, dtype=dtype)
    else:
        if nulls:
            zero = dtype(0)
            vals = [zero if v is None else v for v in vals]
        arr = np.fromiter(vals, dtype=dtype, count=n)
    return pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(arr)], null_count=nulls)


def _floats(vals: Sequence[Any], nullable: bool = False) -> pa.Array:
    return _numbers(vals, np.float64, pa.float64(), nullable)


def _ints(vals: Sequence[Any], nullable: bool = False) -> pa.Array:
    return _numbers(vals, np.int64, pa.int64(), nullable)


def _times(vals: Sequence[Any], nullable: bool = False) -> pa.Array:
    return _numbers(vals, np.int64, TS, nullable)  # int64 storage: the same buffers


def _bools(vals: Sequence[Any], nullable: bool = False) -> pa.Array:
    n = len(vals)
    validity, nulls = _validity(vals) if nullable else (None, 0)
    if nulls:
        vals = [False if v is None else v for v in vals]
    bits = np.packbits(np.fromiter(vals, dtype=np.bool_, count=n), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), n, [validity, pa.py_buffer(bits)],
                                 null_count=nulls)


def _string_array(typ: pa.DataType, n: int, offsets: Any, data: bytes, validity: Any = None,
                  nulls: int = 0) -> pa.Array:
    """A string or binary array from int64 offsets (Arrow's large types past 2 GiB)."""
    if offsets[-1] >= 2**31:
        typ = pa.large_string() if typ == pa.string() else pa.large_binary()
    else:
        offsets = offsets.astype(np.int32)
    return pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                 null_count=nulls)


def _bytes(encoded: Sequence[bytes], typ: pa.DataType, validity: Any = None,
           nulls: int = 0) -> pa.Array:
    n = len(encoded)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=n), out=offsets[1:])
    return _string_array(typ, n, offsets, b"".join(encoded), validity, nulls)


def _repeated(value: str, n: int) -> pa.Array:
    """``value`` n times (one symbol, one venue, the job)."""
    enc = value.encode()
    return _string_array(pa.string(), n, np.arange(n + 1, dtype=np.int64) * len(enc), enc * n)


def _positions(prefix: str, ns: Sequence[int]) -> pa.Array:
    """``<prefix><n>`` for each n, written digit by digit with numpy (no per-row strings)."""
    n = len(ns)
    pos = np.fromiter(ns, dtype=np.int64, count=n)
    if n and int(pos.min()) < 0:
        raise ValueError("negative message position")
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    digits = np.ones(n, dtype=np.int64)
    for k in range(1, 19):
        digits += pos >= 10**k
    lengths = len(head) + digits
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    buf = np.empty(int(offsets[-1]), dtype=np.uint8)
    start = offsets[:-1]
    for j, ch in enumerate(head):
        buf[start + j] = ch
    end = start + lengths  # one past the last digit
    rest = pos.copy()
    for k in range(int(digits.max()) if n else 0):
        live = digits > k
        buf[(end - 1 - k)[live]] = (48 + rest[live] % 10).astype(np.uint8)
        rest //= 10
    return _string_array(pa.string(), n, offsets, buf.tobytes())


def _strings(vals: Sequence[Any], nullable: bool = False) -> pa.Array:
    validity, nulls = _validity(vals) if nullable else (None, 0)
    if nulls and nulls == len(vals):
        return _string_array(pa.string(), nulls, np.zeros(nulls + 1, dtype=np.int64), b"",
                             validity, nulls)
    if nulls:
        enc: list[bytes] = [b"" if v is None else v.encode() for v in vals]
    else:
        enc = list(map(str.encode, vals))
    return _bytes(enc, pa.string(), validity, nulls)


def _offsets(lengths: Sequence[int]) -> pa.Array:
    n = len(lengths)
    off = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.fromiter(lengths, dtype=np.int32, count=n), out=off[1:])
    return pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(off)])


_BUILD: dict[str, Callable[[Sequence[Any], bool], pa.Array]] = {
    "ts": _times, "int": _ints, "float": _floats, "str": _strings, "bool": _bools}
_MAP_BUILD: dict[str, Callable[[Sequence[Any]], pa.Array]] = {
    "float": _floats, "nfloat": lambda v: _floats(v, True), "str": _strings, "bool": _bools}


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


def _column(c: Column, vals: Sequence[Any]) -> pa.Array:
    kind = c.kind
    if kind in _BUILD:
        if c.unset is not None:
            vals = [c.unset if v is msgspec.UNSET else v for v in vals]
        n = len(vals)
        if n > 64 and isinstance(vals, list) and vals[0] is not None and \
                vals.count(vals[0]) == n:  # one symbol, one venue, one schema version
            if kind == "str":
                return _repeated(vals[0], n)
            if kind == "int":
                return pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(
                    np.full(n, vals[0], dtype=np.int64))])
        return _BUILD[kind](vals, c.nullable)
    if kind == "json":
        return _bytes([b"" if v is None else _json.encode(v) for v in vals], pa.binary())
    if kind == "map":
        dicts = [v or {} for v in vals]
        keys = _strings([k for d in dicts for k in d])
        items = _MAP_BUILD[c.value]([x for d in dicts for x in d.values()])
        return pa.MapArray.from_arrays(_offsets(list(map(len, dicts))), keys, items)
    if kind == "strs":
        flat = _strings([x for v in vals for x in v])
        return pa.ListArray.from_arrays(_offsets(list(map(len, vals))), flat)
    if kind == "records":
        recs = [r for v in vals for r in v]
        children = [_column(f, list(map(attrgetter(f.name), recs))) for f in c.fields]
        struct = pa.StructArray.from_arrays(
            children, fields=[pa.field(f.name, arrow_type(f)) for f in c.fields])
        return pa.ListArray.from_arrays(_offsets(list(map(len, vals))), struct)
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
        job = _repeated(self.job, n)
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
        p = self._prefix
        if self.spec.id_from_source:  # dead letters: the source coordinate, as live
            return _strings([f"{p}{v.source.describe()}"  # type: ignore[attr-defined]
                             for v in values])
        return _positions(p, ns)

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
