"""Hearing writes we did not make: the server's key invalidations (``redis_tracking``).

One real redis-server per test, clients in one trio.run (as separate
processes would be: each has its own connections); real time, every wait a
condition with a deadline.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

import stackquery as sq
from backends import RedisStorage, StorageError
from stackquery._errors import InvalidOptionError
from tests.stackquery.fleet_support import (
    Counted,
    fleet,
    open_clients,
    raw_redis,
    redis_command,
    wait_until,
)

pytestmark = pytest.mark.slow

KEY = ("user", 1)
L2_KEY = 'sq:["user",1]'


def state_of(client: sq.QueryClient, key: tuple[Any, ...]) -> sq.QueryState[Any]:
    """The key's state in the client's L1 (it must be there)."""
    state = client.get_query_state(key)
    assert state is not None
    return state


def l2_writes(client: sq.QueryClient) -> int:
    stats = client.l2_statistics()
    assert stats is not None
    assert stats.pending_writes == 0
    return stats.writes


class TestWritesByOthers:
    async def test_another_tools_write_marks_the_key_stale_and_its_observer_refetches(
        self, redis_url: str
    ) -> None:
        """A raw SET on an entry key (not our format) makes L1 stale; the observer refetches."""
        origin = Counted("v")
        async with open_clients(redis_url, 1) as (a,):
            assert fleet(a).tracking is True
            observer = a.watch(sq.QueryOptions(KEY, origin))
            seen: list[Any] = []
            unsubscribe = observer.subscribe(lambda s: seen.append(s.data))
            await wait_until(lambda: seen[-1:] == ["v1"])
            await wait_until(lambda: fleet(a).keys_invalidated == 1)  # our own write, heard
            assert fleet(a).invalidations_stale == 0
            await redis_command(redis_url, "SET", L2_KEY, "written by another tool")
            await wait_until(lambda: seen[-1:] == ["v2"])
            unsubscribe()
            stats = fleet(a)
            assert (stats.invalidations_stale, stats.rejected, origin.calls) == (1, 0, 2)

    async def test_an_expiry_in_l2_marks_the_key_stale(self, redis_url: str) -> None:
        """L2 forgets the entry (its TTL ran out) while L1 still holds it fresh: now stale."""
        origin = Counted("v")
        async with open_clients(redis_url, 1, storage_ttl=0.3) as (a,):
            assert await a.fetch_query(sq.QueryOptions(KEY, origin)) == "v1"
            assert state_of(a, KEY).is_invalidated is False
            await wait_until(lambda: state_of(a, KEY).is_invalidated)
            assert (fleet(a).invalidations_stale, origin.calls) == (1, 1)
            # Unobserved: nothing refetched until the next read (which answers
            # with the stale data at once and refetches).
            assert await a.fetch_query(sq.QueryOptions(KEY, origin)) == "v1"
            await wait_until(lambda: a.get_query_data(KEY) == "v2")

    async def test_an_eviction_marks_the_key_stale(self, redis_url: str) -> None:
        """Redis out of memory evicts the entry: the holder hears it."""
        origin = Counted("v")
        async with open_clients(redis_url, 1) as (a,):
            await a.fetch_query(sq.QueryOptions(KEY, origin))
            await wait_until(lambda: fleet(a).keys_invalidated == 1)  # our own write
            redis = await raw_redis(redis_url)
            try:
                await redis.execute("CONFIG", "SET", "maxmemory-policy", "allkeys-random")
                await redis.execute("CONFIG", "SET", "maxmemory", "1")
                # The next write makes the server evict every key it can first.
                with contextlib.suppress(StorageError):
                    await redis.execute("SET", "unrelated", "x")
                assert await redis.execute("EXISTS", L2_KEY) == 0
            finally:
                await redis.execute("CONFIG", "SET", "maxmemory", "0")
                await redis.aclose()
            await wait_until(lambda: state_of(a, KEY).is_invalidated)
            assert (fleet(a).invalidations_stale, origin.calls) == (1, 1)

    async def test_a_flushdb_marks_everything_stale(self, redis_url: str) -> None:
        origin = Counted("v")
        async with open_clients(redis_url, 1) as (a,):
            for n in range(3):
                await a.fetch_query(sq.QueryOptions(("k", n), origin))
            await redis_command(redis_url, "FLUSHDB")
            await wait_until(lambda: fleet(a).flushes == 1)
            assert all(state_of(a, ("k", n)).is_invalidated for n in range(3))

    async def test_a_delete_by_another_tool_marks_the_key_stale(self, redis_url: str) -> None:
        origin = Counted("v")
        async with open_clients(redis_url, 1) as (a,):
            await a.fetch_query(sq.QueryOptions(KEY, origin))
            assert await redis_command(redis_url, "DEL", L2_KEY) == 1
            await wait_until(lambda: state_of(a, KEY).is_invalidated)
            assert origin.calls == 1


class TestOurOwnWrites:
    async def test_own_and_fleet_writes_mark_nothing_stale_and_call_no_origin(
        self, redis_url: str
    ) -> None:
        """Writes by the client itself and by another stackquery client are heard but checked.

        The writer's own entry stays fresh (no refetch storm); the other
        client takes the new entry (an update) without calling its origin.
        Leases (single flight) live outside the tracked prefix: never heard.
        """
        origin_a, origin_b = Counted("a"), Counted("b")
        async with open_clients(redis_url, 2) as (a, b):
            assert await a.fetch_query(sq.QueryOptions(KEY, origin_a)) == "a1"  # took a lease
            assert await b.fetch_query(sq.QueryOptions(KEY, origin_b)) == "a1"  # from L2
            for n in range(20):
                await a.set_query_data(KEY, f"set {n}")
            await wait_until(lambda: b.get_query_data(KEY) == "set 19")
            # Every entry write that landed (the write-behind coalesces some of
            # the 20) is heard by both clients, their own included.
            written = l2_writes(a) + l2_writes(b)
            assert 2 <= written <= 21
            await wait_until(lambda: fleet(a).keys_invalidated == written)
            await wait_until(lambda: fleet(b).keys_invalidated == written)
            for client in (a, b):
                stats = fleet(client)
                assert (stats.invalidations_stale, stats.rejected) == (0, 0)
                assert state_of(client, KEY).is_invalidated is False
            assert (origin_a.calls, origin_b.calls) == (1, 0)
            # The extra traffic: at most one L2 read per heard write per holder.
            assert fleet(a).invalidations_checked <= written
            assert fleet(b).invalidations_checked <= written


class TestUntrustedInput:
    async def test_forged_invalidation_messages_are_counted_and_the_subscription_stays(
        self, redis_url: str
    ) -> None:
        origin = Counted("v")
        async with open_clients(redis_url, 1) as (a,):
            await a.fetch_query(sq.QueryOptions(KEY, origin))
            subscriptions = fleet(a).subscriptions
            for junk in (b"junk", b"", b"\xff" * 100):
                await redis_command(redis_url, "PUBLISH", "__redis__:invalidate", junk)
            await wait_until(lambda: fleet(a).rejected == 3)
            # Keys outside our prefix, or not utf-8, are ignored.
            await redis_command(redis_url, "SET", b'sq:["user",\xff]', "x")
            await redis_command(redis_url, "SET", L2_KEY, "x")
            await wait_until(lambda: state_of(a, KEY).is_invalidated)
            stats = fleet(a)
            assert (stats.connected, stats.subscriptions, stats.errors) == (True, subscriptions, 0)


class TestSwitch:
    async def test_off_hears_nothing(self, redis_url: str) -> None:
        origin = Counted("v")
        async with (
            open_clients(redis_url, 1, redis_tracking=False) as (a,),
            open_clients(redis_url, 1) as (witness,),
        ):
            assert (fleet(a).tracking, fleet(witness).tracking) == (False, True)
            await a.fetch_query(sq.QueryOptions(KEY, origin))
            await wait_until(lambda: fleet(witness).keys_invalidated == 1)
            await redis_command(redis_url, "SET", L2_KEY, "x")
            # The server tells every tracking client in the same pass: once the
            # witness heard it, a tracking client would have too.
            await wait_until(lambda: fleet(witness).keys_invalidated == 2)
            assert state_of(a, KEY).is_invalidated is False
            assert fleet(a).keys_invalidated == 0

    def test_on_without_the_broadcast_is_refused_naming_both_settings(self) -> None:
        with pytest.raises(InvalidOptionError, match=r"redis_tracking=True.*broadcast=False"):
            sq.QueryClientConfig(redis_tracking=True, broadcast=False)
        with pytest.raises(InvalidOptionError, match="redis_tracking must be True, False or None"):
            sq.QueryClientConfig(redis_tracking="yes")  # type: ignore[arg-type]
        assert sq.QueryClientConfig(redis_tracking=None, broadcast=False).redis_tracking is None


class TestTheTrackingConnection:
    async def test_losing_it_loses_the_subscription_which_comes_back_tracking(
        self, redis_url: str
    ) -> None:
        """Killed by the server, the tracking connection is noticed at the next ping."""

        def storage() -> RedisStorage:
            return RedisStorage(redis_url, timeout=2.0, ping_interval=0.05)

        origin = Counted("v")
        async with open_clients(redis_url, 1, storage=storage) as (a,):
            await a.fetch_query(sq.QueryOptions(KEY, origin))
            clients = await redis_command(redis_url, "CLIENT", "LIST")
            fields = [dict(f.split(b"=", 1) for f in line.split()) for line in clients.splitlines()]
            tracking = [f[b"id"] for f in fields if b"t" in f[b"flags"]]  # t: tracking on
            assert len(tracking) == 1, clients
            await redis_command(redis_url, "CLIENT", "KILL", "ID", tracking[0])
            await wait_until(lambda: fleet(a).subscriptions == 2)
            await wait_until(lambda: fleet(a).connected)
            # The resubscription marked everything stale: fetch it fresh again.
            assert state_of(a, KEY).is_invalidated
            await a.fetch_query(sq.QueryOptions(KEY, origin))
            await wait_until(lambda: not state_of(a, KEY).is_invalidated)
            await redis_command(redis_url, "SET", L2_KEY, "x")  # heard: tracking is back
            await wait_until(lambda: state_of(a, KEY).is_invalidated)
            assert fleet(a).invalidations_stale == 1
