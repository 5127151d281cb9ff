"""The kill switch as stored in Redis: set by operators, read by the runtime.

Redis holds the *desired* state of each switch; the pipeline never reads it from an
operator. The runtime turns a change into a ``control`` command (``jobs.live.redis_watch``
live; :func:`controls_at_start` for an embedded replay), so the operators stay pure and a
replay of the recorded commands is deterministic.

A change is one Lua script (atomic): take the next ``killswitch.version``, write the switch's
hash with that version, add the key to ``killswitch.index``, publish ``<key> <version>`` on
``killswitch.changes``. The first change ever also sets ``killswitch.epoch`` to a random id: a
server that restarts without persistence starts a new epoch with versions from 1 again, which
a watcher must not mistake for old versions it already forwarded.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import redis

from jobs.sinks.redis_keys import (
    SWITCH_CHANNEL,
    SWITCH_EPOCH,
    SWITCH_INDEX,
    SWITCH_VERSION,
    SwitchState,
    switch_key,
)
from topics.messages import Control

_SET = """
redis.call('SETNX', KEYS[3], ARGV[7])
local v = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'account', ARGV[2], 'symbol', ARGV[3],
           'reason', ARGV[4], 'ts', ARGV[5], 'time', ARGV[6], 'version', v,
           'sent_to', ARGV[8])
redis.call('SADD', KEYS[4], KEYS[1])
redis.call('PUBLISH', ARGV[9], KEYS[1] .. ' ' .. v)
return {v, redis.call('GET', KEYS[3])}
"""

_READ = """
local out = {redis.call('GET', KEYS[1]) or '', redis.call('GET', KEYS[2]) or '0'}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  out[#out + 1] = k
  out[#out + 1] = redis.call('HGETALL', k)
end
return out
"""


@dataclass(frozen=True, slots=True)
class Switches:
    """Every switch at one moment (one script: a consistent view)."""

    epoch: str
    """``''`` when no switch was ever set on this server (dataset)."""
    version: int
    """The newest change's version (0: none)."""
    states: tuple[SwitchState, ...]
    """Valid switches, oldest change first."""
    malformed: tuple[str, ...] = ()
    """Keys in the index whose hash is not a switch (written by hand?): ignored."""


def set_switch(client: redis.Redis, on: bool, account: str, reason: str,
               symbol: str | None, now_ns: int, *, sent_to: str | None = None
               ) -> SwitchState:
    """Record a switch change (validated by the caller) and return it with its version."""
    key = switch_key(account, symbol)
    when = datetime.fromtimestamp(now_ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")
    res: Any = client.eval(_SET, 4, key, SWITCH_VERSION, SWITCH_EPOCH, SWITCH_INDEX,
                           "on" if on else "off", account, symbol or "", reason, str(now_ns),
                           when, secrets.token_hex(8), sent_to or "", SWITCH_CHANNEL)
    return SwitchState(key=key, state="on" if on else "off", account=account, symbol=symbol,
                       reason=reason, ts=now_ns, time=when, version=int(res[0]),
                       sent_to=sent_to)


def read_switches(client: redis.Redis) -> Switches:
    res: Any = client.eval(_READ, 3, SWITCH_EPOCH, SWITCH_VERSION, SWITCH_INDEX)
    epoch, version = _text(res[0]), int(res[1])
    states: list[SwitchState] = []
    bad: list[str] = []
    for i in range(2, len(res), 2):
        key = _text(res[i])
        flat = [_text(x) for x in res[i + 1]]
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        try:
            states.append(_state(key, fields))
        except (KeyError, ValueError, msgspec.ValidationError):
            bad.append(key)
    states.sort(key=lambda s: s.version)
    return Switches(epoch, version, tuple(states), tuple(sorted(bad)))


def latest_version(client: redis.Redis) -> tuple[str, int]:
    """``(epoch, version)``: one cheap round trip to see whether anything changed."""
    raw: Any = client.mget(SWITCH_EPOCH, SWITCH_VERSION)
    return (_text(raw[0]) if raw[0] is not None else "",
            int(raw[1]) if raw[1] is not None else 0)


def to_control(s: SwitchState, ts_event: int) -> Control:
    """The command a switch's state stands for (``on``: KILL / HALT_SYMBOL; ``off``: RESET /
    RESUME_SYMBOL)."""
    command: Literal["KILL", "RESET", "HALT_SYMBOL", "RESUME_SYMBOL"]
    if s.symbol is None:
        command = "KILL" if s.state == "on" else "RESET"
    else:
        command = "HALT_SYMBOL" if s.state == "on" else "RESUME_SYMBOL"
    return Control(ts_event=ts_event, command=command, account=s.account, symbol=s.symbol,
                   reason=s.reason)


def controls_at_start(switches: Switches) -> list[Control]:
    """An embedded replay's commands from Redis: each switch that is on, stamped at 0 (before
    every event), in the order the switches were set. Switches that are off change nothing
    at the start of a replay."""
    return [to_control(s, 0) for s in switches.states if s.state == "on"]


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _state(key: str, f: dict[str, str]) -> SwitchState:
    return msgspec.convert({
        "key": key, "state": f["state"], "account": f["account"],
        "symbol": f.get("symbol") or None, "reason": f.get("reason", ""), "ts": int(f["ts"]),
        "time": f.get("time", ""), "version": int(f["version"]),
        "sent_to": f.get("sent_to") or None}, SwitchState)
