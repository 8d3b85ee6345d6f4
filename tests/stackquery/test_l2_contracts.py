"""Specification of the L2 tier's promises to callers: no stranded waiter, no silent loss.

Each class pins one promise the tier made and once broke: a cold read whose
key is removed while it is out still settles its waiters; values given up at
close are counted one by one; a caller's wait for any store, threaded ones
included, ends at ``l2_timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import stackquery as sq
from backends import MemoryStorage, SQLiteStorage
from tests.stackquery.client_origin import Origin
from tests.stackquery.l2_store import (
    KEY,
    L2_KEY,
    ControlledStorage,
    config,
    entry_bytes,
    options,
)

Outcome = tuple[str, Any]
"""What one caller got: ``("value", data)`` or ``("error", exception type name)``."""

StoreFactory = Callable[[Path], Any]

GATED_STORES: dict[str, StoreFactory] = {
    "memory": lambda _path: MemoryStorage(),
    "sqlite": lambda path: SQLiteStorage(path / "cache.db"),
}


@pytest.fixture(params=list(GATED_STORES.values()), ids=list(GATED_STORES))
def gated_store(request: pytest.FixtureRequest, tmp_path: Path) -> ControlledStorage:
    """A ControlledStorage in front of a MemoryStorage or a SQLiteStorage."""
    factory: StoreFactory = request.param
    return ControlledStorage(factory(tmp_path))


async def outcome_of(client: sq.QueryClient, opts: sq.QueryOptions[Any]) -> Outcome:
    """Fetch ``opts`` and say what came back."""
    try:
        return ("value", await client.fetch_query(opts))
    except Exception as exc:
        return ("error", type(exc).__name__)


class TestRemovalDuringAColdRead:
    async def test_a_caller_whose_key_is_removed_during_its_read_hears_of_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Removed during A's held L2 read, then asked for by B: A is cancelled, B gets a value."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin("fetched")
        outcomes: dict[str, Outcome] = {}

        async def ask(name: str, client: sq.QueryClient) -> None:
            outcomes[name] = await outcome_of(client, options(origin, stale_time=60.0))

        async with trio.open_nursery() as outside:
            async with sq.open_query_client(config(store)) as client:
                await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))
                outside.start_soon(ask, "A", client)
                await wait_all_tasks_blocked()
                assert await client.remove_queries(KEY) == 1
                outside.start_soon(ask, "B", client)
                await wait_all_tasks_blocked()
                store.read_gate.set()
                await wait_all_tasks_blocked()
            outside.cancel_scope.deadline = trio.current_time() + 60.0
        assert outcomes == {"A": ("error", "QueryCancelledError"), "B": ("value", "fetched")}
        assert origin.calls == 1

    async def test_a_caller_whose_key_is_reset_during_its_read_hears_of_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Reset during A's held L2 read, then asked for by B: A is cancelled, B reads the entry."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        origin = Origin("fetched")
        outcomes: dict[str, Outcome] = {}

        async def ask(name: str, client: sq.QueryClient) -> None:
            outcomes[name] = await outcome_of(client, options(origin, stale_time=60.0))

        async with trio.open_nursery() as outside:
            async with sq.open_query_client(config(store)) as client:
                await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))
                outside.start_soon(ask, "A", client)
                await wait_all_tasks_blocked()
                assert await client.reset_queries(KEY) == 1
                outside.start_soon(ask, "B", client)
                await wait_all_tasks_blocked()
                store.read_gate.set()
                await wait_all_tasks_blocked()
            outside.cancel_scope.deadline = trio.current_time() + 60.0
        assert outcomes == {"A": ("error", "QueryCancelledError"), "B": ("value", "stored")}
        assert origin.calls == 0

    async def test_a_removed_readers_waiter_hears_at_once_not_when_the_read_lands(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """remove_queries settles the held read's caller before the store answers."""
        store = ControlledStorage()
        store.read_gate = trio.Event()
        outcomes: dict[str, Outcome] = {}

        async with sq.open_query_client(config(store)) as client:
            await store.memory.set(L2_KEY, entry_bytes("stored", at=client.clock.wall()))

            async def ask() -> None:
                outcomes["A"] = await outcome_of(client, options(Origin(), stale_time=60.0))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await wait_all_tasks_blocked()
                await client.remove_queries(KEY)
                await wait_all_tasks_blocked()
                assert outcomes == {"A": ("error", "QueryCancelledError")}
                store.read_gate.set()
            assert client.get_query_state(KEY) is None

    async def test_a_storm_of_removals_and_resets_strands_nobody(
        self, gated_store: ControlledStorage
    ) -> None:
        """Ten keys, each removed or reset twice while callers read them: all 30 callers hear.

        On the real clock: the SQLite store reads in worker threads, and nothing
        here depends on time.  Reads and writes are held at gates until every
        caller has asked, so each caller's path is known:

        * A (every key): its read is held, then its key is removed or reset;
        * B, removed keys: the pending delete answers its read (a miss), so the
          origin serves it before the second removal; reset keys: its read is
          held (queued behind A's batch), then the second reset cancels it;
        * C, removed keys: the origin again; reset keys: the stored entry, once
          the reads go through.
        """
        store = gated_store
        store.read_gate = trio.Event()
        store.write_gate = trio.Event()
        keys = [("user", n) for n in range(10)]
        origins = {n: Origin(f"fetched {n}") for n in range(10)}
        outcomes: dict[tuple[str, int], Outcome] = {}
        all_heard = trio.Event()

        async def ask(round_: str, n: int, client: sq.QueryClient) -> None:
            opts = options(origins[n], key=("user", n), stale_time=math.inf)
            outcomes[(round_, n)] = await outcome_of(client, opts)
            if len(outcomes) == 30:
                all_heard.set()

        with trio.fail_after(10.0):
            async with (
                trio.open_nursery() as outside,
                sq.open_query_client(config(store, l2_timeout=30.0)) as client,
            ):
                at = client.clock.wall()
                await store.memory.set_many(
                    {f'sq:["user",{n}]': entry_bytes(f"stored {n}", at=at) for n in range(10)}
                )
                for round_ in ("A", "B"):
                    for n in range(10):
                        outside.start_soon(ask, round_, n, client)
                    await wait_all_tasks_blocked()
                    for key in keys:
                        if key[1] % 2:
                            assert await client.reset_queries(key, exact=True) == 1
                        else:
                            assert await client.remove_queries(key, exact=True) == 1
                    await wait_all_tasks_blocked()
                for n in range(10):
                    outside.start_soon(ask, "C", n, client)
                await wait_all_tasks_blocked()
                store.read_gate.set()
                store.write_gate.set()
                await all_heard.wait()
        cancelled = ("error", "QueryCancelledError")
        expected: dict[tuple[str, int], Outcome] = {}
        for n in range(10):
            expected[("A", n)] = cancelled
            if n % 2 == 0:
                expected[("B", n)] = expected[("C", n)] = ("value", f"fetched {n}")
            else:
                expected[("B", n)], expected[("C", n)] = cancelled, ("value", f"stored {n}")
        assert outcomes == expected
        assert {n: origin.calls for n, origin in origins.items()} == {
            n: 2 if n % 2 == 0 else 0 for n in range(10)
        }
