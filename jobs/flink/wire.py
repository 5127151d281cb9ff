"""The item stream on the wire between Flink operators: one msgpack array per element.

Every item keeps its message as JSON bytes (the topics' one encoding), so a stage decodes only
the messages it consumes, forwards the rest as the bytes it received, and encodes each message
it produces once (its ``OUT`` and ``DELIVER`` items share the bytes). The driver decodes only
the ``OUT`` items it writes. Pickling msgspec structs at every hop cost about four times the
stages' own work on the E-mini chain; this is the cheap form.

Layout: ``[[kind, topic, payload], ...]`` with payload JSON bytes (``SOURCE``, ``OUT``,
``DELIVER``), a list of JSON bytes (``BATCH``), an int (``WATERMARK``, ``HEARTBEAT``) or nil
(``END``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import msgspec

from jobs.core.linear import BATCH, DELIVER, END, OUT, SOURCE, WATERMARK, Item
from operators.contract import END_OF_STREAM
from operators.normalize import RawRecord
from topics import names as tn
from topics.catalog import topic
from topics.serde import decode as decode_topic

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(list[tuple[int, str, Any]]).decode
_json = msgspec.json.Encoder().encode


_decoders: dict[type[Any], Callable[[bytes], Any]] = {}


def _decoder(kind: type[Any]) -> Callable[[bytes], Any]:
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind).decode
    return dec


def source_type(source_topic: str) -> type[Any]:
    """The type of a graph's source records: ``RawRecord`` for raw ticks (normalize's input,
    not the topic's ``RawTick``), else the topic's schema."""
    return RawRecord if source_topic == tn.MD_TICKS_RAW else topic(source_topic).schema


def pack(items: list[Item]) -> bytes:
    """Items whose messages are structs (a source, the driver's injections) on the wire."""
    return encode(items, {})


def unpack(data: bytes, consumed: Collection[str], *, source: type[Any] | None,
           ts_topic: str | None = None) -> tuple[list[Item], dict[int, tuple[Any, ...]]]:
    """The items of an element with the messages of ``consumed`` topics (and, given their
    type, the source records; ``ts_topic``'s ``OUT`` messages) decoded; the second value
    maps each decoded item back to its wire form, to forward it unchanged."""
    decode_source = _decoder(source) if source is not None else None
    items: list[Item] = []
    wire: dict[int, tuple[Any, ...]] = {}
    for raw in _unpack(data):
        kind, topic, payload = raw
        item: Item
        if kind == SOURCE:
            item = (SOURCE, decode_source(payload) if decode_source else payload)
        elif kind == DELIVER and topic in consumed:
            item = (DELIVER, topic, decode_topic(topic, payload))
        elif kind == BATCH and topic in consumed:
            item = (BATCH, topic, [decode_topic(topic, p) for p in payload])
        elif kind == OUT and topic == ts_topic:
            item = (OUT, topic, decode_topic(topic, payload))
        elif kind in (OUT, DELIVER, BATCH):
            item = (kind, topic, payload)
        elif kind == END:
            item = (END,)
        else:
            item = (kind, payload)
        wire[id(item)] = raw
        items.append(item)
    return items, wire


def encode(items: list[Item], wire: dict[int, tuple[Any, ...]]) -> bytes:
    """Items to an element: forwarded ones as received, new messages encoded once each."""
    out: list[tuple[Any, ...]] = []
    cache: dict[int, bytes] = {}

    def js(v: Any) -> bytes:
        if isinstance(v, bytes):
            return v
        b = cache.get(id(v))
        if b is None:
            b = cache[id(v)] = _json(v)
        return b

    for item in items:
        raw = wire.get(id(item))
        if raw is not None:
            out.append(raw)
            continue
        kind = item[0]
        if kind in (OUT, DELIVER):
            out.append((kind, item[1], js(item[2])))
        elif kind == BATCH:
            out.append((kind, item[1], [js(v) for v in item[2]]))
        elif kind == SOURCE:
            out.append((kind, "", js(item[1])))
        elif kind == END:
            out.append((kind, "", None))
        else:
            out.append((kind, "", item[1]))
    return _pack(out)


def out_messages(data: bytes) -> list[tuple[str, bytes]]:
    """The ``OUT`` items of an element: (topic, JSON bytes) in stream order."""
    return [(topic, payload) for kind, topic, payload in _unpack(data) if kind == OUT]


def reached_end(data: bytes) -> bool:
    """Whether the element carries the end of stream (the last stage's final watermark)."""
    return any(kind == WATERMARK and payload == END_OF_STREAM
               for kind, _, payload in _unpack(data))
