"""The writer side of ``@sq.bg.write`` / ``sq.bg.read``: one process keeps a value fresh in Redis.

The writer refreshes exchange rates every ``--interval`` seconds into Redis;
readers in other processes (``bg_reader.py``) keep a local copy that follows
it, so their calls never touch Redis.  After ``--count`` refreshes the writer
exits; its last value stays in Redis for readers that come later.  With a
redis-server running (any order of start is fine)::

    python examples/bg_writer.py --redis redis://127.0.0.1:6379/0
    python examples/bg_reader.py --redis redis://127.0.0.1:6379/0   # in other terminals
"""

from __future__ import annotations

import argparse

import trio

import stackquery as sq
from backends import RedisStorage


def rates_for(refresh: int) -> dict[str, float]:
    """What the origin (a pricing service, say) answers at its ``refresh``-th call."""
    return {"refresh": refresh, "eur_usd": round(1.08 + refresh / 100, 2)}


async def main(url: str, interval: float, count: int) -> None:
    # Not closed here: bg.write runs on a client hosted until trio.run ends,
    # which flushes its last writes to this store after main() returns.
    store = RedisStorage(url)
    refreshes = 0

    @sq.bg.write(interval, key="rates", store=store)
    async def rates() -> dict[str, float]:
        nonlocal refreshes
        refreshes += 1
        return rates_for(refreshes)

    latest = 0.0
    while latest < count:
        value = await rates()  # the first call waits for the first refresh; then instant
        if value["refresh"] != latest:
            latest = value["refresh"]
            print(f"published {value}", flush=True)
        await trio.sleep(interval / 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/DB")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument("--count", type=int, default=10, help="refreshes before exiting")
    args = parser.parse_args()
    trio.run(main, args.redis, args.interval, args.count)
