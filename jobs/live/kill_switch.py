"""``streamquant kill-switch on|off``: an operator command for the pipeline's ``control`` path.

``on`` trips the kill switch of an account (``*``: every account): no new orders, working
child orders cancelled. ``off`` resets it. With a symbol the command halts / resumes that
symbol only (``HALT_SYMBOL`` / ``RESUME_SYMBOL``): the account operator ignores the symbol of a
``KILL``, so sending one would stop the whole account, not what ``--symbol`` asks.

Two ways in, either or both: ``--bootstrap`` produces the command to the Kafka ``control``
topic (delivered before this returns); ``--redis`` records the switch in Redis
(``jobs.sinks.redis_switch``), where a live run's watcher picks it up and produces the same
command to ``control`` (docs/redis.md). With both, Kafka goes first and the Redis record names
the topic it reached, so the watcher of that topic does not send it twice.

``ts_event`` is the operator's wall clock; the pipeline re-stamps commands into its event time
when it reads them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from jobs.errors import UsageError
from topics import names as tn
from topics.messages import Control
from topics.serde import encode

if TYPE_CHECKING:
    from jobs.live.kafka_client import KafkaSettings
    from jobs.sinks.redis_keys import SwitchState

DELIVERY_TIMEOUT_S = 15.0

Command = Literal["KILL", "RESET", "HALT_SYMBOL", "RESUME_SYMBOL"]


def control_command(on: bool, account: str, reason: str, symbol: str | None,
                    now_ns: int) -> Control:
    """The ``Control`` message of a kill-switch request (validated)."""
    if not account or account != account.strip():
        raise UsageError("--account must be a non-empty, trimmed account name ('*': all)")
    if not reason.strip():
        raise UsageError("--reason is required: say why (it is recorded in the audit trail)")
    if symbol is not None and (not symbol or symbol != symbol.strip()):
        raise UsageError("--symbol must be a non-empty, trimmed symbol")
    command: Command
    if symbol is None:
        command = "KILL" if on else "RESET"
    else:
        command = "HALT_SYMBOL" if on else "RESUME_SYMBOL"
    return Control(ts_event=now_ns, command=command, account=account, symbol=symbol,
                   reason=reason.strip())


def kill_switch(settings: KafkaSettings, on: bool, account: str, reason: str,
                symbol: str | None = None, *, now_ns: int | None = None) -> Control:
    """Produce the command to ``control`` (key: the account) and wait for its delivery."""
    from jobs.live import wire
    from jobs.live.admin import check_topics
    from jobs.live.kafka_client import ck

    msg = control_command(on, account, reason, symbol,
                          time.time_ns() if now_ns is None else now_ns)
    check_topics(settings, [tn.CONTROL])
    failed: list[str] = []

    def delivered(err: ck.KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err.str())

    # One command, no idempotence: a retried duplicate of a KILL / RESET / HALT changes
    # nothing, and an idempotent producer first waits ~0.5 s for its producer id.
    producer = ck.Producer(settings.producer_conf(**{
        "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000), "enable.idempotence": False}))
    headers: Any = [(wire.SCHEMA, wire.SCHEMA_VERSION_BYTES)]
    producer.produce(settings.topic(tn.CONTROL), encode(msg), account.encode(),
                     headers=headers, on_delivery=delivered)
    left = producer.flush(DELIVERY_TIMEOUT_S + 5)
    if failed or left:
        why = failed[0] if failed else "timed out"
        raise RuntimeError(f"the {msg.command} command was not delivered to "
                           f"{settings.topic(tn.CONTROL)}: {why}")
    return msg


@dataclass(slots=True)
class SwitchResult:
    """What a ``kill-switch`` request reached."""

    command: Control
    kafka_topic: str | None = None
    """The Kafka topic the command was delivered to (None: not asked, or failed)."""
    redis: SwitchState | None = None
    """The switch as recorded in Redis, with its version (None: not asked, or failed)."""
    errors: list[str] = field(default_factory=list)


def set_kill_switch(on: bool, account: str, reason: str, symbol: str | None = None, *,
                    settings: KafkaSettings | None = None,
                    redis_url: str | None = None) -> SwitchResult:
    """Send the command to Kafka and / or record it in Redis; each failure is reported in
    ``errors`` after the other way was tried (one working way is enough to stop trading)."""
    if settings is None and redis_url is None:
        raise UsageError("say where the switch goes: --bootstrap (the Kafka control topic), "
                         "--redis URL (the switch in Redis, forwarded by the running "
                         "pipeline), or both")
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError("--redis must be a redis:// (or rediss://, unix://) URL")
    now = time.time_ns()
    res = SwitchResult(control_command(on, account, reason, symbol, now))
    if settings is not None:
        try:
            kill_switch(settings, on, account, reason, symbol, now_ns=now)
            res.kafka_topic = settings.topic(tn.CONTROL)
        except UsageError:
            raise
        except Exception as exc:  # unreachable broker, missing topic, delivery failed
            res.errors.append(f"kafka: {exc}")
    if redis_url is not None:
        import redis

        from jobs.sinks.redis_client import connect, redact
        from jobs.sinks.redis_switch import set_switch

        client = connect(redis_url)
        try:
            res.redis = set_switch(client, on, account, res.command.reason, symbol, now,
                                   sent_to=res.kafka_topic)
        except redis.RedisError as exc:
            res.errors.append(f"redis {redact(redis_url)}: {type(exc).__name__}: {exc}")
        finally:
            client.close()
    return res
