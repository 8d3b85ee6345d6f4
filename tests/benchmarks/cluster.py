"""RedisStorage on Redis Cluster: throughput of 1 vs 3 masters, and failover time under load.

Starts its own servers on free loopback ports (never the machine's Redis):

* throughput: 50 concurrent callers doing ``get`` (1 KB values, 3,000 keys)
  and 10 callers doing ``get_many`` of 100 keys, through one
  ``RedisStorage``, against a plain redis-server, a 1-master cluster and a
  3-master cluster (no replicas, so every server does the same work).  The
  client and every server share this machine's cores: on 2 cores three
  masters cannot go three times as fast, they mostly show what routing costs.
* failover: 3 masters with a replica each (``cluster-node-timeout`` 1000 ms),
  20 callers writing and reading back; a master is SIGKILLed, then (on a new
  cluster) failed over by ``CLUSTER FAILOVER``.  Printed: the longest single
  call (what a caller waited), how long writes to the lost master's slots
  stalled, errors seen by callers (must be 0) and acknowledged writes lost
  (must be 0).

Run: ``python tests/benchmarks/cluster.py [--rounds N]`` (rounds of the
throughput part, alternating the three set-ups; the best and the median printed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backends._cluster_slots import key_slot
from backends._redis import RedisStorage
from tests.redis_cluster import RedisCluster, command, info
from tests.redis_server import RedisServer

VALUE = b"x" * 1024
KEYS = 3000
CALLERS = 50
BATCH_CALLERS = 10
BATCH = 100
SECONDS = 2.0


async def throughput(url: str) -> tuple[float, float]:
    """(get calls/s, get_many keys/s) through one RedisStorage on ``url``."""
    async with RedisStorage(url, prefix="bench:") as store:
        names = [f"k{i}" for i in range(KEYS)]
        await store.set_many(dict.fromkeys(names, VALUE))
        count = 0

        async def getter(offset: int, until: float) -> None:
            nonlocal count
            i = offset
            while trio.current_time() < until:
                await store.get(names[i % KEYS])
                i += 7
                count += 1

        until = trio.current_time() + SECONDS
        async with trio.open_nursery() as nursery:
            for caller in range(CALLERS):
                nursery.start_soon(getter, caller, until)
        gets = count / SECONDS
        count = 0

        async def batcher(offset: int, until: float) -> None:
            nonlocal count
            i = offset
            while trio.current_time() < until:
                start = (i * BATCH) % (KEYS - BATCH)
                await store.get_many(names[start : start + BATCH])
                i += 1
                count += BATCH

        until = trio.current_time() + SECONDS
        async with trio.open_nursery() as nursery:
            for caller in range(BATCH_CALLERS):
                nursery.start_soon(batcher, caller * 3, until)
        return gets, count / SECONDS


async def failover_under_load(cluster: RedisCluster, how: str) -> dict[str, float]:
    """Kill (``how="kill"``) or fail over (``"failover"``) a master under load; what callers saw."""
    acked: dict[str, int] = {}
    errors = 0
    longest = 0.0
    stalled_from: float | None = None
    stalled = 0.0
    async with RedisStorage(cluster.url, prefix="fo:", timeout=10.0) as store:
        names = [f"k{i}" for i in range(200)]
        master = cluster.owner_of(key_slot("fo:k0"))
        lost_slots = {
            key_slot("fo:" + n) for n in names if cluster.owner_of(key_slot("fo:" + n)) == master
        }
        replica = cluster.replica_of(master)
        stop = trio.Event()

        async def caller(index: int) -> None:
            nonlocal errors, longest, stalled_from, stalled
            version = 0
            while not stop.is_set():
                version += 1
                name = names[(index + 20 * version) % len(names)]
                start = time.monotonic()
                try:
                    await store.set(name, b"%d" % version)
                    acked[name] = version
                    await store.get(name)
                except Exception:
                    errors += 1
                took = time.monotonic() - start
                longest = max(longest, took)
                if key_slot("fo:" + name) in lost_slots and took > 0.1:
                    stalled = max(stalled, took)

        async with trio.open_nursery() as nursery:
            for index in range(20):
                nursery.start_soon(caller, index)
            await trio.sleep(0.5)
            began = time.monotonic()
            if how == "kill":
                cluster.node(master).kill()
            else:
                await trio.to_thread.run_sync(command, replica, "CLUSTER", "FAILOVER")
            # Another process's state: nothing to wait on but polling it.
            while info(replica, "replication")["role"] != "master":  # noqa: ASYNC110
                await trio.sleep(0.01)
            promoted = time.monotonic() - began
            await trio.sleep(1.0)
            stop.set()
        values = await store.get_many(sorted(acked))
    lost = sum(
        value != b"%d" % acked[name] for name, value in zip(sorted(acked), values, strict=True)
    )
    return {
        "replica promoted after (s)": promoted,
        "longest call (s)": longest,
        "writes to its slots stalled (s)": stalled,
        "caller errors": errors,
        "acknowledged writes lost": lost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds

    results: dict[str, list[tuple[float, float]]] = {}
    plain = "plain redis-server (RedisClient)"
    with (
        RedisServer() as single,
        RedisCluster(masters=1, replicas=0) as one,
        RedisCluster(masters=3, replicas=0) as three,
    ):
        set_ups = {plain: single.url, "cluster, 1 master": one.url, "cluster, 3 masters": three.url}
        for _ in range(rounds):  # alternating, so that a busy moment hits every set-up
            for name, url in set_ups.items():
                results.setdefault(name, []).append(trio.run(throughput, url))
    print(
        f"throughput, {CALLERS} callers of get / {BATCH_CALLERS} of get_many({BATCH}), "
        f"1 KB values; best of {rounds} rounds (median in brackets: this box is shared)"
    )
    print(f"{'':34} {'get/s':>18} {'µs/get':>14} {'get_many keys/s':>22}")
    for name, runs in results.items():
        gets = [run[0] for run in runs]
        keys = [run[1] for run in runs]
        best, median = max(gets), statistics.median(gets)
        print(
            f"{name:34} {best:8,.0f} ({median:7,.0f}) {1e6 / best:5.1f} ({1e6 / median:5.1f})"
            f" {max(keys):10,.0f} ({statistics.median(keys):9,.0f})"
        )

    for how in ("kill", "failover"):
        with RedisCluster(masters=3, replicas=1) as cluster:
            figures = trio.run(failover_under_load, cluster, how)
        title = "SIGKILL a master" if how == "kill" else "CLUSTER FAILOVER"
        print(f"\n{title}, 20 callers writing and reading back (cluster-node-timeout 1000 ms)")
        for name, value in figures.items():
            print(
                f"  {name:34} {value:.2f}" if isinstance(value, float) else f"  {name:34} {value}"
            )


if __name__ == "__main__":
    main()
