"""Specification of a cold key's L2 read made in the caller's task: every door still respects it."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
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


class TestCallerRead:
    async def test_a_fresh_l2_hit_spawns_no_actor(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A cold key fresh in L2 is served with no actor activation and one fetch counted."""
        store = ControlledStorage()
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))
            assert await client.fetch_query(options(Origin(), stale_time=60.0)) == "stored"
            assert client.statistics().activations == 0
            (record,) = client.snapshot()
            assert (record.fetch_status, record.fetch_count) == (sq.FetchStatus.IDLE, 1)

    async def test_cancel_queries_during_the_read_cancels_its_callers(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """cancel_queries while the read is held counts it, cancels the caller, reverts the key."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin()
        errors: list[BaseException] = []
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))

            async def fetch() -> None:
                try:
                    await client.fetch_query(options(origin, stale_time=60.0))
                except sq.QueryCancelledError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await wait_all_tasks_blocked()
                assert await client.cancel_queries(KEY) == 1
                store.read_gate.set()
            await wait_all_tasks_blocked()
            assert [str(e) for e in errors] == ["query fetch cancelled by cancel_queries"]
            assert client.get_query_state(KEY) == sq.QueryState()
            assert origin.calls == 0

    async def test_prefetch_during_the_read_joins_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """prefetch_query of a key being read from L2 makes no second read and no origin call."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin()
        results: list[Any] = []
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))

            async def fetch() -> None:
                results.append(await client.fetch_query(options(origin, stale_time=60.0)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await wait_all_tasks_blocked()
                await client.prefetch_query(options(origin, stale_time=60.0))
                store.read_gate.set()
            assert results == ["stored"]
            assert (l2_stats(client).reads, origin.calls) == (1, 0)

    async def test_an_observer_attached_during_the_read_gets_the_data_and_so_does_the_caller(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A subscriber arriving during a caller's L2 read shares it; both get the stored value."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin()
        results: list[Any] = []
        seen: list[Any] = []
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))

            async def fetch() -> None:
                results.append(await client.fetch_query(options(origin, stale_time=60.0)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await wait_all_tasks_blocked()
                client.watch(options(origin, stale_time=60.0)).subscribe(
                    lambda state: seen.append(state.data)
                )
                await wait_all_tasks_blocked()
                store.read_gate.set()
            await wait_all_tasks_blocked()
            assert results == ["stored"]
            assert seen[-1] == "stored"
            assert origin.calls == 0
            assert len(store.get_many_calls) == 1

    async def test_a_key_being_read_is_never_evicted(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With max_queries=1, keys set while a key is read from L2 evict nothing but each other."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        results: list[Any] = []
        async with sq.open_query_client(config(store, max_queries=1)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))

            async def fetch() -> None:
                results.append(await client.fetch_query(options(Origin(), stale_time=60.0)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await wait_all_tasks_blocked()
                await client.set_query_data(("other",), 1)
                store.read_gate.set()
            assert results == ["stored"]
            assert client.get_query_data(KEY) == "stored"

    async def test_invalidate_with_wait_waits_for_the_read(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """invalidate_queries(wait=True) during the read returns once its refetch landed."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin(delay=1.0)
        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.fetch_query, options(origin, stale_time=60.0))
                await wait_all_tasks_blocked()
                await trio.sleep(1.0)
                nursery.start_soon(lambda: client.invalidate_queries(KEY, wait=True))
                await wait_all_tasks_blocked()
                store.read_gate.set()
            assert trio.current_time() == 2.0
            assert client.get_query_data(KEY) == "v1"
            assert origin.calls == 1

    async def test_a_caller_outside_the_client_waiting_on_the_read_hears_it_close(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A caller outside the client, waiting on a held read, gets ClientClosedError at close."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        errors: list[BaseException] = []

        async def fetch(client: sq.QueryClient) -> None:
            with pytest.raises(sq.ClientClosedError) as caught:
                await client.fetch_query(options(Origin(), stale_time=60.0))
            errors.append(caught.value)

        async with trio.open_nursery() as outside, sq.open_query_client(config(store)) as client:
            outside.start_soon(fetch, client)
            await wait_all_tasks_blocked()
        assert len(errors) == 1
