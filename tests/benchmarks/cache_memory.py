"""Benchmark: bytes per cached key of a ``@cache`` function, its memo included.

Target (issue 12): at most 300 bytes per key at 10,000 keys.  A round, in a
fresh subprocess, opens a client, decorates ``get(n)`` with
``@cache(600, key="item:{}")`` (the setup of ``test_hot_path_guard.py``),
calls it once so the first key's one-time costs are paid, then under
``tracemalloc`` calls it for ``--keys`` new ``n`` (each a miss: the origin
runs, the value lands), lets every actor passivate, collects garbage and
reads what is still allocated: that over the keys is one round's figure.
The last round is also grouped by source line (where the bytes were
allocated), to show which lines keep what.

Rounds run one after another (tracing is slow); the median and the
min-max of the rounds are printed.  Run from the repository root (a
worktree runs its own code)::

    python tests/benchmarks/cache_memory.py [--rounds 3] [--keys 10000]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio
import trio.testing

import stackquery as sq

ROOT = Path(__file__).resolve().parents[2]
TARGET_BYTES_PER_KEY = 300


async def _child_round(keys: int) -> dict[str, Any]:
    @sq.cache(600, key="item:{}")
    async def get(n: int) -> int:
        return 7

    async with sq.open_query_client():
        await get(-1)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(keys):
            await get(n)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        total = tracemalloc.get_traced_memory()[0] - before
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        for n in range(0, keys, max(1, keys // 100)):  # still cached: hits, no new fetch
            if await get(n) != 7:
                raise AssertionError(f"get({n}) read back something else")
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    by_line = [
        (str(stat.traceback[0]), stat.size, stat.count)
        for stat in snapshot.statistics("lineno")[:16]
    ]
    return {"keys": keys, "per_key": total / keys, "by_line": by_line}


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the median, the min-max, the top lines and a verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(trio.run(_child_round, args.keys)))
        return 0
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--keys", str(args.keys)]
    rounds = [
        json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        for _ in range(args.rounds)
    ]
    figures = [r["per_key"] for r in rounds]
    median = statistics.median(figures)
    print(
        f"@cache, {args.keys} keys, {args.rounds} rounds (tracemalloc, fresh process each): "
        f"median {median:.1f} B per key (min-max {min(figures):.1f}-{max(figures):.1f})"
    )
    print("  top lines of the last round (bytes per key, objects per key, where allocated):")
    for where, size, count in rounds[-1]["by_line"]:
        site = where.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
        print(f"    {size / args.keys:>8.1f}  {count / args.keys:>5.2f} objs  {site}")
    verdict = "PASS" if median <= TARGET_BYTES_PER_KEY else "FAIL"
    print(f"\nverdict: {verdict}: {median:.0f} B per @cache key (target <= {TARGET_BYTES_PER_KEY})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
