"""A real Kafka-protocol broker for the live-path tests: one tansu per test session.

Every test gets its own topic prefix (``topic_prefix``), so tests share the broker without
seeing each other's topics. Tests that stop or pause a broker start their own ``Broker``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from jobs.live.broker import Broker
    from jobs.live.kafka_client import KafkaSettings

_counter = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A tansu broker on a free port of 127.0.0.1 for the whole session."""
    from jobs.live.broker import Broker

    with Broker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log") as b:
        yield b


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix unique to this test (its name, sanitized, and a counter)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return f"t{next(_counter)}.{name}."


@pytest.fixture
def kafka_settings(broker: Broker, topic_prefix: str) -> KafkaSettings:
    """Settings for the session broker with this test's own topic prefix."""
    from jobs.live.kafka_client import KafkaSettings

    return KafkaSettings(broker.bootstrap, topic_prefix)


def create_catalog_topics(settings: KafkaSettings, names: list[str] | None = None) -> list[str]:
    """Create the catalog's topics (or ``names``) under the settings' prefix."""
    from jobs.live.admin import create_topics

    return create_topics(settings, names)
