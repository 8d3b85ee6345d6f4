"""Specification of deduplication and cancellation: one fetch per key, shared by every caller."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import FetchStatus, QueryState, QueryStatus
from tests.parked_cost import tracked_per_parked_task
from tests.stackquery.client_origin import Failure, Origin, assert_one_traceback, frames

KEY = ("report", 7)


def options(origin: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)


class TestDeduplication:
    async def test_concurrent_callers_of_a_cold_key_share_one_call(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """100 concurrent callers of one cold key make one query_fn call and get its value."""
        origin = Origin(delay=5.0)
        results: list[tuple[float, Any]] = []

        async def caller(client: sq.QueryClient) -> None:
            value = await client.fetch_query(options(origin))
            results.append((trio.current_time(), value))

        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(caller, client)
        assert results == [(5.0, "v1")] * 100
        assert trio.current_time() == 5.0
        assert origin.calls == 1

    async def test_late_callers_join_the_fetch_in_flight(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Callers arriving at t=1, 2 and 3 of a 5 s fetch all return at t=5 with its value."""
        origin = Origin(delay=5.0)
        done: list[tuple[float, float, Any]] = []

        async def caller(client: sq.QueryClient, at: float) -> None:
            await trio.sleep_until(at)
            value = await client.fetch_query(options(origin))
            done.append((at, trio.current_time(), value))

        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            for at in (0.0, 1.0, 2.0, 3.0):
                nursery.start_soon(caller, client, at)
        assert sorted(done) == [(at, 5.0, "v1") for at in (0.0, 1.0, 2.0, 3.0)]
        assert origin.calls == 1

    async def test_a_failed_fetch_is_not_reused_by_the_next_caller(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After a fetch failed, the next caller of the key starts a new fetch."""
        origin = Origin(Failure("down"), "recovered")
        async with sq.open_query_client() as client:
            with pytest.raises(Failure):
                await client.fetch_query(options(origin, retry=0))
            assert await client.fetch_query(options(origin, retry=0)) == "recovered"
            assert origin.calls == 2

    async def test_a_failed_fetch_raises_in_1000_callers_with_a_traceback_of_one(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """1,000 callers of a cold key whose fetch fails each get the origin's error object
        with its frames and their own, not the other callers'; the key's error likewise."""
        origin = Origin(Failure("down"), delay=5.0)
        seen: list[list[str]] = []

        async def caller(client: sq.QueryClient) -> None:
            try:
                await client.fetch_query(options(origin, retry=0))
            except Failure as exc:
                assert exc is origin.errors[0]
                seen.append(frames(exc))

        async with sq.open_query_client() as client:
            async with trio.open_nursery() as nursery:
                for _ in range(1000):
                    nursery.start_soon(caller, client)
            state = client.get_query_state(KEY)
        assert origin.calls == 1
        assert len(seen) == 1000
        assert state is not None and state.error is origin.errors[0]
        assert_one_traceback(seen, state.error, "caller")

    async def test_a_parked_caller_costs_one_tracked_object_of_its_own(self) -> None:
        """1,000 callers parked on a cold key's fetch add one GC-tracked object each (the
        fetch_query coroutine) to what their tasks were before they ran (five before
        they shared one awaitable): fewer for the cyclic GC to walk, and fewer collections."""
        released = trio.Event()

        async def origin() -> str:
            await released.wait()
            return "v1"

        async def caller() -> None:
            assert await client.fetch_query(options(origin)) == "v1"

        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            nursery.start_soon(caller)  # the first: the key's actor, fetch and reply
            await wait_all_tasks_blocked()
            assert await tracked_per_parked_task(nursery, caller, 1000) < 1.1
            released.set()


class TestCallerCancellation:
    async def test_cancelling_one_of_several_waiters_leaves_the_fetch_for_the_others(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Regression: one of three waiters cancelled at t=1; the others get the value at t=5."""
        origin = Origin(delay=5.0)
        outcomes: dict[str, tuple[float, Any]] = {}

        async def waiter(client: sq.QueryClient, name: str, scope: trio.CancelScope) -> None:
            with scope:
                value = await client.fetch_query(options(origin))
                outcomes[name] = (trio.current_time(), value)
                return
            outcomes[name] = (trio.current_time(), "cancelled")

        scopes = {name: trio.CancelScope() for name in ("a", "b", "c")}
        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            for name, scope in scopes.items():
                nursery.start_soon(waiter, client, name, scope)
            await trio.sleep(1.0)
            scopes["b"].cancel()
        assert outcomes == {"a": (5.0, "v1"), "b": (1.0, "cancelled"), "c": (5.0, "v1")}
        assert (origin.calls, origin.cancelled, origin.finished) == (1, 0, 1)

    async def test_fetch_lands_in_the_cache_when_every_waiter_was_cancelled(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fetch whose every waiter gave up still completes and is cached."""
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            with trio.move_on_after(1.0) as scope:
                await client.fetch_query(options(origin, stale_time=60.0))
            assert scope.cancelled_caught
            assert client.get_query_state(KEY) == QueryState(fetch_status=FetchStatus.FETCHING)
            await trio.sleep_until(5.0)
            await wait_all_tasks_blocked()
            assert client.get_query_state(KEY) == QueryState(
                status=QueryStatus.SUCCESS,
                data="v1",
                data_updated_at=client.clock.wall(5.0),
                is_stale=False,
            )
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(options(origin, stale_time=60.0)) == "v1"
            assert (origin.calls, origin.cancelled) == (1, 0)

    async def test_cancelled_waiter_raises_cancelled_not_a_query_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A caller whose own scope is cancelled gets trio.Cancelled, nothing else."""
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            with trio.CancelScope() as scope:
                scope.cancel()
                await client.fetch_query(options(origin))
            assert scope.cancelled_caught


class TestCancelQueries:
    async def test_cancel_queries_fails_waiters_and_restores_the_cold_state(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """cancel_queries fails the waiters with QueryCancelledError; the key is pending again."""
        origin = Origin(delay=5.0)
        errors: list[tuple[float, BaseException]] = []

        async def waiter(client: sq.QueryClient) -> None:
            with pytest.raises(
                sq.QueryCancelledError, match=r"^query fetch cancelled by cancel_queries$"
            ) as info:
                await client.fetch_query(options(origin))
            errors.append((trio.current_time(), info.value))

        async with sq.open_query_client() as client, trio.open_nursery() as nursery:
            nursery.start_soon(waiter, client)
            nursery.start_soon(waiter, client)
            await trio.sleep(1.0)
            assert await client.cancel_queries(("report",)) == 1
            await wait_all_tasks_blocked()
            assert client.get_query_state(KEY) == QueryState()
        assert [at for at, _ in errors] == [1.0, 1.0]
        assert (origin.calls, origin.cancelled, origin.finished) == (1, 1, 0)

    async def test_cancel_queries_restores_the_data_from_before_the_refetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cancelling a refetch puts back the previous data, status and timestamps."""
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin))
            before = client.get_query_state(KEY)
            assert await client.fetch_query(options(origin)) == "v1"
            await wait_all_tasks_blocked()
            assert client.get_query_state(KEY).fetch_status is FetchStatus.FETCHING  # type: ignore[union-attr]
            assert await client.cancel_queries(KEY, exact=True) == 1
            assert client.get_query_state(KEY) == before
            await trio.sleep(10.0)
            assert client.get_query_state(KEY) == before
            assert (origin.calls, origin.cancelled) == (2, 1)

    async def test_cancel_queries_without_revert_keeps_the_current_state(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """revert=False keeps the state as it was during the fetch, fetch status idle."""
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin))
            await client.invalidate_queries(KEY)
            await client.fetch_query(options(origin))
            await wait_all_tasks_blocked()
            assert await client.cancel_queries(KEY, revert=False) == 1
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.data, state.fetch_status, state.is_invalidated) == (
                "v1",
                FetchStatus.IDLE,
                True,
            )

    async def test_cancel_queries_counts_only_fetches_in_flight(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """cancel_queries returns 0 and changes nothing when no matching fetch runs."""
        origin = Origin()
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin))
            await wait_all_tasks_blocked()
            before = client.get_query_state(KEY)
            assert await client.cancel_queries() == 0
            assert client.get_query_state(KEY) == before

    async def test_key_can_be_fetched_again_after_cancel(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After cancel_queries a new caller starts a new fetch, which completes."""
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            await client.prefetch_query(options(origin))
            await wait_all_tasks_blocked()
            await client.cancel_queries(KEY)
            assert await client.fetch_query(options(origin)) == "v2"
            assert trio.current_time() == 5.0
            assert (origin.calls, origin.cancelled, origin.finished) == (2, 1, 1)

    async def test_cancel_queries_only_touches_matching_keys(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """cancel_queries(("a",)) leaves the fetch of ("b",) running."""
        a, b = Origin(delay=5.0), Origin(delay=5.0)
        async with sq.open_query_client() as client:
            await client.prefetch_query(sq.QueryOptions(query_key=("a", 1), query_fn=a))
            await client.prefetch_query(sq.QueryOptions(query_key=("b", 1), query_fn=b))
            await wait_all_tasks_blocked()
            assert await client.cancel_queries(("a",)) == 1
            await trio.sleep(5.0)
            await wait_all_tasks_blocked()
            assert (a.cancelled, b.finished) == (1, 1)
            assert client.get_query_data(("b", 1)) == "v1"
            assert client.get_query_data(("a", 1)) is None
