"""One JSON encoding for every topic, on Kafka and in the local runner's topic files.

msgspec encodes struct fields in declaration order and floats in shortest round-trip form,
so the same message is the same bytes on every runtime: the basis of the parity guarantee.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from topics.catalog import topic

_encoder = msgspec.json.Encoder()


def encode(value: msgspec.Struct) -> bytes:
    """Encode a message value as compact JSON bytes."""
    return _encoder.encode(value)


def encode_many(values: list[msgspec.Struct]) -> bytes:
    """Encode messages as newline-terminated JSON lines (the topic-file format)."""
    buf = bytearray()
    for v in values:
        _encoder.encode_into(v, buf, len(buf))
        buf += b"\n"
    return bytes(buf)


@cache
def _decoder(schema: type[Any]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(schema)


def decode(topic_name: str, data: bytes | str) -> Any:
    """Decode a value of ``topic_name``; raises ``msgspec.ValidationError`` on bad input."""
    return _decoder(topic(topic_name).schema).decode(data)


def json_schema(topic_name: str) -> dict[str, Any]:
    """JSON Schema (2020-12) of a topic's values, for consumers in other languages."""
    spec = topic(topic_name)
    schema: dict[str, Any] = msgspec.json.schema(spec.schema)
    schema["$comment"] = (
        f"streamquant topic {spec.name}; key={spec.key}; ts_event and ts_* are integer "
        "nanoseconds since the Unix epoch (UTC)"
    )
    return schema
