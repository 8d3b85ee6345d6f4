"""Specification of ``QueryClient.fetch_query`` and the reads around it: the hot path."""

from __future__ import annotations

import functools
import gc
import inspect
import threading
import warnings
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import FetchStatus, QueryState, QueryStatus
from stackquery._query_fn import _ThreadCall
from tests.stackquery.client_origin import Failure, Origin


def options(origin: Any, key: tuple[Any, ...] = ("user", 1), **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=key, query_fn=origin, **kwargs)


class TestFreshStaleCold:
    async def test_cold_caller_waits_for_the_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A caller of a cold key waits exactly as long as the one query_fn call takes."""
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(origin)) == "v1"
            assert trio.current_time() == 5.0
            assert origin.calls == 1
            assert client.get_query_state(("user", 1)) == QueryState(
                status=QueryStatus.SUCCESS,
                data="v1",
                data_updated_at=client.clock.wall(5.0),
                is_stale=True,
            )

    async def test_fresh_hit_does_not_checkpoint_or_touch_an_actor(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fresh hit returns the cached data with no checkpoint, no actor and no query_fn call."""
        origin = Origin()
        opts = options(origin, stale_time=60.0)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(opts) == "v1"
            await wait_all_tasks_blocked()
            before = client.statistics()
            assert before.active_actors == 0
            with trio.testing.assert_no_checkpoints():
                for _ in range(3):
                    assert await client.fetch_query(opts) == "v1"
            assert client.statistics() == before
            assert origin.calls == 1

    async def test_fresh_hit_with_options_made_anew_does_not_checkpoint(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Options rebuilt per call, with a computed stale_time, still hit without a checkpoint."""
        origin = Origin()
        minutes = 1

        def made_anew() -> sq.QueryOptions[Any]:
            return options(origin, stale_time=float(minutes * 60))

        async with sq.open_query_client() as client:
            await client.fetch_query(made_anew())
            await wait_all_tasks_blocked()
            await trio.sleep(30.0)
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(made_anew()) == "v1"
            assert origin.calls == 1

    async def test_data_goes_stale_exactly_stale_time_after_it_was_fetched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data fetched at t=5 with stale_time=10 is fresh at 14.999 and stale at 15."""
        origin = Origin(delay=5.0)
        opts = options(origin, stale_time=10.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            await trio.sleep_until(14.999)
            await wait_all_tasks_blocked()
            assert client.get_query_state(("user", 1)).is_stale is False  # type: ignore[union-attr]
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(opts) == "v1"
            await trio.sleep_until(15.0)
            await wait_all_tasks_blocked()
            assert client.get_query_state(("user", 1)).is_stale is True  # type: ignore[union-attr]
            assert origin.calls == 1

    async def test_stale_hit_returns_at_once_and_refetches_in_the_background(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A stale read returns the old data without waiting; one refetch replaces it."""
        origin = Origin(delay=5.0)
        opts = options(origin, stale_time=10.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            await trio.sleep_until(20.0)
            assert await client.fetch_query(opts) == "v1"
            assert trio.current_time() == 20.0
            await wait_all_tasks_blocked()
            assert origin.calls == 2
            assert client.get_query_state(("user", 1)) == QueryState(
                status=QueryStatus.SUCCESS,
                fetch_status=FetchStatus.FETCHING,
                data="v1",
                data_updated_at=client.clock.wall(5.0),
                is_stale=True,
            )
            await trio.sleep_until(25.0)
            await wait_all_tasks_blocked()
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(opts) == "v2"
            assert origin.calls == 2

    async def test_many_stale_readers_start_one_refetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Ten stale reads all get the old data at once and share one refetch."""
        origin = Origin(delay=5.0)
        opts = options(origin)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            results = [await client.fetch_query(opts) for _ in range(10)]
            await wait_all_tasks_blocked()
            assert results == ["v1"] * 10
            assert origin.calls == 2

    async def test_failed_refetch_keeps_serving_the_stale_data(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A refetch that fails leaves the old data served, with the error in the state."""
        origin = Origin("good", Failure("origin down"))
        opts = options(origin, retry=0)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(opts) == "good"
            assert await client.fetch_query(opts) == "good"
            await wait_all_tasks_blocked()
            assert await client.fetch_query(opts) == "good"
            state = client.get_query_state(("user", 1))
            assert state is not None
            assert (state.status, state.data, state.error) == (
                QueryStatus.ERROR,
                "good",
                origin.errors[0],
            )

    async def test_cold_caller_gets_the_error_after_retries(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A cold key whose fetch fails raises the origin's error to its caller."""
        origin = Origin(Failure("origin down"))
        async with sq.open_query_client() as client:
            with pytest.raises(Failure, match=r"^origin down$"):
                await client.fetch_query(options(origin, retry=0))
            assert origin.calls == 1

    async def test_none_is_a_value_and_is_cached(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A query_fn that returns None caches None: the next read is a fresh hit."""
        origin = Origin(None)
        opts = options(origin, stale_time=60.0)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(opts) is None
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(opts) is None
            assert origin.calls == 1
            assert client.get_query_state(("user", 1)) == QueryState(
                status=QueryStatus.SUCCESS,
                data=None,
                data_updated_at=client.clock.wall(0.0),
                is_stale=False,
            )


class TestLaterOptions:
    async def test_later_query_fn_is_the_one_refetches_use(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A later call with another query_fn refetches with that query_fn, not the first one."""
        first, second = Origin("first"), Origin("second")
        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(first)) == "first"
            assert await client.fetch_query(options(second)) == "first"
            await wait_all_tasks_blocked()
            assert (first.calls, second.calls) == (1, 1)
            assert client.get_query_data(("user", 1)) == "second"

    async def test_later_longer_stale_time_is_honoured(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data fetched with stale_time 0 counts as fresh for a later call with stale_time 60."""
        origin = Origin()
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin))
            await trio.sleep_until(30.0)
            assert await client.fetch_query(options(origin, stale_time=60.0)) == "v1"
            await wait_all_tasks_blocked()
            assert origin.calls == 1

    async def test_later_shorter_stale_time_is_honoured(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data fetched with stale_time 60 is stale 10 s on for a call with stale_time 5."""
        origin = Origin()
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin, stale_time=60.0))
            await trio.sleep_until(10.0)
            assert await client.fetch_query(options(origin, stale_time=5.0)) == "v1"
            await wait_all_tasks_blocked()
            assert origin.calls == 2
            assert client.get_query_data(("user", 1)) == "v2"

    async def test_later_retry_is_honoured(self, autojump_clock: trio.testing.MockClock) -> None:
        """A later call with retry=2 retries twice, where the first call (retry=0) did not."""
        origin = Origin(Failure("down"))
        async with sq.open_query_client() as client:
            with pytest.raises(Failure):
                await client.fetch_query(options(origin, retry=0))
            assert origin.calls == 1
            with pytest.raises(Failure):
                await client.fetch_query(options(origin, retry=2, retry_delay=1.0))
            assert origin.calls == 4
            assert trio.current_time() == 2.0


class TestInitialData:
    async def test_initial_data_is_cached_and_fresh(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """initial_data on a cold key is cached as if fetched now; query_fn is not called."""
        origin = Origin()
        opts = options(origin, initial_data="seed", stale_time=60.0)
        async with sq.open_query_client() as client:
            await trio.sleep(3.0)
            assert await client.fetch_query(opts) == "seed"
            await wait_all_tasks_blocked()
            assert origin.calls == 0
            assert client.get_query_state(("user", 1)) == QueryState(
                status=QueryStatus.SUCCESS,
                data="seed",
                data_updated_at=client.clock.wall(3.0),
                is_stale=False,
            )

    async def test_initial_data_freshness_follows_its_timestamp(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """initial_data 4 s old, stale_time 10: fresh until t=6, then stale and refetched."""
        origin = Origin()
        async with sq.open_query_client() as client:
            opts = options(
                origin,
                initial_data="seed",
                initial_data_updated_at=client.clock.wall(0.0) - 4.0,
                stale_time=10.0,
            )
            assert await client.fetch_query(opts) == "seed"
            await trio.sleep_until(5.999)
            assert await client.fetch_query(opts) == "seed"
            await wait_all_tasks_blocked()
            assert origin.calls == 0
            await trio.sleep_until(6.0)
            await wait_all_tasks_blocked()
            assert await client.fetch_query(opts) == "seed"
            await wait_all_tasks_blocked()
            assert origin.calls == 1
            assert client.get_query_data(("user", 1)) == "v1"

    async def test_initial_data_function_is_called_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A callable initial_data is called when the key is created, and its value cached."""
        made: list[int] = []

        def seed() -> str:
            made.append(1)
            return "seed"

        opts = options(Origin(), initial_data=seed, stale_time=60.0)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(opts) == "seed"
            assert await client.fetch_query(opts) == "seed"
            assert made == [1]

    async def test_initial_data_is_not_used_when_the_key_has_data(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """initial_data only seeds a key that is not cached: it never replaces data."""
        origin = Origin()
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin, stale_time=60.0))
            assert (
                await client.fetch_query(options(origin, initial_data="seed", stale_time=60.0))
                == "v1"
            )


class TestPlaceholderData:
    async def test_fetch_query_on_cold_key_with_placeholder_waits_for_real_data(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Regression: placeholder_data never answers fetch_query; the caller waits."""
        origin = Origin(delay=2.0)
        opts = options(origin, placeholder_data="placeholder")
        async with sq.open_query_client() as client:
            assert await client.fetch_query(opts) == "v1"
            assert trio.current_time() == 2.0
            assert origin.calls == 1

    async def test_placeholder_data_is_never_cached(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """While the first fetch runs, the key holds no data despite a placeholder."""
        origin = Origin(delay=2.0)
        opts = options(origin, placeholder_data="placeholder")
        async with sq.open_query_client() as client:
            await client.prefetch_query(opts)
            await wait_all_tasks_blocked()
            state = client.get_query_state(("user", 1))
            assert state == QueryState(fetch_status=FetchStatus.FETCHING)
            assert client.get_query_data(("user", 1)) is None


class TestQueryFnKinds:
    async def test_sync_query_fn_runs_in_a_worker_thread(self) -> None:
        """A plain function is called in a worker thread, not in the trio thread."""
        threads: list[int] = []

        def load() -> str:
            threads.append(threading.get_ident())
            return "sync"

        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(load, retry=0)) == "sync"
        assert len(threads) == 1
        assert threads[0] != threading.get_ident()

    async def test_partial_of_async_function_is_awaited(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A functools.partial of an async function is awaited in the trio thread."""

        async def load(user_id: int) -> dict[str, int]:
            await trio.sleep(1.0)
            return {"id": user_id}

        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(functools.partial(load, 42))) == {"id": 42}
            assert trio.current_time() == 1.0

    async def test_async_callable_object_is_awaited(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An object whose __call__ is async is awaited."""
        origin = Origin("object", delay=1.0)
        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(origin)) == "object"
            assert trio.current_time() == 1.0

    async def test_sync_callable_returning_an_awaitable_has_it_awaited(self) -> None:
        """A lambda that returns a coroutine (``lambda: load(42)``) gets its coroutine awaited."""

        async def load(user_id: int) -> int:
            await trio.lowlevel.checkpoint()
            return user_id * 2

        async with sq.open_query_client() as client:
            assert await client.fetch_query(options(lambda: load(21), retry=0)) == 42

    async def test_a_coroutine_returned_after_the_fetch_was_cancelled_is_closed(self) -> None:
        """The coroutine a sync query_fn returns from a thread the fetch abandoned (cancelled
        while the thread ran) is closed, not dropped unawaited (no RuntimeWarning)."""
        release = threading.Event()
        returned: list[Any] = []

        async def load() -> int:
            return 42  # pragma: no cover - never awaited

        def start() -> Any:
            release.wait()
            returned.append(load())
            return returned[0]

        # One thread token: taking it back waits until trio got the abandoned thread's
        # result (and dropped it).
        limiter = trio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with sq.open_query_client() as client:
                await client.prefetch_query(options(start, retry=0))
                await wait_all_tasks_blocked()
                assert limiter.borrowed_tokens == 1
                await client.cancel_queries(("user", 1))
                release.set()
                async with limiter:
                    pass
                assert client.get_query_state(("user", 1)) == QueryState()
            assert len(returned) == 1
            assert inspect.getcoroutinestate(returned[0]) == inspect.CORO_CLOSED
            returned.clear()
            gc.collect()
        assert [str(w.message) for w in caught if w.category is RuntimeWarning] == []


class TestAbandonedThreadCall:
    """Either order of a worker thread's return and its caller's abandoning it closes a
    returned coroutine exactly once."""

    @staticmethod
    async def _load() -> int:
        return 42  # pragma: no cover - never awaited

    def test_the_thread_returning_first_leaves_the_closing_to_abandon(self) -> None:
        """A result the thread handed over is closed by the caller that abandons it."""
        coroutine = self._load()
        call = _ThreadCall(lambda: coroutine, ())
        assert call.run() == (coroutine,)
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED
        call.abandon()
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED

    def test_the_thread_returning_after_abandon_closes_it_itself(self) -> None:
        """A thread that returns after its caller left closes the coroutine and hands over None."""
        coroutine = self._load()
        call = _ThreadCall(lambda: coroutine, ())
        call.abandon()
        assert call.run() == (None,)
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED

    def test_a_plain_value_is_left_alone(self) -> None:
        """A result that is not awaitable is handed over and nothing is closed."""
        closed: list[str] = []

        class Value:
            def close(self) -> None:
                closed.append("closed")  # pragma: no cover - must not be called

        value = Value()
        call = _ThreadCall(lambda: value, ())
        assert call.run() == (value,)
        call.abandon()
        assert closed == []


class TestPrefetchAndReads:
    async def test_prefetch_does_not_wait_and_the_result_lands(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """prefetch_query returns before the fetch ends; the data is cached when it does."""
        origin = Origin(delay=5.0)
        opts = options(origin, stale_time=60.0)
        async with sq.open_query_client() as client:
            assert await client.prefetch_query(opts) is None
            assert trio.current_time() == 0.0
            await trio.sleep_until(5.0)
            await wait_all_tasks_blocked()
            assert client.get_query_data(("user", 1)) == "v1"
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(opts) == "v1"
            assert origin.calls == 1

    async def test_prefetch_never_raises_the_fetch_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A failing prefetch leaves the error in the key's state and raises nothing."""
        origin = Origin(Failure("down"))
        async with sq.open_query_client() as client:
            await client.prefetch_query(options(origin, retry=0))
            await wait_all_tasks_blocked()
            state = client.get_query_state(("user", 1))
            assert state is not None
            assert (state.status, state.error) == (QueryStatus.ERROR, origin.errors[0])

    async def test_prefetch_of_fresh_key_does_not_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """prefetch_query leaves fresh data alone."""
        origin = Origin()
        opts = options(origin, stale_time=60.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            await client.prefetch_query(opts)
            await wait_all_tasks_blocked()
            assert origin.calls == 1

    async def test_prefetch_with_fresh_initial_data_does_not_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """prefetch_query of a key with fresh initial_data caches it and fetches nothing."""
        origin = Origin()
        opts = options(origin, initial_data="seed", stale_time=60.0)
        async with sq.open_query_client() as client:
            await client.prefetch_query(opts)
            await wait_all_tasks_blocked()
            assert origin.calls == 0
            assert client.get_query_data(("user", 1)) == "seed"

    async def test_reads_of_unknown_key(self) -> None:
        """get_query_data and get_query_state of a key never cached return None."""
        async with sq.open_query_client() as client:
            assert client.get_query_data(("nobody",)) is None
            assert client.get_query_state(("nobody",)) is None

    async def test_get_query_data_accepts_an_equal_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """get_query_data finds the data under any spelling of the same canonical key."""
        async with sq.open_query_client() as client:
            await client.fetch_query(options(Origin("x"), key=("u", 1.0, {"b": 1, "a": 2})))
            assert client.get_query_data(("u", 1, {"a": 2, "b": 1})) == "x"


class TestPassivation:
    async def test_actor_ends_after_fetch_and_data_is_still_a_fresh_hit(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After a fetch with no observers no actor task runs; the data is served anyway."""
        origin = Origin()
        opts = options(origin, stale_time=60.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            await wait_all_tasks_blocked()
            stats = client.statistics()
            assert (stats.active_actors, stats.activations, stats.passivations) == (0, 1, 1)
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(opts) == "v1"
            assert client.statistics().active_actors == 0

    async def test_passivated_key_is_activated_again_for_a_refetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A stale read of a passivated key spawns an actor, which ends after the refetch."""
        origin = Origin()
        opts = options(origin)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            await wait_all_tasks_blocked()
            await client.fetch_query(opts)
            await wait_all_tasks_blocked()
            stats = client.statistics()
            assert (stats.active_actors, stats.activations, stats.passivations) == (0, 2, 2)
            assert client.get_query_data(("user", 1)) == "v2"
