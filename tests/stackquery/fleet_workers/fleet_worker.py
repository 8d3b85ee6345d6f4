"""One process of a fleet test: a query client on a shared Redis, driven over stdin/stdout.

Run as ``python fleet_worker.py --redis URL [options]``.  The worker opens a
``QueryClient`` whose L2 is a ``RedisStorage`` on ``URL`` (so broadcast and
single flight are on), waits for its pub/sub subscription, and prints
``{"event": "ready", "pid": ...}``.  Then it reads one JSON command per line
on stdin, runs each in its own task (a slow ``fetch`` never blocks a
``stats``), and prints one JSON line per reply (``{"id": ..., ...}``) or
event (``{"event": ...}``).  The whole run is bounded by ``--timeout``: past
it the worker exits with status 3, so a fleet bug never hangs a test run.

The origin (``query_fn``) of key ``K`` counts its calls fleet-wide with
``INCR origin:<K>`` on the same Redis, prints ``origin_started``, sleeps
``--delay`` seconds and returns ``{"n": <count>, "pid": <pid>}``.  While
Redis is unreachable it still answers, with ``"n": null``.  A key whose
first element is ``"hang"`` makes the fleet's first origin call never
return (the lease holder that a test kills).

Commands (``key`` is a JSON list, turned into a tuple):

* ``fetch`` ``key``: ``fetch_query``; replies ``data`` and the key's ``state`` after.
* ``burst`` ``key`` ``callers``: that many concurrent ``fetch_query`` calls;
  replies the distinct results (``values``) and how many callers got each.
* ``invalidate`` ``key``: ``invalidate_queries`` (prefix match); replies ``matched``.
* ``state`` ``key``: the key's state in L1 (``null`` when absent).
* ``watch`` ``key``: start observing; every state seen is an ``observed`` event.
* ``bg_write`` ``key`` ``interval``: define a ``bg.write`` on ``key[0]`` (its value
  counts its refreshes with ``INCR bg:<key>``) and call it; replies ``data``.
* ``bg_read`` ``key`` ``interval``: define a ``bg.read`` of ``key[0]`` and call it.
* ``bg_get`` ``key``: call the ``bg`` function defined on ``key[0]``.
* ``stats``: the fleet's and L2's statistics.
* ``exit``: close the client and exit 0.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import stackquery as sq
from backends import StorageError
from backends._redis import RedisStorage
from backends._redis_client import RedisClient
from backends._redis_cluster import RedisClusterClient, redis_client_from_url

EXIT_TIMEOUT = 3


def emit(message: dict[str, Any]) -> None:
    """Print one JSON line and flush it (the test reads lines as they come)."""
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.buffer.flush()


def state_json(state: sq.QueryState[Any] | None) -> dict[str, Any] | None:
    """The parts of a state the tests check."""
    if state is None:
        return None
    return {
        "status": state.status.value,
        "fetch_status": state.fetch_status.value,
        "data": state.data,
        "is_stale": state.is_stale,
        "is_invalidated": state.is_invalidated,
    }


class Worker:
    """The query client of this process and the commands that drive it."""

    def __init__(
        self,
        args: argparse.Namespace,
        client: sq.QueryClient,
        redis: RedisClient | RedisClusterClient,
    ):
        self.args = args
        self.client = client
        self.redis = redis
        self.pid = os.getpid()
        self.nursery: trio.Nursery | None = None
        self.bg: dict[str, Any] = {}

    def options(self, key: list[Any]) -> sq.QueryOptions[Any]:
        query_key = tuple(key)
        stale_time = self.args.stale_time

        async def origin() -> dict[str, Any]:
            try:
                with trio.fail_after(1.0):
                    count = await self.redis.execute("INCR", f"origin:{orjson.dumps(key).decode()}")
            except (StorageError, trio.TooSlowError):
                count = None
            emit({"event": "origin_started", "key": key, "n": count})
            if key[:1] == ["hang"] and count == 1:
                await trio.sleep_forever()
            await trio.sleep(self.args.delay)
            return {"n": count, "pid": self.pid}

        return sq.QueryOptions(query_key, origin, stale_time=stale_time, retry=0)

    async def command(self, message: dict[str, Any]) -> None:
        op = message["op"]
        reply: dict[str, Any] = {"id": message["id"]}
        key = message.get("key")
        if op == "fetch":
            reply["data"] = await self.client.fetch_query(self.options(key))
            reply["state"] = state_json(self.client.get_query_state(tuple(key)))
        elif op == "burst":
            results: Counter[bytes] = Counter()
            options = self.options(key)

            async def call() -> None:
                results[orjson.dumps(await self.client.fetch_query(options))] += 1

            async with trio.open_nursery() as nursery:
                for _ in range(message["callers"]):
                    nursery.start_soon(call)
            reply["values"] = [[orjson.loads(v), n] for v, n in sorted(results.items())]
        elif op == "invalidate":
            reply["matched"] = await self.client.invalidate_queries(tuple(key))
        elif op == "state":
            reply["state"] = state_json(self.client.get_query_state(tuple(key)))
        elif op == "watch":
            ready = trio.Event()
            assert self.nursery is not None
            self.nursery.start_soon(self.watch, key, ready)
            await ready.wait()
        elif op == "bg_write":
            writer = self.bg_writer(key[0], message["interval"])
            self.bg[key[0]] = writer
            reply["data"] = await writer()
        elif op == "bg_read":
            reader = sq.bg.read(
                key[0], interval=message["interval"], store=RedisStorage(self.args.redis)
            )
            self.bg[key[0]] = reader
            reply["data"] = await reader()
        elif op == "bg_get":
            reply["data"] = await self.bg[key[0]]()
        elif op == "stats":
            fleet = self.client.fleet_statistics()
            l2 = self.client.l2_statistics()
            assert fleet is not None and l2 is not None
            reply["fleet"] = attrs.asdict(fleet)
            reply["l2_errors"] = l2.errors
        elif op == "exit":
            assert self.nursery is not None
            self.nursery.cancel_scope.cancel()
        else:
            reply["error"] = f"unknown op {op!r}"
        emit(reply)

    def bg_writer(self, key: str, interval: float) -> Any:
        """A ``bg.write`` function whose value counts its refreshes fleet-wide."""

        @sq.bg.write(interval, key=key, store=RedisStorage(self.args.redis))
        async def refresh() -> dict[str, Any]:
            count = await self.redis.execute("INCR", f"bg:{key}")
            return {"n": count, "pid": self.pid}

        return refresh

    async def watch(self, key: list[Any], ready: trio.Event) -> None:
        observer = self.client.watch(self.options(key), notify_on="all")
        async with observer.updates() as states:
            ready.set()
            async for state in states:
                emit({"event": "observed", "key": key, "state": state_json(state)})

    async def serve(self) -> None:
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            emit({"event": "ready", "pid": self.pid})
            while True:
                chunk = await stdin.receive_some()
                if not chunk:
                    nursery.cancel_scope.cancel()
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        nursery.start_soon(self.command, orjson.loads(line))


async def run(args: argparse.Namespace) -> int:
    config = sq.QueryClientConfig(
        storage=RedisStorage(args.redis, timeout=2.0),
        stale_time=args.stale_time,
        lease_time=args.lease_time,
        lease_poll_interval=args.poll,
        single_flight=args.single_flight,
        l2_timeout=1.0,
        shutdown_timeout=1.0,
    )
    with trio.move_on_after(args.timeout) as deadline:
        async with (
            redis_client_from_url(args.redis, timeout=1.0) as redis,
            sq.open_query_client(config) as client,
        ):
            with trio.fail_after(10):
                while True:
                    fleet = client.fleet_statistics()
                    if fleet is not None and fleet.connected:
                        break
                    await trio.sleep(0.005)
            await Worker(args, client, redis).serve()
    return EXIT_TIMEOUT if deadline.cancelled_caught else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="the shared redis URL")
    parser.add_argument("--lease-time", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=0.25, help="lease_poll_interval")
    parser.add_argument("--stale-time", type=float, default=60.0)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per origin call")
    parser.add_argument(
        "--single-flight", choices=("on", "off"), default="on", help="fleet-wide single flight"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before giving up")
    args = parser.parse_args()
    args.single_flight = args.single_flight == "on"
    if args.stale_time < 0:
        args.stale_time = math.inf
    return trio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
