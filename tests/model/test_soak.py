"""Soak: client lifetimes leak nothing, and key churn keeps L1 and its timers bounded.

How it runs.  Each test is one ``trio.run`` on a ``MockClock``; nothing
sleeps for real.  The sizes come from the environment so a local run can go
further (CI runs the defaults)::

    STACKQUERY_SOAK_CLIENTS=5000 STACKQUERY_SOAK_KEYS=200000 python -m pytest tests/model

* Lifetimes: 1,000 clients per store kind (a new ``MemoryStorage``, a new
  ``SQLiteStorage`` on one file, a new ``FileStorage`` on one directory, each
  closed after its client), opened and closed in sequence.  Each client
  reads a cold key through L2, hits it, sets a key, subscribes and
  unsubscribes an observer, and closes with a fetch still in flight.  After
  each close trio's ``tasks_living`` is back to its baseline; after all of
  them the process holds as many file descriptors (``/proc/self/fd``) as
  before.
* Churn: 50,000 distinct keys through a client with ``max_queries=100``
  (every tenth by a cold fetch, the others by ``set_query_data``, fresh hits
  in between, the clock moving a second per 100 keys).  After every key,
  ``statistics().queries <= 100``, and ``statistics().timers <= 200``: each
  cached key needs one pending timer entry (its next staleness or gc
  deadline), and we allow one more per key for an entry superseded by an
  earlier deadline and not yet popped; the entries of keys no longer cached
  must not pile up.  The two open bugs this meets (``eviction_spares_all_hit``,
  ``timers_outlive_evicted_keys`` in ``KNOWN_BUGS``) are steered around as
  documented there.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import stackquery as sq
from tests.model.harness import GatedOrigin, make_store, run_deterministic
from tests.model.test_findings import KNOWN_BUGS

CLIENTS = int(os.environ.get("STACKQUERY_SOAK_CLIENTS", "1000"))
CHURN_KEYS = int(os.environ.get("STACKQUERY_SOAK_KEYS", "50000"))
MAX_QUERIES = 100
TIMER_BOUND = 2 * MAX_QUERIES
GC_TIME = 60.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def one_lifetime(store: Any, number: int) -> None:
    """Open a client on ``store``, use it the usual ways, and close it with a fetch in flight."""
    stuck = GatedOrigin("stuck")
    stuck.hold()
    async with sq.open_query_client(sq.QueryClientConfig(storage=store, stale_time=60.0)) as client:
        cold = sq.QueryOptions(query_key=("cold", number % 7), query_fn=GatedOrigin("cold"))
        await client.fetch_query(cold)
        await client.fetch_query(cold)
        await client.set_query_data(("set", number % 5), number)
        observed = sq.QueryOptions(query_key=("observed",), query_fn=GatedOrigin("observed"))
        unsubscribe = client.watch(observed).subscribe(lambda _state: None)
        async with client.watch(observed).updates() as states:
            await anext(states)
        unsubscribe()
        await client.prefetch_query(sq.QueryOptions(query_key=("stuck",), query_fn=stuck))


class TestSoak:
    @pytest.mark.parametrize("kind", ["memory", "sqlite", "file"])
    def test_client_lifetimes_leak_no_task_and_no_fd(self, kind: str, tmp_path: Path) -> None:
        """1,000 clients opened and closed in turn leave the task and fd counts as they were."""

        async def main() -> None:
            baseline_tasks = trio.lowlevel.current_statistics().tasks_living
            baseline_fds = open_fds()
            for number in range(CLIENTS):
                store = make_store(kind, tmp_path)
                await one_lifetime(store, number)
                await store.aclose()
                living = trio.lowlevel.current_statistics().tasks_living
                assert living == baseline_tasks, (
                    f"client {number} left {living - baseline_tasks} tasks"
                )
            gc.collect()
            assert open_fds() == baseline_fds

        # Stores with worker threads: the clock autojumps only after 50 ms of real idleness,
        # so a thread's call is not taken for a hang.
        run_deterministic(main, clock=trio.testing.MockClock(autojump_threshold=0.05))

    def test_key_churn_keeps_l1_and_its_timers_bounded(self) -> None:
        """50,000 keys through max_queries=100 keep queries <= 100 and timers <= 200 throughout."""
        hit_every = 2 if "eviction_spares_all_hit" in KNOWN_BUGS else 1
        lazy_timers = "timers_outlive_evicted_keys" in KNOWN_BUGS

        async def load() -> str:
            await trio.lowlevel.checkpoint()
            return "fetched"

        async def main() -> None:
            config = sq.QueryClientConfig(max_queries=MAX_QUERIES, stale_time=30.0, gc_time=GC_TIME)
            async with sq.open_query_client(config) as client:
                for number in range(CHURN_KEYS):
                    options = sq.QueryOptions(query_key=("churn", number), query_fn=load)
                    if number % 10 == 0:
                        await client.fetch_query(options)
                    else:
                        await client.set_query_data(("churn", number), number)
                    if number % hit_every == 0:
                        await client.fetch_query(options)  # a fresh hit
                    if number % 100 == 99:
                        await trio.sleep(1.0)
                    if lazy_timers and number % 5000 == 4999:
                        await trio.sleep(GC_TIME + 1.0)  # the evicted keys' entries fire
                    stats = client.statistics()
                    assert stats.queries <= MAX_QUERIES, (number, stats)
                    if not lazy_timers or number % 5000 == 4999:
                        assert stats.timers <= TIMER_BOUND, (number, stats)

        run_deterministic(main, clock=trio.testing.MockClock(autojump_threshold=0))
