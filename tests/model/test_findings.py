"""Bugs the models found, each shrunk to a minimal deterministic regression test.

While a bug is open its test is marked ``xfail(strict=True)`` (the suite stays
green; the fix turns it into an unexpected pass, which fails until the mark is
removed), and the models steer around the exact interleaving that triggers it,
behind the flag named in ``KNOWN_BUGS``, so that they keep hunting for other
bugs; the fix removes the flag with the mark.  Every bug found so far is fixed:
these tests now pin the fixes.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import MemoryStorage
from tests.model.harness import GatedOrigin
from tests.stackquery.l2_store import ControlledStorage

KNOWN_BUGS: dict[str, str] = {}
"""Open bugs the models steer around: flag -> the test that pins it (none open now)."""
"""Open bugs the models steer around: flag -> the regression test that pins it.

* ``updates_outlive_close``: the models unsubscribe every ``updates()`` stream
  before closing the client instead of checking that the stream ends.
* ``reset_observed_reads_l2``: the models skip ``reset_queries`` when it
  matches an observed key that has an entry in L2 or while L2 reads are held
  (the refetch reads L2 before the origin).
* ``reset_fetching_keeps_key``: the models skip ``reset_queries`` when it
  matches an unobserved key with a fetch in flight.
* ``cold_read_removed_strands_waiter``: the models skip ``remove_queries`` and
  ``reset_queries`` when they match a key whose first fetch is reading L2 in a
  caller's task.
* ``cold_read_cancel_starter_waits``: the models skip ``cancel_queries`` when
  it matches a key whose first fetch is reading L2 in a caller's task that
  still waits.
* ``stale_flag_frozen_while_fetching``: the models skip a clock jump that would
  carry fresh data past its stale time while its key has a fetch in flight.
* ``refetch_after_survives_cancel``: the models skip ``cancel_queries``,
  ``remove_queries`` and ``reset_queries`` when they match a key whose fetch
  in flight owes a refetch to an invalidation.
* ``cold_read_lands_on_observed_key_fetching``: the models skip subscribing to
  a key with fresh data whose first fetch is reading L2 in a caller's task.
* ``dropped_writes_counts_batches``: the liveness model holds L2 writes through
  close only when at most one key was ever written (so that the batch in
  flight holds one entry at most).
* ``observer_during_cold_read_second_fetch``: the models skip subscribing to a
  key whose first fetch is reading L2 in a caller's task once the key changed
  since the read began (data set, invalidated): the observer's separate fetch
  then calls the origin at once, or takes that changed state as the one
  ``cancel_queries`` puts back.
* ``invalidation_marks_later_set``: the models skip ``set_query_data`` on a
  key whose actor reads L2 for a fetch that was invalidated in flight.
* ``eviction_spares_all_hit``: the soak's churn fresh-hits every other key
  only, so that no eviction pass finds every key hit since the last one.
* ``timers_outlive_evicted_keys``: the soak checks the timer bound only right
  after jumping the clock past ``gc_time`` (when the entries of keys evicted
  before have fired), instead of after every new key.
* ``cold_read_joiner_stranded_at_close``: before closing, the models release
  held L2 reads when a cold read whose first caller was cancelled still has
  waiters.
"""


def options(origin: Any, key: tuple[Any, ...] = ("a", 1), **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=key, query_fn=origin, **kwargs)


def held_reads(**config: Any) -> tuple[ControlledStorage, sq.QueryClientConfig]:
    """A store whose reads wait at a gate the test opens, and a client config over it.

    ``l2_timeout`` is longer than any test runs: a held read stays held.
    """
    store = ControlledStorage()
    store.read_gate = trio.Event()
    return store, sq.QueryClientConfig(storage=store, l2_timeout=1000.0, **config)


class TestObserverStreams:
    async def test_updates_outside_the_client_end_at_close(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An updates() stream read by a task outside the client ends when the client closes."""
        ended = trio.Event()
        async with trio.open_nursery() as outside:
            async with sq.open_query_client() as client:
                observer = client.watch(options(GatedOrigin("a1")))

                async def read_updates() -> None:
                    with contextlib.suppress(sq.ClientClosedError):
                        async with observer.updates() as states:
                            async for _state in states:
                                pass
                    ended.set()

                outside.start_soon(read_updates)
                await wait_all_tasks_blocked()
            with trio.move_on_after(60.0):
                await ended.wait()
            outside.cancel_scope.cancel()
        assert ended.is_set()


class TestReset:
    async def test_reset_of_an_observed_key_refetches_from_the_origin(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """reset_queries on an observed key calls the origin again, not L2's pre-reset entry."""
        origin = GatedOrigin("a1")
        seen: list[Any] = []
        config = sq.QueryClientConfig(storage=MemoryStorage(), stale_time=60.0)
        async with sq.open_query_client(config) as client:
            unsubscribe = client.watch(options(origin)).subscribe(lambda s: seen.append(s.data))
            await wait_all_tasks_blocked()
            assert await client.reset_queries(("a", 1)) == 1
            await wait_all_tasks_blocked()
            unsubscribe()
            assert origin.calls == 2
            assert client.get_query_data(("a", 1)) == "a1#2"
        assert seen == [None, "a1#1", None, "a1#2"]

    async def test_reset_uncaches_an_unobserved_key_being_fetched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """reset_queries uncaches an unobserved key being fetched, as it does an idle one."""
        origin = GatedOrigin("a1")
        origin.hold()
        outcomes: list[Any] = []
        async with sq.open_query_client() as client, trio.open_nursery() as nursery:

            async def caller() -> None:
                try:
                    outcomes.append(await client.fetch_query(options(origin)))
                except sq.QueryCancelledError as exc:
                    outcomes.append(exc)

            nursery.start_soon(caller)
            await wait_all_tasks_blocked()
            assert await client.reset_queries(("a", 1)) == 1
            await wait_all_tasks_blocked()
            assert [type(outcome) for outcome in outcomes] == [sq.QueryCancelledError]
            assert client.get_query_state(("a", 1)) is None


class TestColdReads:
    @pytest.mark.parametrize("drop", ["remove_queries", "reset_queries"])
    async def test_removing_a_key_during_its_l2_read_fails_its_waiters(
        self, drop: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Removing or resetting fails a cold key's waiter at once; a new fetch cannot strand it."""
        store, config = held_reads()
        outcomes: list[Any] = []
        async with sq.open_query_client(config) as client, trio.open_nursery() as nursery:

            async def fetch() -> None:
                try:
                    outcomes.append(await client.fetch_query(options(GatedOrigin("a1"))))
                except sq.QueryCancelledError as exc:
                    outcomes.append(exc)

            nursery.start_soon(fetch)
            await wait_all_tasks_blocked()
            assert await getattr(client, drop)(("a", 1)) == 1
            await wait_all_tasks_blocked()
            nursery.start_soon(fetch)
            await wait_all_tasks_blocked()
            store.read_gate.set()
            await wait_all_tasks_blocked()
            assert [type(outcome) for outcome in outcomes] == [sq.QueryCancelledError, str]

    async def test_a_cold_read_landing_after_an_observer_came_ends_the_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A cold key's L2 read that lands once the key is observed leaves the key idle."""
        store, config = held_reads(stale_time=10.0)
        opts = options(GatedOrigin("a1"))
        async with sq.open_query_client(config) as client, trio.open_nursery() as nursery:
            nursery.start_soon(client.fetch_query, opts)
            await wait_all_tasks_blocked()
            await client.set_query_data(("a", 1), "set")
            unsubscribe = client.watch(opts).subscribe(lambda _state: None)
            store.read_gate.set()
            await wait_all_tasks_blocked()
            state = client.get_query_state(("a", 1))
            unsubscribe()
        assert state is not None
        assert (state.data, state.fetch_status) == ("set", sq.FetchStatus.IDLE)

    async def test_an_observer_during_a_cold_read_leaves_cancel_queries_one_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An observer arriving during a cold key's L2 read joins its fetch: one cancel ends it."""
        store, config = held_reads(stale_time=10.0)
        origin = GatedOrigin("a1")
        origin.hold()
        async with sq.open_query_client(config) as client, trio.open_nursery() as nursery:

            async def fetch() -> None:  # a cold read in the caller's task (prefetch uses the actor)
                with contextlib.suppress(sq.QueryCancelledError):
                    await client.fetch_query(options(origin))

            nursery.start_soon(fetch)
            await wait_all_tasks_blocked()
            await client.set_query_data(("a", 1), "set")
            assert await client.invalidate_queries(("a", 1)) == 1
            unsubscribe = client.watch(options(origin)).subscribe(lambda _state: None)
            await wait_all_tasks_blocked()
            assert await client.cancel_queries(("a", 1)) == 1
            await wait_all_tasks_blocked()
            assert client.is_fetching(("a", 1)) == 0
            store.read_gate.set()
            origin.release()
            await wait_all_tasks_blocked()
            unsubscribe()
            assert client.get_query_data(("a", 1)) is None  # what it was before the fetch

    @pytest.mark.parametrize("set_first", [False, True])
    async def test_cancel_queries_during_an_l2_read_tells_the_observers(
        self, set_first: bool, autojump_clock: trio.testing.MockClock
    ) -> None:
        """cancel_queries during a cold key's L2 read tells an observer the state it puts back.

        The model found it: the key's state went back to pending (as before the
        fetch) but an observer that came during the read never heard of it.
        """
        store, config = held_reads(stale_time=10.0)
        opts = options(GatedOrigin("a1"))
        seen: list[Any] = []
        async with sq.open_query_client(config) as client, trio.open_nursery() as nursery:

            async def fetch() -> None:  # a cold read in the caller's task
                with contextlib.suppress(sq.QueryCancelledError):
                    await client.fetch_query(opts)

            nursery.start_soon(fetch)
            await wait_all_tasks_blocked()
            if set_first:
                await client.set_query_data(("a", 1), "set")
            unsubscribe = client.watch(opts).subscribe(
                lambda state: seen.append((state.status.value, state.data))
            )
            if not set_first:
                await client.set_query_data(("a", 1), "set")
            await wait_all_tasks_blocked()
            assert await client.cancel_queries(()) == 1
            await wait_all_tasks_blocked()
            state = client.get_query_state(("a", 1))
            unsubscribe()
            store.read_gate.set()
        assert state is not None
        assert (state.status, state.data) == (sq.QueryStatus.PENDING, None)
        expected = [("success", "set"), ("pending", None)]
        assert seen == (expected if set_first else [("pending", None), *expected])

    async def test_cancel_queries_during_an_l2_read_fails_every_waiter_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """cancel_queries fails the caller reading a cold key from L2, not only those who joined."""
        store, config = held_reads()
        outcomes: list[Any] = []
        async with sq.open_query_client(config) as client, trio.open_nursery() as nursery:

            async def fetch(name: str) -> None:
                try:
                    await client.fetch_query(options(GatedOrigin("a1")))
                except sq.QueryCancelledError:
                    outcomes.append(name)

            nursery.start_soon(fetch, "starter")
            await wait_all_tasks_blocked()
            nursery.start_soon(fetch, "joiner")
            await wait_all_tasks_blocked()
            assert await client.cancel_queries(("a", 1)) == 1
            await wait_all_tasks_blocked()
            assert sorted(outcomes) == ["joiner", "starter"]
            store.read_gate.set()

    async def test_a_caller_joined_to_a_cold_read_is_failed_at_close(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Closing fails a cold key's waiter with ClientClosedError once the read's starter left."""
        _store, config = held_reads()  # its reads stay held through close
        outcomes: list[Any] = []
        settled = trio.Event()
        async with trio.open_nursery() as outside:
            async with sq.open_query_client(config) as client:

                async def fetch(scope: trio.CancelScope) -> None:
                    with scope:
                        try:
                            outcomes.append(await client.fetch_query(options(GatedOrigin("a1"))))
                        except sq.ClientClosedError as exc:
                            outcomes.append(exc)
                        settled.set()

                starter = trio.CancelScope()
                outside.start_soon(fetch, starter)
                await wait_all_tasks_blocked()
                outside.start_soon(fetch, trio.CancelScope())
                await wait_all_tasks_blocked()
                starter.cancel()
                await wait_all_tasks_blocked()
            with trio.move_on_after(60.0):
                await settled.wait()
            outside.cancel_scope.cancel()
        assert [type(outcome) for outcome in outcomes] == [sq.ClientClosedError]


class TestStaleness:
    async def test_data_set_during_a_fetch_goes_stale_on_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data set while the key's fetch is in flight is stale once its stale time has passed."""
        origin = GatedOrigin("a1")
        origin.hold()
        async with sq.open_query_client(sq.QueryClientConfig(stale_time=10.0)) as client:
            await client.prefetch_query(options(origin))
            await client.set_query_data(("a", 1), "set")
            await trio.sleep(11.0)
            state = client.get_query_state(("a", 1))
            assert state is not None
            assert (state.data, state.fetch_status) == ("set", sq.FetchStatus.FETCHING)
            assert state.is_stale
            origin.release()

    async def test_data_set_after_an_invalidation_during_an_l2_read_stays_valid(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data set after an invalidation, while the observed key reads L2, is not invalidated."""
        store, config = held_reads(stale_time=60.0)
        origin = GatedOrigin("a1")
        origin.hold()
        async with sq.open_query_client(config) as client:
            unsubscribe = client.watch(options(origin)).subscribe(lambda _state: None)
            await wait_all_tasks_blocked()
            assert await client.invalidate_queries(("a", 1)) == 1
            await client.set_query_data(("a", 1), "set")
            store.read_gate.set()
            await wait_all_tasks_blocked()
            state = client.get_query_state(("a", 1))
            origin.release()
            unsubscribe()
        assert state is not None
        assert (state.data, state.is_invalidated) == ("set", False)

    async def test_a_fetch_invalidated_in_flight_lands_invalidated_after_a_set_too(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An origin call in flight at an invalidation lands invalidated, data set since or not."""
        origin = GatedOrigin("a1")
        origin.hold()
        async with sq.open_query_client(sq.QueryClientConfig(stale_time=60.0)) as client:
            await client.prefetch_query(options(origin))
            await wait_all_tasks_blocked()
            assert await client.invalidate_queries(("a", 1)) == 1
            await client.set_query_data(("a", 1), "set")
            origin.release()
            await wait_all_tasks_blocked()
            state = client.get_query_state(("a", 1))
        assert state is not None
        assert (state.data, state.is_invalidated, state.is_stale) == ("a1#1", True, True)


class TestPendingRefetch:
    @pytest.mark.parametrize("cancel", ["cancel_queries", "remove_queries"])
    async def test_cancelled_fetch_leaves_no_refetch_behind(
        self, cancel: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cancelling an observed key's fetch drops the refetch an invalidation queued behind it."""
        origin = GatedOrigin("a1")
        origin.hold()
        async with sq.open_query_client(sq.QueryClientConfig(stale_time=60.0)) as client:
            unsubscribe = client.watch(options(origin)).subscribe(lambda _state: None)
            await wait_all_tasks_blocked()
            assert await client.invalidate_queries(("a", 1)) == 1
            assert await getattr(client, cancel)(("a", 1)) == 1
            origin.release()
            assert await client.fetch_query(options(origin)) == "a1#2"
            await wait_all_tasks_blocked()
            unsubscribe()
            assert origin.calls == 2

    @pytest.mark.parametrize("during", ["l2_read", "callers_l2_read", "origin_call"])
    async def test_data_set_after_an_invalidation_keeps_the_refetch_it_owes(
        self, during: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An observed key invalidated with refetch during a fetch still refetches once after
        ``set_query_data``: the refetch was asked for, as in TanStack Query, where it starts
        at once and a later ``setQueryData`` does not stop it.

        The model found it: during the fetch's L2 read (the observer's, or a caller's cold
        read in its own task) the set data dropped the refetch (0 origin calls), while
        during its origin call the refetch followed (1 more call).
        """
        store, config = held_reads(stale_time=60.0)
        origin = GatedOrigin("a1")
        if during == "origin_call":
            store.read_gate.set()
            origin.hold()
        async with sq.open_query_client(config) as client, trio.open_nursery() as nursery:
            if during == "callers_l2_read":
                nursery.start_soon(client.fetch_query, options(origin))
                await wait_all_tasks_blocked()
            unsubscribe = client.watch(options(origin)).subscribe(lambda _state: None)
            await wait_all_tasks_blocked()
            calls_before = origin.calls
            assert await client.invalidate_queries(("a", 1)) == 1
            await client.set_query_data(("a", 1), "set")
            store.read_gate.set()
            origin.release()
            await wait_all_tasks_blocked()
            unsubscribe()
            assert origin.calls == calls_before + 1
            assert client.get_query_data(("a", 1)) == f"a1#{calls_before + 1}"

    async def test_cancelling_a_callers_l2_read_drops_the_refetch_it_owes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """cancel_queries of a caller's cold L2 read drops the refetch an invalidation
        during the read asked for, as it does for a fetch of the key's actor."""
        store, config = held_reads(stale_time=60.0)
        origin = GatedOrigin("a1")
        async with sq.open_query_client(config) as client, trio.open_nursery() as nursery:

            async def fetch() -> None:
                with contextlib.suppress(sq.QueryCancelledError):
                    await client.fetch_query(options(origin))

            nursery.start_soon(fetch)
            await wait_all_tasks_blocked()
            unsubscribe = client.watch(options(origin)).subscribe(lambda _state: None)
            await wait_all_tasks_blocked()
            assert await client.invalidate_queries(("a", 1)) == 1
            await client.set_query_data(("a", 1), "set")
            assert await client.cancel_queries(("a", 1)) == 1
            store.read_gate.set()
            await wait_all_tasks_blocked()
            unsubscribe()
            assert origin.calls == 0
            assert client.get_query_data(("a", 1)) is None  # what it was before the fetch


class TestShutdown:
    async def test_dropped_writes_counts_every_entry_of_the_batch_in_flight(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Three invalidations stuck in the writer's batch at close are three dropped writes."""
        store = ControlledStorage()
        config = sq.QueryClientConfig(storage=store, shutdown_timeout=1.0, l2_timeout=100.0)
        async with sq.open_query_client(config) as client:
            for number in range(3):
                await client.set_query_data(("k", number), number)
            await wait_all_tasks_blocked()
            store.write_gate = trio.Event()
            assert await client.invalidate_queries(("k",)) == 3
            await wait_all_tasks_blocked()
        for number in range(3):
            entry = await store.entry(f'sq:["k",{number}]')
            assert entry is not None and not entry.invalidated  # the three writes were lost
        stats = client.l2_statistics()
        assert stats is not None
        assert stats.dropped_writes == 3


class TestMaxQueries:
    async def test_max_queries_holds_when_every_key_was_hit(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key added to a full L1 evicts one, even if every cached key was read since the last."""
        config = sq.QueryClientConfig(max_queries=10, stale_time=1e6)
        async with sq.open_query_client(config) as client:
            added = []
            for number in range(20):
                for key in added:
                    if client.get_query_state(key.query_key) is not None:
                        await client.fetch_query(key)  # a fresh hit
                added.append(options(GatedOrigin(f"k{number}"), ("k", number)))
                await client.fetch_query(added[-1])
                await trio.sleep(2.0)
            assert client.statistics().queries == 10

    async def test_timers_stay_bounded_by_max_queries_under_churn(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """1,000 keys through max_queries=10 leave at most two timer entries per cached key."""
        async with sq.open_query_client(sq.QueryClientConfig(max_queries=10)) as client:
            for number in range(1000):
                await client.set_query_data(("k", number), number)
            assert client.statistics().queries == 10
            assert client.statistics().timers <= 20


def _recording_loader() -> tuple[list[list[int]], sq.BatchedFunction[int, int]]:
    """A batch function whose calls (each one's ids, sorted) are recorded; each takes 1 s."""
    calls: list[list[int]] = []

    @sq.cache.batch(60)
    async def get(ids: list[int]) -> dict[int, int]:
        calls.append(sorted(ids))
        await trio.sleep(1.0)
        return {i: i * 10 for i in ids}

    return calls, get


class TestBatchWindow:
    async def test_a_single_call_and_many_started_together_make_one_origin_call(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """f(1) and f.many([1, 2]) started in one tick share one origin call, in either order."""
        calls, get = _recording_loader()

        for round_number in range(20):  # trio shuffles each batch: both orders come up
            calls.clear()
            async with sq.open_query_client(), trio.open_nursery() as nursery:
                if round_number % 2:
                    nursery.start_soon(get.many, [1, 2])
                    nursery.start_soon(get, 1)
                else:
                    nursery.start_soon(get, 1)
                    nursery.start_soon(get.many, [1, 2])
            assert calls == [[1, 2]], f"round {round_number}"

    async def test_many_and_a_single_call_of_another_id_make_one_origin_call(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """f.many([1, 2]) and f(3) started in one tick share one origin call."""
        calls, get = _recording_loader()

        for round_number in range(20):
            calls.clear()
            async with sq.open_query_client(), trio.open_nursery() as nursery:
                nursery.start_soon(get.many, [1, 2])
                nursery.start_soon(get, 3)
            assert calls == [[1, 2, 3]], f"round {round_number}"


class TestRemovedWhileWaiting:
    async def test_a_batch_caller_removed_twice_still_gets_a_value(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """f(1) waiting while invalidate(1) runs twice fetches again each time, then a value."""
        calls: list[list[int]] = []
        gate = trio.Event()

        @sq.cache.batch(60)
        async def get(ids: list[int]) -> dict[int, str]:
            calls.append(sorted(ids))
            number = len(calls)
            await gate.wait()
            return {i: f"{i}#{number}" for i in ids}

        async with sq.open_query_client(), trio.open_nursery() as nursery:
            got: list[str] = []

            async def caller() -> None:
                got.append(await get(1))

            nursery.start_soon(caller)
            await wait_all_tasks_blocked()
            for _ in range(2):
                await get.invalidate(1)
                await wait_all_tasks_blocked()
            gate.set()
        assert calls == [[1], [1], [1]]
        assert got == ["1#3"]

    async def test_a_cache_caller_cleared_twice_still_gets_a_value(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """f() waiting while clear() runs twice fetches again each time, then gets a value."""
        calls: list[int] = []
        gate = trio.Event()

        @sq.cache(60)
        async def get() -> str:
            calls.append(1)
            number = len(calls)
            await gate.wait()
            return f"#{number}"

        async with sq.open_query_client(), trio.open_nursery() as nursery:
            got: list[str] = []

            async def caller() -> None:
                got.append(await get())

            nursery.start_soon(caller)
            await wait_all_tasks_blocked()
            for _ in range(2):
                await get.clear()
                await wait_all_tasks_blocked()
            gate.set()
        assert len(calls) == 3
        assert got == ["#3"]


def _strict_xfail(test: Any) -> bool:
    return any(
        mark.name == "xfail" and mark.kwargs.get("strict")
        for mark in getattr(test, "pytestmark", [])
    )


class TestKnownBugs:
    def test_every_flag_names_a_strict_xfail_test_and_every_such_test_has_a_flag(self) -> None:
        """KNOWN_BUGS and the xfail marks here change together: a fix removes both."""
        pinned = {
            f"{name}::{attribute}"
            for name, cls in globals().items()
            if isinstance(cls, type) and name.startswith("Test")
            for attribute in vars(cls)
            if attribute.startswith("test_") and _strict_xfail(getattr(cls, attribute))
        }
        assert sorted(pinned) == sorted(KNOWN_BUGS.values())
