"""The Redis tap: the latest feature vector per symbol and the latest positions, for strategies
and risk tools that read state instead of topics (keys and formats in ``jobs.sinks.redis_keys``).

Off the hot path: ``accept`` only keeps the newest message per key in a dict (under a lock,
at bar rate); a background thread encodes and writes what changed in one pipelined round
trip, at most every ``min_interval_s``. Only the latest value of a key matters, so a burst
or an outage costs memory per key, never per message.

Trading never depends on the cache. When Redis fails the thread counts the failure, warns on
stderr (the first time, then at most every ``warn_every_s``), keeps the latest values and tries
again with backoff (0.1 s doubling to 5 s); once Redis answers again it rewrites every key it
holds, since a restarted server may have lost them all.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import redis

from jobs.errors import UsageError
from jobs.sinks.redis_client import Backoff, RateLimitedWarning, connect, redact
from jobs.sinks.redis_keys import (
    AccountTotals,
    FeatureEntry,
    account_key,
    feature_key,
    position_key,
)
from operators.domain.timeparse import format_ns
from topics import names as tn
from topics.messages import FeatureVector, Position


@dataclass(frozen=True, slots=True)
class RedisStoreConfig:
    """Where and how the tap writes."""

    url: str
    feature_ttl_s: int = 3600
    """TTL of ``feature:*`` keys (wall seconds from the write); positions never expire."""
    min_interval_s: float = 0.01
    """Shortest gap between two writes: bounds round trips during a fast replay."""
    warn_every_s: float = 30.0
    close_timeout_s: float = 5.0
    """How long ``close`` waits for the final write."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise UsageError(f"--redis must be a redis:// (or rediss://, unix://) URL, got "
                             f"{redact(self.url)!r}")
        if self.feature_ttl_s <= 0:
            raise UsageError(f"--feature-ttl must be positive, got {self.feature_ttl_s}s")
        if self.min_interval_s < 0 or self.warn_every_s < 0 or self.close_timeout_s <= 0:
            raise ValueError("redis store intervals must be >= 0 (close timeout > 0)")


def feature_entry(v: FeatureVector, ttl_s: int) -> FeatureEntry:
    """The feature-store value of a feature vector."""
    return FeatureEntry(symbol=v.symbol, timeframe=v.timeframe,
                        feature_version=v.feature_version, ts_event=v.ts_event,
                        ts_closed=v.ts_closed, timestamp=format_ns(v.ts_event), close=v.close,
                        features=dict(zip(v.NAMES, v.values(), strict=True)), ttl_s=ttl_s)


def account_totals(account: str, book: dict[str, Position]) -> AccountTotals:
    """Totals over the latest position of each symbol of ``account`` (``book``: symbol →)."""
    newest = max(book.values(), key=lambda p: p.ts_event)
    realized = sum(p.realized_pnl for p in book.values())
    unrealized = sum(p.unrealized_pnl for p in book.values())
    fees = sum(p.fees for p in book.values())
    return AccountTotals(account=account, ts_event=newest.ts_event, equity=newest.equity,
                         realized_pnl=realized, unrealized_pnl=unrealized, fees=fees,
                         net_pnl=realized + unrealized - fees,
                         positions={s: book[s].quantity for s in sorted(book)})


class RedisTap:
    """A tap (``jobs.sinks.tap.Tap``) writing ``features`` and ``positions`` to Redis."""

    name = "redis"
    topics = frozenset({tn.FEATURES, tn.POSITIONS})

    def __init__(self, config: RedisStoreConfig,
                 log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._url = redact(config.url)
        self._log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self._warn = RateLimitedWarning(self._log, config.warn_every_s)
        self._enc = msgspec.json.Encoder()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # written by accept (any thread), taken by the writer thread
        self._features: dict[tuple[str, str, str], FeatureVector] = {}
        self._positions: dict[tuple[str, str], Position] = {}
        # the writer thread's own
        self._latest: dict[str, tuple[bytes, int | None]] = {}
        self._book: dict[str, dict[str, Position]] = {}
        self._dirty: set[str] = set()
        self._rewrite_all = False
        self._down_since: float | None = None
        self._backoff = Backoff()
        self.accepted = 0
        self.writes = 0
        self.flushes = 0
        self.failures = 0
        self.command_errors = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="redis-tap", daemon=True)
        self._thread.start()

    # -- the Tap protocol (the pipeline's thread) ---------------------------------------------
    def accept(self, topic: str, n: int, value: msgspec.Struct, /) -> None:
        if type(value) is FeatureVector:
            with self._lock:
                self._features[(value.symbol, value.timeframe, value.feature_version)] = value
        elif type(value) is Position:
            with self._lock:
                self._positions[(value.account, value.symbol)] = value
        else:
            return
        self.accepted += 1
        if not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        """Ask for a write now; returns at once (the writer thread does it)."""
        self._wake.set()

    def close(self) -> None:
        """One last write (also when Redis is in backoff), waiting at most
        ``close_timeout_s``; then the thread ends."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(self.config.close_timeout_s)
        if self._thread.is_alive():
            self._log(f"warning: redis {self._url}: the last write did not finish within "
                      f"{self.config.close_timeout_s:g} s; giving up on it")
        elif self._unwritten():
            self._log(f"warning: redis {self._url}: {self._unwritten()} keys not written "
                      f"(unreachable at the end: {self.last_error})")

    def stats(self) -> dict[str, Any]:
        return {"url": self._url, "accepted": self.accepted, "writes": self.writes,
                "flushes": self.flushes, "failures": self.failures,
                "command_errors": self.command_errors, "reconnects": self.reconnects,
                "keys": len(self._latest), "unwritten": self._unwritten(),
                "last_error": self.last_error}

    def lag(self) -> tuple[int, float]:
        """Keys not yet written, and how long Redis has been unreachable (0 while it answers).
        Read by the metrics (``streamquant_sink_buffered_rows``, ``..._lag_seconds``)."""
        since = self._down_since
        return self._unwritten(), (time.monotonic() - since if since is not None else 0.0)

    def _unwritten(self) -> int:
        """Keys whose latest value is not in Redis yet (0: everything accepted is written)."""
        return len(self._dirty) + len(self._features) + len(self._positions)

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        client = connect(self.config.url)
        try:
            try:
                client.ping()
            except redis.RedisError as exc:
                self._failed(exc)
            while True:
                if self._down_since is not None:  # sleep through the backoff (close wakes it)
                    self._stop.wait(max(0.0, self._backoff.next_at - time.monotonic()))
                else:
                    self._wake.wait()
                self._wake.clear()
                final = self._stop.is_set()
                try:
                    self._write(client)
                except Exception as exc:  # never let the writer die: the cache would go stale
                    self._failed(exc)
                if final:
                    return
                self._stop.wait(self.config.min_interval_s)
        finally:
            client.close()

    def _take(self) -> None:
        """Move what ``accept`` collected into the encoded latest values."""
        with self._lock:
            feats, poss = self._features, self._positions
            self._features, self._positions = {}, {}
        ttl = self.config.feature_ttl_s
        enc = self._enc.encode
        for v in feats.values():
            key = feature_key(v.symbol, v.timeframe, v.feature_version)
            self._latest[key] = (enc(feature_entry(v, ttl)), ttl)
            self._dirty.add(key)
        accounts = set()
        for (account, symbol), p in poss.items():
            key = position_key(account, symbol)
            self._latest[key] = (enc(p), None)  # the positions topic's bytes
            self._dirty.add(key)
            self._book.setdefault(account, {})[symbol] = p
            accounts.add(account)
        for account in accounts:
            key = account_key(account)
            self._latest[key] = (enc(account_totals(account, self._book[account])), None)
            self._dirty.add(key)

    def _write(self, client: redis.Redis) -> None:
        self._take()
        keys = list(self._latest) if self._rewrite_all else list(self._dirty)
        try:
            if keys:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    value, ttl = self._latest[key]
                    pipe.set(key, value, ex=ttl)
                results = pipe.execute(raise_on_error=False)
            elif self._down_since is not None:  # nothing to write: is it back?
                client.ping()
                results = []
            else:
                return
        except redis.RedisError as exc:
            self._failed(exc)
            return
        if keys:
            self.flushes += 1
        for key, r in zip(keys, results, strict=True):
            if isinstance(r, Exception):  # e.g. OOM: that key waits for its next value
                self.command_errors += 1
                self.last_error = f"{key}: {r}"
            else:
                self.writes += 1
        self._dirty.clear()
        self._rewrite_all = False
        self._backoff.succeeded()
        if self._down_since is not None:
            self.reconnects += 1
            self._warn(f"redis {self._url} answering again after "
                       f"{time.monotonic() - self._down_since:.1f} s: rewrote {len(keys)} keys",
                       force=True)
            self._down_since = None

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._rewrite_all = True  # a server that comes back may have lost every key
        delay = self._backoff.failed()
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._warn(f"warning: redis {self._url}: {self.last_error}; the feature store and "
                       "positions are not updated (trading goes on); retrying with backoff",
                       force=True)
        else:
            self._warn(f"warning: redis {self._url} still failing after "
                       f"{now - self._down_since:.0f} s ({self.failures} failed writes; next "
                       f"try in {delay:.1f} s): {self.last_error}")
