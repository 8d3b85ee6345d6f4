"""A ``bg.write`` process: refresh ``rates`` into Redis every ``interval``, ``refreshes`` times.

Usage: ``python bg_writer.py REDIS_URL INTERVAL REFRESHES``.  Prints one JSON
line: ``{"pid": ..., "refreshes": n}`` once its client has flushed to Redis.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import orjson
import trio

import stackquery as sq
from backends._redis import RedisStorage


async def main(url: str, interval: float, refreshes: int) -> None:
    done = trio.Event()
    count = 0

    store = RedisStorage(url)

    @sq.bg.write(interval, key="rates", store=store)
    async def rates() -> dict[str, int]:
        nonlocal count
        count += 1
        if count >= refreshes:
            done.set()
        return {"n": count, "pid": os.getpid()}

    await rates.start()
    await done.wait()
    # Let the last refresh's write-behind land before the run (and its client) ends.
    await trio.sleep(interval / 2)
    print(orjson.dumps({"pid": os.getpid(), "refreshes": count}).decode(), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
