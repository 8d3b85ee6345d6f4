"""Specification of a failing, slow or misbehaving L2: never an error in a caller, counted."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import StorageError, StorageUnavailableError
from tests.stackquery.client_origin import Origin
from tests.stackquery.l2_store import (
    KEY,
    L2_KEY,
    ControlledStorage,
    config,
    entry_bytes,
    l2_stats,
    l2_warnings,
    options,
)

STORE_ERRORS = {
    "unavailable": StorageUnavailableError("connection refused"),
    "storage error": StorageError("disk full"),
    "os error": OSError(5, "I/O error"),
    "runtime error": RuntimeError("a bug in the store"),
    "key error": KeyError("oops"),
}


class MisbehavingStorage:
    """A store whose get_many answers with the wrong shape; writes are accepted and dropped."""

    def __init__(self, answer: list[Any]) -> None:
        self.answer = answer

    async def get(self, key: str) -> Any:
        await trio.lowlevel.checkpoint()
        return self.answer[0] if self.answer else None

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        await trio.lowlevel.checkpoint()
        return self.answer

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await trio.lowlevel.checkpoint()

    async def delete(self, key: str) -> None:
        await trio.lowlevel.checkpoint()


class TestStoreDown:
    @pytest.mark.parametrize("error", STORE_ERRORS.values(), ids=STORE_ERRORS)
    async def test_a_failing_store_is_a_miss_and_the_origin_serves(
        self, error: Exception, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Whatever the store raises, a cold fetch gets the origin's value; every failure counts."""
        store = ControlledStorage()
        store.fail_with(error)
        origin = Origin()
        opts = options(origin, stale_time=60.0)
        async with sq.open_query_client(config(store)) as client:
            assert await client.fetch_query(opts) == "v1"
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(opts) == "v1"
            await trio.sleep(1.0)
            assert origin.calls == 1
            stats = l2_stats(client)
            assert (stats.reads, stats.hits, stats.misses, stats.corrupt) == (1, 0, 1, 0)
            assert stats.errors == store.failed_calls
            assert stats.writes == 0 and stats.pending_writes == 1

    async def test_every_door_keeps_working_while_the_store_is_down(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """prefetch, observers, set, invalidate and remove raise nothing with L2 down."""
        store = ControlledStorage()
        store.fail_with()
        seen: list[Any] = []
        async with sq.open_query_client(config(store)) as client:
            await client.prefetch_query(options(Origin("p1"), ("p",)))
            client.watch(options(Origin("o1"), ("o",))).subscribe(lambda s: seen.append(s.data))
            assert await client.set_query_data(("s",), "set") == "set"
            await wait_all_tasks_blocked()
            assert await client.invalidate_queries(("o",)) == 1
            assert await client.remove_queries(("p",)) == 1
            await wait_all_tasks_blocked()
            assert client.get_query_data(("p",)) is None
            assert client.get_query_data(("s",)) == "set"
            assert seen[:2] == [None, "o1"]
            assert l2_stats(client).errors == store.failed_calls

    async def test_writes_queued_while_down_land_when_the_store_comes_back(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Down for 5 s: a fetched and a set value are both written once the store recovers."""
        store = ControlledStorage()
        store.fail_with()
        async with sq.open_query_client(config(store)) as client:
            await client.fetch_query(options(Origin("fetched")))
            await client.set_query_data(("other",), "set")
            await trio.sleep(5.0)
            assert store.set_many_calls == []
            store.recover()
            await trio.sleep(30.0)
            stats = l2_stats(client)
            assert (stats.writes, stats.pending_writes) == (2, 0)
            assert stats.errors == store.failed_calls
            assert [await store.memory.get(k) for k in (L2_KEY, 'sq:["other"]')] == [
                entry_bytes("fetched", at=client.clock.wall(0.0)),
                entry_bytes("set", at=client.clock.wall(0.0)),
            ]

    async def test_writes_queued_through_a_long_outage_land_within_a_second_of_recovery(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Down for 20 s with 128 writes queued: all land within 1 s of the store's return."""
        store = ControlledStorage()
        store.fail_with()
        async with sq.open_query_client(config(store)) as client:
            for n in range(128):
                await client.set_query_data(("k", n), n)
            await trio.sleep(20.0)
            store.recover()
            await trio.sleep(1.0)
            stats = l2_stats(client)
            assert (stats.writes, stats.pending_writes) == (128, 0)

    async def test_a_newer_value_wins_over_a_write_being_retried(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A value set while the previous write of its key waits for a retry is the one written."""
        store = ControlledStorage()
        store.fail_with()
        async with sq.open_query_client(config(store)) as client:
            await client.set_query_data(KEY, "first")
            await trio.sleep(1.0)
            await client.set_query_data(KEY, "second")
            store.recover()
            await trio.sleep(30.0)
            assert [items[L2_KEY] for items, _ in store.set_many_calls] == [
                entry_bytes("second", at=client.clock.wall(1.0))
            ]

    async def test_a_removal_queued_while_down_lands_when_the_store_comes_back(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A key removed while L2 is down is deleted from it after recovery."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            await client.set_query_data(KEY, "doomed")
            await wait_all_tasks_blocked()
            store.fail_with()
            await client.remove_queries(KEY)
            await trio.sleep(1.0)
            assert await store.memory.get(L2_KEY) is not None
            store.recover()
            await trio.sleep(30.0)
            assert await store.memory.get(L2_KEY) is None
            assert l2_stats(client).deletes == 1

    async def test_leaving_with_the_store_down_takes_shutdown_timeout(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With L2 down, the block exits after shutdown_timeout and counts the write dropped."""
        store = ControlledStorage()
        store.fail_with()
        async with sq.open_query_client(config(store, shutdown_timeout=4.0)) as client:
            await client.set_query_data(KEY, "lost")
        assert trio.current_time() == 4.0
        assert l2_stats(client).dropped_writes == 1

    async def test_failures_are_logged_at_most_once_per_ten_seconds(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Dozens of failures within 10 s log one warning; the next one after 10 s logs again."""
        store = ControlledStorage()
        store.fail_with(StorageUnavailableError("connection refused"))
        async with sq.open_query_client(config(store)) as client:
            for i in range(20):
                await client.fetch_query(options(Origin(), ("k", i)))
                await trio.sleep(0.1)
            assert l2_stats(client).errors == store.failed_calls
            (first,) = l2_warnings(caplog)
            assert re.fullmatch(
                r"L2 get_many failed \(1 errors so far\): "
                r"StorageUnavailableError\('connection refused'\)",
                first,
            )
            await trio.sleep_until(10.0)
            await client.fetch_query(options(Origin(), ("late",)))
            assert len(l2_warnings(caplog)) == 2

    @pytest.mark.parametrize(
        "answer",
        [[], [b"a", b"b"], [42], ["not an entry"]],
        ids=["too few values", "too many values", "an int", "foreign text"],
    )
    async def test_a_store_answering_nonsense_is_a_miss(
        self, answer: list[Any], autojump_clock: trio.testing.MockClock
    ) -> None:
        """A get_many with the wrong count or type of values is a miss, never an error."""
        origin = Origin()
        async with sq.open_query_client(config(MisbehavingStorage(answer))) as client:
            assert await client.fetch_query(options(origin)) == "v1"
            stats = l2_stats(client)
            assert (stats.hits, stats.misses) == (0, 1)
            assert (stats.errors, stats.corrupt) == (
                (0, 1) if answer == ["not an entry"] else (1, 0)
            )
        assert origin.calls == 1


class TestStoreSlow:
    async def test_a_hanging_read_delays_a_cold_fetch_by_l2_timeout(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With L2 hanging and l2_timeout=0.5, a cold fetch of a 1 s origin returns at t=1.5."""
        store = ControlledStorage()
        store.hanging = True
        origin = Origin(delay=1.0)
        async with sq.open_query_client(config(store, l2_timeout=0.5)) as client:
            assert await client.fetch_query(options(origin)) == "v1"
            assert trio.current_time() == 1.5
            assert origin.started_at == [0.5]
            stats = l2_stats(client)
            assert (stats.errors, stats.misses, stats.read_batches) == (1, 1, 1)

    async def test_many_cold_keys_wait_for_one_timed_out_batch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """100 cold keys with L2 hanging share one read batch and one timeout."""
        store = ControlledStorage()
        store.hanging = True
        origin = Origin(delay=1.0)
        async with sq.open_query_client(config(store, l2_timeout=0.5)) as client:
            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(client.fetch_query, options(origin, ("k", i)))
            assert trio.current_time() == 1.5
            assert origin.calls == 100
            stats = l2_stats(client)
            assert (stats.read_batches, stats.misses, stats.errors) == (1, 100, 1)

    async def test_hits_and_stale_reads_never_wait_for_a_hanging_store(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Once a key is in L1, fresh and stale reads return at once while L2 hangs."""
        store = ControlledStorage()
        origin = Origin(delay=1.0)
        opts = options(origin, stale_time=10.0)
        async with sq.open_query_client(config(store)) as client:
            await client.fetch_query(opts)
            store.hanging = True
            with trio.testing.assert_no_checkpoints():
                assert await client.fetch_query(opts) == "v1"
            await trio.sleep(20.0)
            before = trio.current_time()
            assert await client.fetch_query(opts) == "v1"
            assert trio.current_time() == before
            await trio.sleep(1.0)
            await wait_all_tasks_blocked()
            assert client.get_query_data(KEY) == "v2"

    async def test_a_hanging_write_times_out_and_is_retried_after_recovery(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A write stuck past l2_timeout counts as an error and lands once the store answers."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store, l2_timeout=1.0)) as client:
            store.hanging = True
            await client.set_query_data(KEY, "value")
            await trio.sleep(1.0)
            await wait_all_tasks_blocked()
            assert l2_stats(client).errors == 1
            store.recover()
            await trio.sleep(30.0)
            assert await store.entry(L2_KEY) == sq.StoredEntry(
                "value", client.clock.wall(0.0), False, "json"
            )

    async def test_a_caller_cancelled_during_hydration_leaves_the_batch_to_the_others(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A caller giving up while the read is held stops waiting; both keys still land."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin()
        results: list[Any] = []
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))

            async def patient() -> None:
                results.append(await client.fetch_query(options(origin, stale_time=60.0)))

            async def impatient() -> None:
                with trio.move_on_after(0.5):
                    await client.fetch_query(options(origin, ("other",), stale_time=60.0))
                    results.append("never")
                results.append("gave up")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(patient)
                nursery.start_soon(impatient)
                await trio.sleep(1.0)
                assert results == ["gave up"]
                assert len(store.get_many_calls) == 1
                store.read_gate.set()
            await wait_all_tasks_blocked()
            assert results == ["gave up", "stored"]
            assert client.get_query_data(("other",)) == "v1"
            assert origin.calls == 1
