"""Event-time tumbling bars: durations and the open-bar accumulator.

A bar covers the half-open interval ``[start, start + bar_ns)`` with
``start = ts - ts % bar_ns``, aligned to the Unix epoch in UTC (so daily bars run midnight to
midnight UTC). Prices fold in arrival order: ``open`` is the first tick to arrive, ``close`` the
last, and ``volume`` / ``sum(price * size)`` are summed left to right, so the per-event path
and the columnar accelerator (``jobs.accel.bar_fold``) produce the same floating-point bits.
"""

from __future__ import annotations

import re

import msgspec

NS_PER_UNIT: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_LABEL_UNITS: tuple[tuple[str, int], ...] = (
    ("d", NS_PER_UNIT["d"]),
    ("h", NS_PER_UNIT["h"]),
    ("m", NS_PER_UNIT["m"]),
    ("s", NS_PER_UNIT["s"]),
    ("ms", NS_PER_UNIT["ms"]),
    ("us", NS_PER_UNIT["us"]),
    ("ns", 1),
)
_DURATION = re.compile(r"^\s*(\d+)\s*([a-zµ]+)\s*$")
_UNITS_HELP = "ns, us, ms, s, m (or min), h, d"


def parse_duration(value: str | int) -> int:
    """A bar length in integer nanoseconds from ``"1m"``, ``"5m"``, ``"1h"``, ``"1d"``... or ns.

    A bare number without a unit is rejected rather than guessed (seconds? nanoseconds?).
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"duration must be a string like '1m' or an int of ns, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"duration must be a positive number of nanoseconds, got {value}")
        return value
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(
            f"bad duration {value!r}: expected <positive integer><unit> such as '1m', '5m', "
            f"'1h' or '1d', with unit one of {_UNITS_HELP}"
        )
    amount, unit = int(m.group(1)), m.group(2)
    if unit not in NS_PER_UNIT:
        raise ValueError(f"bad duration {value!r}: unknown unit {unit!r} (use {_UNITS_HELP})")
    if amount <= 0:
        raise ValueError(f"bad duration {value!r}: must be positive")
    return amount * NS_PER_UNIT[unit]


def format_duration(ns: int) -> str:
    """The shortest label for a duration: 60e9 ns -> ``"1m"``, 90e9 -> ``"90s"``."""
    if ns <= 0:
        raise ValueError(f"duration must be positive, got {ns}")
    for unit, size in _LABEL_UNITS:
        if ns % size == 0:
            return f"{ns // size}{unit}"
    raise AssertionError("unreachable: every integer is a multiple of 1 ns")


def bar_start(ts: int, bar_ns: int) -> int:
    """Start of the bar holding ``ts`` (floor alignment, also for times before 1970)."""
    return ts - ts % bar_ns


class OpenBar(msgspec.Struct, array_like=True):
    """A bar still collecting ticks; ``pv`` is ``sum(price * size)`` for the VWAP."""

    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    pv: float
    count: int
    first_line: int = -1  # source line (or offset) of the bar's first and last tick; -1: none
    last_line: int = -1

    @classmethod
    def first(cls, start: int, price: float, size: float, line: int = -1) -> OpenBar:
        return cls(start, price, price, price, price, size, price * size, 1, line, line)

    def add(self, price: float, size: float, line: int = -1) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        self.close = price
        self.volume += size
        self.pv += price * size
        self.count += 1
        self.last_line = line
