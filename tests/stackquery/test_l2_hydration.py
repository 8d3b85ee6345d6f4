"""Specification of hydration: a cold key is looked up in L2 before query_fn runs."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import MemoryStorage
from tests.stackquery.client_origin import Origin
from tests.stackquery.l2_store import (
    KEY,
    L2_KEY,
    ControlledStorage,
    config,
    entry_bytes,
    l2_stats,
    options,
)


class TestHydrationBeforeQueryFn:
    async def test_fetch_of_a_cold_key_in_l2_does_not_call_query_fn(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """fetch_query of a key fresh in L2 returns it with no query_fn call and no wait."""
        store = ControlledStorage()
        origin = Origin(delay=5.0)
        async with sq.open_query_client(config(store)) as client:
            at = client.clock.wall() - 10.0
            await store.memory.set(L2_KEY, entry_bytes({"name": "ada"}, at=at))
            assert await client.fetch_query(options(origin, stale_time=60.0)) == {"name": "ada"}
            assert trio.current_time() == 0.0
            assert origin.calls == 0
            assert client.get_query_state(KEY) == sq.QueryState(
                status=sq.QueryStatus.SUCCESS,
                data={"name": "ada"},
                data_updated_at=at,
                is_stale=False,
            )
            stats = l2_stats(client)
            assert (stats.reads, stats.read_batches, stats.hits, stats.misses) == (1, 1, 1, 0)

    async def test_hydrated_data_goes_stale_when_its_stored_age_reaches_stale_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data stored 10 s ago with stale_time=60 is fresh for 50 s more, then refetched once."""
        store = ControlledStorage()
        origin = Origin()
        opts = options(origin, stale_time=60.0)
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall() - 10.0))
            assert await client.fetch_query(opts) == "stored"
            await trio.sleep_until(49.999)
            await wait_all_tasks_blocked()
            assert client.get_query_state(KEY).is_stale is False  # type: ignore[union-attr]
            await trio.sleep_until(50.0)
            await wait_all_tasks_blocked()
            assert client.get_query_state(KEY).is_stale is True  # type: ignore[union-attr]
            assert await client.fetch_query(opts) == "stored"
            await wait_all_tasks_blocked()
            assert client.get_query_data(KEY) == "v1"
            assert origin.calls == 1

    async def test_prefetch_of_a_cold_key_in_l2_does_not_call_query_fn(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """prefetch_query loads the stored value into L1 without calling query_fn."""
        store = ControlledStorage()
        origin = Origin()
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))
            await client.prefetch_query(options(origin, stale_time=60.0))
            await wait_all_tasks_blocked()
            assert client.get_query_data(KEY) == "stored"
            assert origin.calls == 0
            assert l2_stats(client).hits == 1

    async def test_a_subscriber_of_a_cold_key_in_l2_gets_it_without_query_fn(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An observer's listener sees pending, then the stored value; query_fn is not called."""
        store = ControlledStorage()
        origin = Origin()
        seen: list[tuple[sq.QueryStatus, Any]] = []
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))
            client.watch(options(origin, stale_time=60.0)).subscribe(
                lambda state: seen.append((state.status, state.data))
            )
            await wait_all_tasks_blocked()
            assert seen == [(sq.QueryStatus.PENDING, None), (sq.QueryStatus.SUCCESS, "stored")]
            assert origin.calls == 0

    async def test_a_miss_in_l2_calls_query_fn_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key absent from L2 is read once, missed, then fetched from the origin once."""
        store = ControlledStorage()
        origin = Origin(delay=1.0)
        async with sq.open_query_client(config(store)) as client:
            assert await client.fetch_query(options(origin)) == "v1"
            assert (origin.calls, trio.current_time()) == (1, 1.0)
            stats = l2_stats(client)
            assert (stats.reads, stats.hits, stats.misses) == (1, 0, 1)

    async def test_a_key_with_data_in_l1_is_not_read_from_l2(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A stale key already in L1 refetches from the origin without reading L2 again."""
        store = ControlledStorage()
        origin = Origin()
        async with sq.open_query_client(config(store)) as client:
            await client.fetch_query(options(origin))
            await client.fetch_query(options(origin))
            await wait_all_tasks_blocked()
            assert origin.calls == 2
            assert l2_stats(client).reads == 1
            assert store.get_many_calls == [[L2_KEY]]


class TestStaleDataInL2:
    async def test_data_older_than_stale_time_is_served_then_refetched_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """L2 data 100 s old with stale_time=30 is returned at once; one refetch replaces it."""
        store = ControlledStorage()
        origin = Origin(delay=2.0)
        opts = options(origin, stale_time=30.0)
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("old", at=client.clock.wall() - 100.0))
            assert await client.fetch_query(opts) == "old"
            assert trio.current_time() == 0.0
            assert client.get_query_state(KEY).fetch_status is sq.FetchStatus.FETCHING  # type: ignore[union-attr]
            assert await client.fetch_query(opts) == "old"
            await trio.sleep(2.0)
            await wait_all_tasks_blocked()
            assert client.get_query_data(KEY) == "v1"
            assert await client.fetch_query(opts) == "v1"
            assert origin.calls == 1
        entry = await store.entry(L2_KEY)
        assert entry is not None and entry.value == "v1"

    async def test_with_the_default_stale_time_an_l2_hit_is_served_and_refetched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With stale_time=0 every L2 hit is stale: served at once, then one origin call."""
        store = ControlledStorage()
        origin = Origin()
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))
            assert await client.fetch_query(options(origin)) == "stored"
            await wait_all_tasks_blocked()
            assert client.get_query_data(KEY) == "v1"
            assert origin.calls == 1

    async def test_an_invalidated_entry_is_served_stale_and_refetched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An entry stored as invalidated is stale however young: served, then refetched once."""
        store = ControlledStorage()
        origin = Origin(delay=1.0)
        async with sq.open_query_client(config(store)) as client:
            raw = entry_bytes("stored", at=client.clock.wall(), invalidated=True)
            await store.memory.set(L2_KEY, raw)
            assert await client.fetch_query(options(origin, stale_time=3600.0)) == "stored"
            state = client.get_query_state(KEY)
            assert state is not None and (state.is_invalidated, state.is_stale) == (True, True)
            await trio.sleep(1.0)
            await wait_all_tasks_blocked()
            assert client.get_query_data(KEY) == "v1"
            assert origin.calls == 1

    async def test_a_stale_hit_for_a_subscriber_shows_the_stored_value_then_the_new_one(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An observer of a key stale in L2 sees the stored value first, then the refetched one."""
        store = ControlledStorage()
        origin = Origin(delay=1.0)
        seen: list[Any] = []
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("old", at=client.clock.wall() - 100.0))
            client.watch(options(origin, stale_time=30.0)).subscribe(
                lambda state: seen.append(state.data)
            )
            await trio.sleep(1.0)
            await wait_all_tasks_blocked()
            assert seen == [None, "old", "v1"]
            assert origin.calls == 1

    async def test_data_past_max_age_in_l2_is_never_served(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An entry older than the query's max_age is not served: the caller waits for query_fn."""
        store = ControlledStorage()
        origin = Origin(delay=1.0)
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("ancient", at=client.clock.wall() - 100.0))
            assert await client.fetch_query(options(origin, max_age=50.0)) == "v1"
            assert (origin.calls, trio.current_time()) == (1, 1.0)


class TestBatchedHydration:
    async def test_a_thousand_cold_keys_hydrate_in_a_handful_of_batches(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """1,000 concurrent cold fetches of stored keys: at most 3 get_many calls, no query_fn."""
        memory = MemoryStorage()
        origin = Origin()
        results: dict[int, Any] = {}
        async with sq.open_query_client(config(memory)) as client:
            at = client.clock.wall()
            await memory.set_many({f'sq:["k",{i}]': entry_bytes(i, at=at) for i in range(1000)})

            async def fetch(i: int) -> None:
                results[i] = await client.fetch_query(options(origin, ("k", i), stale_time=60.0))

            async with trio.open_nursery() as nursery:
                for i in range(1000):
                    nursery.start_soon(fetch, i)
            assert results == {i: i for i in range(1000)}
            assert origin.calls == 0
            stats = l2_stats(client)
            assert (stats.reads, stats.hits, stats.misses) == (1000, 1000, 0)
            assert stats.read_batches <= 3
            assert memory.statistics().gets == 1000

    async def test_reads_asked_for_during_a_batch_go_out_together_in_the_next(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """While one get_many is held, 99 more cold keys wait and then share one get_many."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin()
        async with sq.open_query_client(config(store)) as client:
            at = client.clock.wall()
            await store.memory.set_many(
                {f'sq:["k",{i}]': entry_bytes(i, at=at) for i in range(100)}
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.fetch_query, options(origin, ("k", 0), stale_time=60.0))
                await wait_all_tasks_blocked()
                for i in range(1, 100):
                    nursery.start_soon(
                        client.fetch_query, options(origin, ("k", i), stale_time=60.0)
                    )
                await wait_all_tasks_blocked()
                assert store.get_many_calls == [['sq:["k",0]']]
                store.read_gate.set()
            assert [len(keys) for keys in store.get_many_calls] == [1, 99]
            assert sorted(store.get_many_calls[1]) == sorted(f'sq:["k",{i}]' for i in range(1, 100))
            assert [client.get_query_data(("k", i)) for i in range(100)] == list(range(100))
            assert origin.calls == 0
            assert l2_stats(client).read_batches == 2

    async def test_reads_landing_together_each_settle_their_own_key_whatever_the_others_held(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Fresh, stale, invalidated and missing entries answered in one get_many: each
        caller gets its own key's outcome, and only the keys not fresh call their origin."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        kinds = ["fresh", "stale", "fresh", "missing", "invalidated", "fresh", "missing"]
        origins = [Origin(f"origin {i}") for i in range(len(kinds))]
        results: dict[int, Any] = {}
        async with sq.open_query_client(config(store)) as client:
            at = client.clock.wall()
            stored = {
                f'sq:["k",{i}]': entry_bytes(
                    f"stored {i}",
                    at=at - 120.0 if kind == "stale" else at,
                    invalidated=kind == "invalidated",
                )
                for i, kind in enumerate(kinds)
                if kind != "missing"
            }
            await store.memory.set_many(stored)

            async def fetch(i: int) -> None:
                results[i] = await client.fetch_query(
                    options(origins[i], ("k", i), stale_time=60.0)
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.fetch_query, options(Origin(), ("first",)))
                await wait_all_tasks_blocked()  # its get_many waits at the gate
                for i in range(len(kinds)):
                    nursery.start_soon(fetch, i)
                await wait_all_tasks_blocked()
                store.read_gate.set()
            assert [len(keys) for keys in store.get_many_calls] == [1, len(kinds)]
            assert results == {
                i: f"origin {i}" if kind == "missing" else f"stored {i}"
                for i, kind in enumerate(kinds)
            }
            await wait_all_tasks_blocked()
            assert [origin.calls for origin in origins] == [
                0 if kind == "fresh" else 1 for kind in kinds
            ]
            assert [client.get_query_data(("k", i)) for i in range(len(kinds))] == [
                f"stored {i}" if kind == "fresh" else f"origin {i}" for i, kind in enumerate(kinds)
            ]

    async def test_concurrent_callers_of_one_cold_key_share_one_l2_read(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """100 callers of one cold key stored in L2 make one read and no query_fn call."""
        store = ControlledStorage()
        origin = Origin()
        results: list[Any] = []
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))

            async def fetch() -> None:
                results.append(await client.fetch_query(options(origin, stale_time=60.0)))

            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(fetch)
            assert results == ["stored"] * 100
            assert (l2_stats(client).reads, origin.calls) == (1, 0)
            assert store.get_many_calls == [[L2_KEY]]


class TestLateHydration:
    async def test_a_hydration_that_lands_after_set_query_data_does_not_overwrite_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data set in L1 while the L2 read is held stays; the fetch waiting on it returns it."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin()
        results: list[Any] = []
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("from L2", at=client.clock.wall()))

            async def fetch() -> None:
                results.append(await client.fetch_query(options(origin, stale_time=60.0)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await wait_all_tasks_blocked()
                await trio.sleep(1.0)
                await client.set_query_data(KEY, "newer")
                store.read_gate.set()
            assert results == ["newer"]
            state = client.get_query_state(KEY)
            assert state is not None
            assert (state.data, state.data_updated_at) == ("newer", client.clock.wall(1.0))
            assert origin.calls == 0
        entry = await store.entry(L2_KEY)
        assert entry is not None and entry.value == "newer"

    async def test_an_observer_never_sees_a_hydration_older_than_data_set_meanwhile(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An entry stored at t=4 and read after data was set at t=5 is dropped, never shown."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin()
        seen: list[Any] = []
        async with sq.open_query_client(config(store)) as client:
            await trio.sleep(5.0)
            await store.memory.set(L2_KEY, entry_bytes("from L2", at=client.clock.wall(4.0)))
            client.watch(options(origin, stale_time=60.0)).subscribe(
                lambda state: seen.append(state.data)
            )
            await wait_all_tasks_blocked()
            await client.set_query_data(KEY, "newer")
            store.read_gate.set()
            await wait_all_tasks_blocked()
            assert client.get_query_data(KEY) == "newer"
            assert seen == [None, "newer"]
            assert origin.calls == 0

    async def test_an_invalidation_during_hydration_makes_the_hydrated_data_stale(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Invalidated during its L2 read, a key serves the stored data as stale and refetches."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin(delay=1.0)
        results: list[Any] = []
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("from L2", at=client.clock.wall()))

            async def fetch() -> None:
                results.append(await client.fetch_query(options(origin, stale_time=60.0)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await wait_all_tasks_blocked()
                assert await client.invalidate_queries(KEY) == 1
                store.read_gate.set()
            assert results == ["from L2"]
            state = client.get_query_state(KEY)
            assert state is not None and (state.is_invalidated, state.is_stale) == (True, True)
            await trio.sleep(1.0)
            await wait_all_tasks_blocked()
            assert client.get_query_data(KEY) == "v1"
            assert client.get_query_state(KEY).is_invalidated is False  # type: ignore[union-attr]
            assert origin.calls == 1

    async def test_a_key_removed_during_hydration_is_not_brought_back(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """remove_queries while the L2 read is held: the caller is cancelled, L1 stays empty."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin()
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("from L2", at=client.clock.wall()))
            errors: list[BaseException] = []

            async def fetch() -> None:
                try:
                    await client.fetch_query(options(origin, stale_time=60.0))
                except sq.QueryCancelledError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await wait_all_tasks_blocked()
                assert await client.remove_queries(KEY) == 1
                store.read_gate.set()
            await wait_all_tasks_blocked()
            assert len(errors) == 1
            assert client.get_query_state(KEY) is None
            assert origin.calls == 0
