"""Redis connections that fail fast: the pipeline never waits on the cache.

redis-py retries a failed command three times with exponential backoff by default; here a
command fails at once (loopback refuses in microseconds, a silent host is cut off by the
timeouts) and the caller decides when to try again, with its own backoff and warnings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

CONNECT_TIMEOUT_S = 0.5
COMMAND_TIMEOUT_S = 2.0


def connect(url: str, *, timeout_s: float = COMMAND_TIMEOUT_S) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``); connects lazily."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0), health_check_interval=0, client_name="streamquant")


def redact(url: str) -> str:
    """``url`` without its password, for logs and summaries."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query,
                       parts.fragment))


class Backoff:
    """When to try again after failures: 0.1 s doubling to ``cap_s``; reset on success."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.delay_s = 0.0
        self.next_at = 0.0

    def failed(self, now: float | None = None) -> float:
        """Record a failure; the delay until the next attempt."""
        self.delay_s = self.first_s if self.delay_s == 0 else min(self.delay_s * 2, self.cap_s)
        self.next_at = (time.monotonic() if now is None else now) + self.delay_s
        return self.delay_s

    def succeeded(self) -> None:
        self.delay_s = 0.0
        self.next_at = 0.0


class RateLimitedWarning:
    """Warnings on stderr at most once per ``every_s`` (the first always)."""

    def __init__(self, write: Callable[[str], None], every_s: float = 30.0) -> None:
        self._write = write
        self.every_s = every_s
        self._last = -1e18

    def __call__(self, text: str, *, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return False
        self._last = now
        self._write(text)
        return True
