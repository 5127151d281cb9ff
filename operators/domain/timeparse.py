"""Timestamp parsing to integer nanoseconds UTC, for untrusted tick input.

Accepted inputs (everything else raises ``TimestampError``):

- ISO-8601 strings with an offset or ``Z``: taken as given.
- Naive ISO-8601 strings, including ``"YYYY-MM-DD HH:MM:SS.fff"``: local time in the configured
  IANA zone, or UTC when no zone is configured.
- Epoch numbers (``int``/``float``, or strings that spell a number): the unit is chosen by
  magnitude of the absolute value: ``< 1e11`` seconds, ``< 1e14`` ms, ``< 1e17`` µs, else ns.
  Fractions are rounded half-even to whole nanoseconds; floats are read through their shortest
  ``repr`` so ``1378054800.083`` means .083 s exactly, not its binary approximation.

DST rule for naive local times (documented behaviour, the same as ``zoneinfo`` with
``fold=0``): an *ambiguous* wall time (the repeated hour when clocks fall back) is the first
occurrence, i.e. still on the pre-transition offset; a *nonexistent* wall time (the skipped
hour when clocks spring forward) is read with the pre-transition offset too, so America/Chicago
02:30 on a spring-forward day is 08:30 UTC (= 03:30 CDT).

Speed: the E-mini replay parses 500k naive strings. The fixed shape
``YYYY-MM-DD[T ]HH:MM:SS[.fff...][Z|±HH:MM]`` is parsed (fractions to the ns; further
digits truncated) by one regex, and the UTC instant of each
local hour start is memoized per (date, hour); the rest is integer arithmetic. A text in the
minute of the previous fast-shape naive text skips the regex (its ``SS[.f...]`` is checked and
added to that minute's instant). An hour whose
offset changes inside it (a transition that is not on the hour, e.g. Australia/Lord_Howe's
half-hour shift) is never memoized: its values go through ``zoneinfo`` one by one. Other ISO
spellings fall back to ``datetime.fromisoformat`` (microsecond precision).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

NAT = -(2**63)
"""Sentinel for "no valid timestamp" in int64 columns (numpy's NaT has the same bits)."""

TS_MAX = 2**63 - 1
"""Exclusive upper bound of a valid timestamp (``END_OF_STREAM`` is reserved for runtimes)."""

_NS = 1_000_000_000
_HOUR_NS = 3600 * _NS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FRAC_SCALE = tuple(10 ** (9 - k) if k <= 9 else 0 for k in range(10))
_MAX_LEN = 64
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_END_OF_HOUR = timedelta(minutes=59, seconds=59, microseconds=999_999)

_FAST = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)


class TimestampError(ValueError):
    """The value is not a timestamp this module accepts."""


def load_zone(tz: str | None) -> tzinfo | None:
    """Resolve an IANA zone name (``None`` means UTC); raise ``ValueError`` if unknown."""
    if tz is None:
        return None
    if not isinstance(tz, str) or not tz or tz != tz.strip():
        raise ValueError(f"tz must be an IANA zone name, got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}: {exc}") from None


def to_ns(dt: datetime) -> int:
    """Exact integer nanoseconds since the epoch of an aware datetime."""
    return _td_ns(dt - _EPOCH)


def _td_ns(d: timedelta) -> int:
    return (d.days * 86_400 + d.seconds) * _NS + d.microseconds * 1000


def _checked(ns: int, text: object) -> int:
    if not NAT < ns < TS_MAX:
        raise TimestampError(f"timestamp {text!r} is outside the int64 nanosecond range")
    return ns


def epoch_to_ns(value: int | Decimal, text: object = None) -> int:
    """Scale an epoch number to ns by magnitude (< 1e11 s, < 1e14 ms, < 1e17 µs, else ns)."""
    mag: int | Decimal = -value if value < 0 else value
    if mag >= 10**19:
        raise TimestampError(f"timestamp {value if text is None else text!r} is out of range")
    if mag < 100_000_000_000:
        scale = _NS
    elif mag < 100_000_000_000_000:
        scale = 1_000_000
    elif mag < 100_000_000_000_000_000:
        scale = 1000
    else:
        scale = 1
    if isinstance(value, int):
        ns = value * scale
    else:
        ns = int((value * scale).to_integral_value(rounding=ROUND_HALF_EVEN))
    return _checked(ns, value if text is None else text)


class TimestampParser:
    """Parses tick timestamps to int ns UTC for one configured zone.

    Holds a bounded memo of local-hour starts (a pure cache: the same input always gives the
    same output, so it never affects determinism). Not thread-safe; one per operator instance.
    """

    __slots__ = ("_hours", "_last_ns", "_last_text", "_max_hours", "_min_ns", "_min_text",
                 "_utc_hours", "zone")

    def __init__(self, tz: str | None = None, max_cached_hours: int = 65_536) -> None:
        self.zone = load_zone(tz)
        self._hours: dict[tuple[str, str], int | None] = {}
        self._utc_hours: dict[tuple[str, str], int] = {}
        self._max_hours = max_cached_hours
        self._last_text: str | None = None  # one-entry memo; None never equals a text
        self._last_ns = NAT
        # the minute of the last naive fast-shape text, ``YYYY-MM-DD HH:MM:``, and its ns:
        # ticks of one minute differ only in seconds and fraction ("\0" starts no text)
        self._min_text = "\x00"
        self._min_ns = NAT

    def parse(self, value: object) -> int:
        """Parse one timestamp (str, int or float) to int ns UTC; raise ``TimestampError``."""
        if type(value) is str:
            return self.parse_str(value)
        if type(value) is int:
            return epoch_to_ns(value)
        if type(value) is float:
            if not math.isfinite(value):  # type: ignore[arg-type]
                raise TimestampError(f"timestamp {value!r} is not finite")
            return epoch_to_ns(Decimal(repr(value)), value)
        raise TimestampError(f"timestamp {value!r} has unsupported type {type(value).__name__}")

    def parse_str(self, text: str) -> int:
        if text == self._last_text:  # consecutive ticks often share a timestamp
            return self._last_ns
        if text.startswith(self._min_text):  # the same minute: ``SS[.f...]`` is new
            n = len(text)
            ss = text[17:19]
            frac = text[20:29]
            if ((n == 19 or (n > 20 and text[19] == "." and n <= _MAX_LEN
                             and text[20:].isdigit()))
                    and ss.isdigit() and text.isascii() and int(ss) <= 59):
                ns = self._min_ns + int(ss) * _NS
                if frac:
                    ns += int(frac) * _FRAC_SCALE[len(frac)]
                if NAT < ns < TS_MAX:
                    self._last_text = text
                    self._last_ns = ns
                    return ns
        ns = self._parse_str(text)
        self._last_text = text
        self._last_ns = ns
        return ns

    def _parse_str(self, text: str) -> int:
        s = text.strip()
        if len(s) > _MAX_LEN:
            raise TimestampError(f"timestamp {text[:40]!r}... is too long")
        m = _FAST.fullmatch(s)
        if m is not None:
            date, hh, mm, ss, frac, off = m.groups()
            minute = int(mm)
            second = int(ss)
            if minute > 59 or second > 59:
                raise TimestampError(f"timestamp {text!r} has minute or second out of range")
            within = (minute * 60 + second) * _NS
            if frac is not None:  # digits past the 9th are truncated, as datetime does past µs
                frac = frac[:9]
                within += int(frac) * _FRAC_SCALE[len(frac)]
            if off is None and self.zone is not None:
                key = (date, hh)
                base = self._hours.get(key, NAT)
                if base == NAT:
                    base = self._local_hour(date, hh, text)
                if base is None:
                    return self._exact_local(date, hh, (minute, second, within), text)
                self._min_text = s[:17]
                self._min_ns = base + minute * 60 * _NS
                return _checked(base + within, text)
            base_utc = self._utc_hours.get((date, hh))
            if base_utc is None:
                base_utc = self._utc_hour(date, hh, text)
            ns = base_utc + within
            if off is None:
                self._min_text = s[:17]
                self._min_ns = base_utc + minute * 60 * _NS
            elif off not in ("Z", "z"):
                sign = -1 if off[0] == "-" else 1
                digits = off[1:].replace(":", "")
                oh, om = int(digits[:2]), int(digits[2:])
                if oh > 23 or om > 59:
                    raise TimestampError(f"timestamp {text!r} has a bad UTC offset")
                ns -= sign * (oh * 3600 + om * 60) * _NS
            return _checked(ns, text)
        if _NUMBER.fullmatch(s):
            if _INTEGER.fullmatch(s):
                return epoch_to_ns(int(s), text)
            try:
                return epoch_to_ns(Decimal(s), text)
            except (InvalidOperation, OverflowError):
                raise TimestampError(f"timestamp {text!r} is not a finite number") from None
        return self._fallback(s, text)

    def parse_many(self, texts: Sequence[str]) -> npt.NDArray[np.int64]:
        """Parse many strings at once; ``NAT`` where ``parse`` would raise or the text is blank.

        Strings of the exact fixed shape ``YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}]`` (no spaces, no
        offset, years 1700-2200) are decoded as a byte matrix, one group per string length,
        and shifted by the same per-hour offsets ``parse`` uses; everything else, and any
        hour with an offset change inside it, goes through ``parse`` once per distinct text.
        The result equals ``[parse(t) for t in texts]`` element for element.
        """
        n = len(texts)
        out = np.full(n, NAT, dtype=np.int64)
        todo = np.ones(n, dtype=np.bool_)
        lens = np.fromiter(map(len, texts), dtype=np.int64, count=n)
        for length in np.unique(lens).tolist():
            if length == 19 or 21 <= length <= 29:
                idx = np.flatnonzero(lens == length)
                sub = [texts[i] for i in idx.tolist()] if len(idx) < n else list(texts)
                got = self._fixed_width(sub, length)
                if got is not None:
                    values, ok = got
                    out[idx[ok]] = values[ok]
                    todo[idx[ok]] = False
        rest = np.flatnonzero(todo).tolist()
        if rest:
            memo: dict[str, int] = {}
            for i in rest:
                t = texts[i]
                v = memo.get(t)
                if v is None:
                    v = memo[t] = self._parse_or_nat(t)
                out[i] = v
        return out

    def _parse_or_nat(self, text: object) -> int:
        if text is None or (type(text) is str and not text.strip()):  # type: ignore[attr-defined]
            return NAT
        try:
            return self.parse(text)
        except TimestampError:
            return NAT

    def _fixed_width(
        self, sub: list[str], length: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]] | None:
        try:
            raw = "".join(sub).encode("ascii")
        except UnicodeEncodeError:
            return None
        return self.parse_fixed_bytes(np.frombuffer(raw, dtype=np.uint8).reshape(len(sub), length))

    def parse_fixed_bytes(
        self, b: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Rows of ASCII bytes, all one length (19, or 21 to 29): ``(values, ok)``.

        ``values[i]`` equals ``parse`` of row ``i`` where ``ok[i]``; rows that are not exactly
        ``YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}]`` (or fall in an hour whose offset changes inside
        it) are not ok and must go through ``parse``. A columnar reader hands its cell bytes
        here without making a string per row.
        """
        length = b.shape[1]
        if not (length == 19 or 21 <= length <= 29):
            raise ValueError(f"fixed-width timestamps are 19 or 21-29 bytes, got {length}")
        digit_cols = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, *range(20, length)]
        d = b[:, digit_cols].astype(np.int64) - 48
        ok = ((d >= 0) & (d <= 9)).all(axis=1)
        ok &= (b[:, 4] == 45) & (b[:, 7] == 45) & ((b[:, 10] == 32) | (b[:, 10] == 84))
        ok &= (b[:, 13] == 58) & (b[:, 16] == 58)
        if length > 19:
            ok &= b[:, 19] == 46
        year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
        month = d[:, 4] * 10 + d[:, 5]
        day = d[:, 6] * 10 + d[:, 7]
        hour = d[:, 8] * 10 + d[:, 9]
        minute = d[:, 10] * 10 + d[:, 11]
        second = d[:, 12] * 10 + d[:, 13]
        frac = np.zeros(b.shape[0], dtype=np.int64)
        for j in range(14, d.shape[1]):
            frac = frac * 10 + d[:, j]
        frac *= _FRAC_SCALE[length - 20] if length > 19 else 0
        leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
        dim = _DAYS_IN_MONTH[np.clip(month, 1, 12) - 1] + ((month == 2) & leap)
        ok &= (year >= 1700) & (year <= 2200) & (month >= 1) & (month <= 12)
        ok &= (day >= 1) & (day <= dim) & (hour <= 23) & (minute <= 59) & (second <= 59)
        # days from the civil date (H. Hinnant's algorithm; years here are positive)
        y = year - (month <= 2)
        era = y // 400
        yoe = y - era * 400
        doy = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
        days = era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468
        hour_idx = np.where(ok, days * 24 + hour, 0)
        within = (minute * 60 + second) * _NS + frac
        keys, inverse = np.unique(hour_idx, return_inverse=True)
        bases = np.zeros(len(keys), dtype=np.int64)
        mixed = np.zeros(len(keys), dtype=np.bool_)
        for j, hk in enumerate(keys.tolist()):
            if self.zone is None:
                bases[j] = hk * _HOUR_NS
                continue
            days_j, hh = divmod(hk, 24)
            date = (_EPOCH + timedelta(days=days_j)).strftime("%Y-%m-%d")
            key = (date, f"{hh:02d}")
            base = self._hours.get(key, NAT)
            if base == NAT:
                base = self._local_hour(date, key[1], date)
            if base is None:
                mixed[j] = True
            else:
                bases[j] = base
        ok &= ~mixed[inverse]
        return bases[inverse] + within, ok

    # -- slow paths ----------------------------------------------------------------------
    def _civil(self, date: str, hh: str, text: str, tz: tzinfo) -> datetime:
        try:
            return datetime(int(date[:4]), int(date[5:7]), int(date[8:10]), int(hh), tzinfo=tz)
        except ValueError as exc:
            raise TimestampError(f"timestamp {text!r}: {exc}") from None

    def _utc_hour(self, date: str, hh: str, text: str) -> int:
        ns = to_ns(self._civil(date, hh, text, UTC))
        if len(self._utc_hours) >= self._max_hours:
            self._utc_hours.clear()
        self._utc_hours[(date, hh)] = ns
        return ns

    def _local_hour(self, date: str, hh: str, text: str) -> int | None:
        """UTC ns of the local hour start, or None when the offset changes inside the hour."""
        assert self.zone is not None
        start = self._civil(date, hh, text, self.zone)
        off0 = start.utcoffset()
        off1 = (start + _END_OF_HOUR).utcoffset()
        base: int | None = None
        if off0 == off1 and off0 is not None:
            base = to_ns(start.replace(tzinfo=UTC)) - _td_ns(off0)
        if len(self._hours) >= self._max_hours:
            self._hours.clear()
        self._hours[(date, hh)] = base
        return base

    def _exact_local(self, date: str, hh: str, mse: tuple[int, int, int], text: str) -> int:
        """Per-value zoneinfo lookup for an hour whose offset changes inside it."""
        minute, second, within = mse
        assert self.zone is not None
        local = self._civil(date, hh, text, self.zone).replace(minute=minute, second=second)
        off = local.utcoffset()
        assert off is not None
        naive_ns = to_ns(self._civil(date, hh, text, UTC))
        return _checked(naive_ns + within - _td_ns(off), text)

    def _fallback(self, s: str, text: str) -> int:
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise TimestampError(f"timestamp {text!r} is not ISO-8601 or an epoch number") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.zone if self.zone is not None else UTC)
        try:
            return _checked(to_ns(dt), text)
        except OverflowError:
            raise TimestampError(f"timestamp {text!r} is out of range") from None


def format_ns(ns: int) -> str:
    """ISO-8601 UTC text of an int ns timestamp, for human-readable details and logs."""
    sec, frac = divmod(ns, _NS)
    dt = _EPOCH + timedelta(seconds=sec)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


__all__ = [
    "NAT",
    "TS_MAX",
    "TimestampError",
    "TimestampParser",
    "epoch_to_ns",
    "format_ns",
    "load_zone",
    "to_ns",
]
