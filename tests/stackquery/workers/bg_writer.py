"""A ``bg.write`` process: refresh ``rates`` into Redis every ``interval``, ``refreshes`` times.

Usage: ``python bg_writer.py REDIS_URL INTERVAL REFRESHES [GATE_DIR READERS]``.
Prints one JSON line: ``{"pid": ..., "refreshes": n}`` once its client has
flushed to Redis.  With a gate, the second refresh waits until ``READERS``
reader processes have each left a file in ``GATE_DIR`` (they do on their first
value): a reader that starts slowly on a loaded machine still sees the values
change, instead of starting after the last one.
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

GATE_TIMEOUT = 60.0
"""Seconds the writer waits for its readers (each a fresh interpreter on a busy machine)."""


async def wait_for_readers(gate: Path, readers: int) -> None:
    """Wait (bounded) until ``readers`` files are in ``gate``."""
    with trio.fail_after(GATE_TIMEOUT):
        # Other processes leave the files: there is no event to wait on but the directory.
        while len(await trio.to_thread.run_sync(os.listdir, gate)) < readers:  # noqa: ASYNC110
            await trio.sleep(0.02)


async def main(url: str, interval: float, refreshes: int, gate: Path | None, readers: int) -> None:
    done = trio.Event()
    count = 0

    store = RedisStorage(url)

    @sq.bg.write(interval, key="rates", store=store)
    async def rates() -> dict[str, int]:
        nonlocal count
        if count == 1 and gate is not None:
            await wait_for_readers(gate, readers)
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
    gate_dir = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    gated = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    trio.run(main, sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), gate_dir, gated)
