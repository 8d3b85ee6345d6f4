"""The fleet across real OS processes, each with its own trio.run and client, on one redis-server.

The workers are ``fleet_workers/fleet_worker.py``; their origin counts its calls
fleet-wide with ``INCR origin:<key>`` on the shared Redis, so "the origin ran
once" is read from Redis itself.  Every wait is bounded (see the harness).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from backends._redis_client import RedisClient
from tests.redis_server import RedisServer
from tests.stackquery.fleet_workers.harness import open_workers

pytestmark = pytest.mark.slow


async def origin_calls(url: str, key: list[Any]) -> int:
    """How many times the fleet's origin ran for ``key`` (the workers' INCR counter)."""
    async with RedisClient.from_url(url) as redis:
        value = await redis.execute("GET", b"origin:" + orjson.dumps(key))
    return int(value) if value is not None else 0


class TestSingleFlight:
    async def test_four_processes_of_250_callers_call_the_origin_once(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        """4 processes x 250 concurrent callers of one cold key: one origin call, one value."""
        key = ["report", 1]
        async with open_workers(redis_url, 4, tmp_path, delay=0.2) as workers:
            sent = [await worker.send("burst", key=key, callers=250) for worker in workers]
            replies = [await worker.reply(i) for worker, i in zip(workers, sent, strict=True)]
            stats = [await worker.stats() for worker in workers]
        assert await origin_calls(redis_url, key) == 1
        values = [reply["values"] for reply in replies]
        (value, _count) = values[0][0]
        assert value["n"] == 1
        assert values == [[[value, 250]]] * 4
        assert sum(s["leases_taken"] for s in stats) == 1
        assert sum(s["takeovers"] for s in stats) == 0

    async def test_a_killed_lease_holder_is_taken_over_after_its_lease_expires(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        """A live holder keeps its lease; SIGKILLed, another process fetches once it expires."""
        key = ["hang", 1]
        async with open_workers(redis_url, 2, tmp_path, lease_time=1.0, poll=0.05) as (a, b):
            a_fetch = await a.send("fetch", key=key)
            await a.event("origin_started")
            b_fetch = await b.send("fetch", key=key)
            await b.wait_stats(lambda s: s["leases_waited"] == 1)
            # 1.5 lease times: a holder that did not renew would have lost it.  (B's
            # wait ends by itself at 3 lease times: A must die, and its lease expire, first.)
            await trio.sleep(1.5)
            assert await origin_calls(redis_url, key) == 1
            assert (await b.stats())["takeovers"] == 0
            a.kill()
            reply = await b.reply(b_fetch, seconds=10.0)
            assert reply["data"] == {"n": 2, "pid": b.pid}
            assert reply["state"]["is_stale"] is False
            stats = await b.stats()
            assert (stats["leases_waited"], stats["takeovers"], stats["leases_taken"]) == (1, 1, 0)
            with pytest.raises(AssertionError, match=r"^worker w\d+ \(pid \d+\) ended"):
                await a.reply(a_fetch, seconds=10.0)
        assert await origin_calls(redis_url, key) == 2


class TestBroadcast:
    async def test_invalidating_in_a_refetches_for_the_observer_in_b(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        """B's observer gets the refetched value; A then holds it too without calling the origin."""
        key = ["user", 1]
        async with open_workers(redis_url, 2, tmp_path) as (a, b):
            first = (await a.call("fetch", key=key))["data"]
            assert (await b.call("fetch", key=key))["data"] == first
            await b.call("watch", key=key)
            seen = await b.event("observed")
            assert seen["state"]["data"] == first
            assert seen["state"]["is_stale"] is False
            assert (await a.call("invalidate", key=["user"]))["matched"] == 1
            refetched = await b.event("observed", lambda e: e["state"]["data"] != first)
            assert refetched["state"]["data"] == {"n": 2, "pid": b.pid}
            assert refetched["state"]["is_invalidated"] is False
            reply = await b.call("fetch", key=key)
            assert reply["data"] == {"n": 2, "pid": b.pid}
            await a.wait_state(key, lambda s: s is not None and s["data"]["n"] == 2)
            reply = await a.call("fetch", key=key)
            assert (reply["data"], reply["state"]["is_stale"]) == ({"n": 2, "pid": b.pid}, False)
        assert await origin_calls(redis_url, key) == 2

    async def test_invalidated_in_a_is_never_fresh_in_b(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        """After A invalidates, B serves its old value only as stale, and refetches it."""
        key = ["user", 2]
        async with open_workers(redis_url, 2, tmp_path) as (a, b):
            first = (await a.call("fetch", key=key))["data"]
            assert (await b.call("fetch", key=key))["data"] == first
            await a.call("invalidate", key=["user", 2])
            await b.wait_state(key, lambda s: s is not None and s["is_invalidated"])
            reply = await b.call("fetch", key=key)
            assert reply["data"] == first
            assert reply["state"]["is_stale"] is True
            state = await b.wait_state(key, lambda s: s is not None and s["data"] != first)
            assert state == {
                "status": "success",
                "fetch_status": "idle",
                "data": {"n": 2, "pid": b.pid},
                "is_stale": False,
                "is_invalidated": False,
            }


class TestRedisRestart:
    async def test_after_a_restart_no_process_serves_invalidated_data_as_fresh(
        self, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        """Redis down: each process runs alone; back: everything held is stale, broadcast works."""
        url = redis_server.url
        key = ["user", 3]
        async with open_workers(url, 2, tmp_path, lease_time=1.0) as (a, b):
            first = (await a.call("fetch", key=key))["data"]
            assert (await b.call("fetch", key=key))["data"] == first
            redis_server.kill()
            # Down: B's invalidation cannot reach A; both still work on their own.
            await b.call("invalidate", key=["user"])
            assert (await b.call("state", key=key))["state"]["is_invalidated"] is True
            alone = await a.call("fetch", key=["alone", 1])
            assert alone["data"] == {"n": None, "pid": a.pid}
            await a.wait_stats(lambda s: not s["connected"])
            redis_server.restart()
            for worker in (a, b):
                await worker.wait_stats(lambda s: s["connected"] and s["subscriptions"] == 2)
            # A never heard of the invalidation, but it cannot trust anything held before.
            reply = await a.call("fetch", key=key)
            assert reply["data"] == first
            assert reply["state"]["is_stale"] is True
            # And broadcast works again by itself.
            await b.call("fetch", key=["team", 1])
            await a.call("fetch", key=["team", 1])
            await b.call("invalidate", key=["team"])
            await a.wait_state(["team", 1], lambda s: s is not None and s["is_invalidated"])


class TestBackgroundReaders:
    # Readers following the writer by polling: tests/stackquery/test_bg_processes.py.
    async def test_a_reader_is_updated_by_the_writers_message(
        self, redis_url: str, tmp_path: Path
    ) -> None:
        """bg.read polling once an hour still gets bg.write's next value: the message brings it."""
        async with open_workers(redis_url, 2, tmp_path) as (a, b):
            await a.call("bg_write", key=["rates"], interval=0.3)
            first = (await b.call("bg_read", key=["rates"], interval=3600.0))["data"]
            with trio.fail_after(2):
                while (await b.call("bg_get", key=["rates"]))["data"] == first:  # noqa: ASYNC110
                    await trio.sleep(0.02)
