"""``python -m stackquery demo``: a tour of the client, in plain words."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from backends import SQLiteStorage

from .._client import open_query_client
from .._observer import QueryObserver
from .._options import QueryClientConfig, QueryOptions
from .._state import QueryState


async def run_demo(say: Callable[[str], None] = print) -> None:
    """Run the tour with SQLite as L2 in a temporary directory, printing each step."""
    with tempfile.TemporaryDirectory(prefix="stackquery-demo-") as directory:
        path = os.path.join(directory, "cache.sqlite3")
        async with SQLiteStorage(path) as store:
            await _tour(store, say)
        say("")
        say(f"6. a second process opens a client on the same SQLite file ({path}):")
        result = await trio.run_process(
            [sys.executable, "-m", "stackquery", "demo", "--read-from", path],
            capture_stdout=True,
            check=False,
        )
        for line in result.stdout.decode().splitlines():
            say(f"   {line}")


async def read_back(path: str, say: Callable[[str], None] = print) -> None:
    """The second process of the demo: read ('user', 42) without calling any origin."""

    async def origin_must_not_run() -> Any:
        raise RuntimeError("the origin was called: L2 did not serve the key")

    config = QueryClientConfig(stale_time=3600.0)
    async with (
        SQLiteStorage(path) as store,
        open_query_client(attrs.evolve(config, storage=store)) as client,
    ):
        options: QueryOptions[Any] = QueryOptions(
            query_key=("user", 42), query_fn=origin_must_not_run, retry=0
        )
        started = time.perf_counter()
        value = await client.fetch_query(options)
        say(
            f"process {os.getpid()} read {value} from L2 in {_ms(started)}, "
            "without calling the origin."
        )


async def _tour(store: SQLiteStorage, say: Callable[[str], None]) -> None:
    origin_calls = 0

    async def load_user() -> dict[str, Any]:
        nonlocal origin_calls
        origin_calls += 1
        await trio.sleep(0.05)  # a slow origin: a database, an HTTP API ...
        return {"id": 42, "name": "Ada", "version": origin_calls}

    config = QueryClientConfig(stale_time=0.3, gc_time=60.0, retry=0, storage=store)
    async with open_query_client(config) as client:
        user: QueryOptions[dict[str, Any]] = QueryOptions(
            query_key=("user", 42), query_fn=load_user
        )

        say(
            "stackquery demo: one key, ('user', 42), whose origin takes 50 ms; "
            "L1 in memory, L2 in a SQLite file."
        )
        started = time.perf_counter()
        value = await client.fetch_query(user)
        say(
            f"1. cold fetch: waited {_ms(started)} for the origin and got {value} "
            f"(origin calls so far: {origin_calls})."
        )

        started = time.perf_counter()
        value = await client.fetch_query(user)
        say(
            f"2. fresh hit: {value['name']} in {_ms(started)}, straight from memory, "
            f"no origin call (origin calls: {origin_calls})."
        )

        await trio.sleep(0.35)
        started = time.perf_counter()
        value = await client.fetch_query(user)
        say(
            f"3. stale hit (data older than the 0.3 s stale time): got version "
            f"{value['version']} at once in {_ms(started)}; a refresh runs in the background."
        )
        await trio.sleep(0.1)
        state = client.get_query_state(("user", 42))
        assert state is not None and state.data is not None
        say(
            f"   ... the background refresh landed: the cache now holds version "
            f"{state.data['version']} (origin calls: {origin_calls})."
        )

        report_calls = 0

        async def load_report() -> str:
            nonlocal report_calls
            report_calls += 1
            await trio.sleep(0.05)
            return "all systems nominal"

        report: QueryOptions[str] = QueryOptions(
            query_key=("report", "daily"), query_fn=load_report
        )
        results: list[Any] = []

        async def caller() -> None:
            results.append(await client.fetch_query(report))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(caller)
        say(
            f"4. 1,000 concurrent callers of a cold key ('report', 'daily'): all {len(results)} "
            f"got an answer in {_ms(started)} from {report_calls} origin call."
        )

        seen: list[QueryState[Any]] = []
        observer: QueryObserver[dict[str, Any]] = client.watch(
            QueryOptions(
                query_key=("user", 42),
                query_fn=load_user,
                select=lambda u: f"{u['name']} v{u['version']}",
            )
        )
        unsubscribe = observer.subscribe(seen.append)
        say(f"5. an observer subscribed and saw at once: {seen[-1].data!r}.")
        await client.set_query_data(("user", 42), lambda old: {**old, "name": "Ada L."})
        say(f"   set_query_data renamed the user; the observer saw: {seen[-1].data!r}.")
        await client.invalidate_queries(("user",))
        await trio.sleep(0.1)
        say(
            f"   invalidate_queries(('user',)) refetched the observed key; "
            f"the observer saw: {seen[-1].data!r}."
        )
        unsubscribe()
        say(
            f"Done: {origin_calls + report_calls} origin calls in all; "
            f"{client.statistics().queries} keys cached."
        )


def _ms(started: float) -> str:
    elapsed = time.perf_counter() - started
    if elapsed < 0.001:
        return f"{elapsed * 1e6:.0f} µs"
    return f"{elapsed * 1e3:.1f} ms"
