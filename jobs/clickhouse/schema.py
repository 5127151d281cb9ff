"""The analysts' tables, one per public topic, derived from the topic's message type.

Columns come from the msgspec schema (``topics.messages``), so a new field is a new column and
a test keeps ``deploy/clickhouse/`` equal to what this module generates. The rules:

- every table starts with ``job`` (the run or live job that wrote the row) and ``sq_id`` (the
  message id ``<topic>:<n>``, the live path's ``sq.id`` header), and ends with ``ingested_at``;
- integer times (``ts_*``, ``watermark``, ``bar_ts``, ``window_*``) are ``DateTime64(9, 'UTC')``;
- strings are ``LowCardinality`` except ids and free text;
- ``X | None`` is ``Nullable(X)`` where ClickHouse allows it; a map or an array that is absent is
  empty (ClickHouse has no nullable maps);
- ``dict[str, V]`` is ``Map(LowCardinality(String), V)``; ``tuple[str, ...]`` is
  ``Array(String)``; ``tuple[Struct, ...]`` is ``Array(Tuple(...))`` (``inputs.line`` reads the
  element field as an array);
- a nested record of scalars (``Tick.source``, ``LateTick.tick``) is flattened into
  ``<field>_<subfield>`` columns; a nested record with maps (``DecisionTrace``) is kept as its
  JSON text (the same bytes as on the topic): ``audit.decisions`` has it all as columns.

Engines, keys and codecs are chosen per table below; docs/clickhouse.md explains why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from msgspec import inspect as mi

from topics import names as tn
from topics.catalog import CATALOG

Kind = Literal["ts", "int", "float", "str", "bool", "json", "map", "strs", "records", "meta"]
"""How a message value becomes a column value (``jobs.clickhouse.arrow_batch``)."""

HIGH_CARDINALITY = frozenset({
    "decision_id", "client_order_id", "parent_order_id", "fill_id", "trade_id", "detail",
    "payload", "message"})
"""String fields that are ids or free text: plain ``String`` (LowCardinality would bloat)."""

TIME_FIELDS = frozenset({"watermark", "bar_ts", "window_start", "window_end"})
"""Integer nanosecond times not named ``ts_*``."""

UNSET_DEFAULTS = {"device": "cpu"}
"""Values of fields left out of a message (``msgspec.UNSET``): their documented meaning."""

JSON_CODEC = "CODEC(ZSTD(1))"


def is_time(name: str) -> bool:
    return name.startswith("ts_") or name in TIME_FIELDS


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its ClickHouse type and where its value comes from in the message."""

    name: str
    type: str
    kind: Kind
    path: tuple[str, ...]
    """Attribute path in the message (``("tick", "source", "file")``); ``()``: computed."""
    nullable: bool = False
    codec: str = ""
    default: str = ""
    """A ``DEFAULT`` expression (the server fills it: ``ingested_at``)."""
    alias: str = ""
    """An ``ALIAS`` expression (computed on read, never stored or inserted)."""
    value: str = ""
    """Maps: the value's kind (``float``, ``nfloat``, ``str``, ``bool``)."""
    fields: tuple[Column, ...] = ()
    """Records (``Array(Tuple)``): the element's fields."""
    unset: str | None = None
    """The value of a field the message left out (``msgspec.UNSET``)."""

    def ddl(self) -> str:
        parts = [quote(self.name), self.type]
        if self.default:
            parts.append(f"DEFAULT {self.default}")
        if self.alias:
            parts.append(f"ALIAS {self.alias}")
        if self.codec:
            parts.append(self.codec)
        return " ".join(parts)


def quote(name: str) -> str:
    """A column or tuple element name as ClickHouse prints it (backquoted when needed)."""
    if name.isidentifier() and name.lower() not in _RESERVED:
        return name
    return f"`{name}`"


_RESERVED = frozenset({"limit", "offset", "partition", "order", "key", "index", "select",
                       "from", "where", "group", "by", "table"})


def _strip_none(t: mi.Type) -> tuple[mi.Type, bool]:
    """``(type, optional)`` of a field type with ``None`` removed."""
    if isinstance(t, mi.UnionType):
        rest = [u for u in t.types if not isinstance(u, mi.NoneType)]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {t}")
        return rest[0], len(rest) < len(t.types)
    return t, False


def _may_be_unset(f: mi.Field) -> bool:
    """A field typed ``X | UnsetType``: msgspec reports it optional without a default."""
    return not f.required and f.default is msgspec.NODEFAULT and \
        f.default_factory is msgspec.NODEFAULT


def _nullable(ch: str, optional: bool) -> str:
    if not optional:
        return ch
    if ch.startswith("LowCardinality("):
        return f"LowCardinality(Nullable({ch[len('LowCardinality('):-1]}))"
    return f"Nullable({ch})"


def _scalar(name: str, t: mi.Type) -> tuple[str, Kind] | None:
    """The ClickHouse type and kind of a scalar field type, or None if not a scalar."""
    if isinstance(t, mi.IntType):
        return ("DateTime64(9, 'UTC')", "ts") if is_time(name) else ("Int64", "int")
    if isinstance(t, mi.FloatType):
        return "Float64", "float"
    if isinstance(t, mi.BoolType):
        return "Bool", "bool"
    if isinstance(t, mi.StrType):
        return ("String", "str") if name in HIGH_CARDINALITY else ("LowCardinality(String)",
                                                                   "str")
    if isinstance(t, mi.LiteralType):
        if not all(isinstance(v, str) for v in t.values):
            raise TypeError(f"{name}: only string literals are supported")
        return "LowCardinality(String)", "str"
    return None


def _codec(name: str, kind: Kind, ch: str) -> str:
    if kind == "ts":
        return "CODEC(DoubleDelta, ZSTD(1))" if name == "ts_event" else "CODEC(Delta, ZSTD(1))"
    if kind == "float":
        return "CODEC(Gorilla, ZSTD(1))"
    if kind == "int":
        return "CODEC(T64, ZSTD(1))"
    if kind == "str" and "LowCardinality" not in ch:
        return "CODEC(ZSTD(1))"
    if kind in ("map", "strs", "records", "json"):
        return JSON_CODEC
    return ""


def _map_value(t: mi.Type) -> tuple[str, str]:
    """The ClickHouse type and kind of a map's value type."""
    inner, optional = _strip_none(t)
    if isinstance(inner, mi.FloatType):
        return ("Nullable(Float64)", "nfloat") if optional else ("Float64", "float")
    if isinstance(inner, mi.StrType) and not optional:
        return "String", "str"
    if isinstance(inner, mi.BoolType) and not optional:
        return "Bool", "bool"
    raise TypeError(f"unsupported map value type {t}")


def _is_scalar_record(st: mi.StructType) -> bool:
    """A record whose fields are scalars or such records (flattened into columns)."""
    for f in st.fields:
        t, _ = _strip_none(f.type)
        if isinstance(t, mi.StructType):
            if not _is_scalar_record(t):
                return False
        elif _scalar(f.name, t) is None:
            return False
    return True


def _record_fields(st: mi.StructType, where: str) -> tuple[Column, ...]:
    """The element fields of an ``Array(Tuple(...))`` column (scalars only)."""
    out = []
    for f in st.fields:
        t, optional = _strip_none(f.type)
        sc = _scalar(f.name, t)
        if sc is None:
            raise TypeError(f"{where}.{f.name}: records in arrays hold scalars only")
        ch, kind = sc
        out.append(Column(f.name, _nullable(ch, optional or not f.required), kind, (f.name,),
                          nullable=optional or not f.required))
    return tuple(out)


def _columns_of(st: mi.StructType, prefix: str, path: tuple[str, ...], optional_parent: bool
                ) -> list[Column]:
    out: list[Column] = []
    for f in st.fields:
        t, optional = _strip_none(f.type)
        unset = _may_be_unset(f)
        name = f"{prefix}{f.name}"
        fpath = (*path, f.name)
        opt = optional or optional_parent
        sc = _scalar(f.name, t)
        if sc is not None:
            ch, kind = sc
            out.append(Column(name, _nullable(ch, opt), kind, fpath, nullable=opt,
                              codec=_codec(f.name, kind, ch),
                              unset=UNSET_DEFAULTS.get(f.name) if unset else None))
            if unset and f.name not in UNSET_DEFAULTS:
                raise TypeError(f"{name}: an UNSET-able field needs a documented default")
        elif isinstance(t, mi.DictType):
            if not isinstance(t.key_type, mi.StrType):
                raise TypeError(f"{name}: map keys must be strings")
            vt, vkind = _map_value(t.value_type)
            out.append(Column(name, f"Map(LowCardinality(String), {vt})", "map", fpath,
                              codec=JSON_CODEC, value=vkind))
        elif isinstance(t, mi.VarTupleType):
            item, item_opt = _strip_none(t.item_type)
            if isinstance(item, mi.StrType) and not item_opt:
                out.append(Column(name, "Array(String)", "strs", fpath, codec=JSON_CODEC))
            elif isinstance(item, mi.StructType) and not item_opt:
                sub = _record_fields(item, name)
                inner = ", ".join(f"{quote(c.name)} {c.type}" for c in sub)
                out.append(Column(name, f"Array(Tuple({inner}))", "records", fpath,
                                  codec=JSON_CODEC, fields=sub))
            else:
                raise TypeError(f"{name}: unsupported tuple item type {t.item_type}")
        elif isinstance(t, mi.StructType):
            if _is_scalar_record(t):
                out.extend(_columns_of(t, f"{name}_", fpath, opt))
            else:
                out.append(Column(name, "String", "json", fpath, codec=JSON_CODEC))
        else:
            raise TypeError(f"{name}: unsupported field type {t}")
    return out


def message_columns(schema: type[msgspec.Struct]) -> tuple[Column, ...]:
    """The columns a message type becomes (without ``job``, ``sq_id``, ``ingested_at``)."""
    info = mi.type_info(schema)
    assert isinstance(info, mi.StructType)
    return tuple(_columns_of(info, "", (), False))


JOB = Column("job", "LowCardinality(String)", "meta", ())
SQ_ID = Column("sq_id", "String", "meta", (), codec="CODEC(ZSTD(1))")
SEQ = Column("seq", "UInt64", "meta", (),
             alias="toUInt64OrZero(substringIndex(sq_id, ':', -1))")
"""The position ``n`` of ``sq_id`` as a number (emission order on the topic)."""
INGESTED_AT = Column("ingested_at", "DateTime('UTC')", "meta", (), default="now()",
                     codec="CODEC(Delta, ZSTD(1))")


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table: its topic, columns, sorting key and layout."""

    topic: str
    key: tuple[str, ...]
    """Sorting key between ``job`` and ``sq_id`` (what analysts filter and group by)."""
    partition_by_month: bool = True
    indexes: tuple[str, ...] = ()
    """Columns with a bloom-filter skip index (point lookups by id)."""
    ticks_ttl: bool = False
    """The raw ticks: dropped after a retention (``ingested_at``-based, configurable)."""
    id_from_source: bool = False
    """``sq_id`` is the dead letter's source coordinate, as on the live path."""

    @property
    def name(self) -> str:
        return table_name(self.topic)

    @property
    def schema(self) -> type[msgspec.Struct]:
        return CATALOG[self.topic].schema

    @property
    def message_columns(self) -> tuple[Column, ...]:
        return _message_columns(self.topic)

    @property
    def columns(self) -> tuple[Column, ...]:
        """Every column, in table order (``seq`` is an alias: not for dead letters, whose id
        is a source coordinate)."""
        seq = () if self.id_from_source else (SEQ,)
        return (JOB, SQ_ID, *seq, *self.message_columns, INGESTED_AT)

    @property
    def inserted(self) -> tuple[Column, ...]:
        """The columns the sink sends (the server fills defaults and computes aliases)."""
        return tuple(c for c in self.columns if not (c.default or c.alias))

    @property
    def order_by(self) -> tuple[str, ...]:
        return ("job", *self.key, "sq_id")

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def check(self) -> None:
        """Keys name non-nullable columns; indexes name columns (raises ValueError)."""
        for k in self.order_by:
            c = self.column(k)
            if c.nullable or c.kind in ("map", "strs", "records", "json"):
                raise ValueError(f"{self.name}: sorting key column {k} must be a plain value")
        for i in self.indexes:
            self.column(i)
        if self.partition_by_month and self.column("ts_event").nullable:
            raise ValueError(f"{self.name}: cannot partition by a nullable ts_event")


_CACHE: dict[str, tuple[Column, ...]] = {}


def _message_columns(topic: str) -> tuple[Column, ...]:
    cols = _CACHE.get(topic)
    if cols is None:
        cols = _CACHE[topic] = message_columns(CATALOG[topic].schema)
    return cols


def table_name(topic: str) -> str:
    """``orders.intents`` → ``orders_intents``."""
    return topic.replace(".", "_")


TABLES: tuple[TableSpec, ...] = (
    TableSpec(tn.MD_TICKS, ("symbol", "ts_event"), ticks_ttl=True),
    TableSpec(tn.MD_TICKS_DLQ, ("reason",), partition_by_month=False, id_from_source=True),
    TableSpec(tn.MD_TICKS_LATE, ("tick_symbol", "ts_event")),
    TableSpec(tn.MD_BARS, ("symbol", "timeframe", "ts_event")),
    TableSpec(tn.FEATURES, ("symbol", "timeframe", "ts_event")),
    TableSpec(tn.PREDICTIONS, ("symbol", "ts_event", "model"), indexes=("decision_id",)),
    TableSpec(tn.REGIMES, ("symbol", "ts_event")),
    TableSpec(tn.SIGNALS, ("symbol", "ts_event"), indexes=("decision_id",)),
    TableSpec(tn.ORDERS_INTENTS, ("account", "symbol", "ts_event"), indexes=("decision_id",)),
    TableSpec(tn.ORDERS, ("account", "symbol", "ts_event"),
              indexes=("decision_id", "client_order_id")),
    TableSpec(tn.RISK_REJECTS, ("account", "symbol", "ts_event"), indexes=("decision_id",)),
    TableSpec(tn.FILLS, ("account", "symbol", "ts_event"), indexes=("client_order_id",)),
    TableSpec(tn.POSITIONS, ("account", "symbol", "ts_event")),
    TableSpec(tn.AUDIT_DECISIONS, ("symbol", "ts_event"), indexes=("decision_id",)),
    TableSpec(tn.MODELS_UPDATES, ("model_id", "ts_event")),
    TableSpec(tn.CONTROL, ("account", "ts_event")),
    TableSpec(tn.CONTROL_APPLIED, ("account", "ts_event")),
    TableSpec(tn.VENUE_REPORTS, ("account", "symbol", "ts_event"),
              indexes=("client_order_id",)),
    TableSpec(tn.ORDERS_CANCELS, ("account", "symbol", "ts_event"),
              indexes=("client_order_id",)),
)
"""Every public topic but ``md.ticks.raw`` (untyped venue input; normalize's DLQ keeps what
it rejects) — ``control`` is filled by the Kafka ingest only (runs apply commands, recorded on
``control.applied``)."""

BY_TOPIC: dict[str, TableSpec] = {t.topic: t for t in TABLES}


def table(topic: str) -> TableSpec:
    try:
        return BY_TOPIC[topic]
    except KeyError:
        raise KeyError(f"no ClickHouse table for topic {topic!r}") from None


def describe(spec: TableSpec) -> dict[str, Any]:
    """A plain summary (for docs and ``clickhouse init``'s report)."""
    return {"table": spec.name, "topic": spec.topic, "order_by": list(spec.order_by),
            "columns": [c.name for c in spec.columns]}
