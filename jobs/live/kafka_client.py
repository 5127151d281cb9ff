"""How streamquant talks to Kafka: settings, client configurations and the errors users see.

One frozen :class:`KafkaSettings` (the ``--bootstrap``, ``--topic-prefix`` and
``--kafka-config`` flags) builds the configuration of every client, so the live host and the
tools agree on the settings that carry our guarantees. Those settings are *ours*: a properties
file may tune a client (security, timeouts, buffers) but may not set them (``FORBIDDEN``).

confluent-kafka is an extra; importing this module without it is a usage error that says how
to install it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.errors import UsageError
from topics.catalog import CATALOG

try:
    import confluent_kafka as ck
    from confluent_kafka import admin as ck_admin
    from confluent_kafka.admin._metadata import ClusterMetadata
    from confluent_kafka.cimpl import NewTopic
except ImportError:  # pragma: no cover - exercised only without the extra
    raise UsageError("the live path needs confluent-kafka: pip install 'streamquant[kafka]'"
                     ) from None

FORBIDDEN: Mapping[str, str] = {
    "bootstrap.servers": "comes from --bootstrap",
    "transactional.id": "the live host derives its transactional ids from the job (fencing)",
    "group.id": "each streamquant client names its own consumer group",
    "group.instance.id": "each streamquant client names its own consumer group",
    "enable.auto.commit": "offsets are committed with the outputs (exactly-once, replay)",
    "enable.auto.offset.store": "offsets are committed with the outputs (exactly-once, replay)",
    "auto.offset.reset": "a missing offset must be an error, never a silent skip or rewind",
    "isolation.level": "readers must not see aborted or open transactions",
    "enable.partition.eof": "the end of a partition is found by reading to EOF (tansu's "
                            "latest offset is wrong)",
    "enable.idempotence": "ordering and no duplicates on producer retries depend on it",
    "acks": "an acknowledged record must be on every in-sync replica",
    "partitioner": "keys are placed with Java's murmur2 so every client agrees",
    "allow.auto.create.topics": "topics are created from the catalog (a broker's default "
                                "partition count would break keyed placement)",
}
"""Properties a ``--kafka-config`` file may not set, and why."""

_SECRET_WORDS = ("password", "secret", "token", "key", "sasl.jaas", "credentials",
                 "sasl.oauthbearer.config")
_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]*")
_PROP_RE = re.compile(r"[A-Za-z0-9._-]+")
_ENV_RE = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")
_MAX_TOPIC = 249

CONSUMER_DEFAULTS: Mapping[str, object] = {
    "fetch.wait.max.ms": 10,  # p50 ~4 ms produce->consume instead of ~130 ms
    "queued.min.messages": 200_000,  # with the backoff below: ~1.4M msg/s consumed
    "fetch.queue.backoff.ms": 1,
    "enable.partition.eof": True,
    "enable.auto.commit": False,
    "auto.offset.reset": "error",
    "allow.auto.create.topics": False,
    "session.timeout.ms": 6000,  # tansu holds JoinGroup for half of it
}
PRODUCER_DEFAULTS: Mapping[str, object] = {
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "compression.type": "none",
    "partitioner": "murmur2_random",  # Java-compatible keyed placement
    "enable.idempotence": True,
    "acks": "all",
    "allow.auto.create.topics": False,
}
ADMIN_DEFAULTS: Mapping[str, object] = {"allow.auto.create.topics": False}


class BrokerUnavailable(RuntimeError):  # noqa: N818 (the name says it)
    """No Kafka broker answered at the bootstrap address in time."""


class TopicsMissingError(RuntimeError):
    """Topics the job needs are missing on the broker or have the wrong partition count."""


def quiet_logger() -> logging.Logger:
    """A logger that drops librdkafka's log lines: a client probing a broker that is down
    would print one per retry; the probe reports the outcome itself, in one line."""
    log = logging.getLogger("streamquant.kafka.quiet")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
        log.propagate = False
    return log


def _check_bootstrap(bootstrap: str) -> None:
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise UsageError("--bootstrap: give the broker address as HOST:PORT (e.g. "
                         "127.0.0.1:9092)")
    for part in bootstrap.split(","):
        m = _HOST_RE.fullmatch(part.strip())
        if m is None or not 0 < int(m.group(2)) < 65536:
            raise UsageError(f"--bootstrap: {part.strip()!r} is not HOST:PORT (e.g. "
                             "127.0.0.1:9092; several: a,b)")


def _check_property(name: str, where: str) -> None:
    if not _PROP_RE.fullmatch(name):
        raise UsageError(f"{where}: {name!r} is not a Kafka client property name")
    why = FORBIDDEN.get(name)
    if why is not None:
        raise UsageError(f"{where}: {name} may not be set in a Kafka config file: {why}")


def is_secret(name: str) -> bool:
    """Whether a property's value must never be printed or written."""
    low = name.lower()
    return any(w in low for w in _SECRET_WORDS)


@dataclass(frozen=True)
class KafkaSettings:
    """Where the broker is, how our topics are named on it and extra client properties.

    ``topic_prefix`` namespaces every catalog topic (``dev.`` + ``orders``), so several
    pipelines (or tests) share one cluster. ``properties`` are librdkafka settings from a
    config file (security, timeouts); they override our client defaults except ``FORBIDDEN``.
    """

    bootstrap: str
    topic_prefix: str = ""
    properties: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _check_bootstrap(self.bootstrap)
        if not isinstance(self.topic_prefix, str) or not _PREFIX_RE.fullmatch(self.topic_prefix):
            raise UsageError(f"--topic-prefix {self.topic_prefix!r}: Kafka topic names allow "
                             "only letters, digits, '.', '_' and '-'")
        longest = max(len(n) for n in CATALOG)
        if len(self.topic_prefix) + longest > _MAX_TOPIC:
            raise UsageError(f"--topic-prefix is too long: topic names are at most {_MAX_TOPIC} "
                             "characters")
        seen: set[str] = set()
        for item in self.properties:
            if (not isinstance(item, tuple) or len(item) != 2
                    or not all(isinstance(x, str) for x in item)):
                raise UsageError("Kafka properties must be (name, value) string pairs")
            name = item[0]
            _check_property(name, "Kafka properties")
            if name in seen:
                raise UsageError(f"Kafka properties: {name} is set twice")
            seen.add(name)

    # -- topic names ----------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """The Kafka topic of a catalog topic (``KeyError`` naming the catalog if unknown)."""
        if name not in CATALOG:
            known = ", ".join(CATALOG)
            raise KeyError(f"unknown topic {name!r}; known topics: {known}")
        return self.topic_prefix + name

    def catalog_name(self, kafka_topic: str) -> str:
        """The catalog name of a Kafka topic of this pipeline (inverse of :meth:`topic`)."""
        if not kafka_topic.startswith(self.topic_prefix):
            raise ValueError(f"topic {kafka_topic!r} does not start with the topic prefix "
                             f"{self.topic_prefix!r}")
        name = kafka_topic[len(self.topic_prefix):]
        if name not in CATALOG:
            raise ValueError(f"topic {kafka_topic!r} is not a catalog topic with prefix "
                             f"{self.topic_prefix!r}")
        return name

    # -- client configurations ------------------------------------------------------------
    def _conf(self, defaults: Mapping[str, object], overrides: Mapping[str, object]
              ) -> dict[str, Any]:
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, **defaults}
        conf.update(self.properties)
        conf.update(overrides)
        return conf

    def consumer_conf(self, **overrides: object) -> dict[str, Any]:
        """A confluent-kafka ``Consumer`` configuration: ours, the file's, then ``overrides``."""
        return self._conf(CONSUMER_DEFAULTS, overrides)

    def producer_conf(self, **overrides: object) -> dict[str, Any]:
        """A confluent-kafka ``Producer`` configuration: ours, the file's, then ``overrides``."""
        return self._conf(PRODUCER_DEFAULTS, overrides)

    def admin_conf(self, **overrides: object) -> dict[str, Any]:
        """A confluent-kafka ``AdminClient`` configuration."""
        return self._conf(ADMIN_DEFAULTS, overrides)

    def redacted(self) -> dict[str, str]:
        """The settings, safe to print or record: secret-looking values are ``***``."""
        out = {"bootstrap.servers": self.bootstrap, "topic_prefix": self.topic_prefix}
        for name, value in self.properties:
            out[name] = "***" if is_secret(name) else value
        return out


def load_kafka_config(path: Path) -> tuple[tuple[str, str], ...]:
    """Read a librdkafka properties file: ``name=value`` lines, ``#`` comments, blank lines.

    ``${VAR}`` in a value is replaced by the environment variable ``VAR`` so secrets stay out
    of the file. Errors name the file, the line and the variable, never a value (it may be a
    secret).
    """
    if not path.is_file():
        raise UsageError(f"--kafka-config {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--kafka-config {path}: cannot read it ({type(exc).__name__})"
                         ) from None
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{n}"
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"{where}: not a name=value line")
        _check_property(name, where)
        if name in seen:
            raise UsageError(f"{where}: {name} was already set on line {seen[name]}")
        seen[name] = n
        out.append((name, _substitute(value.strip(), where)))
    return tuple(out)


def _substitute(value: str, where: str) -> str:
    def env(m: re.Match[str]) -> str:
        var = m.group(1)
        if not _ENV_NAME_RE.fullmatch(var):
            raise UsageError(f"{where}: ${{{var}}} is not an environment variable name")
        got = os.environ.get(var)
        if got is None:
            raise UsageError(f"{where}: environment variable {var} is not set")
        return got

    return _ENV_RE.sub(env, value)


__all__ = [
    "FORBIDDEN",
    "BrokerUnavailable",
    "ClusterMetadata",
    "KafkaSettings",
    "NewTopic",
    "TopicsMissingError",
    "ck",
    "ck_admin",
    "is_secret",
    "load_kafka_config",
    "quiet_logger",
]
