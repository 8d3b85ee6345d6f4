"""Benchmark: process CPU time of cold keys read from Redis L2, against bare RedisClient calls.

The machine these run on is shared and noisy: wall time moves with the other
processes' load, this process's CPU time much less.  So each path is measured
in CPU time (``time.process_time``: this process only, not redis-server's)
and in wall time, and the ratios that issue 12 sets are taken on CPU time:

* **single**: one caller, 2,000 cold keys one after the other, through
  ``fetch_query`` (fleet defaults), against one ``RedisClient`` ``GET`` per
  key.  µs per key.  Target: ≤ 1.5x.
* **batch API**: ``client.fetch_queries`` of 10,000 cold keys (one
  ``get_many``), against the same keys read with ``MGET`` in chunks of 500,
  every chunk in one pipeline.  µs per key.  Target: ≤ 3x.
* **10,000 tasks**: 10,000 tasks that the benchmark spawns, each calling
  ``fetch_query`` on its own cold key, against the same 10,000 tasks each
  awaiting a checkpoint (the callers' own cost: spawning them is theirs);
  the difference ("ours") is compared with the MGET.
* **overhead**: ``single`` without the network: a store whose ``get`` answers
  at once (after one checkpoint), through ``fetch_query`` against that
  ``get`` alone.  µs per key: what a cold key costs us beyond the read.

Each round runs every path in a fresh interpreter (``--child``), in turn (the
MGET reference of the batch paths in one of its own, see ``OWN_BARE``),
with the rows rotated from round to round; ``--compare DIR`` also runs the
same paths with the ``stackquery`` found in ``DIR`` (another checkout, e.g.
``git archive main | tar -x -C /tmp/base``) in the same rounds, side by side.

Run from the repository root::

    python tests/benchmarks/l2_cpu.py [--rounds 5] [--compare /tmp/base] [--paths single ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SINGLE_KEYS = 2_000
BATCH_KEYS = 10_000
MGET_CHUNK = 500
PATHS = ("single", "batch_api", "tasks", "overhead")
OWN_BARE = ("batch_api", "tasks")
"""Paths whose bare reference (the pipelined MGET) runs in an interpreter of its own: run
after ours in the same one, it would find the heap as ours left it (its pages in use, or
freed for it), and the ratio would measure that."""


def _timed() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def _per_key(start: tuple[float, float], keys: int) -> tuple[float, float]:
    cpu, wall = _timed()
    return (cpu - start[0]) / keys * 1e6, (wall - start[1]) / keys * 1e6


def child(url: str, path: str) -> dict[str, tuple[float, float]]:
    """Measure one path (and its bare-Redis reference) in this interpreter."""
    import trio

    import stackquery as sq
    from backends._redis import RedisStorage
    from backends._redis_client import RedisClient

    async def never() -> str:
        raise AssertionError("query_fn called: the key should have come from L2")

    def options(group: str, i: int) -> Any:
        return sq.QueryOptions(query_key=(group, i), query_fn=never, stale_time=3600.0)

    def names(group: str, count: int) -> list[str]:
        return ["sq:sq:" + options(group, i).key_hash for i in range(count)]

    def config() -> Any:
        return sq.QueryClientConfig(
            storage=RedisStorage(url, prefix="sq:", timeout=60.0), key_prefix="sq:", l2_timeout=60.0
        )

    def check(client: Any, keys: int) -> None:
        stats = client.l2_statistics()
        assert (stats.hits, stats.errors, stats.corrupt) == (keys + 1, 0, 0), stats

    async def single() -> dict[str, tuple[float, float]]:
        opts = [options("single", i) for i in range(SINGLE_KEYS)]
        async with sq.open_query_client(config()) as client:
            await client.fetch_query(options("warmup", 0))
            start = _timed()
            for one in opts:
                await client.fetch_query(one)
            ours = _per_key(start, SINGLE_KEYS)
            check(client, SINGLE_KEYS)
        keys = names("single", SINGLE_KEYS)
        async with RedisClient.from_url(url) as redis:
            await redis.execute("PING")
            start = _timed()
            for key in keys:
                await redis.execute("GET", key)
            bare = _per_key(start, SINGLE_KEYS)
        return {"ours": ours, "bare": bare}

    async def mget() -> tuple[float, float]:
        keys = names("batch", BATCH_KEYS)
        chunks = [keys[i : i + MGET_CHUNK] for i in range(0, BATCH_KEYS, MGET_CHUNK)]
        async with RedisClient.from_url(url) as redis:
            await redis.execute("PING")
            start = _timed()
            replies = await redis.pipeline([("MGET", *chunk) for chunk in chunks])
            result = _per_key(start, BATCH_KEYS)
        assert sum(len(reply) for reply in replies if isinstance(reply, list)) == BATCH_KEYS
        return result

    async def batch_api() -> dict[str, tuple[float, float]]:
        opts = [options("batch", i) for i in range(BATCH_KEYS)]
        async with sq.open_query_client(config()) as client:
            await client.fetch_query(options("warmup", 0))
            gc.collect()
            start = _timed()
            values = await client.fetch_queries(opts)
            ours = _per_key(start, BATCH_KEYS)
            assert len(values) == BATCH_KEYS and values[0] == "x" * 1000
            check(client, BATCH_KEYS)
        return {"ours": ours}

    async def tasks() -> dict[str, tuple[float, float]]:
        opts = [options("batch", i) for i in range(BATCH_KEYS)]
        gc.collect()
        start = _timed()
        async with trio.open_nursery() as nursery:
            for _ in range(BATCH_KEYS):
                nursery.start_soon(trio.lowlevel.checkpoint)
        spawns = _per_key(start, BATCH_KEYS)
        async with sq.open_query_client(config()) as client:
            await client.fetch_query(options("warmup", 0))
            gc.collect()
            start = _timed()
            async with trio.open_nursery() as nursery:
                for one in opts:
                    nursery.start_soon(client.fetch_query, one)
            total = _per_key(start, BATCH_KEYS)
            check(client, BATCH_KEYS)
        ours = (total[0] - spawns[0], total[1] - spawns[1])
        return {"total": total, "spawns": spawns, "ours": ours}

    async def bare_mget() -> dict[str, tuple[float, float]]:
        return {"bare": await mget()}

    async def overhead() -> dict[str, tuple[float, float]]:
        raw = sq.pack_entry("x" * 1000, data_updated_at=time.time(), serializer=sq.serializers.json)
        store = _InstantStore(raw)
        opts = [options("overhead", i) for i in range(BATCH_KEYS)]
        async with sq.open_query_client(sq.QueryClientConfig(storage=store)) as client:
            await client.fetch_query(options("warmup", 0))
            start = _timed()
            for one in opts:
                await client.fetch_query(one)
            ours = _per_key(start, BATCH_KEYS)
            check(client, BATCH_KEYS)
        start = _timed()
        for _ in opts:
            await store.get("a key")
        return {"ours": ours, "bare": _per_key(start, BATCH_KEYS)}

    run = {
        "single": single,
        "batch_api": batch_api,
        "tasks": tasks,
        "overhead": overhead,
        "mget": bare_mget,
    }[path]
    return trio.run(run)


class _InstantStore:
    """A store holding one entry under every key, answering after one checkpoint."""

    cancel_safe_reads = True

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    async def get(self, key: str) -> bytes:
        import trio

        await trio.lowlevel.checkpoint()
        return self.raw

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        raise AssertionError("nothing is written")

    async def delete(self, key: str) -> None:
        raise AssertionError("nothing is deleted")


def populate(url: str) -> None:
    import redis

    import stackquery as sq

    entry = sq.pack_entry("x" * 1000, data_updated_at=time.time(), serializer=sq.serializers.json)

    async def never() -> None:
        raise AssertionError

    client = redis.Redis.from_url(url)
    for group, count in (("warmup", 1), ("single", SINGLE_KEYS), ("batch", BATCH_KEYS)):
        names = [
            "sq:sq:" + sq.QueryOptions(query_key=(group, i), query_fn=never).key_hash
            for i in range(count)
        ]
        client.mset(dict.fromkeys(names, entry))
    client.close()


def run_child(root: Path, url: str, path: str) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", path, "--url", url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare", type=Path, default=None)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--child", choices=(*PATHS, "mget"))
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.url, args.child)))
        return
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    trees = {"this": ROOT} if args.compare is None else {"base": args.compare, "this": ROOT}
    results: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
    with RedisServer() as server:
        populate(server.url)
        steps = [(tree, path) for path in args.paths for tree in trees]
        for number in range(args.rounds):
            shift = number % len(steps)
            for tree, path in steps[shift:] + steps[:shift]:
                rows = run_child(trees[tree], server.url, path)
                if path in OWN_BARE:
                    rows.update(run_child(trees[tree], server.url, "mget"))
                for row, value in rows.items():
                    results[f"{path}|{tree}|{row}"].append(tuple(value))  # type: ignore[arg-type]
            print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)
    print(f"\nµs per key, medians of {args.rounds} rounds [min .. max]; CPU = this process's")
    for name in sorted(results):
        cpu = [v[0] for v in results[name]]
        wall = [v[1] for v in results[name]]
        print(
            f"  {name:28s} CPU {statistics.median(cpu):7.2f} [{min(cpu):7.2f} .. {max(cpu):7.2f}]"
            f"   wall {statistics.median(wall):7.2f} [{min(wall):7.2f} .. {max(wall):7.2f}]"
        )
    print("\nratios to the bare Redis reference, per round (CPU; wall in brackets)")
    for tree in trees:
        for path in args.paths:
            ours = results[f"{path}|{tree}|ours"]
            bare = results[f"{path}|{tree}|bare"]
            cpu = [o[0] / b[0] for o, b in zip(ours, bare, strict=True)]
            wall = [o[1] / b[1] for o, b in zip(ours, bare, strict=True)]
            print(
                f"  {tree:5s} {path:10s} {statistics.median(cpu):6.2f}x "
                f"[{min(cpu):.2f} .. {max(cpu):.2f}]   (wall {statistics.median(wall):6.2f}x "
                f"[{min(wall):.2f} .. {max(wall):.2f}])"
            )


if __name__ == "__main__":
    main()
