"""Specification of the changes: invalidate, remove, reset and set_query_data."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from stackquery import FetchStatus, QueryState, QueryStatus
from tests.stackquery.client_origin import Origin

KEYS = [("user", 1), ("user", 2), ("user", 2, "posts"), ("users", 1), ("post", 1)]


def options(origin: Any, key: tuple[Any, ...], **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=key, query_fn=origin, **kwargs)


async def cache_all(client: sq.QueryClient, origins: dict[tuple[Any, ...], Origin]) -> None:
    for key in KEYS:
        origins[key] = Origin()
        await client.fetch_query(options(origins[key], key, stale_time=60.0))
    await wait_all_tasks_blocked()


def invalidated(client: sq.QueryClient) -> list[tuple[Any, ...]]:
    return [key for key in KEYS if client.get_query_state(key).is_invalidated]  # type: ignore[union-attr]


class Seen:
    """A listener that records (status, data) of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, state: QueryState[Any]) -> None:
        self.calls.append((state.status.value, state.data))


class TestInvalidate:
    async def test_tuple_prefix_matches_whole_elements(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """invalidate_queries(("user",)) matches ("user", ...) keys and not ("users", 1)."""
        origins: dict[tuple[Any, ...], Origin] = {}
        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            assert await client.invalidate_queries(("user",)) == 3
            assert invalidated(client) == [("user", 1), ("user", 2), ("user", 2, "posts")]
            assert client.get_query_state(("user", 1)) == QueryState(
                status=QueryStatus.SUCCESS,
                data="v1",
                data_updated_at=client.clock.wall(0.0),
                is_stale=True,
                is_invalidated=True,
            )

    async def test_longer_prefix(self, autojump_clock: trio.testing.MockClock) -> None:
        """invalidate_queries(("user", 2)) matches ("user", 2) and ("user", 2, "posts") only."""
        origins: dict[tuple[Any, ...], Origin] = {}
        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            assert await client.invalidate_queries(("user", 2)) == 2
            assert invalidated(client) == [("user", 2), ("user", 2, "posts")]

    async def test_exact_matches_the_key_only(self, autojump_clock: trio.testing.MockClock) -> None:
        """exact=True matches ("user", 2) and not the longer ("user", 2, "posts")."""
        origins: dict[tuple[Any, ...], Origin] = {}
        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            assert await client.invalidate_queries(("user", 2), exact=True) == 1
            assert invalidated(client) == [("user", 2)]

    async def test_empty_key_matches_every_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """invalidate_queries() with no key matches every cached key."""
        origins: dict[tuple[Any, ...], Origin] = {}
        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            assert await client.invalidate_queries() == 5
            assert invalidated(client) == KEYS

    async def test_predicate_gets_the_key_and_state(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """predicate(key, state) is asked per prefix match; only keys it accepts match."""
        origins: dict[tuple[Any, ...], Origin] = {}
        asked: list[tuple[tuple[Any, ...], str]] = []

        def second_only(key: tuple[Any, ...], state: QueryState[Any]) -> bool:
            asked.append((key, state.data))
            return key[1] == 2

        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            assert await client.invalidate_queries(("user",), predicate=second_only) == 2
            assert invalidated(client) == [("user", 2), ("user", 2, "posts")]
        assert sorted(asked) == [
            (("user", 1), "v1"),
            (("user", 2), "v1"),
            (("user", 2, "posts"), "v1"),
        ]

    async def test_no_match_changes_nothing(self, autojump_clock: trio.testing.MockClock) -> None:
        """A prefix that matches no key returns 0."""
        origins: dict[tuple[Any, ...], Origin] = {}
        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            assert await client.invalidate_queries(("nobody",)) == 0
            assert invalidated(client) == []

    async def test_invalidated_fresh_data_is_served_stale_and_refetched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Invalidated data fresh for 60 s is served once more and refetched by that read."""
        origins: dict[tuple[Any, ...], Origin] = {}
        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            await client.invalidate_queries(("post", 1))
            opts = options(origins[("post", 1)], ("post", 1), stale_time=60.0)
            assert await client.fetch_query(opts) == "v1"
            await wait_all_tasks_blocked()
            assert origins[("post", 1)].calls == 2
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(opts) == "v2"

    async def test_unobserved_keys_are_not_refetched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """invalidate_queries refetches nothing for keys nobody observes."""
        origins: dict[tuple[Any, ...], Origin] = {}
        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            await client.invalidate_queries()
            await trio.sleep(10.0)
            assert [origins[key].calls for key in KEYS] == [1] * 5

    async def test_observed_keys_are_refetched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A matching observed key is refetched at once; its observer sees the new data."""
        origins: dict[tuple[Any, ...], Origin] = {}
        seen = Seen()
        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            opts = options(origins[("user", 1)], ("user", 1), stale_time=60.0)
            unsubscribe = client.watch(opts).subscribe(seen)
            await client.invalidate_queries(("user",))
            await wait_all_tasks_blocked()
            unsubscribe()
            assert [origins[key].calls for key in KEYS] == [2, 1, 1, 1, 1]
            assert client.get_query_state(("user", 1)).is_invalidated is False  # type: ignore[union-attr]
        assert seen.calls == [("success", "v1"), ("success", "v2")]

    async def test_refetch_false_does_not_refetch_observed_keys(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """refetch=False marks an observed key invalidated and leaves it so."""
        origins: dict[tuple[Any, ...], Origin] = {}
        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            opts = options(origins[("user", 1)], ("user", 1), stale_time=60.0)
            unsubscribe = client.watch(opts).subscribe(Seen())
            await client.invalidate_queries(("user", 1), refetch=False)
            await wait_all_tasks_blocked()
            unsubscribe()
            assert origins[("user", 1)].calls == 1
            assert client.get_query_state(("user", 1)).is_invalidated is True  # type: ignore[union-attr]

    async def test_fetch_in_flight_lands_but_not_as_fresh(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fetch running when its key is invalidated still lands, marked invalidated and stale."""
        origin = Origin(delay=5.0)
        opts = options(origin, ("user", 1), stale_time=60.0)
        async with sq.open_query_client() as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.fetch_query, opts)
                await trio.sleep(1.0)
                assert await client.invalidate_queries(("user",)) == 1
            assert client.get_query_state(("user", 1)) == QueryState(
                status=QueryStatus.SUCCESS,
                data="v1",
                data_updated_at=client.clock.wall(5.0),
                is_stale=True,
                is_invalidated=True,
            )
            assert await client.fetch_query(opts) == "v1"
            await wait_all_tasks_blocked()
            assert origin.calls == 2

    async def test_observed_key_invalidated_during_a_fetch_is_refetched_after_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An observed key invalidated mid-fetch gets one more fetch when the first one lands."""
        origin = Origin(delay=5.0)
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, ("user", 1), stale_time=60.0)).subscribe(
                seen
            )
            await trio.sleep(1.0)
            await client.invalidate_queries(("user", 1))
            await trio.sleep(20.0)
            unsubscribe()
        assert origin.started_at == [0.0, 5.0]
        assert seen.calls == [("pending", None), ("success", "v1"), ("success", "v2")]


class TestRemove:
    async def test_remove_drops_matching_keys(self, autojump_clock: trio.testing.MockClock) -> None:
        """remove_queries(("user",)) drops the three user keys and returns 3."""
        origins: dict[tuple[Any, ...], Origin] = {}
        async with sq.open_query_client() as client:
            await cache_all(client, origins)
            assert await client.remove_queries(("user",)) == 3
            assert [key for key in KEYS if client.get_query_state(key) is not None] == [
                ("users", 1),
                ("post", 1),
            ]
            assert client.statistics().queries == 2

    async def test_removed_key_is_cold_again(self, autojump_clock: trio.testing.MockClock) -> None:
        """After remove_queries the next read waits for a new fetch."""
        origin = Origin(delay=2.0)
        opts = options(origin, ("user", 1), stale_time=60.0)
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            await client.remove_queries(("user", 1), exact=True)
            assert await client.fetch_query(opts) == "v2"
            assert trio.current_time() == 4.0

    async def test_remove_cancels_the_fetch_in_flight(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Removing a key mid-fetch cancels it: the waiter gets QueryCancelledError."""
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            async with trio.open_nursery() as nursery:

                async def waiter() -> None:
                    with pytest.raises(
                        sq.QueryCancelledError, match=r"^query fetch cancelled by remove_queries$"
                    ):
                        await client.fetch_query(options(origin, ("user", 1)))

                nursery.start_soon(waiter)
                await trio.sleep(1.0)
                assert await client.remove_queries(("user",)) == 1
            await trio.sleep(10.0)
            assert client.get_query_state(("user", 1)) is None
            assert (origin.calls, origin.cancelled, origin.finished) == (1, 1, 0)

    async def test_observer_of_removed_key_sees_it_empty(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An observer of a removed key is told the key is pending with no data."""
        origin = Origin()
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, ("user", 1), stale_time=60.0)).subscribe(
                seen
            )
            await wait_all_tasks_blocked()
            await client.remove_queries(("user", 1))
            await wait_all_tasks_blocked()
            unsubscribe()
        assert seen.calls == [("pending", None), ("success", "v1"), ("pending", None)]


class TestReset:
    async def test_reset_drops_unobserved_keys_to_their_initial_state(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """reset_queries uncaches an unobserved key; its initial_data seeds it again."""
        origin = Origin()
        opts = options(origin, ("user", 1), initial_data="seed", stale_time=60.0)
        async with sq.open_query_client() as client:
            await client.set_query_data(("user", 1), "changed")
            assert await client.reset_queries(("user",)) == 1
            assert client.get_query_state(("user", 1)) is None
            assert await client.fetch_query(opts) == "seed"
            assert origin.calls == 0

    async def test_reset_refetches_observed_keys(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An observed key that is reset goes back to pending and is fetched again."""
        origin = Origin(delay=1.0)
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, ("user", 1), stale_time=60.0)).subscribe(
                seen
            )
            await trio.sleep(2.0)
            assert await client.reset_queries(("user", 1), exact=True) == 1
            await trio.sleep(2.0)
            unsubscribe()
        assert seen.calls == [
            ("pending", None),
            ("success", "v1"),
            ("pending", None),
            ("success", "v2"),
        ]
        assert origin.started_at == [0.0, 2.0]

    async def test_reset_of_observed_key_with_initial_data_shows_it_again(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Resetting an observed key with initial_data shows it again, then refetches."""
        origin = Origin(delay=1.0)
        seen = Seen()
        opts = options(origin, ("user", 1), initial_data="seed", stale_time=60.0)
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(opts).subscribe(seen)
            await client.set_query_data(("user", 1), "changed")
            await client.reset_queries(("user", 1))
            assert client.get_query_data(("user", 1)) == "seed"
            await trio.sleep(2.0)
            unsubscribe()
        assert seen.calls == [
            ("success", "seed"),
            ("success", "changed"),
            ("success", "seed"),
            ("success", "v1"),
        ]
        assert origin.started_at == [0.0]


class TestSetQueryData:
    async def test_set_value_on_a_key_not_cached(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """set_query_data caches a value for a new key, as fetched now, and returns it."""
        async with sq.open_query_client(sq.QueryClientConfig(stale_time=60.0)) as client:
            await trio.sleep(2.0)
            assert await client.set_query_data(("user", 1), {"name": "Alice"}) == {"name": "Alice"}
            assert client.get_query_state(("user", 1)) == QueryState(
                status=QueryStatus.SUCCESS,
                data={"name": "Alice"},
                data_updated_at=client.clock.wall(2.0),
                is_stale=False,
            )
            origin = Origin()
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(options(origin, ("user", 1))) == {"name": "Alice"}
            assert origin.calls == 0

    async def test_updater_gets_the_old_data(self, autojump_clock: trio.testing.MockClock) -> None:
        """A callable is an updater: it gets the current data and its result is stored."""
        async with sq.open_query_client() as client:
            await client.set_query_data(("count",), 1)
            assert await client.set_query_data(("count",), lambda old: old + 1) == 2
            assert client.get_query_data(("count",)) == 2

    async def test_updater_on_a_key_not_cached_gets_none(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An updater of a key with no data gets None."""
        got: list[Any] = []

        def updater(old: Any) -> str:
            got.append(old)
            return "new"

        async with sq.open_query_client() as client:
            assert await client.set_query_data(("fresh",), updater) == "new"
        assert got == [None]

    async def test_raising_updater_changes_nothing_on_a_cached_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An updater that raises propagates its error and leaves the cached state as it was."""
        async with sq.open_query_client() as client:
            await client.set_query_data(("user", 1), "kept")
            before = client.get_query_state(("user", 1))
            await trio.sleep(1.0)
            with pytest.raises(ZeroDivisionError):
                await client.set_query_data(("user", 1), lambda old: 1 / 0)
            assert client.get_query_state(("user", 1)) == before

    async def test_raising_updater_does_not_create_the_key(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An updater that raises on a key not cached leaves the key not cached."""
        async with sq.open_query_client() as client:
            with pytest.raises(ZeroDivisionError):
                await client.set_query_data(("user", 1), lambda old: 1 / 0)
            assert client.get_query_state(("user", 1)) is None
            assert client.statistics().queries == 0

    async def test_raising_updater_on_an_observed_key_changes_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An updater that raises on a key with an actor leaves data and actor as they were."""
        origin = Origin()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, ("user", 1))).subscribe(Seen())
            await wait_all_tasks_blocked()
            with pytest.raises(ZeroDivisionError):
                await client.set_query_data(("user", 1), lambda old: 1 / 0)
            assert client.get_query_data(("user", 1)) == "v1"
            assert client.statistics().restarts == 0
            unsubscribe()

    async def test_set_data_tells_observers(self, autojump_clock: trio.testing.MockClock) -> None:
        """Observers of the key see the value set."""
        origin = Origin()
        seen = Seen()
        async with sq.open_query_client() as client:
            unsubscribe = client.watch(options(origin, ("user", 1))).subscribe(seen)
            await wait_all_tasks_blocked()
            await client.set_query_data(("user", 1), "set")
            unsubscribe()
        assert seen.calls == [("pending", None), ("success", "v1"), ("success", "set")]

    async def test_updated_at_sets_the_data_timestamp(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """updated_at (wall time) is the data's timestamp and its freshness runs from it."""
        async with sq.open_query_client(sq.QueryClientConfig(stale_time=10.0)) as client:
            then = client.clock.wall(0.0) - 7.0
            await client.set_query_data(("user", 1), "old news", updated_at=then)
            state = client.get_query_state(("user", 1))
            assert state is not None
            assert (state.data_updated_at, state.is_stale) == (then, False)
            await trio.sleep_until(3.0)
            await wait_all_tasks_blocked()
            assert client.get_query_state(("user", 1)).is_stale is True  # type: ignore[union-attr]

    async def test_a_callable_is_stored_through_an_updater(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """To store a function, return it from an updater."""

        def handler() -> None:
            return None

        async with sq.open_query_client() as client:
            await client.set_query_data(("handler",), lambda _old: handler)
            assert client.get_query_data(("handler",)) is handler

    async def test_set_data_on_a_fetching_key_is_visible_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """set_query_data during a fetch shows the value at once; the fetch goes on."""
        origin = Origin(delay=5.0)
        async with sq.open_query_client() as client:
            await client.prefetch_query(options(origin, ("user", 1)))
            await wait_all_tasks_blocked()
            await client.set_query_data(("user", 1), "set")
            state = client.get_query_state(("user", 1))
            assert state is not None
            assert (state.data, state.status, state.fetch_status) == (
                "set",
                QueryStatus.SUCCESS,
                FetchStatus.FETCHING,
            )


class TestInvalidateAndWait:
    async def test_wait_returns_once_the_observed_keys_refetch_landed(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """wait=True returns after the refetch: its value is there, 2 s later."""
        origin = Origin(delay=2.0)
        async with sq.open_query_client() as client:
            opts = options(origin, ("user", 1), stale_time=60.0)
            unsubscribe = client.watch(opts).subscribe(lambda state: None)
            await wait_all_tasks_blocked()
            await trio.sleep(3.0)  # the first fetch (2 s) landed
            assert client.get_query_data(("user", 1)) == "v1"
            assert await client.invalidate_queries(("user",), wait=True) == 1
            assert trio.current_time() == 5.0
            assert client.get_query_data(("user", 1)) == "v2"
            assert origin.calls == 2
            unsubscribe()

    async def test_wait_covers_the_refetch_after_a_fetch_in_flight(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Invalidated mid-fetch, wait=True returns after that fetch and the refetch after it."""
        origin = Origin(delay=2.0)
        async with sq.open_query_client() as client:
            opts = options(origin, ("user", 1), stale_time=60.0)
            unsubscribe = client.watch(opts).subscribe(lambda state: None)
            await trio.sleep(1.0)  # the first fetch runs from 0 to 2
            await client.invalidate_queries(("user",), wait=True)
            assert trio.current_time() == 4.0
            assert origin.calls == 2
            state = client.get_query_state(("user", 1))
            assert state is not None
            assert (state.data, state.is_invalidated, state.fetch_status) == (
                "v2",
                False,
                FetchStatus.IDLE,
            )
            unsubscribe()

    async def test_wait_does_not_raise_the_refetch_error(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A failing refetch is in the key's state; wait=True returns normally."""
        origin = Origin("v1", ValueError("origin down"))
        async with sq.open_query_client(sq.QueryClientConfig(retry=0)) as client:
            opts = options(origin, ("user", 1), stale_time=60.0)
            unsubscribe = client.watch(opts).subscribe(lambda state: None)
            await wait_all_tasks_blocked()
            assert await client.invalidate_queries(("user",), wait=True) == 1
            state = client.get_query_state(("user", 1))
            assert state is not None
            assert (state.status, state.data, str(state.error)) == (
                QueryStatus.ERROR,
                "v1",
                "origin down",
            )
            unsubscribe()

    async def test_without_observers_there_is_nothing_to_wait_for(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An unobserved key is only marked: wait=True returns at once."""
        async with sq.open_query_client() as client:
            origins: dict[tuple[Any, ...], Origin] = {}
            await cache_all(client, origins)
            before = trio.current_time()
            assert await client.invalidate_queries(("user",), wait=True) == 3
            assert trio.current_time() == before
            assert sum(origin.calls for origin in origins.values()) == len(KEYS)
