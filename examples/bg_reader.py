"""The reader side of ``@sq.bg.write`` / ``sq.bg.read``: follow a writer's value in Redis.

``sq.bg.read`` keeps a local copy of the value ``bg_writer.py`` writes: it
reads Redis again as soon as the writer announces a new value (pub/sub), and
every ``--poll`` seconds as a fallback.  A call returns the local copy at
once and never touches Redis.  The reader prints each new value and exits
once it has seen refresh ``--until``.  Run it next to the writer::

    python examples/bg_reader.py --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse

import trio

import stackquery as sq
from backends import RedisStorage


async def main(url: str, poll: float, until: int) -> None:
    # Started before the writer, the first call waits for its first value:
    # the read is retried, 50 times 0.2 s apart, before it gives up.
    config = sq.QueryClientConfig(retry=50, retry_delay=0.2)
    async with RedisStorage(url) as store, sq.open_query_client(config):
        rates = sq.bg.read("rates", interval=poll, store=store)
        latest = 0
        while latest < until:
            value = await rates()
            if value["refresh"] != latest:
                latest = value["refresh"]
                print(f"read {value}", flush=True)
            await trio.sleep(0.02)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/DB")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--until", type=int, default=10, help="the refresh to stop at")
    args = parser.parse_args()
    trio.run(main, args.redis, args.poll, args.until)
