"""What ``redis_tracking`` costs: extra Redis traffic per write, tracking on vs off.

Two QueryClients (as two processes would be: each its own connections) on a
private redis-server both hold the same 50 keys; one of them writes each key
``--writes`` times with ``set_query_data`` (the other learns of each write
from the fleet's update message, as before).  Counted once everything landed:

* commands the server ran per write (``INFO commandstats``, all commands);
* L2 reads per write by the writer and by the other client;
* invalidation messages heard, keys checked against L2, keys marked stale.

Run: ``python tests/benchmarks/tracking_cost.py [--writes N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import stackquery as sq
from tests.redis_sentinel import command
from tests.redis_server import RedisServer
from tests.stackquery.fleet_support import fleet, open_clients, wait_until

KEYS = 50


def server_commands(port: int) -> int:
    total = 0
    for line in command(port, "INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_"):
            total += int(line.split("calls=")[1].split(",")[0])
    return total


def l2(client: sq.QueryClient) -> Any:
    stats = client.l2_statistics()
    assert stats is not None
    return stats


async def measure(server: RedisServer, writes: int, *, tracking: bool) -> dict[str, float]:
    command(server.port, "FLUSHALL")

    async def origin() -> str:
        await trio.lowlevel.checkpoint()
        return "v"

    async with open_clients(server.url, 2, redis_tracking=tracking) as (writer, other):
        for n in range(KEYS):
            await writer.fetch_query(sq.QueryOptions(("k", n), origin))
            await other.fetch_query(sq.QueryOptions(("k", n), origin))
        await wait_until(lambda: l2(writer).pending_writes == 0)
        before = server_commands(server.port)
        reads = (l2(writer).reads, l2(other).reads)
        started = time.perf_counter()
        for round_ in range(writes):
            for n in range(KEYS):
                await writer.set_query_data(("k", n), f"{round_}")
        last = f"{writes - 1}"
        await wait_until(lambda: all(other.get_query_data(("k", n)) == last for n in range(KEYS)))
        await wait_until(lambda: l2(writer).pending_writes == 0)
        landed = l2(writer).writes
        elapsed = time.perf_counter() - started
        if tracking:
            await wait_until(lambda: fleet(other).keys_invalidated >= landed)
        total = writes * KEYS
        stats_w, stats_o = fleet(writer), fleet(other)
        return {
            "entry writes that landed (coalesced)": landed,
            "server commands per landed write": (server_commands(server.port) - before) / landed,
            "writer's L2 reads per landed write": (l2(writer).reads - reads[0]) / landed,
            "other client's L2 reads per landed write": (l2(other).reads - reads[1]) / landed,
            "keys heard (both clients)": stats_w.keys_invalidated + stats_o.keys_invalidated,
            "keys checked against L2 (both)": stats_w.invalidations_checked
            + stats_o.invalidations_checked,
            "keys marked stale (both)": stats_w.invalidations_stale + stats_o.invalidations_stale,
            "ms per set_query_data (all landed)": elapsed * 1000 / total,
        }


async def main(writes: int) -> None:
    with RedisServer() as server:
        off = await measure(server, writes, tracking=False)
        on = await measure(server, writes, tracking=True)
    print(f"{KEYS} keys held by two clients, {writes} rounds of set_query_data by one of them")
    print(f"  {'':<44} {'tracking off':>13} {'tracking on':>12}")
    for name in off:
        print(f"  {name:<44} {off[name]:13.2f} {on[name]:12.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=20)
    trio.run(main, parser.parse_args().writes)
