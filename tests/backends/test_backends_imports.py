"""Importing backends changes nothing outside it; optional SDKs load where they are used."""

from __future__ import annotations

from tests.fresh_interpreter import UNTOUCHED_ASYNCIO, after


class TestImport:
    def test_loads_no_optional_module(self) -> None:
        """`import backends` loads neither redis-py, trio-asyncio nor a cloud or metrics SDK."""
        assert after("import backends")["loaded"] == []

    def test_leaves_asyncio_alone(self) -> None:
        """After `import backends`, asyncio keeps its default policy and runs its own loop."""
        assert after("import backends")["asyncio"] == UNTOUCHED_ASYNCIO


class TestLoadedWhereUsed:
    def test_redis_url_loads_redis_py_but_not_trio_asyncio(self) -> None:
        """RedisStorage(url) parses the URL with redis-py and leaves trio-asyncio unloaded."""
        report = after(
            "import backends\nbackends.RedisStorage('redis://localhost:1/2')",
            ("redis.connection", "trio_asyncio"),
        )
        assert report == {"loaded": ["redis.connection"], "asyncio": UNTOUCHED_ASYNCIO}

    def test_client_loads_the_reply_parser_when_made(self) -> None:
        """RedisClient(address) loads redis-py's parser then, not in its first connection."""
        report = after(
            "import backends\nbackends.RedisClient(backends.RedisAddress())",
            ("redis._parsers", "redis.connection", "trio_asyncio"),
        )
        assert "redis._parsers" in report["loaded"]
        assert "trio_asyncio" not in report["loaded"]

    def test_asyncio_client_loads_the_bridge(self) -> None:
        """RedisStorage(redis.asyncio.Redis()) loads trio-asyncio, its commands' bridge."""
        report = after(
            "import backends, redis.asyncio\nbackends.RedisStorage(redis.asyncio.Redis())",
            ("trio_asyncio",),
        )
        assert "trio_asyncio" in report["loaded"]
