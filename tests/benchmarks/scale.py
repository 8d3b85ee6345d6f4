"""Benchmark: what 100,000 idle cached keys cost, in resident memory and in tasks.

Each round runs in a fresh subprocess, so that its RSS baseline is not
muddied by an earlier round.  A round opens a client (``stale_time`` half an
hour, so that every key has its staleness timer armed as well as its gc timer
and none goes stale during a long fill, whose fresh reads would then be stale
reads and refetches; ``gc_time`` an hour, so that no key leaves during the fill),
measures RSS and counts trio tasks, fetches 100,000 distinct keys with small
int values (through ``prefetch_query``, 1,000 at a time), reads each once more
as a fresh hit (so the per-key hit record exists too), lets every actor
passivate, and measures again.  Each read builds new options, with a
``functools.partial`` per key as its ``query_fn`` (``--query-fn shared``: one
function for every key, which reads its key from its ``QueryContext``): the key
keeps its query_fn for ``refetch_queries``, the settings are shared.

Targets: no live task per idle key (the task count after passivation is the
one before the fetches), and at most 600 bytes of RSS per small cached key.

Where the bytes go is reported two ways: an object walk over the client's
per-key structures (``sys.getsizeof``, each object counted once), and a
``tracemalloc`` pass (a separate subprocess with fewer keys, since tracing is
slow) grouped by source line.

Run from the repository root::

    python tests/benchmarks/scale.py [--rounds 5] [--keys 100000] [--jobs 2]
    python tests/benchmarks/scale.py --keys 1000000 --rounds 3 --trace-keys 0 [--query-fn shared]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import attrs
import trio
import trio.testing

import stackquery as sq
from stackquery._fetch_lanes import LANE_IDLE

TARGET_BYTES_PER_KEY = 600
QUERY_FNS = {
    "partial": "functools.partial(load, i) per key, kept by the key for refetch_queries",
    "shared": "one function for every key, reading the index from its QueryContext",
}
BATCH = 1000
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def _settled_rss() -> int:
    gc.collect()
    return _rss_bytes()


def _count_tasks(task: Any) -> int:
    """The task and every task below it, through its child nurseries."""
    return 1 + sum(
        _count_tasks(child) for nursery in task.child_nurseries for child in nursery.child_tasks
    )


async def _load(index: int) -> int:
    # A new int object per key (not the one in the key tuple), like real data.
    return index + 1_000_000


async def _load_key(context: sq.QueryContext[Any]) -> int:
    """One query_fn for every key: it reads the index from the key (as TanStack's
    ``queryFn({queryKey})`` does), so no key has a function object of its own."""
    index: int = context.key[1]
    return index + 1_000_000


def _options(i: int, query_fn: str) -> sq.QueryOptions[int]:
    """New options for key ``i``, as an application builds them per read."""
    fn = functools.partial(_load, i) if query_fn == "partial" else _load_key
    return sq.QueryOptions(query_key=("item", i), query_fn=fn)


async def _fill(client: sq.QueryClient, keys: int, fill: str, query_fn: str) -> None:
    """Fetch ``keys`` distinct keys, ``BATCH`` at a time, then read each as a fresh hit."""
    for low in range(0, keys, BATCH):
        high = min(keys, low + BATCH)
        if fill == "prefetch":
            for i in range(low, high):
                await client.prefetch_query(_options(i, query_fn))
        else:
            async with trio.open_nursery() as nursery:
                for i in range(low, high):
                    nursery.start_soon(client.fetch_query, _options(i, query_fn))
        await trio.testing.wait_all_tasks_blocked()
    for i in range(keys):
        value = await client.fetch_query(_options(i, query_fn))
        if value != i + 1_000_000:
            raise AssertionError(f"key {i} read back {value!r}")


# -- where the bytes go: an object walk ------------------------------------------------


def _size(obj: object, seen: set[int]) -> int:
    """Bytes of ``obj`` and, for a tuple, of its elements; each object counted once."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, tuple):
        size += sum(_size(item, seen) for item in obj)
    return size


def _fn_size(fn: Any, seen: set[int]) -> int:
    size = _size(fn, seen)
    if isinstance(fn, functools.partial):
        size += _size(fn.args, seen)
    return size


def _options_size(kept: Any, seen: set[int]) -> int:
    """Bytes of what the table keeps of a key's last options: the options themselves, or
    (the usual case) its query_fn, with a reference to shared settings if not the primary's."""
    if kept is None:
        return 0
    if isinstance(kept, sq.QueryOptions):
        size = _size(kept, seen) + _size(kept.query_key, seen) + _size(kept.key, seen)
        return size + _fn_size(kept.query_fn, seen)
    if hasattr(kept, "template"):  # a Remembered: the query_fn and the shared settings
        return _size(kept, seen) + _fn_size(kept.query_fn, seen)
    return _fn_size(kept, seen)


def _walk(client: sq.QueryClient) -> dict[str, int]:
    """Bytes per category of the client's per-key structures, each object counted once.

    Shared objects (None, the key's "item" string, the config's gc_time) are
    counted once, in the first category that reaches them.
    """
    seen: set[int] = {id(None), id(True), id(False)}
    out: Counter[str] = Counter()
    cache = client.cache
    table: dict[str, Any] = cache.snapshots
    out["L1 table dict (slots)"] += _size(table, seen)
    for key_hash, snap in table.items():
        out["key_hash str (table key)"] += _size(key_hash, seen)
        out["Snapshot object"] += _size(snap, seen)
        for field in attrs.fields(type(snap)):
            value = getattr(snap, field.name)
            if field.name == "data":
                out["data (the cached int)"] += _size(value, seen)
            elif field.name == "key_hash":
                out["key_hash str (table key)"] += _size(value, seen)
            elif field.name == "options":
                # The options it was last read with (refetch_queries needs them): built per
                # key by this benchmark, kept as the key's query_fn (a partial) and settings
                # shared by every key.
                out["last options (query_fn, shared settings)"] += _options_size(value, seen)
            elif field.name == "shape":
                out["Shape (shared by the keys alike)"] += _size(value, seen)
            else:
                out["Snapshot fields (floats, ints)"] += _size(value, seen)
    timers = cache._timers
    heap = timers._heap
    out["timer heap list (slots)"] += _size(heap, seen)
    for entry in heap:
        out["timer entries (deadline, key)"] += _size(entry, seen)
    # The wheel: a flat [deadline, key, ...] list per bucket (the deadlines are the
    # snapshots' timer_at floats, counted with them).
    out["timer wheel (buckets, slots)"] += _size(timers._buckets, seen)
    for bucket in timers._buckets.values():
        out["timer wheel (buckets, slots)"] += _size(bucket, seen)
    # Every other per-key dict the client keeps (hit times, armed stale timers, ...).
    for name, value in vars(cache).items():
        if name == "snapshots" or not isinstance(value, dict) or len(value) < len(table) // 2:
            continue
        out[f"cache.{name} dict (slots)"] += _size(value, seen)
        for item in value.values():
            out[f"cache.{name} values"] += _size(item, seen)
    return dict(out)


# -- one round, in a subprocess -----------------------------------------------------------


async def _child_round(keys: int, fill: str, query_fn: str, trace: bool) -> dict[str, Any]:
    # stale_time and gc_time past any fill time (a million keys take minutes on a loaded
    # machine): no key may go stale or leave before it is measured.
    config = sq.QueryClientConfig(stale_time=1800.0, gc_time=3600.0)
    async with sq.open_query_client(config) as client:
        await trio.testing.wait_all_tasks_blocked()
        root = trio.lowlevel.current_root_task()
        tasks_before = _count_tasks(root)
        rss_before = _settled_rss()
        if trace:
            tracemalloc.start()
        start, start_cpu = time.perf_counter(), time.process_time()
        await _fill(client, keys, fill, query_fn)
        await trio.testing.wait_all_tasks_blocked()
        fill_s = time.perf_counter() - start
        fill_cpu_s = time.process_time() - start_cpu
        gc.collect()
        traced: dict[str, Any] = {}
        if trace:
            snapshot = tracemalloc.take_snapshot()
            tracemalloc.stop()
            snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            traced = {
                "total": sum(stat.size for stat in snapshot.statistics("filename")),
                "by_line": [
                    (str(stat.traceback[0]), stat.size, stat.count)
                    for stat in snapshot.statistics("lineno")[:14]
                ],
            }
        rss_after = _settled_rss()
        # Fetch lanes outlive their last fetch by up to two sweeps (``LANE_IDLE`` each)
        # before they end: wait them out, so that the count says what idle keys hold.
        await trio.sleep(2 * LANE_IDLE + 0.1)
        await trio.testing.wait_all_tasks_blocked()
        tasks_after = _count_tasks(root)
        stats = client.statistics()
        result = {
            "keys": keys,
            "fill_s": fill_s,
            "fill_cpu_s": fill_cpu_s,
            "rss_bytes_per_key": (rss_after - rss_before) / keys,
            "rss_bytes": rss_after,
            "query_fn": query_fn,
            "tasks_before": tasks_before,
            "tasks_after": tasks_after,
            "active_actors": stats.active_actors,
            "queries": stats.queries,
            "timers": stats.timers,
            "walk": {} if trace else _walk(client),
            "traced": traced,
        }
    return result


def _run_children(commands: list[list[str]], jobs: int) -> list[dict[str, Any]]:
    """Run the child commands, ``jobs`` at a time; return their JSON results in order.

    A child's output is one short JSON line, so it fits in the pipe while the
    child runs and polling for exits cannot deadlock.
    """
    results: dict[int, dict[str, Any]] = {}
    pending = list(enumerate(commands))
    running: dict[int, subprocess.Popen[str]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            index, command = pending.pop(0)
            running[index] = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        finished = [index for index, process in running.items() if process.poll() is not None]
        if not finished:
            time.sleep(0.05)
            continue
        for index in finished:
            process = running.pop(index)
            stdout, _ = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"{' '.join(commands[index])} exited {process.returncode}")
            results[index] = json.loads(stdout)
    return [results[index] for index in range(len(commands))]


def _print_report(rounds: list[dict[str, Any]], traced: dict[str, Any] | None) -> bool:
    keys = rounds[0]["keys"]
    rss = statistics.median(r["rss_bytes_per_key"] for r in rounds)
    fill = statistics.median(r["fill_s"] for r in rounds)
    per_round = ", ".join(f"{r['rss_bytes_per_key']:.0f}" for r in rounds)
    fn = rounds[0]["query_fn"]
    print(
        f"{keys} keys (small ints), query_fn {fn} ({QUERY_FNS[fn]}), "
        f"{len(rounds)} rounds, each in a fresh process"
    )
    cpu = statistics.median(r["fill_cpu_s"] for r in rounds)
    cpus = ", ".join(f"{r['fill_cpu_s']:.1f}" for r in rounds)
    print(
        f"  fill + one fresh read per key: median {fill:.1f} s ({fill / keys * 1e6:.0f} µs per key)"
        f"; process CPU time {cpu:.1f} s (per round: {cpus})"
    )
    print(f"  RSS per key, median: {rss:.0f} bytes (per round: {per_round})")
    grown = statistics.median(r["rss_bytes_per_key"] for r in rounds) * keys / 1e6
    total = statistics.median(r["rss_bytes"] for r in rounds) / 1e6
    totals = ", ".join(f"{r['rss_bytes'] / 1e6:.0f}" for r in rounds)
    print(
        f"  RSS grown by the keys, median: {grown:.0f} MB; the whole process's after the fill:"
        f" {total:.0f} MB (per round: {totals})"
    )
    extra_tasks = sorted({r["tasks_after"] - r["tasks_before"] for r in rounds})
    actors = sorted({r["active_actors"] for r in rounds})
    print(
        f"  trio tasks before the fetches / after passivation: "
        f"{rounds[0]['tasks_before']} / {rounds[0]['tasks_after']} (extra per round: {extra_tasks})"
    )
    print(
        f"  active actors after passivation: {actors}; keys in L1: {rounds[0]['queries']}; "
        f"timers pending: {rounds[0]['timers']}"
    )

    walk_rounds = [r["walk"] for r in rounds if r["walk"]]
    if walk_rounds:
        names = {category for w in walk_rounds for category in w}
        per_key = {
            category: statistics.median(w.get(category, 0) for w in walk_rounds) / keys
            for category in names
        }
        print("\n  where the bytes go (object walk, sys.getsizeof, median bytes per key):")
        for category in sorted(per_key, key=lambda c: -per_key[c]):
            print(f"    {category:<40}{per_key[category]:>8.1f}")
        total = sum(per_key.values())
        print(f"    {'total accounted':<40}{total:>8.1f}   (RSS: {rss:.0f})")

    if traced:
        trace_keys = traced["keys"]
        print(
            f"\n  tracemalloc, {trace_keys} keys: {traced['traced']['total'] / trace_keys:.0f} "
            "bytes per key allocated by the fill and still live after passivation;"
        )
        print("  top lines (bytes per key, objects per key, where allocated):")
        for where, size, count in traced["traced"]["by_line"]:
            where = where.replace(str(Path(__file__).resolve().parents[2]) + "/", "")
            site = where.split("site-packages/")[-1]
            print(f"    {size / trace_keys:>8.1f}  {count / trace_keys:>5.2f} objs  {site}")

    ok = rss <= TARGET_BYTES_PER_KEY and extra_tasks == [0] and actors == [0]
    print(
        f"\nverdict: {'PASS' if ok else 'FAIL'}: {rss:.0f} bytes RSS per idle key "
        f"(target <= {TARGET_BYTES_PER_KEY}); extra tasks after passivation {extra_tasks}, "
        f"active actors {actors} (target [0], [0])"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print medians, the breakdown and a verdict; 0 if the targets hold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument(
        "--trace-keys", type=int, default=10_000, help="keys in the tracemalloc pass; 0: skip"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="rounds run at once (memory is per process)"
    )
    parser.add_argument(
        "--fill",
        choices=["prefetch", "fetch"],
        default="prefetch",
        help="prefetch_query, or fetch_query from 1,000 concurrent caller tasks",
    )
    parser.add_argument(
        "--query-fn",
        choices=sorted(QUERY_FNS),
        default="partial",
        help="a functools.partial per key (the default), or one function for every key",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        run = trio.run(_child_round, args.keys, args.fill, args.query_fn, args.trace)
        print(json.dumps(run))
        return 0

    child = [sys.executable, str(Path(__file__).resolve()), "--child", "--fill", args.fill]
    child += ["--query-fn", args.query_fn]
    commands = [[*child, "--keys", str(args.keys)] for _ in range(args.rounds)]
    if args.trace_keys:  # first: the shortest job, so that the rounds pack behind it
        commands.insert(0, [*child, "--keys", str(args.trace_keys), "--trace"])
    results = _run_children(commands, args.jobs)
    traced = results.pop(0) if args.trace_keys else None
    return 0 if _print_report(results, traced) else 1


if __name__ == "__main__":
    sys.exit(main())
