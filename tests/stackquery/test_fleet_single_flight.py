"""Fleet-wide single flight, in one trio.run: several clients on one real redis-server.

The holder of a key's lease (``SET NX PX`` with a token) calls the origin,
writes L2, announces, and releases by compare-and-delete; the others wait for
its value.  These tests pin the finer points the multi-process tests cannot
time exactly.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio

import stackquery as sq
from tests.stackquery.fleet_support import (
    DEADLINE,
    Counted,
    Gate,
    fleet,
    fleet_config,
    open_clients,
    raw_redis,
    wait_until,
)

pytestmark = pytest.mark.slow

LEASE_PREFIX = "sq:lease:"
L2_PREFIX = "sq:"
"""``RedisStorage``'s own default prefix, then the client's default ``key_prefix``."""


def l2_name(options: sq.QueryOptions[Any]) -> str:
    """The Redis key of the query's L2 entry."""
    return L2_PREFIX + options.key_hash


def lease_name(options: sq.QueryOptions[Any]) -> str:
    """The Redis key of the query's single-flight lease (default ``key_prefix``)."""
    return LEASE_PREFIX + options.key_hash


async def fetch_into(client: sq.QueryClient, options: sq.QueryOptions[Any], out: list[Any]) -> None:
    """``fetch_query`` and append the result to ``out`` (for calls started in a nursery)."""
    out.append(await client.fetch_query(options))


async def settled(client: sq.QueryClient) -> None:
    """Wait until no key of ``client`` has a running actor (every fetch and lease ended)."""
    await wait_until(lambda: client.statistics().active_actors == 0)


class TestWaiting:
    async def test_waiters_are_woken_by_the_update_message(self, redis_url: str) -> None:
        """With polling an hour apart, only the holder's update message can end the wait."""
        key = ("report", 1)
        holder, other = Gate("a"), Counted("b")
        got: list[Any] = []
        async with open_clients(redis_url, 2, lease_poll_interval=3600.0) as (a, b):
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fetch_into, a, sq.QueryOptions(key, holder), got)
                    await holder.started.wait()
                    nursery.start_soon(fetch_into, b, sq.QueryOptions(key, other), got)
                    await wait_until(lambda: fleet(b).leases_waited == 1)
                    holder.open()
            assert got == ["a1", "a1"]
            assert (holder.calls, other.calls) == (1, 0)
            assert (fleet(a).leases_taken, fleet(a).leases_waited) == (1, 0)
            assert (fleet(b).leases_taken, fleet(b).leases_waited, fleet(b).takeovers) == (0, 1, 0)
            state = b.get_query_state(key)
            assert state is not None
            assert (state.data, state.is_stale, state.fetch_status) == (
                "a1",
                False,
                sq.FetchStatus.IDLE,
            )

    async def test_a_failed_holder_releases_and_a_waiter_takes_over(self, redis_url: str) -> None:
        """The holder's fetch fails: it releases at once, and the waiter calls its own origin."""
        key = ("report", 2)
        holder, other = Gate("a"), Counted("b")

        async def failing() -> str:
            await holder()
            raise RuntimeError("origin down")

        got: list[Any] = []
        failure: list[BaseException] = []

        async def a_fetch(a: sq.QueryClient) -> None:
            try:
                await a.fetch_query(sq.QueryOptions(key, failing))
            except RuntimeError as exc:
                failure.append(exc)

        async with open_clients(redis_url, 2, lease_time=60.0, lease_poll_interval=0.02) as (a, b):
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a_fetch, a)
                    await holder.started.wait()
                    nursery.start_soon(fetch_into, b, sq.QueryOptions(key, other), got)
                    await wait_until(lambda: fleet(b).leases_waited == 1)
                    holder.open()
            assert [str(exc) for exc in failure] == ["origin down"]
            assert got == ["b1"]
            assert (holder.calls, other.calls) == (1, 1)
            assert (fleet(b).leases_waited, fleet(b).takeovers, fleet(b).leases_taken) == (1, 1, 0)
            # no wake-up event left behind
            assert b._fleet is not None and b._fleet.leases._arrivals == {}

    async def test_a_closing_holder_releases_its_lease_at_once(self, redis_url: str) -> None:
        """A client closed mid-fetch releases its lease: a waiter need not wait out lease_time."""
        key = ("report", 3)
        holder, other = Gate("a"), Counted("b")
        got: list[Any] = []
        async with open_clients(redis_url, 1, lease_time=60.0, lease_poll_interval=0.02) as (b,):
            with trio.fail_after(DEADLINE):
                async with trio.open_nursery() as nursery:
                    a_scope = trio.CancelScope()

                    async def run_a() -> None:
                        with a_scope:
                            async with sq.open_query_client(fleet_config(redis_url)) as a:
                                await a.fetch_query(sq.QueryOptions(key, holder))

                    nursery.start_soon(run_a)
                    await holder.started.wait()
                    nursery.start_soon(fetch_into, b, sq.QueryOptions(key, other), got)
                    await wait_until(lambda: fleet(b).leases_waited == 1)
                    a_scope.cancel()
            assert got == ["b1"]
            assert (holder.calls, other.calls) == (1, 1)
            assert fleet(b).takeovers == 1

    async def test_single_flight_false_on_a_query_lets_each_client_call_its_origin(
        self, redis_url: str
    ) -> None:
        """``QueryOptions(single_flight=False)``: no lease, each client fetches for itself."""
        key = ("report", 4)
        first, second = Counted("a"), Counted("b")
        async with open_clients(redis_url, 2) as (a, b):
            assert await a.fetch_query(sq.QueryOptions(key, first, single_flight=False)) == "a1"
            options = sq.QueryOptions(key, second, single_flight=False, stale_time=0.0)
            await b.fetch_query(options)
            await settled(b)
            assert (first.calls, second.calls) == (1, 1)
            assert fleet(a).leases_taken + fleet(b).leases_taken == 0


class TestLeaseSafety:
    async def test_the_double_check_takes_a_value_that_landed_before_the_lease(
        self, redis_url: str
    ) -> None:
        """A lease taken after another client's value landed is released unused: no origin call."""
        key = ("report", 5)
        origin_a, origin_b = Counted("a"), Counted("b")
        stale = {"stale_time": 0.0}
        async with (
            sq.open_query_client(fleet_config(redis_url, broadcast=False)) as b,
            open_clients(redis_url, 1) as (a,),
        ):
            # b: deaf to broadcasts, so only the double-check can show it a's value.
            assert await b.fetch_query(sq.QueryOptions(key, origin_b, **stale)) == "b1"
            await settled(b)
            assert await a.fetch_query(sq.QueryOptions(key, origin_a, **stale)) == "b1"
            await settled(a)
            assert a.get_query_data(key) == "a1"
            # b's data is stale: its refetch takes the lease, then finds a1 newer than b1.
            assert await b.fetch_query(sq.QueryOptions(key, origin_b, **stale)) == "b1"
            await settled(b)
            assert b.get_query_data(key) == "a1"
            assert (origin_a.calls, origin_b.calls) == (1, 1)
            assert (fleet(b).leases_taken, fleet(b).leases_waited) == (1, 0)
            redis = await raw_redis(redis_url)
            try:
                lease = sq.QueryOptions(key, origin_b)
                assert await redis.execute("EXISTS", lease_name(lease)) == 0
            finally:
                await redis.aclose()

    async def test_release_and_renewal_never_touch_another_holders_lease(
        self, redis_url: str
    ) -> None:
        """Once the lease holds another token, renewing and releasing leave it alone."""
        holder = Gate("a")
        options = sq.QueryOptions(("report", 6), holder)
        redis = await raw_redis(redis_url)
        try:
            async with open_clients(redis_url, 1, lease_time=0.3) as (a,):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.fetch_query, options)
                    await holder.started.wait()
                    token = await redis.execute("GET", lease_name(options))
                    assert isinstance(token, bytes)
                    assert re.fullmatch(rb"[0-9a-f]{16}:\d+", token)
                    # a's lease expired and someone else took it:
                    await redis.execute("SET", lease_name(options), "intruder", "PX", 60_000)
                    # Renewals run every 0.1 s; give a's keeper three chances to get it wrong.
                    await trio.sleep(0.35)
                    pttl = await redis.execute("PTTL", lease_name(options))
                    assert isinstance(pttl, int) and pttl > 50_000
                    holder.open()
                await settled(a)
                assert a.get_query_data(("report", 6)) == "a1"
            assert await redis.execute("GET", lease_name(options)) == b"intruder"
        finally:
            await redis.aclose()


class TestInvalidatedInFlight:
    async def test_a_leased_fetch_invalidated_in_flight_lands_invalidated_in_l2(
        self, redis_url: str
    ) -> None:
        """Invalidated while the holder fetched: its L2 entry says so, and a newcomer refetches."""
        key = ("report", 7)
        holder, late = Gate("a"), Counted("c")
        async with open_clients(redis_url, 2) as (a, b):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.fetch_query, sq.QueryOptions(key, holder))
                await holder.started.wait()
                await b.invalidate_queries(("report",))
                await wait_until(lambda: fleet(a).received == 1)
                holder.open()
            await settled(a)
            state = a.get_query_state(key)
            assert state is not None
            assert (state.data, state.is_invalidated) == ("a1", True)
            redis = await raw_redis(redis_url)
            try:
                raw = await redis.execute("GET", l2_name(sq.QueryOptions(key, late)))
            finally:
                await redis.aclose()
            assert isinstance(raw, bytes)
            entry = sq.unpack_entry(raw, sq.serializers.json)
            assert (entry.value, entry.invalidated) == ("a1", True)
            async with open_clients(redis_url, 1) as (c,):
                assert await c.fetch_query(sq.QueryOptions(key, late)) == "a1"
                state = c.get_query_state(key)
                assert state is not None and state.is_invalidated
                await settled(c)
                assert (c.get_query_data(key), late.calls) == ("c1", 1)

    async def test_a_waiter_does_not_take_a_value_invalidated_in_flight(
        self, redis_url: str
    ) -> None:
        """The holder's value was invalidated in flight: the waiter takes over, serves its own."""
        key = ("report", 8)
        holder, watcher = Gate("a"), Counted("b")
        async with open_clients(redis_url, 3, lease_poll_interval=0.02) as (a, b, c):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.fetch_query, sq.QueryOptions(key, holder))
                await holder.started.wait()
                observer = b.watch(sq.QueryOptions(key, watcher))
                async with observer.updates() as states:
                    await wait_until(lambda: fleet(b).leases_waited == 1)
                    await c.invalidate_queries(("report",))
                    await wait_until(lambda: fleet(a).received == 1 and fleet(b).received == 1)
                    holder.open()
                    with trio.fail_after(DEADLINE):
                        async for state in states:
                            if state.data == "b1" and state.fetch_status is sq.FetchStatus.IDLE:
                                break
                    # Its origin call started after the invalidation: its value is fresh.
                    assert (state.is_stale, state.is_invalidated) == (False, False)
            assert (holder.calls, watcher.calls) == (1, 1)
            assert (fleet(b).takeovers, fleet(b).leases_taken) == (1, 0)

    async def test_a_waiter_told_of_an_invalidation_takes_the_value_as_invalidated(
        self, redis_url: str
    ) -> None:
        """The value landed before an invalidation the waiter heard of: it arrives invalidated."""
        key = ("report", 10)
        holder, watcher = Gate("a"), Counted("b")
        async with (
            # a is deaf and mute: it neither announces its value nor hears the invalidation.
            sq.open_query_client(fleet_config(redis_url, broadcast=False)) as a,
            open_clients(redis_url, 2, lease_poll_interval=0.5) as (b, c),
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.fetch_query, sq.QueryOptions(key, holder))
                await holder.started.wait()
                seen: list[tuple[Any, bool, sq.FetchStatus]] = []
                observer = b.watch(sq.QueryOptions(key, watcher), notify_on="all")
                unsubscribe = observer.subscribe(
                    lambda s: seen.append((s.data, s.is_invalidated, s.fetch_status))
                )
                await wait_until(lambda: fleet(b).leases_waited == 1)
                holder.open()
                await settled(a)
                await c.invalidate_queries(("report",))
                await wait_until(lambda: fleet(b).received == 1)
                # b's next look at L2 (a poll) finds a1, older than the invalidation.
                await wait_until(lambda: seen[-1] == ("b1", False, sq.FetchStatus.IDLE))
                unsubscribe()
            assert ("a1", True, sq.FetchStatus.IDLE) in seen
            assert ("a1", False, sq.FetchStatus.IDLE) not in seen
            assert (holder.calls, watcher.calls) == (1, 1)
            assert (fleet(b).takeovers, fleet(b).leases_taken) == (0, 1)


class TestRedisRefusing:
    @pytest.mark.parametrize(
        ("denied", "expected_errors"),
        [("-set", 1), ("-eval", 1), ("-publish", 1)],
        ids=["lease", "release", "publish"],
    )
    async def test_error_replies_are_counted_and_the_fetch_goes_on(
        self, redis_url: str, denied: str, expected_errors: int
    ) -> None:
        """Redis answering errors (no permission, out of memory) degrades, it never crashes."""
        key = ("report", 9)
        origin = Counted("a")
        redis = await raw_redis(redis_url)
        try:
            async with open_clients(redis_url, 1) as (a,):
                await redis.execute("ACL", "SETUSER", "default", denied)
                assert await a.fetch_query(sq.QueryOptions(key, origin)) == "a1"
                await settled(a)
                await wait_until(lambda: fleet(a).errors == expected_errors)
                assert a.get_query_data(key) == "a1"
                assert origin.calls == 1
        finally:
            await redis.execute("ACL", "SETUSER", "default", "+@all")
            await redis.aclose()
