"""Shared test configuration: the real redis-server fixtures."""

pytest_plugins = ["tests.redis_fixtures", "tests.redis_cluster_fixtures"]
