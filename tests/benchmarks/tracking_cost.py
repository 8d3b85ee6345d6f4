"""What ``redis_tracking`` costs: extra Redis traffic per write, tracking on vs off.

Two QueryClients (as two processes would be: each its own connections) on a
private redis-server (``--cluster``: a private 3-master cluster, no replicas)
both hold the same 50 keys; one of them writes each key ``--writes`` times
with ``set_query_data`` (the other learns of each write from the fleet's
update message, as before).  Counted once everything landed:

* commands the servers ran per write (``INFO commandstats``, all commands,
  summed over the masters);
* L2 reads per write by the writer and by the other client;
* invalidation messages heard, keys checked against L2, keys marked stale;
* how long opening the two clients took (their subscriptions: on a cluster
  with tracking, one per master each).

Off and on alternate, ``--rounds`` times; each figure is the median, with
the smallest and largest in brackets.

Run: ``python tests/benchmarks/tracking_cost.py [--writes N] [--rounds N] [--cluster]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import stackquery as sq
from tests.redis_cluster import RedisCluster
from tests.redis_sentinel import command
from tests.redis_server import RedisServer
from tests.stackquery.fleet_support import fleet, open_clients, wait_until

KEYS = 50


def server_commands(ports: Sequence[int]) -> int:
    total = 0
    for port in ports:
        for line in command(port, "INFO", "commandstats").decode().splitlines():
            if line.startswith("cmdstat_"):
                total += int(line.split("calls=")[1].split(",")[0])
    return total


def l2(client: sq.QueryClient) -> Any:
    stats = client.l2_statistics()
    assert stats is not None
    return stats


async def measure(
    url: str, ports: Sequence[int], writes: int, *, tracking: bool
) -> dict[str, float]:
    for port in ports:
        command(port, "FLUSHALL")

    async def origin() -> str:
        await trio.lowlevel.checkpoint()
        return "v"

    opening = time.perf_counter()
    async with open_clients(url, 2, redis_tracking=tracking) as (writer, other):
        opened = time.perf_counter() - opening
        for n in range(KEYS):
            await writer.fetch_query(sq.QueryOptions(("k", n), origin))
            await other.fetch_query(sq.QueryOptions(("k", n), origin))
        await wait_until(lambda: l2(writer).pending_writes == 0)
        before = server_commands(ports)
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
            "server commands per landed write": (server_commands(ports) - before) / landed,
            "writer's L2 reads per landed write": (l2(writer).reads - reads[0]) / landed,
            "other client's L2 reads per landed write": (l2(other).reads - reads[1]) / landed,
            "keys heard (both clients)": stats_w.keys_invalidated + stats_o.keys_invalidated,
            "keys checked against L2 (both)": stats_w.invalidations_checked
            + stats_o.invalidations_checked,
            "keys marked stale (both)": stats_w.invalidations_stale + stats_o.invalidations_stale,
            "ms per set_query_data (all landed)": elapsed * 1000 / total,
            "ms to open both clients (subscribed)": opened * 1000,
        }


async def run_rounds(url: str, ports: Sequence[int], writes: int, rounds: int) -> None:
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for round_ in range(rounds):
        # Alternate which goes first, so that drift favours neither.
        for tracking in (False, True) if round_ % 2 == 0 else (True, False):
            results[tracking].append(await measure(url, ports, writes, tracking=tracking))
    where = f"{len(ports)}-master cluster" if len(ports) > 1 else "one redis-server"
    print(
        f"{KEYS} keys held by two clients on {where}, {writes} rounds of set_query_data "
        f"by one of them; median [min-max] of {rounds} interleaved runs"
    )
    print(f"  {'':<40} {'tracking off':>22} {'tracking on':>22}")
    for name in results[False][0]:
        cells = []
        for tracking in (False, True):
            values = [result[name] for result in results[tracking]]
            median = statistics.median(values)
            cells.append(f"{median:.2f} [{min(values):.2f}-{max(values):.2f}]")
        print(f"  {name:<40} {cells[0]:>22} {cells[1]:>22}")


def main(writes: int, rounds: int, cluster: bool) -> None:
    if cluster:
        with RedisCluster(masters=3, replicas=0) as nodes:
            trio.run(run_rounds, nodes.url, nodes.masters_ports(), writes, rounds)
    else:
        with RedisServer() as server:
            trio.run(run_rounds, server.url, [server.port], writes, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cluster", action="store_true", help="on a 3-master cluster")
    args = parser.parse_args()
    main(args.writes, args.rounds, args.cluster)
