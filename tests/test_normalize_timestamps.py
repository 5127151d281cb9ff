"""Timestamp parsing: every accepted spelling lands on the same int ns UTC as the references.

References: ``datetime``/``zoneinfo`` (fold=0) computed with exact integer arithmetic, and
pandas (an independent parser with its own tz database handling).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from operators.domain.timeparse import NAT, TimestampError, TimestampParser
from operators.normalize import NormalizeConfig

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def exact_ns(dt: datetime) -> int:
    """Reference: exact ns of an aware datetime (no float round trip)."""
    d = dt - EPOCH
    return (d.days * 86_400 + d.seconds) * 10**9 + d.microseconds * 1000


def zoneinfo_ns(naive_text: str, tz: str, extra_ns: int = 0) -> int:
    """Reference: naive text read in ``tz`` with fold=0, as datetime/zoneinfo define it."""
    dt = datetime.fromisoformat(naive_text).replace(tzinfo=ZoneInfo(tz), fold=0)
    return exact_ns(dt) + extra_ns


@pytest.mark.parametrize(
    "text",
    [
        "2013-09-01T17:00:00.083-05:00",
        "2013-09-01 17:00:00+02:00",
        "2013-09-01T17:00:00.123456789Z",
        "2013-09-01T17:00:00z",
        "2013-09-01T17:00:00.5+0530",
        "2024-02-29T23:59:59.999999999-11:00",
        "2013-09-01T17:00:00+02:00",  # fromisoformat fallback shapes below
        "2013-09-01T17:00+02:00",
        "20130901T170000Z",
    ],
)
def test_iso_with_offset_is_taken_as_given_whatever_the_configured_zone(text: str) -> None:
    expected = pd.Timestamp(text).value
    assert TimestampParser().parse(text) == expected
    assert TimestampParser("America/Chicago").parse(text) == expected
    assert TimestampParser("Asia/Kolkata").parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2013-09-01 17:00:00.083",
        "2013-09-01T17:00:00",
        "2013-09-01 17:00:00.1",
        "2013-09-01 17:00:00.123456789",
        "2013-09-01 17:00:00.1234567891",  # digits past ns are truncated, like pandas does
        "1999-12-31 23:59:59.999",
        "2013-09-01",
        "2013-09-01T17:00",
    ],
)
def test_naive_text_is_utc_without_a_zone_and_local_time_with_one(text: str) -> None:
    assert TimestampParser().parse(text) == pd.Timestamp(text).value
    local = TimestampParser("America/Chicago").parse(text)
    assert local == pd.Timestamp(text).tz_localize("America/Chicago").value
    frac_ns = pd.Timestamp(text).nanosecond  # zoneinfo only carries microseconds
    assert local == zoneinfo_ns(text, "America/Chicago", frac_ns)


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        (1_378_072_800, "s"),
        (9_000_000_000, "s"),  # year 2255: seconds up to the int64 ns limit
        (100_000_000_000, "ms"),  # the smallest ms value: 1973
        (1_378_072_800_083, "ms"),
        (9_000_000_000_000, "ms"),
        (100_000_000_000_000, "us"),
        (1_378_072_800_083_123, "us"),
        (9_000_000_000_000_000, "us"),
        (100_000_000_000_000_000, "ns"),
        (1_378_072_800_083_123_456, "ns"),
        (0, "s"),
        (-86_400, "s"),
    ],
)
def test_epoch_numbers_take_their_unit_from_their_magnitude(value: int, unit: str) -> None:
    expected = pd.Timestamp(value, unit=unit).value
    p = TimestampParser("America/Chicago")  # a zone never applies to epoch numbers
    assert p.parse(value) == expected
    assert p.parse(str(value)) == expected
    assert p.parse(f" {value} ") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_378_072_800.083, 1_378_072_800_083_000_000),  # .083 s as written, not binary
        (1_378_072_800_083.5, 1_378_072_800_083_500_000),
        ("1378072800.000000001", 1_378_072_800_000_000_001),
        ("1.3780728e9", 1_378_072_800_000_000_000),
        ("1378072800083.0000005", 1_378_072_800_083_000_000),  # half-even to whole ns
        ("1378072800083.0000015", 1_378_072_800_083_000_002),
    ],
)
def test_fractional_epochs_are_exact_to_the_nanosecond(value: object, expected: int) -> None:
    assert TimestampParser().parse(value) == expected


def test_fractional_epoch_agrees_with_pandas_to_the_microsecond() -> None:
    rng = np.random.default_rng(7)
    for ms in rng.integers(10**12, 2 * 10**12, size=200).tolist():
        x = ms / 1000.0 + 0.5  # seconds with a fraction
        ours = TimestampParser().parse(x)
        ref = pd.Timestamp(x, unit="s").value
        assert abs(ours - ref) < 1000, (x, ours, ref)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "yesterday",
        "2013-02-30 10:00:00",
        "2013-09-01 24:00:00",
        "2013-09-01 17:60:00",
        "2013-09-01 17:00:61",
        "2013-13-01 17:00:00",
        "2013-09-01 17:00:00+25:00",
        "nan",
        "inf",
        "1e400",
        "0x10",
        "１２３",  # full-width digits are not ASCII digits
        "9" * 25,
        99_999_999_999,  # read as seconds: past year 2262, beyond int64 ns
        99_999_999_999_999,  # ms, likewise
        "2013-09-01 17:00:00.1.5",
        "x" * 1000,
        float("nan"),
        float("inf"),
        10**30,
        True,
        None,
        [2013],
    ],
)
def test_unparseable_values_raise_timestamp_error(bad: object) -> None:
    with pytest.raises(TimestampError):
        TimestampParser("America/Chicago").parse(bad)


def _dst_day_minutes(day: str) -> list[str]:
    start = datetime.fromisoformat(f"{day}T00:00:00")
    return [
        f"{(start + timedelta(minutes=m)).isoformat(sep=' ')}.{(m * 7919) % 1000:03d}"
        for m in range(0, 5 * 60)
    ]


@pytest.mark.parametrize("day", ["2013-03-10", "2013-11-03", "2024-03-10", "2024-11-03"])
def test_chicago_dst_transition_days_match_zoneinfo_fold0_and_pandas(day: str) -> None:
    texts = _dst_day_minutes(day)  # 00:00 → 04:59 local, across the 02:00 transition
    p = TimestampParser("America/Chicago")
    ours = [p.parse(t) for t in texts]
    ref = [zoneinfo_ns(t[:19], "America/Chicago", int(t[20:]) * 10**6) for t in texts]
    assert ours == ref
    # pandas: ambiguous=True picks the DST (first) reading; a nonexistent time shifted
    # forward by the 1 h gap equals reading it with the pre-transition offset (fold=0).
    local = pd.to_datetime(pd.Series(texts))
    utc = local.dt.tz_localize(
        "America/Chicago", ambiguous=np.ones(len(texts), dtype=bool), nonexistent=pd.Timedelta("1h")
    )
    assert ours == utc.astype("int64").tolist()
    assert p.parse_many(texts).tolist() == ours


def test_documented_dst_choices_ambiguous_first_and_nonexistent_pre_transition() -> None:
    p = TimestampParser("America/Chicago")
    # fall back: 01:30 happens twice; fold=0 is the first one, on CDT (UTC-5)
    assert p.parse("2013-11-03 01:30:00") == pd.Timestamp("2013-11-03T06:30:00Z").value
    assert p.parse("2013-11-03 02:30:00") == pd.Timestamp("2013-11-03T08:30:00Z").value
    # spring forward: 02:30 does not exist; read with the pre-transition CST (UTC-6)
    assert p.parse("2013-03-10 02:30:00") == pd.Timestamp("2013-03-10T08:30:00Z").value
    assert p.parse("2013-03-10 03:30:00") == pd.Timestamp("2013-03-10T08:30:00Z").value


def test_half_hour_dst_shift_inside_an_hour_matches_zoneinfo() -> None:
    # Lord Howe Island moves 30 minutes at 02:00: the offset changes inside the local hour.
    tz = "Australia/Lord_Howe"
    texts = [
        f"2024-10-06 {h:02d}:{m:02d}:{s:02d}" for h in (1, 2, 3) for m in range(60) for s in (0, 59)
    ]
    texts += [f"2024-04-07 {h:02d}:{m:02d}:30" for h in (1, 2) for m in range(60)]
    p = TimestampParser(tz)
    ours = [p.parse(t) for t in texts]
    assert ours == [zoneinfo_ns(t, tz) for t in texts]
    assert TimestampParser(tz).parse_many(texts).tolist() == ours


def test_the_hour_memo_never_changes_results(emini_ticks_path: Path) -> None:
    texts = pd.read_csv(emini_ticks_path, usecols=["DateTime"])["DateTime"].tolist()[::97]
    small = TimestampParser("America/Chicago", max_cached_hours=1)
    big = TimestampParser("America/Chicago")
    assert [small.parse(t) for t in texts] == [big.parse(t) for t in texts]


def test_emini_timestamps_match_pandas_chicago_localization(emini_ticks_path: Path) -> None:
    texts = pd.read_csv(emini_ticks_path, usecols=["DateTime"], dtype=str)["DateTime"]
    ref = (
        pd.to_datetime(texts, format="%Y-%m-%d %H:%M:%S.%f")
        .dt.tz_localize("America/Chicago")
        .astype("int64")
        .to_numpy()
    )
    p = TimestampParser("America/Chicago")
    scalar = np.array([p.parse(t) for t in texts.tolist()], dtype=np.int64)
    np.testing.assert_array_equal(scalar, ref)
    np.testing.assert_array_equal(
        TimestampParser("America/Chicago").parse_many(texts.tolist()), ref
    )


def test_vectorized_parse_equals_scalar_parse_on_messy_input() -> None:
    rng = np.random.default_rng(11)
    good = [
        "2013-09-01 17:00:00.083",
        "2013-09-01T17:00:00.083",
        "2013-09-01 17:00:00",
        "2013-09-01 17:00:00.123456789",
        "2024-11-03 01:30:00.5",
        "2024-03-10 02:30:00.25",
        "1700-01-01 00:00:00.000",
        "2200-12-31 23:59:59.999",
        "1969-12-31 23:59:59.9",
        "2013-09-01 17:00:00.083Z",
        "2013-09-01 17:00:00+01:00",
        "1378072800083",
        " 2013-09-01 17:00:00.083",
        "2013-09-01x17:00:00.000",  # fromisoformat takes any separator character
        "2013-09-01 17:00:00,000",  # and a decimal comma
    ]
    bad = [
        "",
        "2013-02-29 00:00:00.000",
        "2013-09-01 24:00:00.000",
        "2013-09-01 17:60:00.000",
        "2013-0a-01 17:00:00.000",
        "１０１３-09-01 17:00:00.000",
        "0000-01-01 00:00:00.000",
        "1600-01-01 00:00:00.000",
        "9999-12-31 23:59:59.999",
        "garbage",
    ]
    texts = [str(x) for x in rng.choice(np.array(good + bad, dtype=object), size=3000)]
    for tz in (None, "America/Chicago", "Australia/Lord_Howe"):
        p = TimestampParser(tz)
        scalar = []
        for t in texts:
            try:
                scalar.append(p.parse(t) if t.strip() else NAT)
            except TimestampError:
                scalar.append(NAT)
        assert TimestampParser(tz).parse_many(texts).tolist() == scalar
    assert (TimestampParser().parse_many(bad) == NAT).all()
    assert (TimestampParser().parse_many(good) != NAT).all()


def test_config_rejects_an_unknown_zone_at_construction() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        NormalizeConfig(tz="America/Chicgo")
    with pytest.raises(ValueError):
        NormalizeConfig(tz="")
    with pytest.raises(ValueError):
        TimestampParser("Not/AZone")
    assert NormalizeConfig(tz="America/Chicago").tz == "America/Chicago"
