"""Concurrent load over a store that fails, hangs and lies: callers never see it, and L2 holds up.

How it runs.  One ``trio.run`` per store kind (MemoryStorage, SQLiteStorage
and FileStorage in ``tmp_path``), each store wrapped in a
:class:`~tests.faulty_store.FaultyStore` that misbehaves on about 30% of
calls by a seeded plan (raise, hang until cancelled, garbage bytes, ``str``,
a wrong type; writes that store garbage or only half their items).  Workers
fetch, set, invalidate and reset 24 keys concurrently (a reset key and a key
evicted under ``max_queries=10`` are read from L2 again), some fetches under
a short deadline, while trio time moves on a ``MockClock``.  SQLite and file stores
do their I/O in worker threads, so their clock autojumps only after 20 ms of
real idleness (a thread's call is not mistaken for a hang); the memory
store's clock autojumps at once.  Nothing sleeps for real.

Expected: no caller ever sees an exception but the ``QueryCancelledError``
of a concurrent ``reset_queries`` (an L2 fault is a miss, counted in
``l2_statistics()``); every value a caller gets is one produced for its
key; the load finishes within a bound of trio time.  Then durability: with
the faults switched off, a fresh client on the same store reads back, for
every key whose last write landed intact, the value that write stored, and,
when the first client dropped no write at close, the value it held in L1.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
from tests.faulty_store import FAULTED, Fault, FaultyStore
from tests.model.harness import make_store, run_deterministic

KEYS = [("g", group, number) for group in range(3) for number in range(8)]
WORKERS = 12
OPERATIONS = 60
"""Per worker."""
LOAD_BOUND = 5_000.0
"""Seconds of trio time the load may take: hung calls end at l2_timeout (2 s) each."""


class Values:
    """The values produced for each key (by its origin or set_query_data), to check reads."""

    def __init__(self) -> None:
        self.produced: dict[tuple[Any, ...], set[str]] = {key: set() for key in KEYS}
        self.calls = dict.fromkeys(KEYS, 0)
        self.sets = 0

    def origin(self, key: tuple[Any, ...]) -> Any:
        async def load() -> str:
            self.calls[key] += 1
            value = f"{key}:origin{self.calls[key]}"
            self.produced[key].add(value)
            await trio.lowlevel.checkpoint()
            return value

        return load

    def new_set(self, key: tuple[Any, ...]) -> str:
        self.sets += 1
        value = f"{key}:set{self.sets}"
        self.produced[key].add(value)
        return value


def clock_for(kind: str) -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.0 if kind == "memory" else 0.02)


def config(store: Any) -> sq.QueryClientConfig:
    return sq.QueryClientConfig(
        storage=store,
        stale_time=2.0,
        gc_time=math.inf,
        retry=0,
        l2_timeout=2.0,
        shutdown_timeout=600.0,
        max_queries=10,
    )


async def run_load(store: FaultyStore, seed: int) -> tuple[dict[str, Any], sq.L2Statistics]:
    """The concurrent load; returns each store key's L1 data at close, and the L2 statistics."""
    values = Values()
    options = {key: sq.QueryOptions(query_key=key, query_fn=values.origin(key)) for key in KEYS}
    seen_errors: list[BaseException] = []
    wrong: list[tuple[Any, Any]] = []

    async def worker(client: sq.QueryClient, rnd: random.Random) -> None:
        for _ in range(OPERATIONS):
            key = rnd.choice(KEYS)
            roll = rnd.random()
            try:
                if roll < 0.6:
                    with trio.move_on_after(rnd.choice([0.5, 60.0])):  # some give up waiting
                        value = await client.fetch_query(options[key])
                        if value not in values.produced[key]:
                            wrong.append((key, value))
                elif roll < 0.75:
                    await client.set_query_data(key, values.new_set(key))
                elif roll < 0.82:
                    await client.invalidate_queries(("g", rnd.randrange(3)))
                elif roll < 0.9:
                    await client.reset_queries(key, exact=True)
                else:
                    await trio.sleep(rnd.choice([0.5, 1.0, 3.0]))
            except sq.QueryCancelledError:
                pass  # a concurrent reset_queries cancelled the fetch waited on: the contract
            except Exception as exc:
                seen_errors.append(exc)

    with trio.fail_after(LOAD_BOUND):
        async with sq.open_query_client(config(store)) as client, trio.open_nursery() as nursery:
            for number in range(WORKERS):
                nursery.start_soon(worker, client, random.Random(seed * 1000 + number))
    # Read once closed: a refetch may land while the close lets the last writes finish.
    held = {}
    for key in KEYS:
        state = client.get_query_state(key)
        if state is not None and state.has_data:
            held["sq:" + options[key].key_hash] = state.data
    assert seen_errors == []
    assert wrong == []
    stats = client.l2_statistics()
    assert stats is not None
    return held, stats


async def read_back(store: FaultyStore) -> dict[str, Any]:
    """What a fresh client on the (now healthy) store reads for each key; its origin says so."""

    async def origin() -> str:
        await trio.lowlevel.checkpoint()
        return "from the origin"

    store.enabled = False
    found = {}
    async with sq.open_query_client(config(store)) as client:
        for key in KEYS:
            options = sq.QueryOptions(query_key=key, query_fn=origin)
            found["sq:" + options.key_hash] = await client.fetch_query(options)
    return found


@pytest.mark.parametrize("kind", ["memory", "sqlite", "file"])
def test_store_faults_are_misses_and_last_writes_survive(kind: str, tmp_path: Path) -> None:
    """No caller sees a store fault, values are right, and intact last writes read back."""
    store = FaultyStore(make_store(kind, tmp_path), seed=7)

    async def main() -> None:
        held, stats = await run_load(store, seed=7)
        assert {Fault.RAISE, Fault.HANG, Fault.GARBAGE, Fault.TEXT, Fault.WRONG_TYPE} <= set(
            store.faults
        ), store.faults
        assert stats.errors > 0 and stats.corrupt > 0, stats
        intact = {key: raw for key, raw in store.last_write.items() if raw is not FAULTED}
        found = await read_back(store)  # its refetches write too: intact is taken before
        assert intact, "no write landed intact"
        for full_key, raw in intact.items():
            assert raw is not None
            stored = sq.unpack_entry(raw, sq.serializers.json).value
            assert found[full_key] == stored, full_key
            if stats.dropped_writes == 0 and full_key in held:
                assert stored == held[full_key], full_key
        if hasattr(store.inner, "aclose"):
            await store.inner.aclose()

    run_deterministic(main, clock=clock_for(kind))
