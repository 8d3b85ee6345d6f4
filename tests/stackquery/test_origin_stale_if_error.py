"""Specification of ``stale_if_error``: the last good data past max age when the refetch fails."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
from stackquery import CacheEventType, QueryStatus
from tests.stackquery.client_origin import Failure, Origin

KEY = ("report", 7)


def options(origin: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
    kwargs.setdefault("retry", 0)
    kwargs.setdefault("max_age", 10.0)
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)


async def outcome(client: sq.QueryClient, opts: sq.QueryOptions[Any]) -> Any:
    """``fetch_query``'s value, or the exception it raised."""
    try:
        return await client.fetch_query(opts)
    except Exception as exc:
        return exc


class TestClient:
    async def test_serves_last_good_data_within_the_window(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """max_age 10, stale_if_error 5: at t=12 the refetch fails and the caller gets v1."""
        origin = Origin("v1", Failure("down"))
        async with sq.open_query_client() as client:
            opts = options(origin, stale_if_error=5.0)
            assert await client.fetch_query(opts) == "v1"
            await trio.sleep(12.0)
            assert await client.fetch_query(opts) == "v1"
            assert origin.calls == 2
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.status, state.data, state.is_stale, state.fetch_failure_count) == (
                QueryStatus.ERROR,
                "v1",
                True,
                1,
            )
            assert isinstance(state.error, Failure)
            assert client.statistics().stale_if_error_served == 1

    async def test_every_caller_past_the_window_gets_the_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """At t=15 exactly (max_age + stale_if_error) the window is closed: the error is raised."""
        origin = Origin("v1", Failure("down"))
        async with sq.open_query_client() as client:
            opts = options(origin, stale_if_error=5.0)
            await client.fetch_query(opts)
            await trio.sleep(14.0)
            assert await client.fetch_query(opts) == "v1"
            await trio.sleep(1.0)
            assert isinstance(await outcome(client, opts), Failure)
            assert origin.calls == 3
            assert client.statistics().stale_if_error_served == 1

    async def test_without_stale_if_error_past_max_age_fails(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The default (0): a caller past max age whose refetch fails gets the error."""
        origin = Origin("v1", Failure("down"))
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin))
            await trio.sleep(10.0)
            assert isinstance(await outcome(client, options(origin)), Failure)
            assert client.statistics().stale_if_error_served == 0

    async def test_a_good_refetch_in_the_window_lands(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Within the window a refetch that succeeds returns (and caches) the new value."""
        origin = Origin("v1", "v2")
        async with sq.open_query_client() as client:
            opts = options(origin, stale_if_error=5.0)
            await client.fetch_query(opts)
            await trio.sleep(12.0)
            assert await client.fetch_query(opts) == "v2"
            assert client.statistics().stale_if_error_served == 0

    async def test_client_default_and_query_override(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """QueryClientConfig(stale_if_error=) applies to queries that leave it None; 0 opts out."""
        origin = Origin("v1", Failure("down"))
        config = sq.QueryClientConfig(stale_if_error=60.0)
        async with sq.open_query_client(config) as client:
            await client.fetch_query(options(origin))
            await trio.sleep(30.0)
            assert await client.fetch_query(options(origin)) == "v1"
            assert isinstance(await outcome(client, options(origin, stale_if_error=0)), Failure)
            assert origin.calls == 3

    async def test_each_serve_is_an_event(self, autojump_clock: trio.testing.MockClock) -> None:
        """A STALE_IF_ERROR event carries the key and its state (error, last good data)."""
        origin = Origin("v1", Failure("down"))
        async with sq.open_query_client() as client:
            opts = options(origin, stale_if_error=5.0)
            await client.fetch_query(opts)
            stream = client.events()
            await trio.sleep(11.0)
            await client.fetch_query(opts)
            await stream.aclose()
            served = [e async for e in stream if e.type is CacheEventType.STALE_IF_ERROR]
            assert [(e.key, e.state.data, e.state.status) for e in served if e.state] == [
                (KEY, "v1", QueryStatus.ERROR)
            ]

    async def test_circuit_open_serves_within_the_window_then_fails(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An open breaker refuses the refetch at once: data in the window, then the error."""
        breaker = sq.CircuitBreaker(failure_threshold=1, recovery_time=1000.0)
        origin = Origin("v1", Failure("down"))
        async with sq.open_query_client() as client:
            opts = options(origin, stale_if_error=5.0, circuit=breaker)
            await client.fetch_query(opts)
            await trio.sleep(11.0)
            assert await client.fetch_query(opts) == "v1"  # the failure that opens it
            await trio.sleep(1.0)
            assert await client.fetch_query(opts) == "v1"  # refused, served
            await trio.sleep(3.0)
            assert isinstance(await outcome(client, opts), sq.CircuitOpenError)
            assert origin.calls == 2
            assert client.statistics().stale_if_error_served == 2


class TestDecorators:
    async def test_cache_serves_past_ttl_plus_stale_and_counts_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@cache(10, stale=5, stale_if_error=20): past t=15 a failing call gets the old value."""
        metrics = sq.InMemoryMetrics()
        calls = 0

        @sq.cache(10, stale=5, stale_if_error=20, metrics=metrics)
        async def get_rate(currency: str) -> float:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise Failure("down")
            return 1.25

        async with sq.open_query_client(sq.QueryClientConfig(retry=0)):
            assert await get_rate("EUR") == 1.25
            await trio.sleep(16.0)
            assert await get_rate("EUR") == 1.25
            await trio.sleep(19.0)
            with pytest.raises(Failure):
                await get_rate("EUR")
            assert calls == 3
        assert metrics.get_stats()["caches"][get_rate.cache_name]["stale_if_error"] == 1

    async def test_bg_serves_past_ttl_when_its_refresh_fails(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@bg(ttl=10, stale_if_error=30): after ttl a call waits, the load fails, old value."""
        calls = 0

        @sq.bg(100, key="flags", ttl=10, stale_if_error=30)
        async def load_flags() -> dict[str, bool]:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise Failure("down")
            return {"beta": True}

        async with sq.open_query_client(sq.QueryClientConfig(retry=0)):
            assert await load_flags() == {"beta": True}
            await trio.sleep(20.0)
            assert await load_flags() == {"beta": True}
            assert calls == 2


class TestValidation:
    @pytest.mark.parametrize("value", [-1, math.nan, "5", True])
    def test_query_options_and_config_refuse_bad_windows(self, value: Any) -> None:
        """A negative, NaN or non-number stale_if_error is refused, naming the option."""
        with pytest.raises(sq.InvalidOptionError, match=r"^stale_if_error must be"):
            sq.QueryOptions(query_key=KEY, query_fn=Origin(), stale_if_error=value)
        with pytest.raises(sq.InvalidOptionError, match=r"^stale_if_error must be"):
            sq.QueryClientConfig(stale_if_error=value)

    @pytest.mark.parametrize("value", [-1, math.nan, "5", True])
    def test_decorators_refuse_bad_windows(self, value: Any) -> None:
        """@cache and @bg refuse it when decorating, naming themselves and the option."""
        with pytest.raises(sq.InvalidOptionError, match=r"^cache\(\): stale_if_error must be"):
            sq.cache(10, stale_if_error=value)
        with pytest.raises(sq.InvalidOptionError, match=r"^bg\(\): stale_if_error must be"):
            sq.bg(10, key="k", stale_if_error=value)

    def test_defaults(self) -> None:
        """QueryOptions leaves it to the client (None); the client's default is 0 (off)."""
        assert sq.QueryOptions(query_key=KEY, query_fn=Origin()).stale_if_error is None
        assert sq.QueryClientConfig().stale_if_error == 0.0


class TestCounting:
    async def test_counts_each_waiting_caller(self, autojump_clock: trio.testing.MockClock) -> None:
        """Three callers past max age share one failed refetch: three serves, one event."""
        origin = Origin("v1", Failure("down"), delay=1.0)
        async with sq.open_query_client() as client:
            opts = options(origin, stale_if_error=5.0)
            await client.fetch_query(opts)
            await trio.sleep(10.0)
            stream = client.events()
            results: list[Any] = []

            async def read() -> None:
                results.append(await client.fetch_query(opts))

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(read)
            await stream.aclose()
            served = [e async for e in stream if e.type is CacheEventType.STALE_IF_ERROR]
            assert (results, origin.calls, len(served)) == (["v1"] * 3, 2, 1)
            assert client.statistics().stale_if_error_served == 3

    async def test_a_background_refetch_serves_nobody(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A stale read's refetch that fails in the window is not a serve (nobody waited)."""
        origin = Origin("v1", Failure("down"))
        async with sq.open_query_client() as client:
            opts = options(origin, stale_if_error=5.0)
            await client.fetch_query(opts)
            await trio.sleep(5.0)
            assert await client.fetch_query(opts) == "v1"  # stale, not past max age
            await trio.testing.wait_all_tasks_blocked()
            assert origin.calls == 2
            assert client.statistics().stale_if_error_served == 0
