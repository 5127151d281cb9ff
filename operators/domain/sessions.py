"""Trading sessions: when the next one starts, for the daily-loss baseline.

A session starts every day at ``start`` local time in ``tz`` (17:00 America/Chicago for CME's
Globex day). The account opens a new session (new start-of-day equity, reduce-only lifted)
at the first trade at or after the boundary.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


def next_session(ts: int, tz: ZoneInfo, start: time) -> tuple[int, str]:
    """The first session boundary after ``ts`` (ns) and the id of the session holding ``ts``.

    The id is the local date of that boundary, the trading day: the session from Sunday
    17:00 CT to Monday 17:00 CT is Monday's.
    """
    local = datetime.fromtimestamp(ts / 1e9, tz)
    boundary = datetime.combine(local.date(), start, tz)
    if local >= boundary:
        boundary = datetime.combine(local.date() + timedelta(days=1), start, tz)
    return int(boundary.timestamp()) * 1_000_000_000, boundary.date().isoformat()
