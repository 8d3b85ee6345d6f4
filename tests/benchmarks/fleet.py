"""Fleet-wide single flight: origin calls and wall time for N processes x M callers of one cold key.

Each process is a ``tests/stackquery/fleet_workers/fleet_worker.py`` (its own
``trio.run`` and ``QueryClient`` on a private redis-server).  Its origin
INCRs a counter in Redis and sleeps 50 ms.  A round sends every process a
burst of M concurrent ``fetch_query`` calls of a new cold key at once and
times until the last process has answered; the origin calls are read from
the counter.  Modes, measured side by side on the same server: fleet single
flight on (the default with a ``RedisStorage``), and off (each process
deduplicates its own callers only).

Run: ``python tests/benchmarks/fleet.py [--rounds 3]``.  Prints medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backends._redis_client import RedisClient
from tests.redis_server import RedisServer
from tests.stackquery.fleet_workers.harness import open_workers

SHAPES = [(4, 250), (8, 100)]
ORIGIN_DELAY = 0.05


async def measure(
    url: str, processes: int, callers: int, single_flight: bool, rounds: int
) -> list[tuple[int, float]]:
    """Run ``rounds`` bursts on fresh keys; return (origin calls, wall seconds) per round."""
    mode = "on" if single_flight else "off"
    results = []
    with tempfile.TemporaryDirectory() as directory:
        async with (
            RedisClient.from_url(url) as redis,
            open_workers(
                url, processes, Path(directory), delay=ORIGIN_DELAY, single_flight=mode
            ) as workers,
        ):
            for number in range(rounds):
                key = ["bench", mode, processes, callers, number]
                start = time.perf_counter()
                sent = [await w.send("burst", key=key, callers=callers) for w in workers]
                for worker, command in zip(workers, sent, strict=True):
                    await worker.reply(command)
                wall = time.perf_counter() - start
                calls = await redis.execute("GET", b"origin:" + orjson.dumps(key))
                assert isinstance(calls, bytes)
                results.append((int(calls), wall))
    return results


async def run(rounds: int) -> list[list[str]]:
    rows = []
    with RedisServer() as server:
        for processes, callers in SHAPES:
            medians = {}
            for single_flight in (True, False):
                results = await measure(server.url, processes, callers, single_flight, rounds)
                calls = statistics.median(c for c, _ in results)
                wall = statistics.median(w for _, w in results)
                medians[single_flight] = (calls, wall)
            (on_calls, on_wall), (off_calls, off_wall) = medians[True], medians[False]
            rows.append(
                [
                    f"{processes} x {callers}",
                    f"{on_calls:g}",
                    f"{off_calls:g}",
                    f"{on_wall * 1000:.0f}",
                    f"{off_wall * 1000:.0f}",
                    f"{on_wall / off_wall:.2f}",
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = trio.run(run, args.rounds)
    header = [
        "processes x callers",
        "origin calls (fleet)",
        "origin calls (per process)",
        "wall ms (fleet)",
        "wall ms (per process)",
        "wall ratio",
    ]
    print(f"one cold key, origin {ORIGIN_DELAY * 1000:.0f} ms; medians of {args.rounds} rounds")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
