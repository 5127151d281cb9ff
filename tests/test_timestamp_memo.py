"""The parser's memos (the last text, the last minute) are pure caches: a text parses to the
same instant, or fails the same way, whatever was parsed before it."""

from __future__ import annotations

import contextlib

import pytest

from operators.domain.timeparse import TimestampError, TimestampParser

# Neighbours that share a second with what came before, and ones that only look like it:
# other fractions, lengths past nine digits, offsets, spaces, non-ASCII digits, DST hours.
TEXTS = [
    "2013-09-01 17:00:00.083", "2013-09-01 17:00:00.5", "2013-09-01 17:00:00.123456789",
    "2013-09-01 17:00:00.1234567891234", "2013-09-01 17:00:00", "2013-09-01 17:00:00.",
    "2013-09-01 17:00:00.7Z", "2013-09-01 17:00:00.7+02:00", "2013-09-01 17:00:00.7 ",
    " 2013-09-01 17:00:00.7", "2013-09-01 17:00:00.\u0662", "2013-09-01 17:00:00.x",
    "2013-09-01T17:00:00.25", "2013-09-01 17:00:01.25", "2013-11-03 01:30:00.5",
    "2013-11-03 01:30:00.75", "2013-03-10 02:30:00.5", "2013-03-10 02:30:00.25",
    "2013-02-30 10:00:00.1", "2013-02-30 10:00:00.2", "2013-09-01 17:00:00." + "1" * 60,
    "2262-04-11 23:47:16.854775807", "2262-04-11 23:47:16.854775808",
    "2013-09-01 17:00:59", "2013-09-01 17:00:60.1", "2013-09-01 17:00:5.1",
    "2013-09-01 17:00:0a.1", "2013-09-01 17:00:\u00b9\u00b2.5", "2013-09-01 17:00:07.25",
]


def _fresh(tz: str | None, text: str) -> int | str:
    try:
        return TimestampParser(tz).parse_str(text)
    except TimestampError as exc:
        return f"error: {exc}"


@pytest.mark.parametrize("tz", [None, "America/Chicago"])
def test_a_text_parses_the_same_after_any_other(tz: str | None) -> None:
    parser = TimestampParser(tz)
    for first in TEXTS:
        for text in TEXTS:
            with contextlib.suppress(TimestampError):
                parser.parse_str(first)
            try:
                got: int | str = parser.parse_str(text)
            except TimestampError as exc:
                got = f"error: {exc}"
            assert got == _fresh(tz, text), (first, text)
