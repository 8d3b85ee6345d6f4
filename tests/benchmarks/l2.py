"""Benchmark: hydrating cold keys from Redis through the query client, against raw Redis.

Every key read is present in Redis (a 1 KB value in a stackquery entry, fresh
for an hour) and absent from the client's L1: each measurement opens a new
client, and each key is fetched once, so every ``fetch_query`` is a cold key
hydrated from L2 without calling ``query_fn``.  A private ``redis-server`` on a
free loopback port serves every path of a round, one after the other.

Measured side by side in each round:

* **single caller**: one task fetching 2,000 cold keys one after the other;
  µs per key.  Against ``redis-benchmark -c 1 -n 20000 -t get -d 1024`` (the
  C client's per-request latency), a raw ``redis.asyncio`` GET under plain
  ``asyncio.run``, and the trio-native ``RedisClient`` GET our store uses.
  Target: within 1.5x of redis-benchmark.
* **batch of 10,000**: 10,000 tasks calling ``fetch_query`` on 10,000 cold
  keys at once; µs per key.  Against the same keys fetched by ``RedisClient``
  with ``MGET`` in chunks of 500, all chunks in one pipeline.  Target: within
  2x of the pipelined MGET.
* **50 readers**: 50 tasks, each fetching 40 cold keys one after the other
  (2,000 keys); µs per key.  Against ``redis-benchmark -c 50`` and 50 tasks
  doing ``RedisClient`` GETs the same way.

The client runs with the defaults a RedisStorage gets (fleet broadcast and
single flight on) and, for the single caller, also with both off ("L2 only").

Run from the repository root::

    python tests/benchmarks/l2.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis
import redis.asyncio
import trio

import stackquery as sq
from backends._redis import RedisStorage
from backends._redis_client import RedisClient
from stackquery._l2 import L2Cache
from tests.redis_server import RedisServer

VALUE = "x" * 1000
SINGLE_KEYS = 2_000
BATCH_KEYS = 10_000
READERS = 50
KEYS_PER_READER = 40
MGET_CHUNK = 500
SINGLE_TARGET = 1.5
BATCH_TARGET = 2.0
STORE_PREFIX = "sq:"
KEY_PREFIX = "sq:"

Results = dict[str, list[float]]


async def _never_called() -> str:
    raise AssertionError("query_fn called: the key should have come from L2")


def options(group: str, i: int) -> sq.QueryOptions[Any]:
    return sq.QueryOptions(query_key=(group, i), query_fn=_never_called, stale_time=3600.0)


def redis_name(group: str, i: int) -> str:
    return STORE_PREFIX + KEY_PREFIX + options(group, i).key_hash


def populate(server: RedisServer) -> None:
    """Write every benchmark key's entry, and redis-benchmark's own 1 KB key."""
    entry = sq.pack_entry(VALUE, data_updated_at=time.time(), serializer=sq.serializers.json)
    client = redis.Redis.from_url(server.url)
    groups = (("warmup", 3), ("single", SINGLE_KEYS), ("batch", BATCH_KEYS), ("readers", 2_000))
    for group, count in groups:
        client.mset({redis_name(group, i): entry for i in range(count)})
    client.set("key:__rand_int__", b"v" * 1024)
    client.close()


def config(url: str, *, fleet: bool) -> sq.QueryClientConfig:
    settings: dict[str, Any] = {} if fleet else {"broadcast": False, "single_flight": False}
    return sq.QueryClientConfig(
        storage=RedisStorage(url, prefix=STORE_PREFIX), key_prefix=KEY_PREFIX, **settings
    )


async def warm_up(client: sq.QueryClient) -> None:
    """One cold fetch before timing, so that connecting to Redis is not measured."""
    await client.fetch_query(options("warmup", 0))


def check_stats(client: sq.QueryClient, keys: int) -> None:
    stats = client.l2_statistics()
    assert stats is not None and (stats.hits, stats.errors) == (keys + 1, 0), stats


# -- our stack -------------------------------------------------------------------------


async def client_single(url: str, *, fleet: bool) -> float:
    """µs per cold fetch_query, one caller, keys one after the other."""
    opts = [options("single", i) for i in range(SINGLE_KEYS)]
    async with sq.open_query_client(config(url, fleet=fleet)) as client:
        await warm_up(client)
        start = time.perf_counter()
        for one in opts:
            await client.fetch_query(one)
        elapsed = time.perf_counter() - start
        check_stats(client, SINGLE_KEYS)
    return elapsed / SINGLE_KEYS * 1e6


async def client_batch(url: str, *, pause_gc: bool = False) -> float:
    """µs per key, 10,000 tasks each fetching its own cold key at once."""
    opts = [options("batch", i) for i in range(BATCH_KEYS)]
    async with sq.open_query_client(config(url, fleet=True)) as client:
        await warm_up(client)
        if pause_gc:
            gc.disable()
        try:
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for one in opts:
                    nursery.start_soon(client.fetch_query, one)
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        check_stats(client, BATCH_KEYS)
    gc.collect()
    return elapsed / BATCH_KEYS * 1e6


async def client_readers(url: str) -> float:
    """µs per key, 50 tasks each fetching 40 cold keys one after the other."""

    async with sq.open_query_client(config(url, fleet=True)) as client:

        async def reader(first: int) -> None:
            for i in range(first, first + KEYS_PER_READER):
                await client.fetch_query(options("readers", i))

        await warm_up(client)
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for r in range(READERS):
                nursery.start_soon(reader, r * KEYS_PER_READER)
        elapsed = time.perf_counter() - start
        check_stats(client, READERS * KEYS_PER_READER)
    return elapsed / (READERS * KEYS_PER_READER) * 1e6


# -- attribution: the layers under the client ------------------------------------------


async def l2_tier(url: str, group: str, count: int, *, concurrent: bool) -> float:
    """µs per key read through the client's L2 tier alone (no actor, no fetch task)."""
    hashes = [options(group, i).key_hash for i in range(count)]
    store = RedisStorage(url, prefix=STORE_PREFIX)
    l2 = L2Cache(store, sq.serializers.json, KEY_PREFIX, timeout=2.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(l2.run_reader)
        assert await l2.read(options("warmup", 0).key_hash) is not None
        start = time.perf_counter()
        if concurrent:
            async with trio.open_nursery() as readers:
                for key_hash in hashes:
                    readers.start_soon(l2.read, key_hash)
        else:
            for key_hash in hashes:
                await l2.read(key_hash)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    await store.aclose()
    assert l2.statistics().hits == count + 1
    return elapsed / count * 1e6


async def l2_tier_single(url: str) -> float:
    return await l2_tier(url, "single", SINGLE_KEYS, concurrent=False)


async def l2_tier_batch(url: str) -> float:
    return await l2_tier(url, "batch", BATCH_KEYS, concurrent=True)


async def store_single(url: str) -> float:
    """µs per RedisStorage.get_many of one key, one caller."""
    keys = [KEY_PREFIX + options("single", i).key_hash for i in range(SINGLE_KEYS)]
    async with RedisStorage(url, prefix=STORE_PREFIX) as store:
        await store.get_many(keys[:1])
        start = time.perf_counter()
        for key in keys:
            await store.get_many([key])
        return (time.perf_counter() - start) / len(keys) * 1e6


async def bare_spawns() -> float:
    """µs per task of spawning 10,000 tasks that each checkpoint once: any task-per-key floor."""
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(BATCH_KEYS):
            nursery.start_soon(trio.lowlevel.checkpoint)
    return (time.perf_counter() - start) / BATCH_KEYS * 1e6


# -- baselines -------------------------------------------------------------------------


async def raw_single(url: str) -> float:
    """µs per GET of the same entries with RedisClient, one caller."""
    names = [redis_name("single", i) for i in range(SINGLE_KEYS)]
    async with RedisClient.from_url(url) as client:
        await client.execute("PING")
        start = time.perf_counter()
        for name in names:
            await client.execute("GET", name)
        return (time.perf_counter() - start) / len(names) * 1e6


async def raw_mget(url: str) -> float:
    """µs per key of MGETs of 500 keys, every chunk in one pipeline."""
    names = [redis_name("batch", i) for i in range(BATCH_KEYS)]
    chunks = [names[i : i + MGET_CHUNK] for i in range(0, len(names), MGET_CHUNK)]
    async with RedisClient.from_url(url) as client:
        await client.execute("PING")
        start = time.perf_counter()
        replies = await client.pipeline([("MGET", *chunk) for chunk in chunks])
        elapsed = time.perf_counter() - start
    assert sum(len(reply) for reply in replies) == BATCH_KEYS  # type: ignore[arg-type]
    return elapsed / BATCH_KEYS * 1e6


async def raw_readers(url: str) -> float:
    """µs per GET, 50 tasks each doing 40 RedisClient GETs one after the other."""
    async with RedisClient.from_url(url) as client:
        await client.execute("PING")

        async def reader(first: int) -> None:
            for i in range(first, first + KEYS_PER_READER):
                await client.execute("GET", redis_name("readers", i))

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for r in range(READERS):
                nursery.start_soon(reader, r * KEYS_PER_READER)
        return (time.perf_counter() - start) / (READERS * KEYS_PER_READER) * 1e6


def asyncio_single(url: str) -> float:
    """µs per GET with redis.asyncio under plain asyncio (no trio at all), one caller."""
    names = [redis_name("single", i) for i in range(SINGLE_KEYS)]

    async def run() -> float:
        client = redis.asyncio.Redis.from_url(url)
        await client.ping()
        start = time.perf_counter()
        for name in names:
            await client.get(name)
        elapsed = time.perf_counter() - start
        await client.aclose()
        return elapsed / len(names) * 1e6

    return asyncio.run(run())


def redis_benchmark(port: int, clients: int, requests: int) -> float:
    """µs per GET of a 1 KB value according to redis-benchmark (from its requests/s)."""
    command = [
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "--csv",
        "-c", str(clients), "-n", str(requests), "-t", "get", "-d", "1024",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    # --csv: a header line, then "GET","<requests per second>",...
    rps = float(out.strip().splitlines()[-1].split(",")[1].strip('"'))
    return 1e6 / rps


# -- the rounds ------------------------------------------------------------------------


async def trio_steps(url: str, results: Results, round_number: int) -> None:
    steps: list[tuple[str, Callable[[], Awaitable[float]]]] = [
        ("single|client (fleet defaults)", lambda: client_single(url, fleet=True)),
        ("single|client (L2 only)", lambda: client_single(url, fleet=False)),
        ("single|  L2 tier alone (L2Cache.read)", lambda: l2_tier_single(url)),
        ("single|  RedisStorage.get_many of 1 key", lambda: store_single(url)),
        ("single|RedisClient GET", lambda: raw_single(url)),
        ("batch|client, 10,000 tasks", lambda: client_batch(url)),
        ("batch|  the same, cyclic gc paused", lambda: client_batch(url, pause_gc=True)),
        ("batch|  L2 tier alone, 10,000 tasks", lambda: l2_tier_batch(url)),
        ("batch|  10,000 bare task spawns", bare_spawns),
        ("batch|RedisClient MGET 500s, pipelined", lambda: raw_mget(url)),
        ("readers|client, 50 readers", lambda: client_readers(url)),
        ("readers|RedisClient GET, 50 readers", lambda: raw_readers(url)),
    ]  # fmt: skip
    # A noisy shared machine: rotate so that no path always runs in the same slot.
    shift = round_number % len(steps)
    for name, step in steps[shift:] + steps[:shift]:
        results[name].append(await step())


def one_round(server: RedisServer, results: Results, round_number: int) -> None:
    results["single|redis-benchmark -c 1"].append(redis_benchmark(server.port, 1, 20_000))
    results["readers|redis-benchmark -c 50"].append(redis_benchmark(server.port, 50, 50_000))
    results["single|redis.asyncio, plain asyncio"].append(asyncio_single(server.url))
    trio.run(trio_steps, server.url, results, round_number)


ROW_ORDER = [
    "single|client (fleet defaults)",
    "single|client (L2 only)",
    "single|  L2 tier alone (L2Cache.read)",
    "single|  RedisStorage.get_many of 1 key",
    "single|RedisClient GET",
    "single|redis.asyncio, plain asyncio",
    "single|redis-benchmark -c 1",
    "batch|client, 10,000 tasks",
    "batch|  the same, cyclic gc paused",
    "batch|  L2 tier alone, 10,000 tasks",
    "batch|  10,000 bare task spawns",
    "batch|RedisClient MGET 500s, pipelined",
    "readers|client, 50 readers",
    "readers|RedisClient GET, 50 readers",
    "readers|redis-benchmark -c 50",
]


def _row_order(name: str) -> int:
    return ROW_ORDER.index(name) if name in ROW_ORDER else len(ROW_ORDER)


def report(results: Results) -> None:
    medians = {name: statistics.median(values) for name, values in results.items()}
    references = {
        "single": medians["single|redis-benchmark -c 1"],
        "batch": medians["batch|RedisClient MGET 500s, pipelined"],
        "readers": medians["readers|redis-benchmark -c 50"],
    }
    titles = {
        "single": "one caller, cold keys one after the other (x: vs redis-benchmark -c 1)",
        "batch": "10,000 cold keys at once (x: vs pipelined MGET)",
        "readers": "50 concurrent readers of cold keys (x: vs redis-benchmark -c 50)",
    }
    rounds = len(next(iter(results.values())))
    print(f"\nµs per key, medians of {rounds} rounds (x: ratio to the section's reference)")
    for section, title in titles.items():
        print(f"\n{title}")
        for name in sorted(medians, key=_row_order):
            group, path = name.split("|")
            if group == section:
                median = medians[name]
                spread = f"{min(results[name]):8.1f} .. {max(results[name]):8.1f}"
                ratio = median / references[section]
                print(f"  {path:42s} {median:8.1f}  ({ratio:6.2f}x)   [{spread}]")
    single = medians["single|client (fleet defaults)"] / references["single"]
    batch = medians["batch|client, 10,000 tasks"] / references["batch"]
    print()
    print(f"target single caller <= {SINGLE_TARGET}x: {single:.2f}x", end="  ")
    print("met" if single <= SINGLE_TARGET else "MISSED")
    print(f"target batch <= {BATCH_TARGET}x: {batch:.2f}x", end="  ")
    print("met" if batch <= BATCH_TARGET else "MISSED")
    asyncio_get = medians["single|redis.asyncio, plain asyncio"]
    print(
        "for scale: a cold key through the client costs "
        f"{medians['single|client (fleet defaults)'] / asyncio_get:.2f}x one redis.asyncio GET "
        "under plain asyncio"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    results: Results = defaultdict(list)
    with RedisServer() as server:
        populate(server)
        for round_number in range(1, rounds + 1):
            one_round(server, results, round_number)
            print(f"round {round_number}/{rounds} done", file=sys.stderr)
    report(results)


if __name__ == "__main__":
    main()
