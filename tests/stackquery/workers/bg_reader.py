"""A ``bg.read`` process: call the reader in a loop until it sees ``rates`` reach ``target``.

Usage: ``python bg_reader.py REDIS_URL POLL_INTERVAL TARGET [GATE_DIR]``; with
``GATE_DIR``, its first value leaves a file there (the writer waits for it).  Prints one
JSON line: how many calls it made, the distinct values it saw in order, and
the store operations it made, split by whether a call (the request path) or
the reader's background poll made them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import orjson
import trio

import stackquery as sq
from backends._redis import RedisStorage


class WatchedStore:
    """Forwards to a store and counts reads and writes, by the task that made them."""

    def __init__(self, store: RedisStorage, request_task: trio.lowlevel.Task) -> None:
        self.store = store
        self.request_task = request_task
        self.counts = {"request_path_ops": 0, "background_gets": 0, "writes": 0}

    @property
    def inner_stores(self) -> tuple[RedisStorage]:
        """The wrapped store: the reader finds the Redis to subscribe to through it."""
        return (self.store,)

    def _count(self, kind: str) -> None:
        if trio.lowlevel.current_task() is self.request_task:
            self.counts["request_path_ops"] += 1
        else:
            self.counts[kind] += 1

    async def get(self, key: str) -> bytes | None:
        self._count("background_gets")
        return await self.store.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._count("writes")
        await self.store.set(key, value, ttl)

    async def delete(self, key: str) -> None:
        self._count("writes")
        await self.store.delete(key)


async def main(url: str, poll: float, target: int, gate: Path | None) -> None:
    store = WatchedStore(RedisStorage(url), trio.lowlevel.current_task())
    reader = sq.bg.read("rates", interval=poll, store=store)
    calls = 0
    seen: list[dict[str, Any]] = []
    config = sq.QueryClientConfig(retry=20, retry_delay=0.05)
    async with sq.open_query_client(config):
        while not seen or seen[-1]["n"] < target:
            value = await reader()
            calls += 1
            if not seen or value != seen[-1]:
                seen.append(value)
                if gate is not None and len(seen) == 1:
                    (gate / str(os.getpid())).touch()
            await trio.sleep(0.005)
    report = {"pid": os.getpid(), "calls": calls, "seen": seen, **store.counts}
    print(orjson.dumps(report).decode(), flush=True)


if __name__ == "__main__":
    gate_dir = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    trio.run(main, sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), gate_dir)
