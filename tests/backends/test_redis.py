"""RedisStorage against a real redis-server: namespacing, TTLs, failures, the bridges."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis.asyncio
import redis.exceptions
import trio
import trio.lowlevel
import trio.testing
import trio_asyncio  # type: ignore[import-untyped]

from backends import StorageClosedError, StorageError, StorageUnavailableError
from backends._redis import RedisStorage
from backends._redis_client import RedisClient
from tests.redis_fixtures import require_redis_server_binary
from tests.redis_server import RedisServer

ODD_KEYS = ["with space", "a/b/c", "..", "../up", "ünï©ødé 🙂", "tab\there", "star*[q]?"]


@pytest.fixture
def slow_autojump_clock() -> trio.testing.MockClock:
    """A mock clock that jumps only after 50 ms of real idleness: real replies still arrive."""
    return trio.testing.MockClock(autojump_threshold=0.05)


@pytest.fixture
def password_server() -> Iterator[RedisServer]:
    """A redis-server that requires the password 'pw'."""
    require_redis_server_binary()
    with RedisServer(["--requirepass", "pw"]) as server:
        yield server


class TestRoundTrip:
    async def test_get_set_delete(self, redis_url: str) -> None:
        """A value set is read back byte for byte and is gone after delete."""
        async with RedisStorage(redis_url) as store:
            await store.set("k", b"\x00value\xff")
            assert await store.get("k") == b"\x00value\xff"
            await store.delete("k")
            assert await store.get("k") is None
            await store.delete("k")

    async def test_batches(self, redis_url: str) -> None:
        """set_many and get_many keep order across MGET chunks, misses as None."""
        async with RedisStorage(redis_url, batch_size=7) as store:
            await store.set_many({f"k{i}": f"v{i}".encode() for i in range(0, 50, 2)})
            values = await store.get_many([f"k{i}" for i in range(50)])
            assert values == [f"v{i}".encode() if i % 2 == 0 else None for i in range(50)]
            assert await store.get_many([]) == []

    async def test_ten_megabyte_value(self, redis_url: str) -> None:
        """A 10 MB value round-trips byte for byte."""
        value = bytes(range(256)) * (10 * 1024 * 1024 // 256)
        async with RedisStorage(redis_url) as store:
            await store.set("big", value)
            assert await store.get("big") == value
            assert await store.get_many(["big", "none"]) == [value, None]

    @pytest.mark.parametrize("key", ODD_KEYS)
    async def test_odd_keys(self, redis_url: str, key: str) -> None:
        """Spaces, slashes, dots, unicode and glob characters are ordinary keys."""
        async with RedisStorage(redis_url) as store:
            await store.set(key, key.encode())
            assert await store.get(key) == key.encode()
            assert await store.delete_prefix(key) == 1
            assert await store.get(key) is None

    async def test_password_url(self, password_server: RedisServer) -> None:
        """A URL with the password reaches a server that requires it."""
        async with RedisStorage(f"redis://:pw@127.0.0.1:{password_server.port}/0") as store:
            await store.set("k", b"v")
            assert await store.get("k") == b"v"

    async def test_concurrent_reads_and_writes(self, redis_url: str) -> None:
        """Two hundred tasks writing and reading their own keys each see their own value."""
        wrong: list[int] = []
        async with RedisStorage(redis_url) as store:

            async def worker(i: int) -> None:
                for round_number in range(5):
                    value = f"{i}:{round_number}".encode()
                    await store.set(f"k{i}", value)
                    if await store.get(f"k{i}") != value:
                        wrong.append(i)

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(worker, i)
        assert wrong == []


class TestTTL:
    async def test_ttl_is_redis_px(self, redis_url: str) -> None:
        """A TTL becomes SET ... PX in milliseconds (rounded up); no TTL means no expiry."""
        async with (
            RedisStorage(redis_url, prefix="p:") as store,
            RedisClient.from_url(redis_url) as raw,
        ):
            await store.set("t", b"v", ttl=1.5)
            await store.set("tiny", b"v", ttl=0.0001)
            await store.set("forever", b"v")
            pttl = await raw.execute("PTTL", "p:t")
            assert isinstance(pttl, int) and 1400 < pttl <= 1500
            tiny = await raw.execute("PTTL", "p:tiny")
            assert tiny in (-2, 0, 1)
            assert await raw.execute("PTTL", "p:forever") == -1

    async def test_set_many_ttl_and_overwrite(self, redis_url: str) -> None:
        """set_many applies its TTL to every item; a rewrite without TTL clears it."""
        async with (
            RedisStorage(redis_url, prefix="p:") as store,
            RedisClient.from_url(redis_url) as raw,
        ):
            await store.set_many({"a": b"1", "b": b"2"}, ttl=30)
            for name in ("p:a", "p:b"):
                pttl = await raw.execute("PTTL", name)
                assert isinstance(pttl, int) and 29000 < pttl <= 30000
            await store.set("a", b"new")
            assert await raw.execute("PTTL", "p:a") == -1

    async def test_get_with_ttl(self, redis_url: str) -> None:
        """get_with_ttl reports the seconds left, None without expiry, (None, None) when absent."""
        async with RedisStorage(redis_url) as store:
            await store.set("t", b"v", ttl=20)
            await store.set("forever", b"w")
            value, remaining = await store.get_with_ttl("t")
            assert value == b"v"
            assert remaining is not None and 19 < remaining <= 20
            assert await store.get_with_ttl("forever") == (b"w", None)
            assert await store.get_with_ttl("absent") == (None, None)
            readings = await store.get_many_with_ttl(["forever", "absent"])
            assert readings == [(b"w", None), (None, None)]

    @pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
    async def test_bad_ttl(self, redis_url: str, ttl: float) -> None:
        """A TTL that is not positive and finite is refused and nothing is written."""
        async with RedisStorage(redis_url) as store:
            with pytest.raises(ValueError, match=r"^ttl must be None or a positive finite number"):
                await store.set("k", b"v", ttl=ttl)
            assert await store.get("k") is None


class TestNamespace:
    async def test_keys_live_under_the_prefix(self, redis_url: str) -> None:
        """Every key is stored as prefix + key."""
        async with (
            RedisStorage(redis_url, prefix="app:") as store,
            RedisClient.from_url(redis_url) as raw,
        ):
            await store.set("user:1", b"v")
            assert await raw.execute("KEYS", "*") == [b"app:user:1"]

    async def test_delete_prefix_stays_inside_the_namespace(self, redis_url: str) -> None:
        """delete_prefix removes only this store's matching keys; others are untouched."""
        async with (
            RedisStorage(redis_url, prefix="sq:") as store,
            RedisClient.from_url(redis_url) as raw,
        ):
            await raw.pipeline([("SET", "other:user:1", "x"), ("SET", "user:1", "y")])
            await store.set_many({"user:1": b"1", "user:2": b"2", "team:1": b"3"})
            assert await store.delete_prefix("user:") == 2
            assert await store.get_many(["user:1", "user:2", "team:1"]) == [None, None, b"3"]
            assert await store.delete_prefix("") == 1
            remaining = await raw.execute("KEYS", "*")
            assert isinstance(remaining, list)
            assert sorted(remaining) == [b"other:user:1", b"user:1"]  # type: ignore[type-var]

    async def test_glob_characters_in_prefixes_are_literal(self, redis_url: str) -> None:
        """*, ?, [, ] and backslash in the store or call prefix match only themselves."""
        async with (
            RedisStorage(redis_url, prefix="a*[b]?\\") as store,
            RedisClient.from_url(redis_url) as raw,
        ):
            await raw.pipeline([("SET", "aX[b]?\\k", "x"), ("SET", "a*b?\\k", "y")])
            await store.set_many({"k*1": b"1", "kz1": b"2", "k*2": b"3"})
            assert await store.delete_prefix("k*") == 2
            assert await store.get_many(["k*1", "kz1", "k*2"]) == [None, b"2", None]
            assert await raw.execute("EXISTS", "aX[b]?\\k", "a*b?\\k") == 2

    async def test_delete_prefix_walks_many_scan_pages(self, redis_url: str) -> None:
        """Thousands of keys are all found and removed, and counted once each."""
        async with RedisStorage(redis_url) as store:
            await store.set_many({f"bulk:{i}": b"v" for i in range(2500)})
            await store.set("keep", b"v")
            assert await store.delete_prefix("bulk:") == 2500
            assert await store.get("keep") == b"v"


class TestFailures:
    async def test_kill_under_load_then_restart(self, redis_server: RedisServer) -> None:
        """Killing the server fails callers with StorageUnavailableError, never a wrong value;
        after restart the same store works again."""
        wrong: list[str] = []
        failures: list[StorageUnavailableError] = []
        successes = 0
        async with RedisStorage(redis_server.url, timeout=5) as store:

            async def worker(i: int) -> None:
                nonlocal successes
                rng = random.Random(i)
                while True:  # until the dead server fails this worker
                    key = f"k{rng.randrange(20)}"
                    try:
                        if rng.random() < 0.5:
                            await store.set(key, key.encode())
                        else:
                            value = await store.get(key)
                            if value not in (None, key.encode()):
                                wrong.append(key)
                        successes += 1
                    except StorageUnavailableError as exc:
                        failures.append(exc)
                        return

            with trio.fail_after(10):  # a guard against hangs, on the real clock
                async with trio.open_nursery() as nursery:
                    for i in range(50):
                        nursery.start_soon(worker, i)
                    while successes < 2000:
                        await trio.lowlevel.checkpoint()
                    redis_server.kill()
            assert wrong == []
            assert len(failures) == 50
            assert {(error.backend, type(error)) for error in failures} == {
                ("RedisStorage", StorageUnavailableError)
            }
            with pytest.raises(StorageUnavailableError):
                await store.get("k1")
            redis_server.restart()
            await store.set("k1", b"back")
            assert await store.get("k1") == b"back"

    async def test_paused_server_times_out(
        self, redis_server: RedisServer, slow_autojump_clock: trio.testing.MockClock
    ) -> None:
        """With the server frozen, get fails with StorageUnavailableError after its timeout."""
        async with RedisStorage(redis_server.url, timeout=3) as store:
            await store.set("k", b"v")
            redis_server.pause()
            start = trio.current_time()
            with pytest.raises(
                StorageUnavailableError,
                match=r"^RedisStorage\.get: redis GET: connection lost: TimeoutError\('no reply ",
            ) as info:
                await store.get("k")
            assert trio.current_time() == start + 3
            assert (info.value.backend, info.value.operation) == ("RedisStorage", "get")
            assert isinstance(info.value.__cause__, TimeoutError)
            redis_server.resume()
            assert await store.get("k") == b"v"

    async def test_error_reply_is_a_storage_error(self, redis_url: str) -> None:
        """A key of the wrong type under the prefix: StorageError naming the store and operation."""
        async with (
            RedisStorage(redis_url, prefix="p:") as store,
            RedisClient.from_url(redis_url) as raw,
        ):
            await raw.execute("LPUSH", "p:list", "x")
            with pytest.raises(
                StorageError, match=r"^RedisStorage\.get failed: ResponseError: WRONGTYPE "
            ) as info:
                await store.get("list")
            assert type(info.value) is StorageError
            assert (info.value.backend, info.value.operation) == ("RedisStorage", "get")
            assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)


class TestLifecycle:
    async def test_closing_closes_only_its_own_client(self, redis_url: str) -> None:
        """aclose closes a client the store made, not one it was given."""
        async with RedisClient.from_url(redis_url) as client:
            shared = RedisStorage(client, prefix="x:")
            await shared.set("k", b"v")
            await shared.aclose()
            with pytest.raises(StorageClosedError, match=r"^RedisStorage is closed$"):
                await shared.get("k")
            assert await client.execute("GET", "x:k") == b"v"
        owned = RedisStorage(redis_url)
        await owned.set("k", b"v")
        own_client = owned.redis
        assert isinstance(own_client, RedisClient)
        await owned.aclose()
        with pytest.raises(StorageClosedError, match=r"^the redis client is closed$"):
            await own_client.execute("GET", "k")

    async def test_store_outlives_a_trio_run(self, redis_url: str) -> None:
        """A store made outside trio works in a run and then in the next one."""
        store = RedisStorage(redis_url)

        async def use(value: bytes) -> bytes | None:
            await store.set("k", value)
            return await store.get("k")

        assert await use(b"first") == b"first"
        assert await trio.to_thread.run_sync(trio.run, use, b"second") == b"second"
        assert await use(b"third") == b"third"
        await store.aclose()

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"url_or_client": 42}, TypeError, r"^url_or_client must be a redis URL, a RedisCl"),
            (
                {"url_or_client": "redis://h", "prefix": 1},
                TypeError,
                r"^prefix must be str, not int$",
            ),
            ({"url_or_client": "redis://h", "batch_size": 0}, ValueError, r"^batch_size must be a"),
            ({"url_or_client": "memcached://h"}, ValueError, r"^Redis URL must specify one of "),
        ],
    )
    def test_bad_arguments(
        self, kwargs: dict[str, object], error: type[Exception], message: str
    ) -> None:
        """Bad constructor arguments raise at once, saying what was wrong."""
        with pytest.raises(error, match=message):
            RedisStorage(**kwargs)  # type: ignore[arg-type]


class TestAsyncioClient:
    async def test_through_trio_asyncio(self, redis_url: str) -> None:
        """A redis.asyncio client works through trio-asyncio, with the same results."""
        async with trio_asyncio.open_loop():
            client = await trio_asyncio.aio_as_trio(_make_asyncio_client)(redis_url)
            async with RedisStorage(client, prefix="aio:") as store:
                await store.set("k", b"v", ttl=20)
                await store.set_many({"a": b"1", "b": b"2"})
                assert await store.get("k") == b"v"
                assert await store.get_many(["a", "zz", "b"]) == [b"1", None, b"2"]
                value, remaining = await store.get_with_ttl("k")
                assert value == b"v" and remaining is not None and 19 < remaining <= 20
                assert await store.delete_prefix("") == 3
                assert await store.get("a") is None
            assert await trio_asyncio.aio_as_trio(client.ping)() is True
            await trio_asyncio.aio_as_trio(client.aclose)()

    async def test_without_a_loop(self, redis_url: str) -> None:
        """Without a trio-asyncio loop the store says what is missing."""
        store = RedisStorage(redis.asyncio.Redis.from_url(redis_url))
        with pytest.raises(StorageError, match=r"needs a running trio-asyncio loop"):
            await store.get("k")


async def _make_asyncio_client(url: str) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url)
