"""``streamquant kill-switch on|off``: an operator command on the ``control`` topic.

``on`` trips the kill switch of an account (``*``: every account): no new orders, working
child orders cancelled. ``off`` resets it. With a symbol the command halts / resumes that
symbol only (``HALT_SYMBOL`` / ``RESUME_SYMBOL``): the account operator ignores the symbol of a
``KILL``, so sending one would stop the whole account, not what ``--symbol`` asks.

``ts_event`` is the operator's wall clock; the pipeline re-stamps commands into its event time
when it reads them. The command is delivered (flushed) before this returns.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from jobs.errors import UsageError
from jobs.live import wire
from jobs.live.admin import check_topics
from jobs.live.kafka_client import KafkaSettings, ck
from topics import names as tn
from topics.messages import Control
from topics.serde import encode

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
                symbol: str | None = None) -> Control:
    """Produce the command to ``control`` (key: the account) and wait for its delivery."""
    msg = control_command(on, account, reason, symbol, time.time_ns())
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
