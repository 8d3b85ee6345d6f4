"""Specification of two clients sharing one SQLite database or one file directory as L2.

Each client has its own store instance on the same path, as two processes
would.  These stores do their I/O in worker threads, so the tests run on the
real clock (a MockClock would jump past ``l2_timeout`` while a thread works).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import stackquery as sq
from backends import FileStorage, SQLiteStorage
from tests.stackquery.client_origin import Origin

KEY = ("user", 1)

StoreFactory = Callable[[Path], Any]

STORES: dict[str, StoreFactory] = {
    "sqlite": lambda path: SQLiteStorage(path / "cache.db"),
    "file": lambda path: FileStorage(path / "entries"),
}


def options(origin: Any, **kwargs: Any) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=KEY, query_fn=origin, **kwargs)


def config(store: Any) -> sq.QueryClientConfig:
    return sq.QueryClientConfig(storage=store)


async def settled(client: sq.QueryClient, **expected: int) -> None:
    """Wait (at most 5 s of real time) until the client's L2 counts reach ``expected``."""
    with trio.fail_after(5.0):
        while True:
            stats = client.l2_statistics()
            assert stats is not None
            if all(getattr(stats, name) >= count for name, count in expected.items()):
                return
            await trio.sleep(0.005)


@pytest.fixture(params=list(STORES.values()), ids=list(STORES))
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    factory: StoreFactory = request.param
    return factory


class TestSharedStore:
    async def test_a_second_client_reads_what_the_first_fetched(
        self, make_store: StoreFactory, tmp_path: Path
    ) -> None:
        """B, opened after A closed, gets A's value from the file and never calls query_fn."""
        first, second = Origin({"name": "ada", "tags": ["x"]}), Origin("b1")
        async with make_store(tmp_path) as store, sq.open_query_client(config(store)) as a:
            await a.fetch_query(options(first, stale_time=60.0))
        async with make_store(tmp_path) as store, sq.open_query_client(config(store)) as b:
            assert await b.fetch_query(options(second, stale_time=60.0)) == {
                "name": "ada",
                "tags": ["x"],
            }
            stats = b.l2_statistics()
            assert stats is not None and (stats.hits, stats.errors) == (1, 0)
        assert (first.calls, second.calls) == (1, 0)

    async def test_two_open_clients_share_entries(
        self, make_store: StoreFactory, tmp_path: Path
    ) -> None:
        """With both clients open, B reads a key A wrote a moment before; no second origin call."""
        first, second = Origin("a1"), Origin("b1")
        async with (
            make_store(tmp_path) as store_a,
            make_store(tmp_path) as store_b,
            sq.open_query_client(config(store_a)) as a,
            sq.open_query_client(config(store_b)) as b,
        ):
            await a.fetch_query(options(first, stale_time=60.0))
            await settled(a, writes=1)
            assert await b.fetch_query(options(second, stale_time=60.0)) == "a1"
            state = b.get_query_state(KEY)
            assert state is not None and state.is_stale is False
        assert (first.calls, second.calls) == (1, 0)

    async def test_an_invalidation_in_one_client_makes_the_next_refetch(
        self, make_store: StoreFactory, tmp_path: Path
    ) -> None:
        """A invalidates the key: B serves A's value stale, refetches once and writes its own."""
        first, second = Origin("a1"), Origin("b1")
        async with make_store(tmp_path) as store, sq.open_query_client(config(store)) as a:
            await a.fetch_query(options(first, stale_time=3600.0))
            await a.invalidate_queries(KEY)
        async with make_store(tmp_path) as store:
            async with sq.open_query_client(config(store)) as b:
                assert await b.fetch_query(options(second, stale_time=3600.0)) == "a1"
                await settled(b, writes=1)
                assert b.get_query_data(KEY) == "b1"
            raw = await store.get('sq:["user",1]')
        assert raw is not None
        entry = sq.unpack_entry(raw, sq.serializers.json)
        assert (entry.value, entry.invalidated) == ("b1", False)
        assert (first.calls, second.calls) == (1, 1)

    async def test_a_removal_in_one_client_makes_the_next_call_the_origin(
        self, make_store: StoreFactory, tmp_path: Path
    ) -> None:
        """A removes the key: its entry is deleted and B calls query_fn."""
        first, second = Origin("a1"), Origin("b1")
        async with make_store(tmp_path) as store, sq.open_query_client(config(store)) as a:
            await a.fetch_query(options(first, stale_time=60.0))
            await settled(a, writes=1)
            await a.remove_queries(KEY)
        async with make_store(tmp_path) as store:
            assert await store.get('sq:["user",1]') is None
            async with sq.open_query_client(config(store)) as b:
                assert await b.fetch_query(options(second, stale_time=60.0)) == "b1"
        assert (first.calls, second.calls) == (1, 1)
