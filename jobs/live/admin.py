"""Topics on the broker, made from the catalog: create, check, delete.

Topics are always created explicitly with the catalog's partition count: keyed placement (and
so which partition holds a symbol's or an account's records) depends on it, and a broker's
default (tansu auto-creates 4 partitions when a client asks for metadata of an unknown topic)
would silently change it. So a topic with a different count is an error, never "close enough".

Metadata is always read for *all* topics: asking tansu about one unknown topic creates it.

Topic configs (``cleanup.policy``, ``retention.ms``) are sent with the creation request;
tansu 0.6 accepts and stores them (``describe_configs`` returns them) although it does not
enforce retention, so no fallback without configs is needed there; a real Kafka cluster
applies them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from jobs.errors import UsageError
from jobs.live.kafka_client import (
    BrokerUnavailable,
    ClusterMetadata,
    KafkaSettings,
    NewTopic,
    TopicsMissingError,
    ck,
    ck_admin,
    quiet_logger,
)
from topics.catalog import CATALOG, TopicSpec

REQUEST_TIMEOUT_S = 10.0
REFUSED_GRACE_S = 1.0


def cluster_metadata(settings: KafkaSettings, timeout_s: float = 5.0
                     ) -> ClusterMetadata:
    """Metadata of every topic, or :class:`BrokerUnavailable` naming the bootstrap address.

    Clients retry an unreachable broker forever; this bounded probe is how the tools fail fast
    with one line instead of a stream of librdkafka log lines. A refused connection (every
    bootstrap broker down) fails after ``REFUSED_GRACE_S``, not the whole timeout.
    """
    down: list[str] = []
    seen: list[str] = []

    def on_error(err: ck.KafkaError) -> None:
        if err.code() in (ck.KafkaError._ALL_BROKERS_DOWN, ck.KafkaError._RESOLVE):
            down.append(err.str())
        else:
            seen.append(err.str())

    admin = ck_admin.AdminClient(settings.admin_conf(logger=quiet_logger(), error_cb=on_error))
    start = time.monotonic()
    while True:
        left = timeout_s - (time.monotonic() - start)
        try:
            return admin.list_topics(timeout=max(0.05, min(left, 0.25)))
        except ck.KafkaException as exc:
            admin.poll(0)  # serve error_cb
            waited = time.monotonic() - start
            if waited >= timeout_s or (down and waited >= REFUSED_GRACE_S):
                why = (seen or down or [kafka_error_text(exc)])[-1]
                raise BrokerUnavailable(
                    f"no Kafka broker answered at {settings.bootstrap} within {waited:.1f}s "
                    f"({why}); is it running? ('streamquant broker' starts one for "
                    "development)") from None


def kafka_error_text(exc: BaseException) -> str:
    """The readable text of a confluent-kafka exception (its ``KafkaError.str()``)."""
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, ck.KafkaError) else str(exc)


def partition_counts(md: ClusterMetadata) -> dict[str, int]:
    """Kafka topic name → partition count, from metadata."""
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def catalog_specs(names: Sequence[str] | None) -> list[TopicSpec]:
    """The catalog entries of ``names`` (None: every topic); unknown names are usage errors."""
    if names is None:
        return list(CATALOG.values())
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise UsageError(f"unknown topic(s) {', '.join(unknown)}; see 'streamquant topics list'")
    return [CATALOG[n] for n in dict.fromkeys(names)]


def _problems(settings: KafkaSettings, specs: Sequence[TopicSpec], have: dict[str, int],
              *, missing_too: bool) -> list[str]:
    out = []
    for spec in specs:
        kafka = settings.topic(spec.name)
        got = have.get(kafka)
        if got is None:
            if missing_too:
                out.append(f"{kafka} is missing")
        elif got != spec.partitions:
            out.append(f"{kafka} has {got} partitions, the catalog says {spec.partitions} "
                       "(auto-created by the broker? delete it and create it again)")
    return out


def create_topics(settings: KafkaSettings, names: Sequence[str] | None = None) -> list[str]:
    """Create the catalog's topics (or the named ones); return the catalog names created.

    Idempotent: a topic that exists with the catalog's partition count is left alone; one with
    another count is a :class:`TopicsMissingError` naming it (nothing is created then).
    """
    specs = catalog_specs(names)
    have = partition_counts(cluster_metadata(settings))
    wrong = _problems(settings, specs, have, missing_too=False)
    if wrong:
        raise TopicsMissingError("; ".join(wrong))
    todo = [s for s in specs if settings.topic(s.name) not in have]
    if not todo:
        return []
    admin = ck_admin.AdminClient(settings.admin_conf())
    new = [NewTopic(settings.topic(s.name), num_partitions=s.partitions,
                             replication_factor=-1,  # the cluster's default
                             config={"cleanup.policy": s.cleanup_policy,
                                     "retention.ms": str(s.retention_ms or -1)})
           for s in todo]
    futures = admin.create_topics(new, operation_timeout=REQUEST_TIMEOUT_S,
                                  request_timeout=REQUEST_TIMEOUT_S)
    created: list[str] = []
    raced: list[TopicSpec] = []
    for spec in todo:
        try:
            futures[settings.topic(spec.name)].result(timeout=REQUEST_TIMEOUT_S + 5)
            created.append(spec.name)
        except ck.KafkaException as exc:
            err = exc.args[0]
            if err.code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"creating {settings.topic(spec.name)} failed: "
                                   f"{kafka_error_text(exc)}") from None
            raced.append(spec)  # someone created it meanwhile: check it like any other
    if raced:
        check_topics(settings, [s.name for s in raced])
    return created


def check_topics(settings: KafkaSettings, names: Sequence[str]) -> None:
    """Raise :class:`TopicsMissingError` unless every named catalog topic exists with the
    catalog's partition count."""
    specs = catalog_specs(names)
    have = partition_counts(cluster_metadata(settings))
    problems = _problems(settings, specs, have, missing_too=True)
    if problems:
        prefix = f" --topic-prefix {settings.topic_prefix}" if settings.topic_prefix else ""
        raise TopicsMissingError(
            f"{'; '.join(problems)}. The broker lost its topics (a memory-storage broker "
            f"restarted)? run 'streamquant topics create --bootstrap {settings.bootstrap}"
            f"{prefix}'")


def delete_topics(settings: KafkaSettings, names: Sequence[str]) -> list[str]:
    """Delete the named catalog topics that exist; return the catalog names deleted."""
    specs = catalog_specs(names)
    have = partition_counts(cluster_metadata(settings))
    todo = [s.name for s in specs if settings.topic(s.name) in have]
    if not todo:
        return []
    admin = ck_admin.AdminClient(settings.admin_conf())
    futures = admin.delete_topics([settings.topic(n) for n in todo],
                                  operation_timeout=REQUEST_TIMEOUT_S,
                                  request_timeout=REQUEST_TIMEOUT_S)
    deleted = []
    for name in todo:
        try:
            futures[settings.topic(name)].result(timeout=REQUEST_TIMEOUT_S + 5)
            deleted.append(name)
        except ck.KafkaException as exc:
            err = exc.args[0]
            if err.code() != ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise RuntimeError(f"deleting {settings.topic(name)} failed: "
                                   f"{kafka_error_text(exc)}") from None
    return deleted
