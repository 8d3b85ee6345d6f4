"""Specification of L1 garbage collection (gc_time) and the max_queries bound."""

from __future__ import annotations

import math
from typing import Any

import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery._query_cache import USE_CLOCK_RESOLUTION
from tests.stackquery.client_origin import Origin

KEY = ("feed", 1)


def options(origin: Any, key: tuple[Any, ...] = KEY, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=key, query_fn=origin, **kwargs)


async def cached_at(client: sq.QueryClient, when: float, key: tuple[Any, ...] = KEY) -> bool:
    """Whether ``key`` is in L1 at trio time ``when`` (once every timer due then has fired)."""
    await trio.sleep_until(when)
    await wait_all_tasks_blocked()
    assert trio.current_time() == when
    return client.get_query_state(key) is not None


class TestGcTime:
    async def test_unused_key_leaves_exactly_gc_time_after_its_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key fetched at t=0 with gc_time 10 is cached at 9.999 and gone at 10."""
        async with sq.open_query_client(sq.QueryClientConfig(gc_time=10.0)) as client:
            await client.fetch_query(options(Origin()))
            assert await cached_at(client, 9.999)
            assert not await cached_at(client, 10.0)
            assert client.statistics().queries == 0

    async def test_countdown_starts_when_a_long_fetch_ends(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fetch from t=0 to t=30 keeps the key; it goes at 40, gc_time after the fetch."""
        async with sq.open_query_client(sq.QueryClientConfig(gc_time=10.0)) as client:
            await client.fetch_query(options(Origin(delay=30.0)))
            assert await cached_at(client, 39.999)
            assert not await cached_at(client, 40.0)

    async def test_fresh_hit_counts_as_use(self, autojump_clock: trio.testing.MockClock) -> None:
        """A fresh hit at t=7.5 moves the key's end from t=10 to t=17.5 (to within a second).

        Fresh hits read no clock: they record a bound the client's ticker keeps
        at most USE_CLOCK_RESOLUTION ahead, so the key never leaves early and
        at most that much late.
        """
        assert USE_CLOCK_RESOLUTION == 1.0
        opts = options(Origin(), stale_time=60.0, gc_time=10.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            await trio.sleep_until(7.5)
            await client.fetch_query(opts)
            assert await cached_at(client, 17.499)
            assert await cached_at(client, 17.999)
            assert not await cached_at(client, 18.0)

    async def test_stale_hit_counts_as_use(self, autojump_clock: trio.testing.MockClock) -> None:
        """A stale read (and its refetch) at t=5 moves the key's end to t=15."""
        opts = options(Origin(), gc_time=10.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            await trio.sleep_until(5.0)
            await client.fetch_query(opts)
            assert await cached_at(client, 14.999)
            assert not await cached_at(client, 15.0)

    async def test_observed_key_is_never_collected(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key observed until t=100 stays, then goes 10 s after the unsubscribe."""
        async with sq.open_query_client(sq.QueryClientConfig(gc_time=10.0)) as client:
            unsubscribe = client.watch(options(Origin())).subscribe(lambda _s: None)
            assert await cached_at(client, 100.0)
            unsubscribe()
            assert await cached_at(client, 109.999)
            assert not await cached_at(client, 110.0)

    async def test_every_new_subscriber_cancels_the_countdown(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Three observe/leave rounds, each within the last countdown: gc runs from the last."""
        async with sq.open_query_client(sq.QueryClientConfig(gc_time=10.0)) as client:
            observer = client.watch(options(Origin(), stale_time=math.inf))
            await client.fetch_query(options(Origin(), stale_time=math.inf))
            for subscribe_at, leave_at in ((5.0, 8.0), (15.0, 20.0), (27.0, 29.0)):
                await trio.sleep_until(subscribe_at)
                unsubscribe = observer.subscribe(lambda _s: None)
                await trio.sleep_until(leave_at)
                unsubscribe()
            assert await cached_at(client, 38.999)
            assert not await cached_at(client, 39.0)

    async def test_gc_fires_on_the_second_idle_period_too(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Regression: a key collected once, used again, is collected again on time."""
        async with sq.open_query_client(sq.QueryClientConfig(gc_time=10.0)) as client:
            unsubscribe = client.watch(options(Origin())).subscribe(lambda _s: None)
            await trio.sleep_until(5.0)
            unsubscribe()
            assert not await cached_at(client, 15.0)
            await trio.sleep_until(20.0)
            unsubscribe = client.watch(options(Origin())).subscribe(lambda _s: None)
            await trio.sleep_until(25.0)
            unsubscribe()
            assert await cached_at(client, 34.999)
            assert not await cached_at(client, 35.0)
            await client.fetch_query(options(Origin()))
            assert await cached_at(client, 44.999)
            assert not await cached_at(client, 45.0)

    async def test_second_idle_period_after_resubscribe_without_collection(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Regression: subscribe, leave, return before gc, leave: gc fires after the 2nd leave."""
        async with sq.open_query_client(sq.QueryClientConfig(gc_time=10.0)) as client:
            observer = client.watch(options(Origin()))
            unsubscribe = observer.subscribe(lambda _s: None)
            await trio.sleep_until(2.0)
            unsubscribe()
            await trio.sleep_until(6.0)
            unsubscribe = observer.subscribe(lambda _s: None)
            await trio.sleep_until(9.0)
            unsubscribe()
            assert await cached_at(client, 18.999)
            assert not await cached_at(client, 19.0)

    async def test_gc_time_option_overrides_the_client(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A query's gc_time of 3 beats the client's 300."""
        async with sq.open_query_client() as client:
            await client.fetch_query(options(Origin(), gc_time=3.0))
            assert await cached_at(client, 2.999)
            assert not await cached_at(client, 3.0)

    async def test_later_longer_gc_time_is_honoured(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key created with gc_time 10 and refetched at t=1 with gc_time 100 stays until t=101."""
        origin = Origin()
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin, gc_time=10.0))
            await trio.sleep_until(1.0)
            await client.fetch_query(options(origin, gc_time=100.0))
            assert await cached_at(client, 100.999)
            assert not await cached_at(client, 101.0)
            assert origin.calls == 2

    async def test_infinite_gc_time_keeps_the_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """gc_time=inf never collects and arms no timer for the key."""
        async with sq.open_query_client(sq.QueryClientConfig(gc_time=math.inf)) as client:
            await client.fetch_query(options(Origin()))
            assert await cached_at(client, 1e9)
            assert client.statistics().timers == 0

    async def test_zero_gc_time_with_a_fetch_in_flight_does_not_hang(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """gc_time=0 with a fetch in flight neither spins the timer task nor loses the fetch."""
        async with sq.open_query_client(sq.QueryClientConfig(gc_time=0.0)) as client:
            with trio.fail_after(100.0):
                assert await client.fetch_query(options(Origin(delay=1.0))) == "v1"
            assert trio.current_time() == 1.0
            await trio.sleep(2.0)
            await wait_all_tasks_blocked()
            assert client.get_query_state(KEY) is None

    async def test_collected_key_is_fetched_again(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A read of a collected key is cold again: it waits for a new fetch."""
        origin = Origin(delay=1.0)
        opts = options(origin, stale_time=math.inf, gc_time=10.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            assert not await cached_at(client, 11.0)
            assert await client.fetch_query(opts) == "v2"
            assert trio.current_time() == 12.0


class TestMaxQueries:
    async def test_bound_evicts_the_oldest_idle_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With max_queries=2, caching A, B, C leaves B and C."""
        async with sq.open_query_client(sq.QueryClientConfig(max_queries=2)) as client:
            for name in "ABC":
                await client.fetch_query(options(Origin(), (name,)))
                await trio.sleep(1.0)
            assert [n for n in "ABC" if client.get_query_state((n,)) is not None] == ["B", "C"]
            assert client.statistics().queries == 2

    async def test_fresh_hit_makes_a_key_recently_used(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fresh hit on A after B was cached makes B the one evicted for C."""
        async with sq.open_query_client(
            sq.QueryClientConfig(max_queries=2, stale_time=60.0)
        ) as client:
            first = options(Origin(), ("A",))
            await client.fetch_query(first)
            await trio.sleep(1.0)
            await client.fetch_query(options(Origin(), ("B",)))
            await trio.sleep(1.0)
            await client.fetch_query(first)
            await trio.sleep(1.0)
            await client.fetch_query(options(Origin(), ("C",)))
            assert [n for n in "ABC" if client.get_query_state((n,)) is not None] == ["A", "C"]

    async def test_stale_read_and_refetch_make_a_key_recently_used(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A stale read of A (refetching it) after B was cached makes B the one evicted."""
        async with sq.open_query_client(sq.QueryClientConfig(max_queries=2)) as client:
            first = options(Origin(), ("A",))
            await client.fetch_query(first)
            await trio.sleep(1.0)
            await client.fetch_query(options(Origin(), ("B",)))
            await trio.sleep(1.0)
            await client.fetch_query(first)
            await wait_all_tasks_blocked()
            await trio.sleep(1.0)
            await client.fetch_query(options(Origin(), ("C",)))
            assert [n for n in "ABC" if client.get_query_state((n,)) is not None] == ["A", "C"]
            assert client.get_query_data(("A",)) == "v2"

    async def test_observed_key_is_never_evicted(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With max_queries=1 an observed key stays while other keys come and go."""
        async with sq.open_query_client(sq.QueryClientConfig(max_queries=1)) as client:
            unsubscribe = client.watch(options(Origin(), ("A",))).subscribe(lambda _s: None)
            await wait_all_tasks_blocked()
            for name in "BCD":
                await client.fetch_query(options(Origin(), (name,)))
                await wait_all_tasks_blocked()
            assert client.get_query_data(("A",)) == "v1"
            assert client.get_query_data(("D",)) == "v1"
            assert [n for n in "BC" if client.get_query_state((n,)) is not None] == []
            unsubscribe()

    async def test_eviction_never_takes_a_key_with_a_fetch_in_flight(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Regression: keys set during A's fetch do not evict A; its result lands, fresh."""
        origin = Origin(delay=5.0)
        opts = options(origin, ("A",), stale_time=60.0)
        async with sq.open_query_client(sq.QueryClientConfig(max_queries=1)) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.fetch_query, opts)
                await trio.sleep(1.0)
                for name in "BCD":
                    assert await client.set_query_data((name,), name.lower()) == name.lower()
                assert client.get_query_state(("A",)) is not None
            assert trio.current_time() == 5.0
            assert client.get_query_data(("A",)) == "v1"
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(opts) == "v1"
            assert origin.calls == 1
            assert client.get_query_data(("D",)) == "d"

    async def test_new_key_is_kept_when_every_other_key_is_busy(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """set_query_data on a new key caches it when max_queries=1 is held by an observer."""
        async with sq.open_query_client(sq.QueryClientConfig(max_queries=1)) as client:
            unsubscribe = client.watch(options(Origin(), ("A",))).subscribe(lambda _s: None)
            await wait_all_tasks_blocked()
            assert await client.set_query_data(("B",), "b") == "b"
            assert client.get_query_data(("B",)) == "b"
            assert client.get_query_data(("A",)) == "v1"
            unsubscribe()

    async def test_unbounded_by_default(self, autojump_clock: trio.testing.MockClock) -> None:
        """Without max_queries a thousand keys all stay cached."""
        async with sq.open_query_client() as client:
            for n in range(1000):
                await client.set_query_data(("k", n), n)
            assert client.statistics().queries == 1000
