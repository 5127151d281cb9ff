"""The dead-letter contract: the ``md.ticks.dlq`` topic name and every reason code it carries.

One list for every producer (normalize, the columnar accelerator, bar files), so a consumer
can switch on a closed set of codes. ``docs/normalize.md`` explains each code; adding one is a
contract change (append, never rename).
"""

from __future__ import annotations

from enum import StrEnum

from topics.catalog import topic

DLQ_TOPIC = topic("md.ticks.dlq").name


class DlqReason(StrEnum):
    """Reason codes of ``DeadLetter.reason``."""

    # -- tick records (normalize), in check order
    BAD_ENCODING = "BAD_ENCODING"  # bytes that are not UTF-8 (read as U+FFFD)
    BAD_JSON = "BAD_JSON"  # payload looks like JSON but does not parse
    BAD_SCHEMA = "BAD_SCHEMA"  # valid JSON that is not a RawTick object (wrong type, array...)
    BAD_CSV = "BAD_CSV"  # CSV line with the wrong number of cells (or unparseable quoting)
    MISSING_FIELD = "MISSING_FIELD"  # symbol (without default), price or size absent
    BAD_TIMESTAMP = "BAD_TIMESTAMP"  # ts missing, unparseable or out of the int64 ns range
    BAD_PRICE = "BAD_PRICE"  # price not a number, NaN, inf, zero or negative
    BAD_SIZE = "BAD_SIZE"  # size not a number, NaN, inf or negative (zero is fine)
    EMPTY_SYMBOL = "EMPTY_SYMBOL"  # symbol present but blank
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"  # symbol not in the configured instrument list
    BAD_QUOTE = "BAD_QUOTE"  # bid/ask present but not a number, non-finite or negative
    CROSSED_QUOTE = "CROSSED_QUOTE"  # bid > ask
    IMPLAUSIBLE_TIME = "IMPLAUSIBLE_TIME"  # too far ahead of the stream's watermark
    STALE_TRADE_ID = "STALE_TRADE_ID"  # trade id older than the dedupe window: uncheckable
    DUPLICATE = "DUPLICATE"  # venue+symbol+trade_id already seen within the dedupe window
    INTERNAL = "INTERNAL"  # a bug in normalize; the record is kept rather than lost
    # -- bar files (``--bars``)
    BAD_BAR = "BAD_BAR"  # unparseable row, bad number, or OHLC inconsistent beyond tolerance
    DUPLICATE_BAR = "DUPLICATE_BAR"  # same symbol and start as an earlier bar
    UNSORTED_BAR = "UNSORTED_BAR"  # starts before an earlier bar of its symbol
    # -- Kafka records (the live path)
    BAD_HEADER = "BAD_HEADER"  # a source record without readable sq.seq / sq.kind headers
    UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"  # sq.schema missing or a version this code does not read
    BAD_CONTROL = "BAD_CONTROL"  # a control record whose value is not a Control message


__all__ = ["DLQ_TOPIC", "DlqReason"]
