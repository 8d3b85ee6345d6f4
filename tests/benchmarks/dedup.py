"""Benchmark: 10,000 concurrent callers of one cold key against 10,000 of a warm key.

Every caller is its own trio task doing ``await client.fetch_query(opts)``.
On the cold key the origin sleeps 10 ms (real time) and counts its calls;
the warm key was fetched before the callers start.  Both are timed in the
same round, in alternating order, from spawning the first caller to the last
one returning.

Target: exactly one origin call for the cold key in every round, and the
cold wall time at most 2x the warm one (the 10 ms origin included).

Run from the repository root::

    python tests/benchmarks/dedup.py [--rounds 5] [--callers 10000]
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

import stackquery as sq

TARGET_RATIO = 2.0
ORIGIN_DELAY = 0.010
VALUE = {"id": 42, "name": "ada"}


class CountingOrigin:
    """An async origin that sleeps for real and counts how often it was called."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> dict[str, object]:
        self.calls += 1
        await trio.sleep(self.delay)
        return VALUE


class GcTimer:
    """Adds up the seconds the cyclic garbage collector runs, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full_collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.full_collections += info["generation"] == 2


GC_TIMER = GcTimer()


async def _callers(
    client: sq.QueryClient, options: sq.QueryOptions[object], count: int
) -> tuple[float, float, int]:
    """Run ``count`` caller tasks of ``options`` at once.

    Returns:
        The wall seconds taken, the seconds of it the cyclic garbage
        collector ran, and how many full (generation 2) collections ran.
    """
    served = 0

    async def caller() -> None:
        nonlocal served
        if await client.fetch_query(options) is VALUE:
            served += 1

    gc.collect()
    gc_before, full_before = GC_TIMER.seconds, GC_TIMER.full_collections
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(caller)
    elapsed = time.perf_counter() - start
    if served != count:
        raise AssertionError(f"{served} of {count} callers got the value")
    return elapsed, GC_TIMER.seconds - gc_before, GC_TIMER.full_collections - full_before


async def _one_round(index: int, callers: int) -> dict[str, float]:
    async with sq.open_query_client() as client:
        warm_origin = CountingOrigin(0.0)
        warm: sq.QueryOptions[object] = sq.QueryOptions(
            query_key=("dedup", "warm", index), query_fn=warm_origin, stale_time=3600.0
        )
        await client.fetch_query(warm)
        cold_origin = CountingOrigin(ORIGIN_DELAY)
        cold: sq.QueryOptions[object] = sq.QueryOptions(
            query_key=("dedup", "cold", index), query_fn=cold_origin, stale_time=3600.0
        )
        # Alternate the order so that neither side always runs on a warmer heap.
        if index % 2 == 0:
            cold_s, cold_gc_s, cold_full = await _callers(client, cold, callers)
            warm_s, warm_gc_s, warm_full = await _callers(client, warm, callers)
        else:
            warm_s, warm_gc_s, warm_full = await _callers(client, warm, callers)
            cold_s, cold_gc_s, cold_full = await _callers(client, cold, callers)
        return {
            "cold_s": cold_s,
            "warm_s": warm_s,
            "ratio": cold_s / warm_s,
            "cold_gc_s": cold_gc_s,
            "warm_gc_s": warm_gc_s,
            "cold_full_gcs": cold_full,
            "warm_full_gcs": warm_full,
            "cold_calls": cold_origin.calls,
            "warm_calls": warm_origin.calls,
        }


async def _measure(rounds: int, callers: int) -> list[dict[str, float]]:
    await _one_round(-1, min(callers, 1000))  # warm-up: imports, code paths, allocator
    return [await _one_round(index, callers) for index in range(rounds)]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print medians, ratios and a verdict; 0 if the target holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--callers", type=int, default=10_000)
    args = parser.parse_args(argv)

    gc.callbacks.append(GC_TIMER)
    try:
        rounds = trio.run(_measure, args.rounds, args.callers)
    finally:
        gc.callbacks.remove(GC_TIMER)

    def median(field: str) -> float:
        return statistics.median(r[field] for r in rounds)

    cold, warm = median("cold_s"), median("warm_s")
    ratio = median("ratio")
    calls = sorted({int(r["cold_calls"]) for r in rounds})
    n = args.callers
    print(
        f"{n} concurrent caller tasks, {args.rounds} rounds;"
        f" origin sleeps {ORIGIN_DELAY * 1e3:.0f} ms"
    )
    print(f"  {'':<24}{'median wall':>12}{'per caller':>12}{'of it GC':>10}{'full GCs':>10}")
    for label, wall, prefix in (
        ("warm key", warm, "warm"),
        ("cold key (one origin)", cold, "cold"),
    ):
        print(
            f"  {label:<24}{wall * 1e3:>9.1f} ms{wall / n * 1e6:>9.1f} µs"
            f"{median(prefix + '_gc_s') * 1e3:>7.1f} ms{median(prefix + '_full_gcs'):>10.0f}"
        )
    overhead = cold - ORIGIN_DELAY
    print(f"  {'cold minus the origin':<24}{overhead * 1e3:>9.1f} ms{overhead / n * 1e6:>9.1f} µs")
    without_gc = statistics.median(
        (r["cold_s"] - r["cold_gc_s"]) / (r["warm_s"] - r["warm_gc_s"]) for r in rounds
    )
    per_round = ", ".join(f"{r['ratio']:.2f}" for r in rounds)
    print(f"  cold / warm, per round: {per_round}")
    print(
        f"  cold / warm, median: {ratio:.2f} (without the origin's {ORIGIN_DELAY * 1e3:.0f} ms: "
        f"{statistics.median((r['cold_s'] - ORIGIN_DELAY) / r['warm_s'] for r in rounds):.2f})"
    )
    print(f"  cold / warm with the GC time taken out of both, median: {without_gc:.2f}")
    print(f"  origin calls for the cold key, per round: {[int(r['cold_calls']) for r in rounds]}")

    ok = calls == [1] and ratio <= TARGET_RATIO
    print(
        f"\nverdict: {'PASS' if ok else 'FAIL'}: origin calls {calls} (target [1]), "
        f"cold {ratio:.2f}x warm (target <= {TARGET_RATIO:.0f}x)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
