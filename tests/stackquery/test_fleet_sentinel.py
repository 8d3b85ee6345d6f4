"""Two QueryClients on ``redis+sentinel://`` while the master is killed under their load.

Real time (a failover cannot run on a mock clock), one deployment of a
master, a replica and three sentinels; every wait is a condition with a
deadline that fails naming what did not happen.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import stackquery as sq
from backends import RedisStorage
from stackquery.__main__ import main
from stackquery.cli._redis_invalidate import invalidate_redis
from tests.redis_sentinel import SentinelSetup, eventually, info_field
from tests.stackquery.fleet_support import fleet, open_clients, wait_until

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


async def test_bg_read_and_the_cli_reach_the_master_through_the_sentinels(
    sentinel_setup: SentinelSetup,
) -> None:
    """The sentinel URL works wherever a Redis URL does: bg.read's store, the CLI's ``--redis``."""
    url = sentinel_setup.url
    async with open_clients(url, 2) as (writer, reading):
        await writer.set_query_data(("bg", "rates"), "r1")
        await wait_until(lambda: writer.l2_statistics().pending_writes == 0)  # type: ignore[union-attr]
        reader = sq.bg.read("rates", interval=3600.0, store=RedisStorage(url), client=reading)
        assert await reader() == "r1"
        await writer.set_query_data(("bg", "rates"), "r2")
        with trio.fail_after(10):
            while await reader() != "r2":  # noqa: ASYNC110  (the message comes from Redis)
                await trio.sleep(0.005)
        await writer.fetch_query(sq.QueryOptions(("user", 1), origin_of("u")))
        await wait_until(lambda: writer.l2_statistics().pending_writes == 0)  # type: ignore[union-attr]
        report = await invalidate_redis(url, ['["user"]'], prefix="sq:")
        # Listeners: both clients and the bg reader.
        assert (report.store.invalidated, report.listeners) == (1, 3)
        await wait_until(lambda: writer.get_query_state(("user", 1)).is_invalidated)  # type: ignore[union-attr]
        # The command line (its own trio.run, in a thread) connects the same way.
        argv = ["invalidate", "--redis", url, '["nothing"]']
        assert await trio.to_thread.run_sync(main, argv) == 0


def origin_of(value: str) -> Any:
    async def origin() -> str:
        await trio.lowlevel.checkpoint()
        return value

    return origin
