"""Benchmark: the fresh-hit path of ``QueryClient.fetch_query`` against a bare await.

Targets: a fresh hit (options built once, a large ``stale_time``) costs at
most 1.3x a bare ``await`` of an async function that does one dict lookup,
measured side by side in the same run (both calls written out inline in their
timing loops, one argument each); a stale hit whose origin takes 10 ms (the
stale data at once, plus one claimed refetch joined by every later stale read)
costs at most 5 µs.  Also reported, for reference: a stale hit with an instant
origin (so most reads claim a new refetch), the synchronous
``get_query_data``, and a fresh hit whose options are built on every call.

The peers' hit paths (advanced-caching's ``@cache`` async hit, PyStackQuery's
fresh ``fetch_query``) are measured under plain asyncio in a subprocess, when
they are importable by the interpreter given (PyStackQuery needs Python >=
3.12: pass ``--peer-python`` to run the peers under another interpreter).

Run from the repository root::

    python tests/benchmarks/hot_path.py [--rounds 5] [--iterations 200000]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio
import trio.testing

import stackquery as sq

TARGET_RATIO = 1.3
TARGET_STALE_NS = 5_000
FRESH_KEY = ("bench", "fresh")
STALE_KEY = ("bench", "stale")
STALE_SLOW_KEY = ("bench", "stale-slow-origin")
BARE = "bare await (dict lookup)"
FRESH = "fetch_query, fresh hit"
STALE_SLOW = "fetch_query, stale hit, origin 10 ms"
CHECKPOINT = "trio checkpoint alone (a stale read's floor)"
RATIO = "ratio"


async def _load() -> dict[str, int]:
    return {"id": 42}


async def _load_slowly() -> dict[str, int]:
    await trio.sleep(0.010)
    return {"id": 42}


async def _time_bare(lookup: Callable[[str], Awaitable[Any]], iterations: int) -> int:
    """Nanoseconds for ``iterations`` awaits of ``lookup("k")``: the call written out inline,
    like the fresh hit's below, so that neither pays for a wrapper the other does not."""
    start = time.perf_counter_ns()
    for _ in range(iterations):
        await lookup("k")
    return time.perf_counter_ns() - start


async def _time_fresh(
    client: sq.QueryClient, options: sq.QueryOptions[Any], iterations: int
) -> int:
    """Nanoseconds for ``iterations`` awaits of ``client.fetch_query(options)``, inline."""
    start = time.perf_counter_ns()
    for _ in range(iterations):
        await client.fetch_query(options)
    return time.perf_counter_ns() - start


async def _time_async(call: Callable[[], Awaitable[Any]], iterations: int) -> int:
    """Nanoseconds for ``iterations`` awaits of ``call()``, loop overhead included."""
    start = time.perf_counter_ns()
    for _ in range(iterations):
        await call()
    return time.perf_counter_ns() - start


def _time_sync(call: Callable[[], Any], iterations: int) -> int:
    """Nanoseconds for ``iterations`` calls of ``call()``, loop overhead included."""
    start = time.perf_counter_ns()
    for _ in range(iterations):
        call()
    return time.perf_counter_ns() - start


async def _one_round(client: sq.QueryClient, iterations: int, slices: int) -> dict[str, float]:
    """Time every operation, interleaved slice by slice, and return ns per operation.

    Each round is cut into ``slices``; every operation runs once per slice, so
    load from other processes on this shared machine falls on all of them
    alike and the ratios hold even when the absolute figures drift.  Each
    figure is the median over the slices.
    """
    table = {"k": {"id": 42}}

    async def bare_lookup(key: str) -> dict[str, int]:
        return table[key]

    fresh: sq.QueryOptions[dict[str, int]] = sq.QueryOptions(
        query_key=FRESH_KEY, query_fn=_load, stale_time=1e9
    )
    stale: sq.QueryOptions[dict[str, int]] = sq.QueryOptions(
        query_key=STALE_KEY, query_fn=_load, stale_time=0.0
    )
    stale_slow: sq.QueryOptions[dict[str, int]] = sq.QueryOptions(
        query_key=STALE_SLOW_KEY, query_fn=_load_slowly, stale_time=0.0
    )

    def fresh_built_per_call() -> Awaitable[Any]:
        return client.fetch_query(
            sq.QueryOptions(query_key=FRESH_KEY, query_fn=_load, stale_time=1e9)
        )

    per_slice = max(1, iterations // slices)
    slow_per_slice = max(1, per_slice // 20)  # building options is ~40x slower
    cases: list[tuple[str, Callable[[], Any], int, bool]] = [
        (BARE, lambda: _time_bare(bare_lookup, per_slice), per_slice, True),
        (FRESH, lambda: _time_fresh(client, fresh, per_slice), per_slice, True),
        ("fetch_query, stale hit", lambda: client.fetch_query(stale), per_slice, True),
        (STALE_SLOW, lambda: client.fetch_query(stale_slow), per_slice, True),
        # A stale read is a checkpoint (it yields so that its refetch can start): the
        # checkpoint's own cost, measured beside it, is what the read cannot go under.
        (CHECKPOINT, trio.lowlevel.checkpoint, per_slice, True),
        ("get_query_data (sync)", lambda: client.get_query_data(FRESH_KEY), per_slice, False),
        ("fetch_query, fresh, options built per call", fresh_built_per_call, slow_per_slice, True),
    ]
    samples: dict[str, list[float]] = {name: [] for name, *_ in cases}
    gc.collect()
    for _ in range(slices):
        for name, call, count, is_async in cases:
            if name in (BARE, FRESH):  # timed inline (see _time_bare)
                elapsed = await call()
            elif is_async:
                elapsed = await _time_async(call, count)
            else:
                elapsed = _time_sync(call, count)
            samples[name].append(elapsed / count)
        # Let the refetch the stale reads claimed run (outside the timing).
        await trio.testing.wait_all_tasks_blocked()
    result = {name: statistics.median(values) for name, values in samples.items()}
    # The ratio of neighbours in time, slice by slice, then the median: a
    # burst of load from another process spoils one slice, not the round.
    result[RATIO] = statistics.median(
        fresh_ns / bare_ns for fresh_ns, bare_ns in zip(samples[FRESH], samples[BARE], strict=True)
    )
    return result


async def _measure(rounds: int, iterations: int, slices: int) -> list[dict[str, float]]:
    async with sq.open_query_client() as client:
        await client.fetch_query(
            sq.QueryOptions(query_key=FRESH_KEY, query_fn=_load, stale_time=1e9)
        )
        await client.fetch_query(
            sq.QueryOptions(query_key=STALE_KEY, query_fn=_load, stale_time=0.0)
        )
        await client.fetch_query(
            sq.QueryOptions(query_key=STALE_SLOW_KEY, query_fn=_load_slowly, stale_time=0.0)
        )
        await _one_round(client, max(1, iterations // 10), slices)  # warm-up
        return [await _one_round(client, iterations, slices) for _ in range(rounds)]


# The peers run under plain asyncio, in a subprocess of their own, so that
# neither their imports nor their event loop touch this process.
_PEER_CODE = r"""
import asyncio, gc, json, statistics, sys, time
rounds, iterations, slices = map(int, sys.argv[1:4])
out = {"python": sys.version.split()[0], "results": {}, "missing": {}}

async def timed(call, n):
    start = time.perf_counter_ns()
    for _ in range(n):
        await call()
    return time.perf_counter_ns() - start

async def main():
    table = {"k": {"id": 42}}
    async def bare():
        return table["k"]
    async def load():
        return {"id": 42}
    cases = {"bare await (dict lookup)": bare}
    try:
        import advanced_caching
        cached = advanced_caching.cache(3600, key="static")(load)
        await cached()
        cases["advanced-caching @cache, async hit"] = cached
    except ImportError as exc:
        out["missing"]["advanced-caching"] = str(exc)
    try:
        import pystackquery
        client = pystackquery.QueryClient()
        opts = pystackquery.QueryOptions(
            query_key=("bench", "fresh"), query_fn=load, stale_time=1e9
        )
        await client.fetch_query(opts)
        cases["pystackquery fetch_query, fresh hit"] = lambda: client.fetch_query(opts)
    except (ImportError, SyntaxError) as exc:
        out["missing"]["pystackquery"] = f"{type(exc).__name__}: {exc}"
    samples = {name: [] for name in cases}
    for name, call in cases.items():
        await timed(call, max(1, iterations // 10))
    per_slice = max(1, iterations // slices)
    for _ in range(rounds):
        per_slice_ns = {name: [] for name in cases}
        gc.collect()
        for _ in range(slices):
            for name, call in cases.items():
                per_slice_ns[name].append(await timed(call, per_slice) / per_slice)
        for name in cases:
            samples[name].append(statistics.median(per_slice_ns[name]))
    out["results"] = {name: statistics.median(v) for name, v in samples.items()}

asyncio.run(main())
print(json.dumps(out))
"""


def _measure_peers(python: str, rounds: int, iterations: int, slices: int) -> dict[str, Any]:
    """Run the peer benchmark under ``python``; report why not if it cannot run."""
    try:
        done = subprocess.run(
            [python, "-c", _PEER_CODE, str(rounds), str(iterations), str(slices)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{python}: {exc}"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"{python} exited {done.returncode}: {tail[0]}"}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _print_table(title: str, medians: dict[str, float], base: str) -> None:
    print(f"\n{title}")
    width = max(len(name) for name in medians)
    print(f"  {'operation':<{width}}  {'median ns/op':>12}  {'x bare await':>12}")
    for name, value in medians.items():
        print(f"  {name:<{width}}  {value:>12.0f}  {value / medians[base]:>12.2f}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print medians, ratios and a verdict; 0 if the target holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=200_000, help="per operation per round")
    parser.add_argument("--slices", type=int, default=100, help="interleaved slices per round")
    parser.add_argument(
        "--peer-python",
        action="append",
        default=[],
        help="another interpreter to run the peers under (repeatable); sys.executable always runs",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip the peer libraries")
    args = parser.parse_args(argv)

    rounds = trio.run(_measure, args.rounds, args.iterations, args.slices)
    ratios = [r[RATIO] for r in rounds]
    medians = {
        name: statistics.median(r[name] for r in rounds) for name in rounds[0] if name != RATIO
    }
    print(f"stackquery under trio, {args.rounds} rounds x {args.iterations} iterations")
    _print_table("medians over rounds", medians, BARE)
    per_round = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"  fresh-hit / bare-await ratio per round (median of per-slice ratios): {per_round}")

    if not args.no_peers:
        for python in [sys.executable, *args.peer_python]:
            peers = _measure_peers(python, args.rounds, args.iterations, args.slices)
            if "error" in peers:
                print(f"\npeers: could not run ({peers['error']})")
                continue
            if peers["results"]:
                _print_table(
                    f"peers under plain asyncio, Python {peers['python']} ({python})",
                    peers["results"],
                    BARE,
                )
            for name, why in peers["missing"].items():
                hint = (
                    " (it needs Python >= 3.12; see --peer-python)"
                    if name == "pystackquery"
                    else ""
                )
                print(f"  {name}: not measured, not importable here: {why}{hint}")

    ratio = statistics.median(ratios)
    stale_ns = medians[STALE_SLOW]
    ok = ratio <= TARGET_RATIO and stale_ns <= TARGET_STALE_NS
    fresh_ns = medians[FRESH]
    print(
        f"\nverdict: {'PASS' if ok else 'FAIL'}: fresh hit {fresh_ns:.0f} ns"
        f" = {ratio:.2f}x the bare await (target <= {TARGET_RATIO}x);"
        f" stale hit, origin 10 ms: {stale_ns:.0f} ns (target <= {TARGET_STALE_NS} ns;"
        f" a bare trio checkpoint {medians[CHECKPOINT]:.0f} ns)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
