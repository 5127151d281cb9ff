"""An embedded replay with ``--redis``: the kill switches that are on when it starts.

A replay is a function of its inputs. The kill switch is read once, at the start: every switch
that is on becomes a command stamped at 0 (before every event), so the account is halted for
the whole replay; the commands are written to ``<out>/topics/control.jsonl`` (after those of
``--control``) and listed in the manifest, so ``run --control <out>/topics/control.jsonl``
without Redis gives the same orders. Changes made while a replay runs are not seen: a replay
compresses hours into seconds, and a switch flipped at some wall-clock moment has no place in
its event time. Live runs forward every change (``jobs.live.redis_watch``).

Redis unreachable: the replay goes on without switches, says so on stderr and records the
error in the manifest.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import redis

from jobs.sinks.redis_client import connect, redact
from jobs.sinks.redis_switch import controls_at_start, read_switches
from topics.messages import Control
from topics.serde import encode_many

CONTROL_FILE = "control.jsonl"


def replay_controls(url: str, *, quiet: bool = False) -> tuple[list[Control], dict[str, Any]]:
    """The switches on in Redis as start-of-replay commands, and the manifest's record."""
    client = connect(url)
    try:
        switches = read_switches(client)
    except redis.RedisError as exc:
        why = f"{type(exc).__name__}: {exc}"
        print(f"warning: redis {redact(url)}: {why}; the replay runs without its kill "
              "switches", file=sys.stderr)
        return [], {"url": redact(url), "error": why}
    finally:
        client.close()
    on = [s for s in switches.states if s.state == "on"]
    controls = controls_at_start(switches)
    if not quiet:
        for s, c in zip(on, controls, strict=True):
            what = f" {c.symbol}" if c.symbol else ""
            print(f"kill switch on in redis ({s.key} v{s.version}): {c.command} for "
                  f"{c.account}{what} ({c.reason!r}) from the start of the replay",
                  file=sys.stderr)
    record = {"url": redact(url), "epoch": switches.epoch, "version": switches.version,
              "applied": [{"key": s.key, "version": s.version, "command": c.command,
                           "account": c.account, "symbol": c.symbol, "reason": c.reason}
                          for s, c in zip(on, controls, strict=True)]}
    return controls, record


def write_control_file(topics_dir: Path, controls: list[Control]) -> Path:
    """The commands the replay applied, as the ``control`` topic's JSON lines."""
    topics_dir.mkdir(parents=True, exist_ok=True)
    path = topics_dir / CONTROL_FILE
    path.write_bytes(encode_many(list(controls)))
    return path
