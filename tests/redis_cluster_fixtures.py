"""pytest fixtures for a real Redis Cluster (3 masters, 3 replicas) on loopback.

One cluster per test session (it takes a few seconds to form): tests share
it and keep apart by their own key prefix (:func:`cluster_prefix`).  A test
that kills a node or moves slots makes its own cluster, or puts the shared
one back as it was.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.redis_cluster import RedisCluster
from tests.redis_fixtures import require_redis_server_binary


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master, 3-replica cluster for the whole session."""
    require_redis_server_binary()
    with RedisCluster(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """The ``redis+cluster://`` URL of the session's cluster (checked ready first)."""
    redis_cluster.wait_ready()
    return redis_cluster.url


@pytest.fixture
def cluster_prefix() -> str:
    """A key prefix of this test's own on the shared cluster."""
    return f"t{secrets.token_hex(4)}:"
