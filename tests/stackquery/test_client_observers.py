"""Specification of ``QueryClient.watch`` and ``QueryObserver``: listeners, streams, polling."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import FetchStatus, QueryState, QueryStatus
from tests.stackquery.client_origin import Failure, Origin

KEY = ("todos", "alice")


def options(origin: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)


class Seen:
    """A listener that records (time, status, data, is_placeholder_data) of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, Any, bool]] = []
        self.states: list[QueryState[Any]] = []

    def __call__(self, state: QueryState[Any]) -> None:
        self.states.append(state)
        self.calls.append(
            (trio.current_time(), state.status.value, state.data, state.is_placeholder_data)
        )


class TestSubscribe:
    async def test_subscribe_is_synchronous_and_calls_the_listener_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """subscribe calls the listener with the current state at once, without a checkpoint."""
        origin = Origin(delay=2.0)
        seen = Seen()
        async with sq.open_query_client() as client:
            observer = client.watch(options(origin))
            with trio.testing.assert_no_checkpoints():
                unsubscribe = observer.subscribe(seen)
            assert seen.states == [QueryState()]
            unsubscribe()

    async def test_listener_sees_each_change_of_data(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A cold key's subscriber sees pending at once, then the data when the fetch lands."""
        origin = Origin(delay=2.0)
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin)).subscribe(seen)
            await trio.sleep(5.0)
            unsubscribe()
        assert seen.calls == [(0.0, "pending", None, False), (2.0, "success", "v1", False)]
        assert origin.calls == 1

    async def test_notify_on_all_also_reports_fetch_status(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With notify_on="all" the listener also sees the fetch start."""
        origin = Origin(delay=2.0)
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin), notify_on="all").subscribe(seen)
            await trio.sleep(5.0)
            unsubscribe()
        assert [(s.status, s.fetch_status) for s in seen.states] == [
            (QueryStatus.PENDING, FetchStatus.IDLE),
            (QueryStatus.PENDING, FetchStatus.FETCHING),
            (QueryStatus.SUCCESS, FetchStatus.IDLE),
        ]

    async def test_subscriber_of_fresh_key_gets_its_data_and_fetches_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Subscribing to a key with fresh data calls the listener with it and starts no fetch."""
        origin = Origin()
        seen = Seen()
        opts = options(origin, stale_time=60.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            unsubscribe = client.watch(opts).subscribe(seen)
            await wait_all_tasks_blocked()
            unsubscribe()
        assert seen.calls == [(0.0, "success", "v1", False)]
        assert origin.calls == 1

    async def test_subscriber_of_stale_key_sees_the_stale_data_then_the_refetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Subscribing to a stale key shows the stale data at once and refetches it."""
        origin = Origin(delay=1.0)
        seen = Seen()
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin))
            unsubscribe = client.watch(options(origin)).subscribe(seen)
            await trio.sleep(5.0)
            unsubscribe()
        assert seen.calls == [(1.0, "success", "v1", False), (2.0, "success", "v2", False)]

    async def test_subscriber_of_cold_key_with_fresh_initial_data_fetches_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A cold key's fresh initial_data is shown to a subscriber at once and not fetched."""
        origin = Origin()
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(
                options(origin, initial_data="seed", stale_time=60.0)
            ).subscribe(seen)
            await wait_all_tasks_blocked()
            unsubscribe()
        assert seen.calls == [(0.0, "success", "seed", False)]
        assert origin.calls == 0

    async def test_observers_of_one_key_share_one_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Three observers of one cold key cause one query_fn call and all see its data."""
        origin = Origin(delay=1.0)
        seens = [Seen() for _ in range(3)]
        async with sq.open_query_client() as client:
            unsubscribes = [client.watch(options(origin)).subscribe(seen) for seen in seens]
            await trio.sleep(2.0)
            for unsubscribe in unsubscribes:
                unsubscribe()
        assert origin.calls == 1
        assert [seen.calls[-1] for seen in seens] == [(1.0, "success", "v1", False)] * 3

    async def test_unsubscribe_stops_calls_and_is_idempotent(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After unsubscribe (called twice) the listener is not called for later changes."""
        origin = Origin()
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin)).subscribe(seen)
            await wait_all_tasks_blocked()
            unsubscribe()
            unsubscribe()
            await client.set_query_data(KEY, "later")
            await wait_all_tasks_blocked()
        assert seen.calls == [(0.0, "pending", None, False), (0.0, "success", "v1", False)]

    async def test_observer_keeps_the_actor_alive_until_the_last_unsubscribe(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A subscribed observer keeps one actor task running; the last unsubscribe lets it end."""
        origin = Origin()
        async with sq.open_query_client() as client:
            observer = client.watch(options(origin))
            first = observer.subscribe(Seen())
            second = observer.subscribe(Seen())
            await wait_all_tasks_blocked()
            assert observer.subscribed
            assert client.statistics().active_actors == 1
            first()
            await wait_all_tasks_blocked()
            assert client.statistics().active_actors == 1
            second()
            await wait_all_tasks_blocked()
            assert not observer.subscribed
            assert client.statistics().active_actors == 0

    async def test_resubscribing_after_a_full_unsubscribe_works_again(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Regression: subscribe, unsubscribe, subscribe again: the new listener sees changes."""
        origin = Origin()
        seen = Seen()
        async with sq.open_query_client() as client:
            observer = client.watch(options(origin))
            observer.subscribe(Seen())()
            await wait_all_tasks_blocked()
            await trio.sleep(1.0)
            unsubscribe = observer.subscribe(seen)
            await wait_all_tasks_blocked()
            await client.set_query_data(KEY, "set")
            await wait_all_tasks_blocked()
            unsubscribe()
        assert seen.calls == [
            (1.0, "success", "v1", False),
            (1.0, "success", "v2", False),
            (1.0, "success", "set", False),
        ]
        assert origin.calls == 2

    async def test_get_current_state_is_what_listeners_see(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """get_current_state returns the key's state through the observer's select."""
        origin = Origin({"n": 3})
        async with sq.open_query_client() as client:
            observer = client.watch(options(origin, select=lambda d: d["n"] * 2))
            await client.fetch_query(options(origin))
            assert observer.get_current_state().data == 6

    async def test_refetch_fetches_now_and_returns_the_state(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """observer.refetch() fetches even fresh data and returns the state, errors included."""
        origin = Origin("one", Failure("down"))
        async with sq.open_query_client() as client:
            observer = client.watch(options(origin, stale_time=60.0, retry=0))
            assert (await observer.refetch()).data == "one"
            state = await observer.refetch()
            assert (state.status, state.data, state.error) == (
                QueryStatus.ERROR,
                "one",
                origin.errors[0],
            )
            assert origin.calls == 2


class TestSelect:
    async def test_select_is_applied_per_observer(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two observers of one key see the data through their own select."""
        origin = Origin({"name": "Alice", "age": 30})
        names, ages = Seen(), Seen()
        async with sq.open_query_client() as client:
            un_names = client.watch(options(origin, select=lambda d: d["name"])).subscribe(names)
            un_ages = client.watch(options(origin, select=lambda d: d["age"])).subscribe(ages)
            await wait_all_tasks_blocked()
            un_names()
            un_ages()
            assert client.get_query_data(KEY) == {"name": "Alice", "age": 30}
        assert names.calls[-1] == (0.0, "success", "Alice", False)
        assert ages.calls[-1] == (0.0, "success", 30, False)

    async def test_listener_is_not_called_when_its_selected_value_did_not_change(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A change to a field one observer does not select calls only the other's listener."""
        origin = Origin({"name": "Alice", "age": 30})
        names, ages = Seen(), Seen()
        async with sq.open_query_client() as client:
            un_names = client.watch(options(origin, select=lambda d: d["name"])).subscribe(names)
            un_ages = client.watch(options(origin, select=lambda d: d["age"])).subscribe(ages)
            await wait_all_tasks_blocked()
            await trio.sleep(1.0)
            await client.set_query_data(KEY, lambda old: {**old, "age": 31})
            await wait_all_tasks_blocked()
            un_names()
            un_ages()
        assert names.calls == [(0.0, "pending", None, False), (0.0, "success", "Alice", False)]
        assert ages.calls == [
            (0.0, "pending", None, False),
            (0.0, "success", 30, False),
            (1.0, "success", 31, False),
        ]

    async def test_equal_refetched_data_does_not_call_the_listener(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A refetch that returns an equal value (a new object) is not a change for listeners."""
        origin = Origin(["a", "b"])
        seen = Seen()
        async with sq.open_query_client() as client:
            observer = client.watch(options(origin))
            unsubscribe = observer.subscribe(seen)
            await wait_all_tasks_blocked()
            await observer.refetch()
            unsubscribe()
        assert origin.calls == 2
        assert seen.calls == [(0.0, "pending", None, False), (0.0, "success", ["a", "b"], False)]

    async def test_raising_select_is_an_error_state_for_that_observer(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A raising select shows its observer an error state, logged; the cache is untouched."""
        origin = Origin({"name": "Alice"})
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, select=lambda d: d["missing"])).subscribe(
                seen
            )
            await wait_all_tasks_blocked()
            unsubscribe()
            assert client.get_query_state(KEY).status is QueryStatus.SUCCESS  # type: ignore[union-attr]
            assert client.statistics().restarts == 0
        last = seen.states[-1]
        assert (last.status, last.data, type(last.error)) == (QueryStatus.ERROR, None, KeyError)
        assert [r.getMessage() for r in caplog.records if r.name == "stackquery.observer"] == [
            "select of query ('todos', 'alice') raised"
        ]


class TestEnabledAndPlaceholder:
    async def test_disabled_observer_does_not_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """enabled=False: subscribing fetches nothing; another caller's fetch is still shown."""
        origin = Origin()
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, enabled=False)).subscribe(seen)
            await trio.sleep(10.0)
            assert origin.calls == 0
            await client.fetch_query(options(origin))
            await wait_all_tasks_blocked()
            unsubscribe()
        assert seen.calls == [(0.0, "pending", None, False), (10.0, "success", "v1", False)]
        assert origin.calls == 1

    async def test_disabled_observer_does_not_poll(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """enabled=False with refetch_interval: no fetch ever starts."""
        origin = Origin()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(
                options(origin, enabled=False, refetch_interval=1.0)
            ).subscribe(Seen())
            await trio.sleep(10.0)
            unsubscribe()
        assert origin.calls == 0

    async def test_set_query_data_reaches_a_disabled_observer_of_an_uncached_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """set_query_data on a key with only a disabled observer caches it and tells it."""
        origin = Origin()
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, enabled=False)).subscribe(seen)
            await wait_all_tasks_blocked()
            assert await client.set_query_data(KEY, "set") == "set"
            assert client.get_query_data(KEY) == "set"
            unsubscribe()
        assert seen.calls == [(0.0, "pending", None, False), (0.0, "success", "set", False)]
        assert origin.calls == 0

    async def test_placeholder_is_shown_while_pending_and_replaced_by_the_data(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Observers see placeholder_data (flagged) until the real fetch, not prevented, lands."""
        origin = Origin(delay=2.0)
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, placeholder_data="…")).subscribe(seen)
            await wait_all_tasks_blocked()
            assert client.get_query_state(KEY) == QueryState(fetch_status=FetchStatus.FETCHING)
            await trio.sleep(3.0)
            unsubscribe()
        assert seen.calls == [(0.0, "pending", "…", True), (2.0, "success", "v1", False)]
        assert origin.calls == 1

    async def test_placeholder_function_goes_through_select(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A callable placeholder is called, and its value mapped by select like real data."""
        origin = Origin([1, 2, 3], delay=2.0)
        seen = Seen()
        async with sq.open_query_client() as client:
            opts = options(origin, placeholder_data=lambda: [], select=len)
            unsubscribe = client.watch(opts).subscribe(seen)
            await trio.sleep(3.0)
            unsubscribe()
        assert seen.calls == [(0.0, "pending", 0, True), (2.0, "success", 3, False)]

    async def test_placeholder_is_not_shown_for_an_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A cold key whose fetch failed shows its error, not the placeholder."""
        origin = Origin(Failure("down"))
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, placeholder_data="…", retry=0)).subscribe(
                seen
            )
            await wait_all_tasks_blocked()
            unsubscribe()
        assert seen.calls == [(0.0, "pending", "…", True), (0.0, "error", None, False)]


class TestRefetchInterval:
    async def test_polls_only_while_observed(self, autojump_clock: trio.testing.MockClock) -> None:
        """refetch_interval=10 fetches at t=0, 10, 20, and never after unsubscribing at 25."""
        origin = Origin()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, refetch_interval=10.0)).subscribe(Seen())
            await trio.sleep_until(25.0)
            unsubscribe()
            await trio.sleep_until(100.0)
            assert client.statistics().active_actors == 0
        assert origin.started_at == [0.0, 10.0, 20.0]

    async def test_polling_goes_on_after_a_failed_refetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Regression: a failed poll does not stop polling; the next poll's success is shown."""
        origin = Origin("a", Failure("down"), "c")
        seen = Seen()
        async with sq.open_query_client() as client:
            opts = options(origin, refetch_interval=10.0, retry=0)
            unsubscribe = client.watch(opts).subscribe(seen)
            await trio.sleep_until(35.0)
            unsubscribe()
        assert origin.started_at == [0.0, 10.0, 20.0, 30.0]
        assert seen.calls == [
            (0.0, "pending", None, False),
            (0.0, "success", "a", False),
            (10.0, "error", "a", False),
            (20.0, "success", "c", False),
        ]

    async def test_polling_goes_on_when_a_listener_raises(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A listener that raises on every call does not stop refetch_interval."""

        def explode(_state: QueryState[Any]) -> None:
            raise RuntimeError("listener bug")

        origin = Origin()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, refetch_interval=10.0)).subscribe(explode)
            await trio.sleep_until(25.0)
            unsubscribe()
        assert origin.started_at == [0.0, 10.0, 20.0]
        assert len([r for r in caplog.records if r.name == "stackquery.observer"]) == 4

    async def test_shortest_interval_of_the_observers_wins(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Two observers polling every 10 s and every 4 s make the key poll every 4 s."""
        origin = Origin()
        async with sq.open_query_client() as client:
            slow = client.watch(options(origin, refetch_interval=10.0)).subscribe(Seen())
            fast = client.watch(options(origin, refetch_interval=4.0)).subscribe(Seen())
            await trio.sleep_until(13.0)
            slow()
            fast()
        assert origin.started_at == [0.0, 4.0, 8.0, 12.0]


class TestUpdates:
    async def test_stream_yields_current_state_then_changes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """updates() yields the current state first, then each change."""
        origin = Origin(delay=2.0)
        async with sq.open_query_client() as client:
            observer = client.watch(options(origin))
            async with observer.updates() as states:
                first = await states.__anext__()
                second = await states.__anext__()
            assert first == QueryState()
            assert (second.status, second.data) == (QueryStatus.SUCCESS, "v1")
            assert trio.current_time() == 2.0

    async def test_slow_consumer_sees_the_newest_state_not_a_backlog(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Three changes made while the consumer is busy are read as one: the newest."""
        origin = Origin()
        async with sq.open_query_client() as client:
            await client.fetch_query(options(origin))
            async with client.watch(options(origin, stale_time=60.0)).updates() as states:
                assert (await states.__anext__()).data == "v1"
                for value in ("x", "y", "z"):
                    await client.set_query_data(KEY, value)
                await wait_all_tasks_blocked()
                assert (await states.__anext__()).data == "z"
                with trio.move_on_after(5.0) as scope:
                    await states.__anext__()
                assert scope.cancelled_caught

    async def test_leaving_the_stream_unsubscribes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """When the updates() block exits the observer is detached and its actor ends."""
        origin = Origin()
        async with sq.open_query_client() as client:
            observer = client.watch(options(origin))
            async with observer.updates() as states:
                await states.__anext__()
                assert observer.subscribed
            await wait_all_tasks_blocked()
            assert not observer.subscribed
            assert client.statistics().active_actors == 0

    async def test_async_for_over_the_stream(self, autojump_clock: trio.testing.MockClock) -> None:
        """async for reads pending, then the fetched data, and stops where the consumer breaks."""
        origin = Origin(delay=1.0)
        statuses: list[QueryStatus] = []
        async with (
            sq.open_query_client() as client,
            client.watch(options(origin)).updates() as states,
        ):
            async for state in states:
                statuses.append(state.status)
                if state.status is QueryStatus.SUCCESS:
                    break
        assert statuses == [QueryStatus.PENDING, QueryStatus.SUCCESS]


class TestRaisingListener:
    async def test_raising_listener_is_logged_and_does_not_stop_the_others(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Regression: a raising listener is logged; the next one is called; no refetch."""
        calls: list[str] = []

        def explode(_state: QueryState[Any]) -> None:
            calls.append("explode")
            raise RuntimeError("listener bug")

        origin = Origin()
        seen = Seen()
        async with sq.open_query_client() as client:
            observer = client.watch(options(origin, stale_time=60.0))
            un_explode = observer.subscribe(explode)
            un_seen = observer.subscribe(seen)
            await wait_all_tasks_blocked()
            await client.set_query_data(KEY, "set")
            await wait_all_tasks_blocked()
            un_explode()
            un_seen()
            assert client.statistics().restarts == 0
        assert origin.calls == 1
        assert calls == ["explode"] * 3
        assert seen.calls == [
            (0.0, "pending", None, False),
            (0.0, "success", "v1", False),
            (0.0, "success", "set", False),
        ]
        records = [r for r in caplog.records if r.name == "stackquery.observer"]
        assert len(records) == 3
        assert all(r.levelno == logging.ERROR and r.exc_info is not None for r in records)
        assert records[0].getMessage().endswith(" of query ('todos', 'alice') raised")
