"""The writer side of ``@sq.bg.write`` / ``sq.bg.read``: one process keeps a value fresh in Redis.

The writer refreshes exchange rates every ``--interval`` seconds into Redis;
readers in other processes (``bg_reader.py``) keep a local copy that follows
it, so their calls never touch Redis.  It prints ``published`` only once a
value is in Redis where readers find it; a Redis it cannot reach, or that
does not take a value, ends it with exit status 1 and says so.  After
``--count`` refreshes the writer exits; its last value stays in Redis for
readers that come later.  With a redis-server running (any order of start is
fine)::

    python examples/bg_writer.py --redis redis://127.0.0.1:6379/0
    python examples/bg_reader.py --redis redis://127.0.0.1:6379/0   # in other terminals
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

import stackquery as sq
from backends import RedisStorage

ENTRY_KEY = 'sq:["bg","rates"]'
"""Where readers find the value: the client's ``key_prefix``, then the canonical key."""
LANDING_TIMEOUT = 5.0
"""Seconds a refresh may take to land in Redis (it is written behind the call)."""


def rates_for(refresh: int) -> dict[str, float]:
    """What the origin (a pricing service, say) answers at its ``refresh``-th call."""
    return {"refresh": refresh, "eur_usd": round(1.08 + refresh / 100, 2)}


async def landed(store: RedisStorage, refresh: float) -> bool:
    """Whether Redis holds refresh ``refresh`` (or a later one) for readers, within the timeout.

    Raises:
        StorageError: Redis could not be reached.
    """
    with trio.move_on_after(LANDING_TIMEOUT):
        while True:
            raw = await store.get(ENTRY_KEY)
            stored: Any = sq.unpack_entry(raw, sq.serializers.json).value if raw else None
            if isinstance(stored, dict) and stored.get("refresh", 0) >= refresh:
                return True
            await trio.sleep(0.02)
    return False


async def main(url: str, interval: float, count: int) -> int:
    # Not closed here: bg.write runs on a client hosted until trio.run ends,
    # which flushes its last writes to this store after main() returns.
    store = RedisStorage(url)
    try:
        await store.get(ENTRY_KEY)  # can we reach Redis at all?
    except sq.StorageError as exc:
        print(f"cannot publish: Redis at {url} is unreachable: {exc}", file=sys.stderr)
        return 1
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
            try:
                ok = await landed(store, value["refresh"])
            except sq.StorageError as exc:
                ok, why = False, f"Redis at {url} is unreachable: {exc}"
            else:
                why = f"Redis at {url} did not take it within {LANDING_TIMEOUT:g} s"
            if not ok:
                print(f"cannot publish {value}: {why}", file=sys.stderr)
                return 1
            print(f"published {value}", flush=True)
        await trio.sleep(interval / 10)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/DB")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument("--count", type=int, default=10, help="refreshes before exiting")
    args = parser.parse_args()
    sys.exit(trio.run(main, args.redis, args.interval, args.count))
