"""pytest fixtures for a real, private ``redis-server`` per test.

Loaded from the root ``tests/conftest.py`` with
``pytest_plugins = ["tests.redis_fixtures"]``.  A missing binary skips the
test locally and fails it in CI (``CI=true``): no Redis test may be skipped there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.redis_sentinel import SentinelSetup
from tests.redis_server import REDIS_SERVER_BINARY, RedisServer


def require_redis_server_binary() -> None:
    """Skip (locally) or fail (in CI) the calling test when redis-server is missing."""
    if os.path.exists(REDIS_SERVER_BINARY):
        return
    message = f"redis-server not found at {REDIS_SERVER_BINARY}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port, killed after the test."""
    require_redis_server_binary()
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The ``redis://`` URL of this test's own redis-server."""
    return redis_server.url


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    """A master, a replica and three sentinels on free loopback ports, killed after the test."""
    require_redis_server_binary()
    with SentinelSetup() as setup:
        yield setup
