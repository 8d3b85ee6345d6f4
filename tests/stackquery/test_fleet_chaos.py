"""The fleet under load while Redis and the network misbehave, and while someone forges input.

Clients in this process and worker processes (``fleet_workers/``) share one
real redis-server, which is killed and restarted on its port, frozen with
SIGSTOP, cut off behind a half-open proxy, or fed forged messages, leases and
entries.  Through all of it: no caller gets an error, nothing hangs, a round
of concurrent fetches of a fresh key calls the origin once while Redis is
healthy (at most once per process while it is not), and every invalidation
reaches every process after recovery, or that process marks what it holds
stale.  Every wait is bounded; real processes force real time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import stackquery as sq
from backends import RedisStorage
from stackquery._keys import canonical_key
from stackquery.fleet._fleet import MAX_PENDING_MESSAGES
from tests.redis_server import RedisServer
from tests.stackquery.fleet_support import (
    DEADLINE,
    Counted,
    fleet,
    open_clients,
    raw_redis,
    wait_until,
)
from tests.stackquery.fleet_workers.harness import WorkerProcess, open_workers
from tests.tcp_proxy import open_tcp_proxy

pytestmark = pytest.mark.slow

CALLERS = 50
"""Concurrent callers of a round's key in each process."""


def origin_calls(workers: list[WorkerProcess], key: list[Any]) -> int:
    """How many times the workers' origin ran for ``key`` (their origin_started events)."""
    return sum(
        1 for worker in workers for event in worker.events("origin_started") if event["key"] == key
    )


async def burst(client: sq.QueryClient, options: sq.QueryOptions[Any], callers: int) -> list[Any]:
    """``callers`` concurrent fetches of ``options`` in ``client``; their results."""
    results: list[Any] = []

    async def call() -> None:
        results.append(await client.fetch_query(options))

    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(call)
    return results


async def round_of(
    workers: list[WorkerProcess], clients: list[sq.QueryClient], key: list[Any], origin: Counted
) -> list[Any]:
    """Every worker and every client fetches ``key`` with CALLERS callers at once; the values."""
    values: list[Any] = []

    async def in_worker(worker: WorkerProcess) -> None:
        reply = await worker.call("burst", key=key, callers=CALLERS)
        values.extend(value for value, _count in reply["values"])

    async def in_client(client: sq.QueryClient) -> None:
        values.extend(await burst(client, sq.QueryOptions(tuple(key), origin), CALLERS))

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            for worker in workers:
                nursery.start_soon(in_worker, worker)
            for client in clients:
                nursery.start_soon(in_client, client)
    return values


async def each(calls: list[Callable[[], Awaitable[Any]]]) -> None:
    """Run the calls concurrently and wait for all of them."""
    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(call)


def stale_or_invalidated(state: dict[str, Any] | None) -> bool:
    return state is not None and (state["is_stale"] or state["is_invalidated"])


def held_stale(client: sq.QueryClient, key: tuple[Any, ...]) -> bool:
    state = client.get_query_state(key)
    return state is not None and (state.is_stale or state.is_invalidated)


class TestRedisKilled:
    async def test_kill_9_and_restart_under_load(
        self, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        """Up: one origin call per round.  Killed: every caller served.  Back: stale, then once."""
        url = redis_server.url
        origin = Counted("c")
        async with (
            open_workers(url, 2, tmp_path, lease_time=1.0, delay=0.1) as workers,
            open_clients(url, 1, lease_time=1.0) as (client,),
        ):
            before = origin.calls
            await round_of(workers, [client], ["round", 1], origin)
            assert origin_calls(workers, ["round", 1]) + origin.calls - before == 1
            for worker in workers:
                await worker.call("fetch", key=["user", 1])
            await client.fetch_query(sq.QueryOptions(("user", 1), origin))

            redis_server.kill()
            before = origin.calls
            values = await round_of(workers, [client], ["round", 2], origin)
            assert len(values) >= 3
            assert 1 <= origin_calls(workers, ["round", 2]) + origin.calls - before <= 3
            await workers[0].call("invalidate", key=["user"])  # nobody can hear it

            redis_server.restart()
            for worker in workers:
                await worker.wait_stats(lambda s: s["connected"] and s["subscriptions"] == 2)
            await wait_until(lambda: fleet(client).subscriptions == 2 and fleet(client).connected)
            for worker in workers:
                state = (await worker.call("state", key=["user", 1]))["state"]
                assert stale_or_invalidated(state)
            assert held_stale(client, ("user", 1))

            before = origin.calls
            await round_of(workers, [client], ["round", 3], origin)
            assert origin_calls(workers, ["round", 3]) + origin.calls - before == 1
            await client.invalidate_queries(("round",))
            for worker in workers:
                await worker.wait_state(
                    ["round", 3], lambda s: s is not None and s["is_invalidated"]
                )


class TestRedisFrozen:
    async def test_sigstop_and_sigcont_under_load(self, redis_server: RedisServer) -> None:
        """Frozen: callers are served within the L2 and lease timeouts.  Thawed: all delivered."""
        url = redis_server.url
        origin = Counted("v")
        async with open_clients(url, 2, lease_time=1.0) as (a, b):
            await a.fetch_query(sq.QueryOptions(("user", 1), origin))
            await b.fetch_query(sq.QueryOptions(("user", 1), origin))
            redis_server.pause()
            try:
                with trio.fail_after(DEADLINE):
                    values = await burst(a, sq.QueryOptions(("cold", 1), origin), CALLERS)
                assert values == [values[0]] * CALLERS
                await a.invalidate_queries(("user",))
            finally:
                redis_server.resume()
            await wait_until(lambda: held_stale(b, ("user", 1)))
            before = origin.calls
            await round_of([], [a, b], ["round", 1], origin)
            assert origin.calls - before == 1

    async def test_messages_past_the_queue_bound_become_one_all_stale(
        self, redis_server: RedisServer
    ) -> None:
        """1,001 invalidations queued while frozen: B is told to take everything as stale."""
        origin = Counted("v")
        async with open_clients(redis_server.url, 2) as (a, b):
            await b.fetch_query(sq.QueryOptions(("user", 1), origin))
            redis_server.pause()
            try:
                for number in range(MAX_PENDING_MESSAGES + 1):
                    await a.invalidate_queries(("other", number))
            finally:
                redis_server.resume()
            await wait_until(lambda: held_stale(b, ("user", 1)))
            assert (fleet(a).overflows, fleet(b).subscriptions) == (1, 1)


class TestHalfOpen:
    async def test_a_black_holed_client_gets_its_invalidation_out_and_marks_all_stale(
        self, redis_server: RedisServer
    ) -> None:
        """A's connections vanish: its invalidation still reaches B; A resubscribes, all stale."""
        origin = Counted("v")
        async with open_tcp_proxy(redis_server.port) as proxy:
            proxied = f"redis://127.0.0.1:{proxy.port}/0"
            async with (
                open_clients(
                    redis_server.url,
                    1,
                    storage=lambda: RedisStorage(proxied, timeout=1.0, ping_interval=0.5),
                ) as (a,),
                open_clients(redis_server.url, 1) as (b,),
            ):
                for client in (a, b):
                    await client.fetch_query(sq.QueryOptions(("user", 1), origin))
                    await client.fetch_query(sq.QueryOptions(("team", 1), origin))
                proxy.black_hole()
                await a.invalidate_queries(("user",))
                await b.invalidate_queries(("team",))  # A's subscription is deaf: lost for A
                with trio.fail_after(DEADLINE):
                    assert isinstance(
                        await a.fetch_query(sq.QueryOptions(("cold", 1), origin)), str
                    )
                await wait_until(lambda: held_stale(b, ("user", 1)))
                await wait_until(lambda: fleet(a).subscriptions == 2 and fleet(a).connected)
                assert held_stale(a, ("team", 1))
                before = origin.calls
                await round_of([], [a, b], ["round", 1], origin)
                assert origin.calls - before == 1


class TestForgers:
    async def test_forged_messages_leases_and_entries_under_load(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        """A forger floods the channel, plants a lease and poisons an entry: rounds stay once."""
        forged_lease = ["leased", 1]
        poisoned = ["poisoned", 1]
        async with open_workers(redis_url, 2, tmp_path, lease_time=0.5, poll=0.05) as workers:
            redis = await raw_redis(redis_url)
            try:
                await redis.execute(
                    "SET", "sq:lease:" + canonical_key(tuple(forged_lease))[1], "forged"
                )
                year_3000 = sq.pack_entry(
                    {"n": -1}, data_updated_at=32503680000.0, serializer=sq.serializers.json
                )
                await redis.execute("SET", "sq:" + canonical_key(tuple(poisoned))[1], year_3000)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood, redis, "sq:events:db0")
                    for number in range(3):
                        await round_of(workers, [], ["round", number], Counted("unused"))
                        assert origin_calls(workers, ["round", number]) == 1
                    await round_of(workers, [], forged_lease, Counted("unused"))
                    assert origin_calls(workers, forged_lease) == 1
                    values = await round_of(workers, [], poisoned, Counted("unused"))
                    assert {value["n"] for value in values} <= {-1, 1}
                    for worker in workers:
                        await worker.wait_state(
                            poisoned, lambda s: s is not None and s["data"]["n"] != -1
                        )
                    assert origin_calls(workers, poisoned) == 1
                    nursery.cancel_scope.cancel()
            finally:
                await redis.aclose()
            stats = [await worker.stats() for worker in workers]
        assert all(s["rejected"] > 0 for s in stats)
        assert sum(s["foreign_leases"] for s in stats) >= 1


async def flood(redis: Any, channel: str) -> None:
    """Publish forged messages on ``channel`` until cancelled."""
    forged = [
        b"\x00garbage",
        b'{"n":"forger","op":"inv","p":"[\\"round\\"]","x":false,"k":[]}',
        b'{"n":"forger","op":"upd","k":[["[\\"round\\",1]",1e308]]}',
        b'{"n":"forger","op":"del","k":["not a key"]}',
        b'{"n":"forger","op":"later"}',
    ]
    while True:
        for message in forged:
            await redis.publish(channel, message)
            await trio.sleep(0.01)
