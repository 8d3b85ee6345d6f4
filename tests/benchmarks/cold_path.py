"""Benchmark: the cold path, one key after another, against the origin call alone.

Target: a cold key (never fetched, no L2) read with ``fetch_query`` while
nothing else runs costs at most 20 µs over the origin call itself, about
two trio task spawns; warming 100,000 keys that way takes at most 3 s.

Each round times slices of fresh keys, alternating with slices of bare
awaits of the origin (an async function returning at once), so that load
from other processes falls on both; the overhead per key is the median over
the slices of (cold read - origin call).  Options are built before the
timing (building them is measured by ``hot_path.py``).  ``--cpu`` times
with the process's CPU time instead of the wall clock: on a machine shared
with other work, the time this process did not run is left out.

Run from the repository root::

    python tests/benchmarks/cold_path.py [--rounds 5] [--keys 100000] [--cpu]
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio

import stackquery as sq

TARGET_OVERHEAD_US = 20.0
TARGET_WARM_100K_S = 3.0
SLICE = 500


async def _origin(index: int) -> int:
    return index + 1_000_000


async def _round(keys: int, clock: Callable[[], int]) -> tuple[float, float]:
    """One client, ``keys`` cold keys: (median overhead per key in µs, seconds to warm them)."""
    async with sq.open_query_client() as client:
        options = [
            sq.QueryOptions(query_key=("cold", i), query_fn=functools.partial(_origin, i))
            for i in range(keys)
        ]
        gc.collect()
        overheads: list[float] = []
        warm_ns = 0
        for low in range(0, keys, SLICE):
            batch = options[low : low + SLICE]
            start = clock()
            for i in range(low, low + len(batch)):
                await _origin(i)
            origin_ns = clock() - start
            start = clock()
            for opts in batch:
                await client.fetch_query(opts)
            cold_ns = clock() - start
            warm_ns += cold_ns
            overheads.append((cold_ns - origin_ns) / len(batch) / 1000)
        return statistics.median(overheads), warm_ns / 1e9


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print medians (min-max) and a verdict; 0 if the targets hold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--cpu", action="store_true", help="time with process CPU time")
    args = parser.parse_args(argv)
    clock = time.process_time_ns if args.cpu else time.perf_counter_ns
    rounds = [trio.run(_round, args.keys, clock) for _ in range(args.rounds)]
    overheads = [r[0] for r in rounds]
    warms = [r[1] * 100_000 / args.keys for r in rounds]
    over, warm = statistics.median(overheads), statistics.median(warms)
    timed = "CPU time" if args.cpu else "wall time"
    print(f"cold fetch_query, {args.keys} keys one after another, {args.rounds} rounds, {timed}")
    print(
        f"  overhead per key over the origin call: median {over:.1f} µs"
        f" (min {min(overheads):.1f}, max {max(overheads):.1f})"
    )
    print(
        f"  warming 100,000 keys: median {warm:.2f} s (min {min(warms):.2f}, max {max(warms):.2f})"
    )
    ok = over <= TARGET_OVERHEAD_US and warm <= TARGET_WARM_100K_S
    print(
        f"\nverdict: {'PASS' if ok else 'FAIL'}: {over:.1f} µs a key"
        f" (target <= {TARGET_OVERHEAD_US:.0f}), {warm:.2f} s for 100,000"
        f" (target <= {TARGET_WARM_100K_S:.0f})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
