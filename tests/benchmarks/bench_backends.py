"""Cost per operation of the local L2 stores, side by side in one run.

Run: ``python tests/benchmarks/bench_backends.py``.  For each store: a 1 KB
``set``, a ``get`` hit, a ``get`` miss, and ``get_many`` / ``set_many`` of 100
keys (reported per key).  Prints the median of several rounds, and each
store's ratio to ``MemoryStorage`` measured in the same run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from backends import ChainStorage, FileStorage, MemoryStorage, SQLiteStorage

ROUNDS = 7
OPS_PER_ROUND = 200
BATCH = 100
VALUE = b"x" * 1024


async def time_per_op(operation: Callable[[int], Awaitable[Any]], count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        await operation(index)
    return (time.perf_counter() - start) / count


async def measure(store: Any) -> dict[str, float]:
    keys = [f"bench:{index}" for index in range(OPS_PER_ROUND)]
    batch_keys = [f"batch:{index}" for index in range(BATCH)]
    items = dict.fromkeys(batch_keys, VALUE)
    results: dict[str, list[float]] = {name: [] for name in ("set", "get hit", "get miss")}
    results["set_many/key"] = []
    results["get_many/key"] = []
    for _ in range(ROUNDS):
        results["set"].append(
            await time_per_op(lambda index: store.set(keys[index], VALUE, 60), OPS_PER_ROUND)
        )
        results["get hit"].append(
            await time_per_op(lambda index: store.get(keys[index]), OPS_PER_ROUND)
        )
        results["get miss"].append(
            await time_per_op(lambda index: store.get(f"absent:{index}"), OPS_PER_ROUND)
        )
        results["set_many/key"].append(
            await time_per_op(lambda _: store.set_many(items, 60), 10) / BATCH
        )
        results["get_many/key"].append(
            await time_per_op(lambda _: store.get_many(batch_keys), 10) / BATCH
        )
    return {name: statistics.median(samples) for name, samples in results.items()}


async def main_async() -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        stores: dict[str, Any] = {
            "MemoryStorage": MemoryStorage(),
            "FileStorage": FileStorage(root / "files"),
            "SQLiteStorage": SQLiteStorage(root / "cache.db"),
            "Chain(Memory, SQLite) hit": ChainStorage(
                MemoryStorage(), SQLiteStorage(root / "chain.db")
            ),
        }
        medians = {name: await measure(store) for name, store in stores.items()}
        for store in stores.values():
            await store.aclose()
    baseline = medians["MemoryStorage"]
    columns = list(baseline)
    print(f"{'store':28}" + "".join(f"{column:>16}" for column in columns))
    for name, result in medians.items():
        cells = "".join(
            f"{result[column] * 1e6:>8.1f} µs{result[column] / baseline[column]:>5.0f}x"
            for column in columns
        )
        print(f"{name:28}{cells}")
    print(f"(medians of {ROUNDS} rounds; ratios to MemoryStorage in the same run)")


def main() -> None:
    trio.run(main_async)


if __name__ == "__main__":
    main()
