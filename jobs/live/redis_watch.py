"""The live run's kill-switch watcher: a switch changed in Redis becomes a ``control`` command.

The host never reads Redis. This thread notices a change (pub/sub on ``killswitch.changes``
for prompt notice, and a poll of ``killswitch.version`` every ``poll_s`` in case a message was
missed) and produces the switch's command to the ``control`` topic, where the host reads it
like any other: journaled, stamped at watermark + 1, applied, recorded on ``control.applied``
and in the audit trail. So a live run and its replay (``run --control``) agree.

No change is lost or sent twice across restarts: ``<checkpoint-dir>/redis.kill-switch.json``
holds, per switch key, the last version delivered to ``control`` (written atomically after
the broker acknowledged it). A change made while the pipeline was down is forwarded when it
starts; a duplicate is possible only if the process dies between the broker's acknowledgement
and that write (a repeated KILL or RESET changes nothing). The first start forwards every
switch Redis holds, on or off: Redis has the desired state, and the control topic's older
commands (read first) are overridden by it. A switch set by ``kill-switch --bootstrap ...
--redis ...`` names the topic it was already delivered to and is not sent again.

Redis down: the watcher warns (rate-limited), retries with backoff and carries on; the host
is not affected and commands produced to ``control`` directly still work.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import redis

from jobs.core.checkpoint import write_checkpoint
from jobs.live import wire
from jobs.live.kafka_client import KafkaSettings, ck
from jobs.sinks.redis_client import Backoff, RateLimitedWarning, connect, redact
from jobs.sinks.redis_keys import SWITCH_CHANNEL, SwitchState
from jobs.sinks.redis_switch import latest_version, read_switches, to_control
from topics import names as tn
from topics.serde import encode

FORWARDED_FILE = "redis.kill-switch.json"
SOURCE_HEADER = "sq.redis"
"""Header on a forwarded command: ``<key> v<version> epoch <epoch>`` (where it came from)."""


class Forwarded(msgspec.Struct, kw_only=True):
    """What was delivered to ``control``: per switch key, the last version (of ``epoch``)."""

    epoch: str = ""
    versions: dict[str, int] = {}


@dataclass(frozen=True, slots=True)
class WatchConfig:
    url: str
    poll_s: float = 0.2
    """Longest time a change waits when its pub/sub message was missed."""
    delivery_timeout_s: float = 10.0
    warn_every_s: float = 30.0
    stop_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.poll_s <= 5:
            raise ValueError("poll_s must be in (0, 5] seconds")
        if self.delivery_timeout_s <= 0 or self.stop_timeout_s <= 0:
            raise ValueError("timeouts must be positive")


class KillSwitchWatcher:
    """Forwards kill-switch changes from Redis to the ``control`` topic (a daemon thread)."""

    def __init__(self, config: WatchConfig, settings: KafkaSettings, state_dir: Path,
                 log: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.settings = settings
        self.path = state_dir / FORWARDED_FILE
        self.control_topic = settings.topic(tn.CONTROL)
        self._url = redact(config.url)
        self._log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self._warn = RateLimitedWarning(self._log, config.warn_every_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None
        self._pubsub: Any = None
        self._producer: Any = None
        self._backoff = Backoff()
        self._down_since: float | None = None
        self._seen: tuple[str, int] | None = None
        self.state = self._load()
        self.forwarded = 0
        self.already_sent = 0
        self.failures = 0
        self.reconnects = 0
        self.last_error: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Forward what changed while the pipeline was down (before the host reads
        ``control``), then watch in the background."""
        self._client = connect(self.config.url)
        self._step(first=True)
        self._thread = threading.Thread(target=self._run, name="kill-switch-watch",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.config.stop_timeout_s)
        self._close_pubsub()
        if self._client is not None:
            self._client.close()
        if self._producer is not None:
            self._producer.flush(1.0)

    def stats(self) -> dict[str, Any]:
        return {"url": self._url, "forwarded": self.forwarded,
                "already_sent": self.already_sent, "failures": self.failures,
                "reconnects": self.reconnects, "last_error": self.last_error}

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if self._down_since is not None and self._stop.wait(
                    max(0.0, self._backoff.next_at - time.monotonic())):
                return
            self._step()

    def _step(self, first: bool = False) -> None:
        """Wait for a change notice (at most ``poll_s``), then forward what changed."""
        try:
            if not first:
                self._wait_notice()
            self._sync()
        except redis.RedisError as exc:
            self._failed(f"redis {self._url}: {type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # the broker refused the command: try again next time
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        self._backoff.succeeded()
        if self._down_since is not None:
            self.reconnects += 1
            self._warn(f"kill switch watcher: working again after "
                       f"{time.monotonic() - self._down_since:.1f} s", force=True)
            self._down_since = None

    def _wait_notice(self) -> None:
        assert self._client is not None
        if self._pubsub is None:
            ps = self._client.pubsub(  # type: ignore[no-untyped-call]
                ignore_subscribe_messages=True)
            ps.subscribe(SWITCH_CHANNEL)
            self._pubsub = ps
        deadline = time.monotonic() + self.config.poll_s
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._pubsub.get_message(timeout=left) is not None:
                return

    def _sync(self) -> None:
        assert self._client is not None
        now = latest_version(self._client)
        if now == self._seen:
            return
        switches = read_switches(self._client)
        if switches.malformed:
            self._warn(f"kill switch watcher: ignoring malformed switch keys "
                       f"{', '.join(switches.malformed)}")
        st = self.state
        if switches.epoch and switches.epoch != st.epoch:
            if st.epoch:
                self._log(f"kill switch watcher: redis {self._url} has a new switch epoch (it "
                          "lost its data?): every switch it holds is a new change")
            st = Forwarded(epoch=switches.epoch, versions={})
        self.state = st  # saved with its first forwarded switch
        for s in switches.states:  # oldest change first
            if self.state.versions.get(s.key) == s.version:
                continue
            if s.sent_to == self.control_topic:
                self.already_sent += 1
            else:
                self._produce(s, switches.epoch)
                self.forwarded += 1
            self.state = Forwarded(epoch=self.state.epoch,
                                   versions={**self.state.versions, s.key: s.version})
            self._save(self.state)
        self._seen = (switches.epoch, switches.version)

    def _produce(self, s: SwitchState, epoch: str) -> None:
        """Deliver the switch's command to ``control`` (raises when the broker did not
        acknowledge it in time: the change is tried again)."""
        if self._producer is None:
            self._producer = ck.Producer(self.settings.producer_conf(**{
                "message.timeout.ms": int(self.config.delivery_timeout_s * 1000),
                "enable.idempotence": False}))
        cmd = to_control(s, s.ts)
        failed: list[str] = []

        def delivered(err: Any, _msg: object) -> None:
            if err is not None:
                failed.append(err.str())

        headers: Any = [(wire.SCHEMA, wire.SCHEMA_VERSION_BYTES),
                        (SOURCE_HEADER, f"{s.key} v{s.version} epoch {epoch}".encode())]
        self._producer.produce(self.control_topic, encode(cmd), s.account.encode(),
                               headers=headers, on_delivery=delivered)
        left = self._producer.flush(self.config.delivery_timeout_s + 2)
        if failed or left:
            raise RuntimeError(f"{cmd.command} for {s.account} from {s.key} v{s.version} not "
                               f"delivered to {self.control_topic}: "
                               f"{failed[0] if failed else 'timed out'}")
        what = f" {s.symbol}" if s.symbol else ""
        self._log(f"kill switch: {cmd.command} for {s.account}{what} ({s.reason!r}) from redis "
                  f"{s.key} v{s.version} -> {self.control_topic}")

    def _failed(self, why: str) -> None:
        self.failures += 1
        self.last_error = why
        self._close_pubsub()
        delay = self._backoff.failed()
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._warn(f"warning: kill switch watcher: {why}; switches set in redis are not "
                       "seen until this recovers (the control topic still works); retrying "
                       "with backoff", force=True)
        else:
            self._warn(f"warning: kill switch watcher still failing after "
                       f"{time.monotonic() - self._down_since:.0f} s ({self.failures} "
                       f"failures; next try in {delay:.1f} s): {why}")

    def _close_pubsub(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):  # a dead connection may fail to close
                self._pubsub.close()
            self._pubsub = None

    # -- what was forwarded -------------------------------------------------------------------
    def _load(self) -> Forwarded:
        if not self.path.exists():
            return Forwarded()
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=Forwarded)
        except msgspec.DecodeError as exc:  # written atomically: edited by hand? Start over:
            self._log(f"warning: {self.path}: unreadable ({exc}); every switch in redis is "
                      "forwarded again (a repeated command changes nothing)")
            return Forwarded()

    def _save(self, st: Forwarded) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_checkpoint(self.path, msgspec.json.encode(st))
