"""Specification of L2 in a real Redis: sharing, outages, bad entries, big values, odd keys.

Every test gets its own redis-server (the ``redis_server`` fixture).  Replies
come back through real sockets, so these tests run on the real clock; every
wait is a condition polled under a deadline of a few seconds.  Tests about L2
alone turn the fleet features off (``broadcast=False, single_flight=False``);
the sharing test also runs with the defaults, fleet included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import stackquery as sq
from backends._redis import RedisStorage
from backends._redis_client import RedisClient
from tests.redis_server import RedisServer
from tests.stackquery.client_origin import Origin

DEADLINE = 5.0
"""Seconds any awaited condition may take before the test fails."""

L2_ONLY = {"broadcast": False, "single_flight": False}
FLEET_DEFAULTS: dict[str, Any] = {}
"""No fleet setting given: with a RedisStorage, broadcast and single flight are on."""

ODD_KEYS = [
    ("with space", "and more spaces"),
    ("a/b/c", "/leading/slash"),
    ("..", "../../etc/passwd"),
    ("ключ", "键", "🔑"),
    ("tab\tand", "new\nline", "nul\x00byte"),
    ("*?[glob]\\",),
]


def config(url: str, **settings: Any) -> sq.QueryClientConfig:
    """A client on ``url`` with timeouts short enough for a test."""
    values: dict[str, Any] = {
        "storage": RedisStorage(url, timeout=1.0),
        "l2_timeout": 1.0,
        "shutdown_timeout": 2.0,
        "retry": 0,
    }
    values.update(settings)
    return sq.QueryClientConfig(**values)


def options(origin: Any, key: tuple[Any, ...] = ("user", 1), **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=key, query_fn=origin, **kwargs)


def redis_key(settings: sq.QueryClientConfig, opts: sq.QueryOptions[Any]) -> str:
    """The Redis key of a query's entry: the store's prefix, the client's, the key's hash."""
    store = settings.storage
    assert isinstance(store, RedisStorage)
    return store.prefix + settings.key_prefix + opts.key_hash


def l2_stats(client: sq.QueryClient) -> sq.L2Statistics:
    stats = client.l2_statistics()
    assert stats is not None
    return stats


def all_cached(client: sq.QueryClient, keys: list[tuple[Any, ...]]) -> bool:
    """Whether every key has data in the client's L1."""
    states = [client.get_query_state(key) for key in keys]
    return all(state is not None and state.status is sq.QueryStatus.SUCCESS for state in states)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds; fail the test after DEADLINE seconds."""
    with trio.fail_after(DEADLINE):
        # Polled: the state changes when a reply comes back from the real server.
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.005)


class TestSharing:
    async def test_a_second_client_on_the_same_redis_never_calls_query_fn(
        self, redis_url: str
    ) -> None:
        """With the defaults (fleet on), B fetches right after A and gets A's value, not its own."""
        first, second = Origin({"id": 1, "name": "ada"}), Origin("b1")
        async with (
            sq.open_query_client(config(redis_url)) as a,
            sq.open_query_client(config(redis_url)) as b,
        ):
            assert a.fleet_statistics() is not None
            await a.fetch_query(options(first, stale_time=60.0))
            # No wait for A's write: B waits on A's lease until the value is in Redis.
            assert await b.fetch_query(options(second, stale_time=60.0)) == {"id": 1, "name": "ada"}
            state = b.get_query_state(("user", 1))
            assert state is not None and state.is_stale is False
        assert (first.calls, second.calls) == (1, 0)

    async def test_a_second_client_reads_l2_without_fleet_features(self, redis_url: str) -> None:
        """With broadcast and single flight off, B reads A's value once A's write has landed."""
        first, second = Origin({"id": 1, "name": "ada"}), Origin("b1")
        async with (
            sq.open_query_client(config(redis_url, **L2_ONLY)) as a,
            sq.open_query_client(config(redis_url, **L2_ONLY)) as b,
        ):
            assert a.fleet_statistics() is None
            await a.fetch_query(options(first, stale_time=60.0))
            await wait_until(lambda: l2_stats(a).writes == 1)
            assert await b.fetch_query(options(second, stale_time=60.0)) == {"id": 1, "name": "ada"}
            state = b.get_query_state(("user", 1))
            assert state is not None and state.is_stale is False
        assert (first.calls, second.calls) == (1, 0)

    async def test_a_client_opened_later_reads_what_an_earlier_one_wrote(
        self, redis_url: str
    ) -> None:
        """A closes (its writes land on exit); B opened afterwards hits L2 and calls nothing."""
        first, second = Origin("a1"), Origin("b1")
        async with sq.open_query_client(config(redis_url, **L2_ONLY)) as a:
            await a.fetch_query(options(first, stale_time=60.0))
        async with sq.open_query_client(config(redis_url, **L2_ONLY)) as b:
            assert await b.fetch_query(options(second, stale_time=60.0)) == "a1"
            stats = l2_stats(b)
            assert (stats.reads, stats.hits, stats.errors) == (1, 1, 0)
        assert (first.calls, second.calls) == (1, 0)

    async def test_the_entry_lives_gc_time_in_redis_and_removal_unlinks_it(
        self, redis_url: str
    ) -> None:
        """Redis holds the entry with a PX TTL of gc_time; remove_queries deletes it."""
        opts = options(Origin(), gc_time=120.0)
        async with (
            RedisClient.from_url(redis_url, timeout=1.0) as redis,
            sq.open_query_client(config(redis_url, **L2_ONLY)) as client,
        ):
            await client.fetch_query(opts)
            await wait_until(lambda: l2_stats(client).writes == 1)
            pttl = await redis.execute("PTTL", redis_key(client.config, opts))
            assert isinstance(pttl, int) and 115_000 < pttl <= 120_000
            await client.remove_queries(("user", 1))
            await wait_until(lambda: l2_stats(client).deletes == 1)
            assert await redis.execute("EXISTS", redis_key(client.config, opts)) == 0


class TestOutage:
    @pytest.mark.parametrize("settings", [L2_ONLY, FLEET_DEFAULTS], ids=["l2 only", "defaults"])
    async def test_killing_and_restarting_redis_under_load(
        self, settings: dict[str, Any], redis_server: RedisServer
    ) -> None:
        """Readers never see an error, L1 keeps every key, and writes resume after a restart."""
        keys = [("item", i) for i in range(20)]
        origins = {key: Origin(*[f"{key[1]}-{n}" for n in range(1, 10_000)]) for key in keys}
        reads = 0
        async with (
            RedisClient.from_url(redis_server.url, timeout=1.0) as redis,
            sq.open_query_client(config(redis_server.url, **settings)) as client,
        ):
            for key in keys:
                await client.fetch_query(options(origins[key], key))
            await wait_until(lambda: l2_stats(client).writes >= len(keys))

            async def reader(stop: trio.Event) -> None:
                nonlocal reads
                while not stop.is_set():
                    for key in keys:  # stale_time=0: every read also refetches and writes
                        value = await client.fetch_query(options(origins[key], key))
                        assert value.startswith(f"{key[1]}-")
                        reads += 1
                    await trio.sleep(0.005)

            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(reader, stop)
                await trio.sleep(0.1)
                redis_server.kill()
                reads_at_kill = reads
                await wait_until(lambda: l2_stats(client).errors > 0)
                await trio.sleep(0.2)  # the load goes on with Redis gone
                assert reads > reads_at_kill
                assert all_cached(client, keys)
                await trio.to_thread.run_sync(redis_server.restart)
                names = [redis_key(client.config, options(origins[key], key)) for key in keys]

                async def stored() -> list[Any]:
                    try:
                        return await redis.execute("MGET", *names)  # type: ignore[return-value]
                    except sq.StorageError:
                        return [None]

                with trio.fail_after(DEADLINE):
                    # Polled: the restarted server starts empty and nothing signals a write.
                    while None in await stored():  # noqa: ASYNC110
                        await trio.sleep(0.02)
                stop.set()
            for raw, key in zip(await stored(), keys, strict=True):
                entry = sq.unpack_entry(raw, sq.serializers.json)
                assert entry.value.startswith(f"{key[1]}-")
            assert all_cached(client, keys)


class TestEntries:
    async def test_a_corrupt_entry_written_by_hand_is_a_counted_miss(self, redis_url: str) -> None:
        """Garbage SET into the key's Redis name: query_fn runs once and its value replaces it."""
        origin = Origin("fresh")
        opts = options(origin, stale_time=60.0)
        settings = config(redis_url, **L2_ONLY)
        async with RedisClient.from_url(redis_url, timeout=1.0) as redis:
            await redis.execute("SET", redis_key(settings, opts), b"\x00\x01 not an entry")
            async with sq.open_query_client(settings) as client:
                assert await client.fetch_query(opts) == "fresh"
                stats = l2_stats(client)
                assert (stats.corrupt, stats.hits, stats.misses, stats.errors) == (1, 0, 1, 0)
            raw = await redis.execute("GET", redis_key(settings, opts))
        assert isinstance(raw, bytes)
        assert sq.unpack_entry(raw, sq.serializers.json).value == "fresh"
        assert origin.calls == 1

    async def test_a_ten_megabyte_value_round_trips(self, redis_url: str) -> None:
        """A 10 MB value written by one client is read whole by the next one."""
        big = {"blob": "x" * (10 * 1024 * 1024), "tail": list(range(100))}
        first, second = Origin(big), Origin("never")
        async with sq.open_query_client(config(redis_url, **L2_ONLY, l2_timeout=5.0)) as a:
            await a.fetch_query(options(first, stale_time=60.0))
        async with sq.open_query_client(config(redis_url, **L2_ONLY, l2_timeout=5.0)) as b:
            assert await b.fetch_query(options(second, stale_time=60.0)) == big
            assert l2_stats(b).errors == 0
        assert (first.calls, second.calls) == (1, 0)

    async def test_keys_with_spaces_slashes_dots_and_unicode_are_stored_apart(
        self, redis_url: str
    ) -> None:
        """Each odd key gets its own entry under its exact name, and reads back its own value."""
        first = {key: Origin(f"value of {key!r}") for key in ODD_KEYS}
        second = {key: Origin("never") for key in ODD_KEYS}
        async with sq.open_query_client(config(redis_url, **L2_ONLY)) as a:
            for key in ODD_KEYS:
                await a.fetch_query(options(first[key], key, stale_time=60.0))
        async with RedisClient.from_url(redis_url, timeout=1.0) as redis:
            for key in ODD_KEYS:
                raw = await redis.execute("GET", redis_key(a.config, options(first[key], key)))
                assert isinstance(raw, bytes)
                assert sq.unpack_entry(raw, sq.serializers.json).value == f"value of {key!r}"
        async with sq.open_query_client(config(redis_url, **L2_ONLY)) as b:
            for key in ODD_KEYS:
                assert await b.fetch_query(options(second[key], key, stale_time=60.0)) == (
                    f"value of {key!r}"
                )
        assert [origin.calls for origin in second.values()] == [0] * len(ODD_KEYS)

    async def test_an_unreachable_redis_is_a_miss_from_the_start(self) -> None:
        """With nothing listening on the port, the origin serves; the failed read is counted."""
        with RedisServer() as server:
            url = server.url  # stopped on leaving: nothing listens there any more
        origin = Origin()
        async with sq.open_query_client(config(url, **L2_ONLY, shutdown_timeout=0.1)) as client:
            assert await client.fetch_query(options(origin)) == "v1"
            stats = l2_stats(client)
            assert (stats.reads, stats.hits, stats.misses) == (1, 0, 1)
            assert stats.errors >= 1  # the read; write attempts add to it on the real clock
        assert l2_stats(client).dropped_writes == 1
        assert origin.calls == 1


class GatedGets(RedisStorage):
    """A RedisStorage whose single ``get`` never gets past its gate (``get_many`` is as is)."""

    async def get(self, key: str) -> bytes | None:
        await trio.sleep_forever()
        return await super().get(key)  # pragma: no cover


class TestReadInCallersTask:
    async def test_a_cold_key_is_read_by_its_caller_without_a_batch(self, redis_url: str) -> None:
        """A cold key Redis holds fresh: one GET from the caller's task, no reader batch."""
        origin = Origin("a1")
        async with sq.open_query_client(config(redis_url, **L2_ONLY)) as a:
            await a.fetch_query(options(origin, stale_time=60.0))
        async with sq.open_query_client(config(redis_url, **L2_ONLY)) as b:
            assert await b.fetch_query(options(origin, stale_time=60.0)) == "a1"
            stats = l2_stats(b)
            assert (stats.reads, stats.read_batches, stats.hits, stats.errors) == (1, 0, 1, 0)
        assert origin.calls == 1

    async def test_the_starting_caller_cancelled_mid_read_leaves_the_others_served(
        self, redis_url: str
    ) -> None:
        """The caller whose task reads is cancelled at once: the joined caller gets the value."""
        origin = Origin("a1")
        async with sq.open_query_client(config(redis_url, **L2_ONLY)) as a:
            await a.fetch_query(options(origin, stale_time=60.0))
        gated = config(redis_url, **L2_ONLY)
        gated = attrs.evolve(gated, storage=GatedGets(redis_url, timeout=1.0))
        async with sq.open_query_client(gated) as b:
            got: list[Any] = []
            starter = trio.CancelScope()

            async def starting() -> None:
                with starter:
                    got.append(await b.fetch_query(options(origin, stale_time=60.0)))

            async def joined() -> None:
                got.append(await b.fetch_query(options(origin, stale_time=60.0)))

            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(starting)
                    await trio.testing.wait_all_tasks_blocked()  # its GET is out
                    nursery.start_soon(joined)
                    await trio.testing.wait_all_tasks_blocked()
                    starter.cancel()
            assert starter.cancelled_caught
            assert got == ["a1"]
            stats = l2_stats(b)
            assert (stats.hits, stats.errors) == (1, 0)
        assert origin.calls == 1
