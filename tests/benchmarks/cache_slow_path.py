"""Benchmark: a ``@cache`` call that is not a fresh hit: stale hits and misses, in µs of CPU.

No target; it shows what the decorator adds around the client on the paths
a fresh hit does not take, to be run side by side with another tree (each
tree runs its own code from its root)::

    python tests/benchmarks/cache_slow_path.py [--rounds 3]

Each round runs under a mock clock (no real waiting) and times, with the
thread's CPU time:

* stale hits while each key's refresh is out (the origin blocks), cycling
  over 50 keys and over 100 keys (a decorated function keeps the options of
  the last 64 keys it built: past that, a stale hit builds them);
* cold misses, each call a new key (an instant origin);
* misses of keys removed from the client, their call shapes memoized.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio
import trio.testing

import stackquery as sq

STALE_CALLS = 20_000
MISSES = 5_000


def _us_per_call(start: int, calls: int) -> float:
    return (time.thread_time_ns() - start) / calls / 1000


async def _round() -> dict[str, float]:
    release = trio.Event()
    calls = 0

    @sq.cache(1, key="item:{}", stale=10**6)
    async def get(n: int) -> int:
        nonlocal calls
        calls += 1
        if calls > 100:  # every refresh stays out
            await release.wait()
        return n

    @sq.cache(600, key="cold:{}")
    async def cold(n: int) -> int:
        return n

    out: dict[str, float] = {}
    async with sq.open_query_client() as client:
        for n in range(100):
            await get(n)
        await trio.sleep(2)  # every key stale
        for n in range(100):
            await get(n)  # each starts its refresh
        await trio.testing.wait_all_tasks_blocked()
        for keys in (50, 100):
            gc.collect()
            start = time.thread_time_ns()
            for i in range(STALE_CALLS):
                await get(i % keys)
            out[f"stale hit, {keys} keys in turn"] = _us_per_call(start, STALE_CALLS)
        release.set()
        await cold(-1)
        gc.collect()
        start = time.thread_time_ns()
        for n in range(MISSES):
            await cold(n)
        out["cold miss, a new key each call"] = _us_per_call(start, MISSES)
        await client.remove_queries(("fn", cold.cache_name))
        gc.collect()
        start = time.thread_time_ns()
        for n in range(MISSES):
            await cold(n)
        out["miss of a removed key, its call memoized"] = _us_per_call(start, MISSES)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print each path's median and min-max, in µs of CPU per call."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rounds = [
        trio.run(_round, clock=trio.testing.MockClock(autojump_threshold=0))
        for _ in range(args.rounds)
    ]
    print(f"@cache, not a fresh hit: µs of CPU per call, {args.rounds} rounds (median, min-max)")
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        low, high = min(values), max(values)
        print(f"  {name:<44}{statistics.median(values):>8.2f}  ({low:.2f}-{high:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
