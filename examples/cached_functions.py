"""``@sq.cache`` and ``@sq.bg`` on plain functions, async and sync, with metrics.

Concurrent misses of one key share one origin call; a hit is a dict lookup;
``invalidate`` drops one entry; ``stale=`` serves an old value at once while
it is refreshed; a plain ``def`` runs in a worker thread; ``@sq.bg`` keeps a
value fresh in the background.  No client is opened here: a decorated
function runs on the innermost open client, else on a default client that
lives for the rest of ``trio.run``.  Run::

    python examples/cached_functions.py
"""

from __future__ import annotations

import time
from collections import Counter

import trio

import stackquery as sq

metrics = sq.InMemoryMetrics()
origin_calls: Counter[str] = Counter()


@sq.cache(60, key="user:{user_id}", metrics=metrics)
async def get_user(user_id: int) -> dict[str, object]:
    origin_calls["get_user"] += 1
    await trio.sleep(0.05)  # the database
    return {"id": user_id, "name": f"user {user_id}"}


@sq.cache(60, metrics=metrics)  # no key template: keyed on every argument
def exchange_rate(base: str, quote: str) -> float:
    origin_calls["exchange_rate"] += 1
    time.sleep(0.05)  # a blocking HTTP client: fine, a sync function runs in a worker thread
    return 1.08 if (base, quote) == ("EUR", "USD") else 1.0


@sq.cache(0.2, stale=60, key="report", metrics=metrics)  # fresh 0.2 s, then served stale
async def daily_report() -> str:
    origin_calls["daily_report"] += 1
    await trio.sleep(0.02)
    return f"report #{origin_calls['daily_report']}"


@sq.bg(0.2, key="feature-flags", metrics=metrics)  # refreshed every 0.2 s, from the first call on
async def feature_flags() -> dict[str, int]:
    origin_calls["feature_flags"] += 1
    return {"version": origin_calls["feature_flags"]}


async def main() -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get_user, 1)
    print(f"5 concurrent get_user(1): {origin_calls['get_user']} origin call")
    print(f"get_user(1) again: {await get_user(1)} (a hit)")
    await get_user.invalidate(1)
    await get_user(1)
    print(f"after get_user.invalidate(1): {origin_calls['get_user']} origin calls")

    rates = [await exchange_rate("EUR", "USD") for _ in range(3)]
    print(f"exchange_rate x3: {rates}, {origin_calls['exchange_rate']} origin call")

    print(f"daily_report(): {await daily_report()}")
    await trio.sleep(0.3)  # past its ttl: stale now
    print(f"0.3 s later: {await daily_report()} at once, refreshed behind the caller")
    await trio.sleep(0.2)
    print(f"0.2 s later: {await daily_report()}")

    print(f"feature_flags(): {await feature_flags()}")
    await trio.sleep(0.3)
    print(f"0.3 s later: {await feature_flags()}, refreshed in the background")

    print("metrics:")
    for name, stats in metrics.get_stats()["caches"].items():
        counts = ", ".join(
            f"{field} {stats[field]}"
            for field in ("hits", "stale_hits", "misses", "dedup_joins", "fetches")
        )
        refreshes = stats["background_refreshes"]["ok"]
        print(f"  {name.rsplit('.', 1)[-1]}: {counts}, background refreshes {refreshes}")


if __name__ == "__main__":
    trio.run(main)
