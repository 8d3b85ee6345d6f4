"""Benchmark: 10,000 ids asked for by 1,000 concurrent callers, ``@cache.batch`` against ``@cache``.

The origin is a database behind a pool of ``--pool`` connections (10): each
call holds a connection for ``--round-trip`` seconds (2 ms) whatever the
number of ids it asks for.  Each caller asks for its own ``--ids`` ids (10),
all callers started together, on a fresh client, in three ways:

* ``@cache.batch``, ``many``: each caller ``await get_users.many(its ids)``;
* ``@cache.batch``, single calls: each caller awaits ``get_user(id)`` for its
  ids concurrently (the DataLoader pattern: calls merged per scheduling tick);
* ``@cache`` per id: each caller awaits ``get_user(id)`` for its ids concurrently.

Printed: origin calls and wall time (medians over ``--rounds`` rounds, the
three ways interleaved in each round so machine noise hits all alike), and a
second, warm pass of the same requests (every id fresh).  Run from the
repository root::

    python tests/benchmarks/batch_loader.py [--rounds 5] [--callers 1000] [--ids 10]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio

import stackquery as sq

WAYS = ("cache.batch, many", "cache.batch, single calls", "cache per id")


class Database:
    """The origin: a pool of connections, each call holding one for a round trip."""

    def __init__(self, pool: int, round_trip: float) -> None:
        self.connections = trio.CapacityLimiter(pool)
        self.round_trip = round_trip
        self.calls = 0

    async def users(self, ids: list[int]) -> dict[int, dict[str, int]]:
        async with self.connections:
            self.calls += 1
            await trio.sleep(self.round_trip)
        return {i: {"id": i} for i in ids}

    async def user(self, user_id: int) -> dict[str, int]:
        return (await self.users([user_id]))[user_id]


def _requests(way: str, db: Database, callers: int, ids: int) -> Callable[[], Awaitable[None]]:
    """Return a function making every caller's request once (all callers started together)."""

    @sq.cache.batch(600, key="user:{}", max_batch=100)
    async def get_users(user_ids: list[int]) -> dict[int, dict[str, int]]:
        return await db.users(user_ids)

    @sq.cache(600, key="user:{}")
    async def get_user(user_id: int) -> dict[str, int]:
        return await db.user(user_id)

    async def one_caller(first: int) -> None:
        mine = range(first, first + ids)
        if way == "cache.batch, many":
            values = await get_users.many(mine)
            assert len(values) == ids
            return
        single = get_users if way == "cache.batch, single calls" else get_user
        async with trio.open_nursery() as nursery:
            for user_id in mine:
                nursery.start_soon(single, user_id)

    async def everybody() -> None:
        async with trio.open_nursery() as nursery:
            for caller in range(callers):
                nursery.start_soon(one_caller, caller * ids)

    return everybody


async def _one_run(way: str, args: argparse.Namespace) -> tuple[int, float, float]:
    """Origin calls, cold wall time and warm wall time of one way, on a fresh client."""
    db = Database(args.pool, args.round_trip)
    async with sq.open_query_client(sq.QueryClientConfig(retry=0)):
        requests = _requests(way, db, args.callers, args.ids)
        gc.collect()
        start = time.perf_counter()
        await requests()
        cold = time.perf_counter() - start
        calls = db.calls
        start = time.perf_counter()
        await requests()
        warm = time.perf_counter() - start
        assert db.calls == calls, "the warm pass called the origin"
    return calls, cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--callers", type=int, default=1000)
    parser.add_argument("--ids", type=int, default=10, help="ids per caller")
    parser.add_argument("--pool", type=int, default=10, help="database connections")
    parser.add_argument("--round-trip", type=float, default=0.002, help="seconds per call")
    args = parser.parse_args()
    results: dict[str, list[tuple[int, float, float]]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
            results[way].append(trio.run(_one_run, way, args))
    total = args.callers * args.ids
    print(
        f"{total:,} ids, {args.callers:,} concurrent callers ({args.ids} ids each), "
        f"pool of {args.pool} connections, {args.round_trip * 1000:g} ms per origin call; "
        f"medians of {args.rounds} interleaved rounds"
    )
    print()
    print("| way | origin calls | cold wall time | warm wall time |")
    print("|---|---:|---:|---:|")
    for way in WAYS:
        runs = results[way]
        calls = statistics.median(r[0] for r in runs)
        cold = statistics.median(r[1] for r in runs)
        warm = statistics.median(r[2] for r in runs)
        print(f"| {way} | {calls:,.0f} | {cold * 1000:,.0f} ms | {warm * 1000:,.0f} ms |")


if __name__ == "__main__":
    main()
