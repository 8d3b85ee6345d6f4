"""Specification of how the origin protections compose (issue 14, both halves merged).

* One "servable until": ``fetched_at + max_age`` or ``stale_at + max_stale``
  (``stale_at`` from ``stale_time(data)``, jittered), whichever comes first;
  ``stale_if_error`` extends it by its window for failed fetches.
* The key (L1, and L2 whose TTL is ``gc_time``) is kept while a failed fetch
  may still serve it: ``computed period + max_stale + stale_if_error``.
* An attempt refused by an open circuit breaker ends the fetch: no retry, the
  ``retry`` predicate is not asked, no failed attempt counted.
* In a failed fetch the error is remembered (``error_ttl``) first, then
  ``stale_if_error`` decides what the waiting callers get.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
from tests.stackquery.client_origin import Failure, Origin

KEY = ("combined", 1)


async def outcome(client: sq.QueryClient, opts: sq.QueryOptions[Any]) -> Any:
    """``fetch_query``'s value, or the exception it raised."""
    try:
        return await client.fetch_query(opts)
    except Exception as exc:
        return exc


class TestServableUntil:
    async def test_stale_if_error_counts_from_stale_at_plus_max_stale(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """stale_time(data)=10, max_stale=5, stale_if_error=20: servable until 15, served on
        failure until 35, the error from 35 on."""
        origin = Origin("v1", Failure("down"))
        opts = sq.QueryOptions(
            query_key=KEY,
            query_fn=origin,
            retry=0,
            stale_time=lambda data: 10.0,
            max_stale=5.0,
            stale_if_error=20.0,
        )
        async with sq.open_query_client() as client:
            assert await client.fetch_query(opts) == "v1"
            await trio.sleep(14.0)
            assert await client.fetch_query(opts) == "v1"  # stale, servable: no wait
            await trio.sleep(0.0)  # its background refetch fails (nobody waits on it)
            await trio.sleep(2.0)  # t=16: past 15, a read waits and the refetch fails
            assert await client.fetch_query(opts) == "v1"
            assert client.statistics().stale_if_error_served == 1
            await trio.sleep(19.0)  # t=35: the window is closed
            assert isinstance(await outcome(client, opts), Failure)
            assert origin.calls == 4  # t=0, the background refetch at 14, t=16, t=35

    async def test_the_earlier_of_max_age_and_max_stale_bounds_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """max_age=8 (before stale_at + max_stale = 15): stale_if_error=4 serves until 12."""
        origin = Origin("v1", Failure("down"))
        opts = sq.QueryOptions(
            query_key=KEY,
            query_fn=origin,
            retry=0,
            stale_time=10.0,
            max_stale=5.0,
            max_age=8.0,
            stale_if_error=4.0,
        )
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            await trio.sleep(11.0)
            assert await client.fetch_query(opts) == "v1"
            await trio.sleep(1.0)  # t=12
            assert isinstance(await outcome(client, opts), Failure)
            assert origin.calls == 3

    async def test_the_key_is_kept_for_period_plus_max_stale_plus_window(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """gc_time 1 with stale_time(data)=10, max_stale=5, stale_if_error=20: gc_time 35."""
        opts = sq.QueryOptions(
            query_key=KEY,
            query_fn=Origin("v1"),
            stale_time=lambda data: 10.0,
            gc_time=1.0,
            max_stale=5.0,
            stale_if_error=20.0,
        )
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            assert client.snapshots[opts.key_hash].gc_time == 35.0

    async def test_the_clients_window_counts_too(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """QueryClientConfig(stale_if_error=7) with max_stale=5, stale_time=10: gc_time 22."""
        opts = sq.QueryOptions(
            query_key=KEY, query_fn=Origin("v1"), stale_time=10.0, gc_time=1.0, max_stale=5.0
        )
        async with sq.open_query_client(sq.QueryClientConfig(stale_if_error=7.0)) as client:
            await client.fetch_query(opts)
            assert client.snapshots[opts.key_hash].gc_time == 22.0


class TestCacheDecorator:
    async def test_numeric_ttl_keeps_ttl_plus_stale_plus_window(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@cache(10, stale=5, stale_if_error=20): the key's gc_time (the L2 TTL) is 35."""

        @sq.cache(10, stale=5, stale_if_error=20)
        async def get(x: int) -> int:
            return x

        async with sq.open_query_client(sq.QueryClientConfig(gc_time=1.0)) as client:
            assert await get(1) == 1
            assert [snap.gc_time for snap in client.snapshots.values()] == [35.0]

    async def test_a_ttl_function_serves_on_failure_within_its_window(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@cache(ttl=lambda v: 100, stale=5, stale_if_error=50) on a client with gc_time 1:
        kept past 105, served at t=140 when the call fails, the error at t=160."""
        calls = 0

        @sq.cache(lambda value: 100.0, stale=5, stale_if_error=50)
        async def get_rate(currency: str) -> float:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise Failure("down")
            return 1.25

        async with sq.open_query_client(sq.QueryClientConfig(retry=0, gc_time=1.0)):
            assert await get_rate("EUR") == 1.25
            await trio.sleep(140.0)
            assert await get_rate("EUR") == 1.25
            await trio.sleep(20.0)
            with pytest.raises(Failure):
                await get_rate("EUR")
            assert calls == 3


class TestCircuitAndRetry:
    async def test_the_predicate_is_not_asked_about_a_refused_attempt(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The first failure opens the breaker; the retry is refused: the predicate saw one
        error (the origin's), the origin one call.  The key's fetch_failure_count counts
        the refused attempt too (the fetch failed twice), as a CircuitBreaker query does."""
        asked: list[tuple[int, str]] = []

        def retry(failure_count: int, error: Exception) -> bool:
            asked.append((failure_count, type(error).__name__))
            return True

        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=1000.0)
        origin = Origin(Failure("down"))
        opts = sq.QueryOptions(
            query_key=KEY, query_fn=origin, retry=retry, retry_delay=1.0, circuit=breaker
        )
        async with sq.open_query_client() as client:
            assert isinstance(await outcome(client, opts), sq.CircuitOpenError)
            state = client.get_query_state(KEY)
            assert state is not None
            assert asked == [(0, "Failure")]
            assert origin.calls == 1
            assert (state.fetch_failure_count, type(state.error)) == (2, sq.CircuitOpenError)


class TestFailureBranch:
    async def test_error_ttl_circuit_and_stale_if_error_compose(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """max_age 10, stale_if_error 20, error_ttl 5, breaker opening at one failure:
        t=11 the refetch fails (served v1, error remembered, breaker open); t=13 the
        remembered error serves v1 with no call; t=17 the breaker refuses, v1 served;
        t=31 past the window: CircuitOpenError."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=1000.0)
        origin = Origin("v1", Failure("down"))
        opts = sq.QueryOptions(
            query_key=KEY,
            query_fn=origin,
            retry=0,
            max_age=10.0,
            stale_if_error=20.0,
            error_ttl=5.0,
            circuit=breaker,
        )
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            await trio.sleep(11.0)
            assert await client.fetch_query(opts) == "v1"
            assert breaker.state is sq.CircuitState.OPEN
            await trio.sleep(2.0)  # t=13: the remembered error stands for the fetch
            assert await client.fetch_query(opts) == "v1"
            assert (origin.calls, breaker.statistics().refused) == (2, 0)
            assert client.statistics().stale_if_error_served == 2
            await trio.sleep(4.0)  # t=17: the remembered error is forgotten
            assert await client.fetch_query(opts) == "v1"  # refused, served
            await trio.sleep(14.0)  # t=31
            assert isinstance(await outcome(client, opts), sq.CircuitOpenError)
            assert origin.calls == 2
