"""The reader side of ``@sq.bg.write`` / ``sq.bg.read``: follow a writer's value in Redis.

``sq.bg.read`` keeps a local copy of the value ``bg_writer.py`` writes: it
reads Redis again as soon as the writer announces a new value (pub/sub), and
every ``--poll`` seconds as a fallback.  A call returns the local copy at
once and never touches Redis.  The reader prints each new value and exits
once it has seen refresh ``--until``.  Started before any writer, it says so
and waits for one (Ctrl+C stops it).  Run it next to the writer::

    python examples/bg_reader.py --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
from typing import Any

import trio

import stackquery as sq
from backends import RedisStorage

WAIT_STEP = 0.2
"""Seconds between two looks at the local copy while no writer has written yet."""


async def first_value(rates: sq.BackgroundFunction[Any], url: str) -> Any:
    """The first value a writer wrote, however long it takes one to start."""
    told = False
    while True:
        try:
            return await rates()
        except sq.MissingValueError:
            if not told:
                print(f"no rates in {url} yet: waiting for a writer (bg_writer.py)", flush=True)
                told = True
        # The reader's poll, or the writer's announcement, brings the value in.
        await trio.sleep(WAIT_STEP)


async def main(url: str, poll: float, until: int) -> None:
    # retry=0: a read that finds nothing says so at once (first_value waits).
    config = sq.QueryClientConfig(retry=0)
    async with RedisStorage(url) as store, sq.open_query_client(config):
        # on_error: a poll that finds no value yet is expected here, not worth a warning.
        rates = sq.bg.read("rates", interval=poll, store=store, on_error=lambda _error: None)
        value = await first_value(rates, url)
        latest = 0
        while True:
            if value["refresh"] != latest:
                latest = value["refresh"]
                print(f"read {value}", flush=True)
            if latest >= until:
                return
            await trio.sleep(0.02)
            value = await rates()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/DB")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--until", type=int, default=10, help="the refresh to stop at")
    args = parser.parse_args()
    try:
        trio.run(main, args.redis, args.poll, args.until)
    except KeyboardInterrupt:
        print("stopped")
