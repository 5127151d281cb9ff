"""Shared fixtures: the real data sets every numeric test runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.data import fetch_emini
from tests._kafka import broker, kafka_settings, topic_prefix  # noqa: F401 (fixtures)
from tests._redis import redis_server  # noqa: F401 (fixture)


@pytest.fixture(scope="session")
def emini_ticks_path() -> Path:
    """The verified E-mini S&P 500 trade sample (fetched once into the cache)."""
    return fetch_emini(quiet=True)
