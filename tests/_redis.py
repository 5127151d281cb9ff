"""A real ``redis-server`` for the tests: started on a free loopback port, stopped at the end.

``redis_server`` gives each test its own server (~40 ms to start, no persistence), so a test
may kill and restart it (``RedisServer.kill`` / ``start``: an empty dataset, like a crash).
``tests/conftest.py`` registers the fixture for every test module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobs.sinks.redis_client import connect
from jobs.sinks.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own on 127.0.0.1 (its log in the test's tmp dir)."""
    with RedisServer(log_path=tmp_path / "redis-server.log") as server:
        yield server


def client_of(server: RedisServer) -> redis.Redis:
    """A plain client (fails fast, like the pipeline's) for reading what was written."""
    return connect(server.url)
