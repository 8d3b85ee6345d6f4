"""Specification of negative caching: ``cache_if`` (a value returned but not cached) and
``error_ttl`` (an origin error remembered for S seconds)."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import MemoryStorage
from stackquery import QueryStatus
from tests.stackquery.client_origin import Failure, Origin, assert_one_traceback, frames

KEY = ("user", 7)


def options(origin: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)


def is_not_none(value: Any) -> bool:
    return value is not None


class TestCacheIf:
    async def test_a_refused_value_is_returned_but_not_cached(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@cache(cache_if=not None): None goes to the caller; the next call asks again."""
        calls = 0

        @sq.cache(60, cache_if=is_not_none)
        async def find(user_id: int) -> dict[str, int] | None:
            nonlocal calls
            calls += 1
            return None if user_id == 0 else {"id": user_id}

        async with sq.open_query_client():
            assert await find(0) is None
            assert await find(0) is None
            assert calls == 2
            assert await find(1) == {"id": 1}
            assert await find(1) == {"id": 1}
            assert calls == 3

    async def test_a_refused_value_is_neither_in_l1_nor_written_to_l2(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Nothing in L1 (no data), no set on the store, even once the client closed."""
        store = MemoryStorage()

        @sq.cache(60, cache_if=is_not_none, key="find:{}")
        async def find(user_id: int) -> None:
            return None

        async with sq.open_query_client(sq.QueryClientConfig(storage=store)) as client:
            assert await find(0) is None
            state = client.get_query_state(("fn", find.cache_name, "find:0"))
            assert state is None or not state.has_data
        assert store.statistics().sets == 0
        assert store.statistics().entries == 0

    async def test_concurrent_callers_share_one_origin_call_for_a_refused_value(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Ten callers of a cold key: one origin call, all ten get the uncached value."""
        origin = Origin(None, delay=1.0)
        opts = options(origin, cache_if=is_not_none)
        results: list[Any] = []
        async with sq.open_query_client() as client:

            async def call() -> None:
                results.append(await client.fetch_query(opts))

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(call)
            assert origin.calls == 1
            assert results == [None] * 10
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.status, state.has_data) == (QueryStatus.PENDING, False)

    async def test_stale_data_stays_when_the_refetch_is_refused(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cached "a"; an invalidated refetch returns None (refused): "a" stays, still stale."""
        origin = Origin("a", None)
        opts = options(origin, cache_if=is_not_none, stale_time=60.0)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(opts) == "a"
            await client.invalidate_queries(KEY, refetch=False)
            assert await client.fetch_query(opts) == "a"  # stale: served, refetch behind
            await wait_all_tasks_blocked()
            assert origin.calls == 2
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.data, state.is_stale, state.is_invalidated) == ("a", True, True)

    async def test_a_cache_if_that_raises_is_logged_and_the_value_is_not_cached(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """cache_if raising: the caller still gets the value; it is not cached; logged."""

        def broken(_value: Any) -> bool:
            raise ValueError("cannot judge")

        origin = Origin()
        async with sq.open_query_client() as client:
            with caplog.at_level(logging.ERROR, logger="stackquery.actor"):
                assert await client.fetch_query(options(origin, cache_if=broken)) == "v1"
                assert await client.fetch_query(options(origin, cache_if=broken)) == "v2"
            assert origin.calls == 2
            assert "cache_if" in caplog.text
            assert client.statistics().restarts == 0


class TestErrorTtl:
    async def test_an_error_is_remembered_for_error_ttl_seconds(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@cache(error_ttl=30, retry=0): calls before t=30 get the error without an origin call."""
        calls: list[float] = []

        @sq.cache(10, error_ttl=30.0, retry=0)
        async def load() -> str:
            calls.append(trio.current_time())
            raise Failure("down")

        async with sq.open_query_client():
            with pytest.raises(Failure, match=r"^down$"):
                await load()
            await trio.sleep_until(29.9)
            with pytest.raises(Failure, match=r"^down$"):
                await load()
            assert calls == [0.0]
            await trio.sleep_until(30.0)
            with pytest.raises(Failure):
                await load()
        assert calls == [0.0, 30.0]

    async def test_the_error_is_remembered_after_the_retries_are_spent(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """retry=2, retry_delay=1, error_ttl=10: three calls at t=0,1,2, then none until t=12."""
        origin = Origin(Failure("down"))
        opts = options(origin, retry=2, retry_delay=1.0, error_ttl=10.0)
        async with sq.open_query_client() as client:
            with pytest.raises(Failure):
                await client.fetch_query(opts)
            for t in (3.0, 8.0, 11.9):
                await trio.sleep_until(t)
                with pytest.raises(Failure):
                    await client.fetch_query(opts)
            assert origin.started_at == [0.0, 1.0, 2.0]
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.status, state.fetch_failure_count) == (QueryStatus.ERROR, 3)
            await trio.sleep_until(12.0)
            with pytest.raises(Failure):
                await client.fetch_query(opts)
        assert origin.started_at == [0.0, 1.0, 2.0, 12.0, 13.0, 14.0]

    async def test_callers_in_the_window_get_the_same_error_object(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The remembered error is the origin's error, not a copy or a wrapper."""
        origin = Origin(Failure("down"))
        opts = options(origin, retry=0, error_ttl=5.0)
        async with sq.open_query_client() as client:
            with pytest.raises(Failure) as first:
                await client.fetch_query(opts)
            with pytest.raises(Failure) as second:
                await client.fetch_query(opts)
        assert second.value is first.value is origin.errors[0]

    async def test_1000_reads_in_the_window_do_not_grow_the_error_s_traceback(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each read in the window raises the error with the origin's frames and its own,
        not with those of every read before it; the key's error likewise."""
        origin = Origin(Failure("down"))
        opts = options(origin, retry=0, error_ttl=5.0)
        seen: list[list[str]] = []

        async def read(client: sq.QueryClient) -> None:
            try:
                await client.fetch_query(opts)
            except Failure as exc:
                seen.append(frames(exc))

        async with sq.open_query_client() as client:
            for _ in range(1001):
                await read(client)
            state = client.get_query_state(KEY)
        assert origin.calls == 1
        assert len(seen) == 1001
        assert state is not None and state.error is origin.errors[0]
        # The first read waited on the fetch (one frame more); the 1,000 after it are alike.
        assert_one_traceback(seen[1:], state.error, "read")

    async def test_invalidate_forgets_the_remembered_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """invalidate_queries (and @cache's invalidate) clear it: the next read asks the origin."""
        origin = Origin(Failure("down"), "back")
        opts = options(origin, retry=0, error_ttl=60.0)
        async with sq.open_query_client() as client:
            with pytest.raises(Failure):
                await client.fetch_query(opts)
            await client.invalidate_queries(KEY)
            assert await client.fetch_query(opts) == "back"
            assert origin.calls == 2

    async def test_cache_invalidate_forgets_the_remembered_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@cache's invalidate(args) removes the entry and with it the error."""
        results = iter([Failure("down"), "back"])

        @sq.cache(10, error_ttl=60.0, retry=0)
        async def load(n: int) -> str:
            result = next(results)
            if isinstance(result, Exception):
                raise result
            return result

        async with sq.open_query_client():
            with pytest.raises(Failure):
                await load(1)
            await load.invalidate(1)
            assert await load(1) == "back"

    async def test_with_stale_data_the_stale_value_is_served_and_the_origin_spared(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data "a" (stale from t=10); the refetch at t=20 fails: until t=50 "a", no origin call."""
        origin = Origin("a", Failure("down"), "b")
        opts = options(origin, retry=0, stale_time=10.0, error_ttl=30.0)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(opts) == "a"
            await trio.sleep_until(20.0)
            assert await client.fetch_query(opts) == "a"  # stale: served, refetch fails behind
            await wait_all_tasks_blocked()
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.status, state.data) == (QueryStatus.ERROR, "a")
            for t in (25.0, 49.9):
                await trio.sleep_until(t)
                assert await client.fetch_query(opts) == "a"
                await wait_all_tasks_blocked()
            assert origin.started_at == [0.0, 20.0]
            await trio.sleep_until(50.0)
            assert await client.fetch_query(opts) == "a"
            await wait_all_tasks_blocked()
            assert origin.started_at == [0.0, 20.0, 50.0]
            assert client.get_query_data(KEY) == "b"

    async def test_past_the_stale_window_the_remembered_error_is_raised(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """@cache(10, stale=5, error_ttl=60): "a" until t=15; then the refetch's error, no call."""
        results = iter(["a", Failure("down")])
        calls: list[float] = []

        @sq.cache(10, stale=5, error_ttl=60.0, retry=0)
        async def load() -> str:
            calls.append(trio.current_time())
            result = next(results)
            if isinstance(result, Exception):
                raise result
            return result

        async with sq.open_query_client():
            assert await load() == "a"
            await trio.sleep_until(12.0)
            assert await load() == "a"  # stale window: refetch behind, it fails
            await wait_all_tasks_blocked()
            await trio.sleep_until(14.0)
            assert await load() == "a"
            await trio.sleep_until(16.0)  # past ttl + stale: no value to serve
            with pytest.raises(Failure, match=r"^down$"):
                await load()
        assert calls == [0.0, 12.0]

    async def test_the_key_is_kept_while_its_error_is_remembered(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """gc_time=1, error_ttl=100: at t=50 the key is still there and the error still stands."""
        origin = Origin(Failure("down"))
        opts = options(origin, retry=0, gc_time=1.0, error_ttl=100.0)
        async with sq.open_query_client() as client:
            with pytest.raises(Failure):
                await client.fetch_query(opts)
            await trio.sleep_until(50.0)
            with pytest.raises(Failure):
                await client.fetch_query(opts)
            assert origin.calls == 1

    async def test_prefetch_and_a_new_observer_do_not_call_the_origin_in_the_window(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """prefetch_query and watch().subscribe during error_ttl: no fetch, the error state."""
        origin = Origin(Failure("down"), "ok")
        opts = options(origin, retry=0, error_ttl=10.0)
        seen: list[QueryStatus] = []
        async with sq.open_query_client() as client:
            with pytest.raises(Failure):
                await client.fetch_query(opts)
            await client.prefetch_query(opts)
            unsubscribe = client.watch(opts).subscribe(lambda s: seen.append(s.status))
            await wait_all_tasks_blocked()
            assert origin.calls == 1
            unsubscribe()
            await trio.sleep_until(10.0)
            await client.prefetch_query(opts)
            await wait_all_tasks_blocked()
            assert origin.calls == 2
        assert seen == [QueryStatus.ERROR]

    async def test_without_error_ttl_every_read_asks_the_origin(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The default: a failed key is fetched again by the next read (as before)."""
        origin = Origin(Failure("down"))
        opts = options(origin, retry=0)
        async with sq.open_query_client() as client:
            for _ in range(3):
                with pytest.raises(Failure):
                    await client.fetch_query(opts)
        assert origin.calls == 3


class TestBadNegativeCacheInput:
    @pytest.mark.parametrize("error_ttl", [0, -1.0, math.nan, "5", True])
    def test_error_ttl_must_be_a_positive_number(self, error_ttl: Any) -> None:
        """0, negative, NaN, text, bool: InvalidOptionError naming error_ttl."""
        with pytest.raises(sq.InvalidOptionError, match=r"^error_ttl must be "):
            options(Origin(), error_ttl=error_ttl)
        with pytest.raises(sq.InvalidOptionError, match=r"^cache\(\): error_ttl must be "):
            sq.cache(10, error_ttl=error_ttl)

    def test_cache_if_must_be_callable(self) -> None:
        """A non-callable cache_if is a TypeError, on QueryOptions and on @cache."""
        with pytest.raises(TypeError, match=r"^cache_if must be callable, got bool: True$"):
            options(Origin(), cache_if=True)
        with pytest.raises(TypeError, match=r"^cache\(\): cache_if must be callable, got str"):
            sq.cache(10, cache_if="yes")  # type: ignore[arg-type]
