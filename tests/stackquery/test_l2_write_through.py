"""Specification of writes to L2: fetched and set data, TTLs, invalidation, removal, shutdown."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from tests.stackquery.client_origin import Failure, Origin
from tests.stackquery.l2_store import (
    KEY,
    L2_KEY,
    ControlledStorage,
    config,
    entry_bytes,
    l2_stats,
    options,
)


class TestWrittenEntries:
    async def test_a_fetched_value_is_written_with_its_fetch_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The entry holds the value and the wall time the fetch finished, not invalidated."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            assert await client.fetch_query(options(Origin({"name": "ada"}, delay=3.0))) == {
                "name": "ada"
            }
            await wait_all_tasks_blocked()
            assert await store.entry(L2_KEY) == sq.StoredEntry(
                {"name": "ada"}, client.clock.wall(3.0), False, "json"
            )
            stats = l2_stats(client)
            assert (stats.writes, stats.pending_writes, stats.errors) == (1, 0, 0)

    async def test_set_query_data_is_written(self, autojump_clock: trio.testing.MockClock) -> None:
        """Data set on a key never fetched is written, stamped with the time it was set."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            await trio.sleep(2.0)
            await client.set_query_data(KEY, [1, 2, 3])
            await wait_all_tasks_blocked()
            assert await store.entry(L2_KEY) == sq.StoredEntry(
                [1, 2, 3], client.clock.wall(2.0), False, "json"
            )

    async def test_an_updater_result_is_written_with_the_given_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """set_query_data(updater, updated_at=) writes the updater's result stamped updated_at."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            await client.fetch_query(options(Origin(10)))
            stamp = client.clock.wall() - 5.0
            await client.set_query_data(KEY, lambda old: old + 1, updated_at=stamp)
            await wait_all_tasks_blocked()
            assert await store.entry(L2_KEY) == sq.StoredEntry(11, stamp, False, "json")

    async def test_a_failed_fetch_writes_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A fetch that fails after its retries leaves L2 untouched."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store, retry=0)) as client:
            with pytest.raises(Failure, match=r"^down$"):
                await client.fetch_query(options(Origin(Failure("down"))))
            await wait_all_tasks_blocked()
            assert store.set_many_calls == []
            assert l2_stats(client).writes == 0

    async def test_a_refetch_overwrites_the_entry(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Each successful fetch replaces the key's entry with its own value."""
        store = ControlledStorage()
        origin = Origin(delay=1.0)
        async with sq.open_query_client(config(store)) as client:
            await client.fetch_query(options(origin))
            await client.fetch_query(options(origin))
            await trio.sleep(1.0)
            await wait_all_tasks_blocked()
            assert await store.entry(L2_KEY) == sq.StoredEntry(
                "v2", client.clock.wall(2.0), False, "json"
            )
            assert l2_stats(client).writes == 2


class TestTTL:
    @pytest.mark.parametrize(
        ("client_kwargs", "query_kwargs", "ttl"),
        [
            ({}, {}, 300.0),
            ({"gc_time": 60.0}, {}, 60.0),
            ({}, {"gc_time": 120.0}, 120.0),
            ({}, {"gc_time": math.inf}, None),
            ({"storage_ttl": 30.0}, {"gc_time": 120.0}, 30.0),
            ({"storage_ttl": None}, {"gc_time": 120.0}, None),
        ],
        ids=[
            "client gc_time default",
            "client gc_time",
            "query gc_time",
            "infinite gc_time",
            "storage_ttl",
            "storage_ttl None",
        ],
    )
    async def test_the_ttl_the_store_gets(
        self,
        client_kwargs: dict[str, Any],
        query_kwargs: dict[str, Any],
        ttl: float | None,
        autojump_clock: trio.testing.MockClock,
    ) -> None:
        """An entry lives the key's gc_time in L2 unless storage_ttl says otherwise."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store, **client_kwargs)) as client:
            await client.fetch_query(options(Origin(), **query_kwargs))
            await wait_all_tasks_blocked()
        assert store.written_ttls() == {L2_KEY: ttl}
        assert await store.memory.get_with_ttl(L2_KEY) == (await store.memory.get(L2_KEY), ttl)

    async def test_set_query_data_uses_the_client_gc_time(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Data set on a new key is written with the client's gc_time as TTL."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store, gc_time=45.0)) as client:
            await client.set_query_data(KEY, "set")
        assert store.written_ttls() == {L2_KEY: 45.0}

    async def test_gc_time_zero_writes_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key with gc_time=0 would expire as it lands: it is not written at all."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            assert await client.fetch_query(options(Origin(), gc_time=0.0)) == "v1"
            await wait_all_tasks_blocked()
            assert l2_stats(client).writes == 0
        assert store.set_many_calls == []

    async def test_the_entry_expires_from_l2_when_its_ttl_runs_out(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With gc_time=100 the entry is readable at t=99.999 and gone at t=100."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            await client.fetch_query(options(Origin(), gc_time=100.0))
            await trio.sleep_until(99.999)
            assert await store.memory.get(L2_KEY) is not None
            await trio.sleep_until(100.0)
            assert await store.memory.get(L2_KEY) is None


class TestBackFromL2:
    async def test_a_key_collected_from_l1_comes_back_from_l2(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After gc drops a key from L1, the next fetch reads it from L2 without query_fn."""
        store = ControlledStorage()
        origin = Origin()
        opts = options(origin, gc_time=10.0, stale_time=3600.0)
        async with sq.open_query_client(config(store, storage_ttl=None)) as client:
            await client.fetch_query(opts)
            await trio.sleep(11.0)
            assert client.get_query_state(KEY) is None
            assert await client.fetch_query(opts) == "v1"
            assert origin.calls == 1
            assert l2_stats(client).hits == 1

    async def test_a_key_evicted_by_max_queries_comes_back_from_l2(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With max_queries=2, a third key evicts the first; fetching it again reads L2."""
        store = ControlledStorage()
        origins = {name: Origin(f"{name}1") for name in "abc"}
        async with sq.open_query_client(config(store, max_queries=2)) as client:
            for name, origin in origins.items():
                await client.fetch_query(options(origin, (name,), stale_time=3600.0))
                await trio.sleep(1.0)
            assert client.get_query_state(("a",)) is None
            assert (
                await client.fetch_query(options(origins["a"], ("a",), stale_time=3600.0)) == "a1"
            )
            assert [origin.calls for origin in origins.values()] == [1, 1, 1]


class TestInvalidationAndRemoval:
    async def test_an_invalidation_is_written_so_a_second_client_refetches(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Invalidated in client A, the key is stale in client B: served, then refetched once."""
        store = ControlledStorage()
        first, second = Origin("a1"), Origin("b1", delay=1.0)
        async with sq.open_query_client(config(store)) as a:
            await a.fetch_query(options(first, stale_time=3600.0))
            assert await a.invalidate_queries(("user",)) == 1
            fetched_at = a.get_query_state(KEY).data_updated_at  # type: ignore[union-attr]
        assert await store.entry(L2_KEY) == sq.StoredEntry("a1", fetched_at, True, "json")
        async with sq.open_query_client(config(store)) as b:
            assert await b.fetch_query(options(second, stale_time=3600.0)) == "a1"
            assert b.get_query_state(KEY).is_invalidated is True  # type: ignore[union-attr]
            await trio.sleep(1.0)
            await wait_all_tasks_blocked()
            assert b.get_query_data(KEY) == "b1"
            assert second.calls == 1
            entry = await store.entry(L2_KEY)
            assert entry is not None and (entry.value, entry.invalidated) == ("b1", False)

    async def test_an_observed_key_invalidated_is_written_invalidated(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Invalidating a key held by an actor (an observer, refetch=False) writes the flag too."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            unsubscribe = client.watch(options(Origin(), stale_time=3600.0)).subscribe(
                lambda _state: None
            )
            await wait_all_tasks_blocked()
            await client.invalidate_queries(KEY, refetch=False)
            await wait_all_tasks_blocked()
            entry = await store.entry(L2_KEY)
            assert entry is not None and (entry.value, entry.invalidated) == ("v1", True)
            unsubscribe()

    async def test_remove_queries_deletes_from_l2(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Removing a key deletes its entry: a second client calls query_fn again."""
        store = ControlledStorage()
        second = Origin("b1")
        async with sq.open_query_client(config(store)) as a:
            await a.fetch_query(options(Origin()))
            await wait_all_tasks_blocked()
            assert await a.remove_queries(KEY) == 1
            await wait_all_tasks_blocked()
            assert store.deleted == [L2_KEY]
            assert l2_stats(a).deletes == 1
        assert await store.memory.get(L2_KEY) is None
        async with sq.open_query_client(config(store)) as b:
            assert await b.fetch_query(options(second)) == "b1"
            assert second.calls == 1

    async def test_removing_an_observed_key_deletes_from_l2(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """remove_queries of a key held by an actor deletes its entry too."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            unsubscribe = client.watch(options(Origin())).subscribe(lambda _state: None)
            await wait_all_tasks_blocked()
            assert await client.remove_queries(KEY) == 1
            await wait_all_tasks_blocked()
            assert store.deleted == [L2_KEY]
            assert await store.memory.get(L2_KEY) is None
            unsubscribe()

    async def test_a_removal_after_a_queued_write_wins(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Set then removed while the writer is busy: L2 ends without the key."""
        store = ControlledStorage()
        store.write_gate = trio.Event()
        async with sq.open_query_client(config(store)) as client:
            await client.set_query_data(("other",), "busy")
            await wait_all_tasks_blocked()
            await client.set_query_data(KEY, "short-lived")
            await client.remove_queries(KEY)
            store.write_gate.set()
        assert await store.memory.get(L2_KEY) is None
        assert [list(items) for items, _ in store.set_many_calls] == [['sq:["other"]']]
        assert store.deleted == [L2_KEY]


class TestWriteBehind:
    async def test_writes_of_one_key_queued_behind_a_busy_writer_coalesce(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """100 values set while the first write is held: one more write, with the last value."""
        store = ControlledStorage()
        store.write_gate = trio.Event()
        async with sq.open_query_client(config(store)) as client:
            await client.set_query_data(KEY, 0)
            await wait_all_tasks_blocked()
            for value in range(1, 101):
                await client.set_query_data(KEY, value)
            assert l2_stats(client).pending_writes == 1
            store.write_gate.set()
            await wait_all_tasks_blocked()
            assert [items[L2_KEY] for items, _ in store.set_many_calls] == [
                entry_bytes(0, at=client.clock.wall(0.0)),
                entry_bytes(100, at=client.clock.wall(0.0)),
            ]
            assert l2_stats(client).writes == 2

    async def test_writes_of_many_keys_go_out_in_one_batch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """50 keys set while the writer is held are written by one set_many."""
        store = ControlledStorage()
        store.write_gate = trio.Event()
        async with sq.open_query_client(config(store)) as client:
            await client.set_query_data(("first",), 0)
            await wait_all_tasks_blocked()
            for i in range(50):
                await client.set_query_data(("k", i), i)
            store.write_gate.set()
        assert [len(items) for items, _ in store.set_many_calls] == [1, 50]

    async def test_the_value_is_written_as_it_was_when_fetched(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A value the caller mutates after the fetch is stored as fetched."""
        store = ControlledStorage()
        store.write_gate = trio.Event()
        async with sq.open_query_client(config(store)) as client:
            value = await client.fetch_query(options(Origin({"n": 1})))
            value["n"] = 2
            store.write_gate.set()
        entry = await store.entry(L2_KEY)
        assert entry is not None and entry.value == {"n": 1}


class TestOnExit:
    async def test_what_a_caller_received_or_set_is_in_l2_when_the_block_exits(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Leaving right after a fetch and a set waits for their two 1 s writes; both land."""
        store = ControlledStorage()
        store.write_delay = 1.0
        async with sq.open_query_client(config(store)) as client:
            assert await client.fetch_query(options(Origin("fetched"))) == "fetched"
            await client.set_query_data(("other",), "set")
        assert trio.current_time() == 2.0
        assert [await store.memory.get(k) for k in (L2_KEY, 'sq:["other"]')] == [
            entry_bytes("fetched", at=client.clock.wall(0.0)),
            entry_bytes("set", at=client.clock.wall(0.0)),
        ]

    async def test_a_hanging_store_delays_exit_by_shutdown_timeout_only(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With L2 hanging, leaving takes shutdown_timeout and counts the write dropped."""
        store = ControlledStorage()
        store.hanging = True
        async with sq.open_query_client(
            config(store, shutdown_timeout=3.0, l2_timeout=10.0)
        ) as client:
            await client.set_query_data(KEY, "lost")
        assert trio.current_time() == 3.0
        stats = l2_stats(client)
        assert (stats.writes, stats.dropped_writes) == (0, 1)


class TestReadYourWrites:
    async def test_a_key_fetched_again_before_its_removal_lands_calls_query_fn(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Removed while the delete takes 1 s, the key is not read back from L2: query_fn runs."""
        store = ControlledStorage()
        origin = Origin()
        opts = options(origin, stale_time=60.0)
        async with sq.open_query_client(config(store)) as client:
            await client.fetch_query(opts)
            await wait_all_tasks_blocked()
            store.write_delay = 1.0
            await client.remove_queries(KEY)
            assert await client.fetch_query(opts) == "v2"
            assert origin.calls == 2

    async def test_a_key_evicted_while_its_write_is_stored_comes_back_with_that_write(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """L2 holds "old"; "new" is set, then evicted during its 1 s write: a fetch gets "new"."""
        store = ControlledStorage()
        origin = Origin()
        async with sq.open_query_client(config(store, max_queries=1)) as client:
            await store.memory.set(L2_KEY, entry_bytes("old", at=client.clock.wall()))
            store.write_delay = 1.0
            await client.set_query_data(KEY, "new")
            await wait_all_tasks_blocked()
            await client.set_query_data(("other",), "evicts the first")
            assert client.get_query_state(KEY) is None
            assert await client.fetch_query(options(origin, stale_time=60.0)) == "new"
            assert origin.calls == 0

    async def test_a_key_evicted_while_its_write_is_queued_comes_back_with_that_write(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Queued behind a held write and then evicted, the key is read back as queued."""
        store = ControlledStorage()
        store.write_gate = trio.Event()
        origin = Origin()
        async with sq.open_query_client(config(store, max_queries=1)) as client:
            await store.memory.set(L2_KEY, entry_bytes("old", at=client.clock.wall()))
            await client.set_query_data(("first",), "holds the writer")
            await wait_all_tasks_blocked()
            await client.set_query_data(KEY, "new")
            await client.set_query_data(("other",), "evicts it")
            assert client.get_query_state(KEY) is None
            assert await client.fetch_query(options(origin, stale_time=60.0)) == "new"
            assert origin.calls == 0
            store.write_gate.set()

    async def test_an_invalidation_not_landed_yet_is_seen_by_the_next_read(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Invalidated then evicted before the flag is stored, the key is read back stale."""
        store = ControlledStorage()
        origin = Origin(delay=5.0)
        opts = options(origin, stale_time=3600.0)
        async with sq.open_query_client(config(store, max_queries=1)) as client:
            await client.fetch_query(opts)
            await wait_all_tasks_blocked()
            store.write_delay = 1.0
            await client.invalidate_queries(KEY)
            await client.set_query_data(("other",), "evicts it")
            assert await client.fetch_query(opts) == "v1"
            assert client.get_query_state(KEY).is_invalidated is True  # type: ignore[union-attr]
            await trio.sleep(5.0)
            await wait_all_tasks_blocked()
            assert client.get_query_data(KEY) == "v2"
            assert origin.calls == 2
