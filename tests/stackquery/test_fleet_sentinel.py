"""Two QueryClients on ``redis+sentinel://`` while the master is killed under their load.

Real time (a failover cannot run on a mock clock), one deployment of a
master, a replica and three sentinels; every wait is a condition with a
deadline that fails naming what did not happen.
"""

from __future__ import annotations

import pytest
import trio

import stackquery as sq
from backends import RedisStorage
from tests.redis_sentinel import SentinelSetup, eventually, info_field
from tests.stackquery.fleet_support import fleet, open_clients

pytestmark = pytest.mark.slow

WRITES_RESUME_WITHIN = 5.0
"""Seconds after the replica's promotion by which writes must land on it (the issue's bound)."""


def set_calls(port: int) -> int:
    """How many SETs the server at ``port`` ran since it started."""
    stat = info_field(port, "commandstats", "cmdstat_set") or "calls=0,"
    return int(stat.split(",")[0].removeprefix("calls="))


async def test_killing_the_master_under_load_loses_no_caller_and_never_writes_to_the_old_one(
    sentinel_setup: SentinelSetup,
) -> None:
    """Kill -9 the master while two clients read and write.

    * no caller sees an error (L2 failures are counted, the origin answers);
    * writes land on the promoted replica within 5 s of its promotion;
    * the fleet (subscription, leases, announcements) is on the new master;
    * the old master, back and demoted to a replica, never hears from us
      (no ROLE check ever reached it: we never even connected).
    """
    setup = sentinel_setup
    old, new = setup.master, setup.replica
    assert new is not None
    rounds = [0, 0]
    errors: list[BaseException] = []

    async def load(client: sq.QueryClient, index: int) -> None:
        while True:
            n = rounds[index]
            try:
                await client.set_query_data(("written", index), n)
                fetched = await client.fetch_query(
                    sq.QueryOptions(("read", index, n), lambda n=n: origin(n))
                )
                assert fetched == n
            except Exception as exc:  # the assertion below names it
                errors.append(exc)
            rounds[index] += 1
            await trio.sleep(0.005)

    async def origin(n: int) -> int:
        await trio.lowlevel.checkpoint()
        return n

    def storage() -> RedisStorage:
        return RedisStorage(setup.url, timeout=2.0)

    async with (
        open_clients(setup.url, 2, storage=storage) as clients,
        trio.open_nursery() as nursery,
    ):
        for index, client in enumerate(clients):
            nursery.start_soon(load, client, index)
        await eventually("the first rounds", lambda: min(rounds) > 20, 5)
        old.kill()
        await eventually("the replica's promotion", lambda: setup.master_port() == new.port, 15)
        promoted_with = await trio.to_thread.run_sync(set_calls, new.port)
        await eventually(
            "writes landing on the new master",
            lambda: set_calls(new.port) > promoted_with + 10,
            WRITES_RESUME_WITHIN,
        )
        await eventually(
            "both fleets resubscribed on the new master",
            lambda: all(fleet(client).connected for client in clients),
            5,
        )
        await trio.to_thread.run_sync(old.restart)
        await eventually(
            "the old master's demotion to a replica",
            lambda: info_field(old.port, "replication", "role") == "slave",
            20,
        )
        before = list(rounds)
        await eventually(
            "more rounds after the demotion",
            lambda: min(a - b for a, b in zip(rounds, before, strict=True)) > 20,
            5,
        )
        nursery.cancel_scope.cancel()
    assert errors == []
    stats = await trio.to_thread.run_sync(info_field, old.port, "commandstats", "cmdstat_role")
    assert stats is None, f"a client of ours connected to the old master: {stats}"
    for client in clients:
        fleet_stats = fleet(client)
        assert fleet_stats.subscriptions >= 2  # the first, and one on the new master
