"""Regressions found by review: each test pins a bug that was fixed."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from tests.stackquery.client_origin import Origin
from tests.stackquery.l2_store import ControlledStorage, entry_bytes


def options(origin: Any, key: tuple[Any, ...], **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=key, query_fn=origin, **kwargs)


class TestChangeEachUsesStaleSnapshots:
    async def test_invalidate_does_not_put_back_data_set_while_it_ran(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """invalidate_queries republishes a passivated key's snapshot taken before its awaits."""
        async with sq.open_query_client() as client:
            observed = [options(Origin(), ("k", i), stale_time=60.0) for i in range(3)]
            unsubscribes = [client.watch(o).subscribe(lambda _s: None) for o in observed]
            await wait_all_tasks_blocked()
            await client.set_query_data(("k", "passive"), "old")
            matched = trio.Event()

            def predicate(_key: Any, _state: Any) -> bool:
                matched.set()
                return True

            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: client.invalidate_queries(("k",), predicate=predicate))
                await matched.wait()
                await client.set_query_data(("k", "passive"), "new")
            assert client.get_query_data(("k", "passive")) == "new"
            for unsubscribe in unsubscribes:
                unsubscribe()

    async def test_invalidate_does_not_bring_back_a_key_removed_while_it_ran(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """invalidate_queries re-inserts a passivated key that was removed during its awaits."""
        async with sq.open_query_client() as client:
            observed = [options(Origin(), ("k", i), stale_time=60.0) for i in range(3)]
            unsubscribes = [client.watch(o).subscribe(lambda _s: None) for o in observed]
            await wait_all_tasks_blocked()
            await client.set_query_data(("k", "passive"), "old")
            matched = trio.Event()

            def predicate(_key: Any, _state: Any) -> bool:
                matched.set()
                return True

            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: client.invalidate_queries(("k",), predicate=predicate))
                await matched.wait()
                assert await client.remove_queries(("k", "passive"), exact=True) == 1
            assert client.get_query_state(("k", "passive")) is None
            for unsubscribe in unsubscribes:
                unsubscribe()


class TestObserverViewRaising:
    async def test_select_failing_on_placeholder_does_not_escape_remove_queries(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A select that raises on placeholder_data escapes from the actor into remove_queries."""
        key = ("user", 1)
        opts = options(
            Origin({"name": "ada"}),
            key,
            stale_time=60.0,
            select=lambda data: data["name"],
            placeholder_data={},
        )
        async with sq.open_query_client() as client:
            await client.fetch_query(opts)
            seen: list[Any] = []
            unsubscribe = client.watch(opts).subscribe(lambda s: seen.append(s.data))
            assert await client.remove_queries(key) == 1
            assert client.statistics().restarts == 0
            unsubscribe()


class TestHydrationInvalidated:
    async def test_invalidation_during_l2_read_of_an_observed_key_calls_origin_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """_hydrate clears fetch.invalidated but not _refetch_after: the origin runs twice."""
        key = ("user", 1)
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin(delay=1.0)
        opts = options(origin, key, stale_time=60.0)
        async with sq.open_query_client(sq.QueryClientConfig(storage=store)) as client:
            await store.memory.set('sq:["user",1]', entry_bytes("from L2", at=client.clock.wall()))
            unsubscribe = client.watch(opts).subscribe(lambda _s: None)
            await wait_all_tasks_blocked()
            assert await client.invalidate_queries(key) == 1
            store.read_gate.set()
            await trio.sleep(10.0)
            await wait_all_tasks_blocked()
            assert origin.calls == 1
            assert client.get_query_data(key) == "v1"
            unsubscribe()
