"""Which way to reach Redis from trio: measured side by side, same server, same run.

Paths compared (1 KB values, a private redis-server on a free port):

* ``redis-benchmark`` (C): the server's own figure, the reference.
* bare socket: hand-written RESP over ``trio.open_tcp_stream``, one request at
  a time (50 concurrent: one pipelined write of 50 GETs): the floor for trio.
* native: :class:`backends.RedisClient` (callers take turns writing and reading,
  no background task) and :class:`backends.RedisStorage` on top of it.
* task-driven: the same wire code with one writer task and one reader task
  (the textbook design), to show what the extra task switches cost.
* trio-asyncio: ``redis.asyncio`` through ``trio_asyncio.aio_as_trio``.
* thread: redis-py's sync client in ``trio.to_thread.run_sync``.

Run: ``python tests/benchmarks/redis_bridge.py [--rounds N]``.  Prints medians
(µs per GET, per key for MGET) and each path's ratio to redis-benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
import trio
import trio_asyncio  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backends._redis import RedisStorage
from backends._redis_client import RedisClient
from backends._resp import NOT_ENOUGH_DATA, RedisReply, new_reply_reader, pack_command
from tests.redis_server import RedisServer

VALUE = bytes(range(256)) * 4  # 1 KB
KEYS = [f"bench:{i}" for i in range(100)]
SEQUENTIAL_CALLS = 1000
SLOW_SEQUENTIAL_CALLS = 200
CONCURRENT_CALLERS = 50
CALLS_PER_CALLER = 20
MGET_CALLS = 100

Execute = Callable[..., Awaitable[Any]]


class TaskDrivenClient:
    """The same RESP code, with a writer task and a reader task (for comparison only)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._reader = new_reply_reader()
        self._unsent: list[_Slot] = []
        self._pending: deque[_Slot] = deque()
        self._writer_task: trio.lowlevel.Task | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_loop)
            nursery.start_soon(self._read_loop)
            task_status.started()

    async def execute(self, *args: Any) -> RedisReply:
        slot = _Slot(pack_command(args))
        self._unsent.append(slot)
        if self._writer_task is not None:
            task, self._writer_task = self._writer_task, None
            trio.lowlevel.reschedule(task)
        slot.task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return slot.reply

    async def _write_loop(self) -> None:
        while True:
            if not self._unsent:
                self._writer_task = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(_abort_parked)
                continue
            batch, self._unsent = self._unsent, []
            self._pending.extend(batch)
            await self._stream.send_all(b"".join(slot.payload for slot in batch))

    async def _read_loop(self) -> None:
        while True:
            self._reader.feed(await self._stream.receive_some(65536))
            while (reply := self._reader.gets()) is not NOT_ENOUGH_DATA:
                slot = self._pending.popleft()
                slot.reply = reply
                if slot.task is not None:
                    trio.lowlevel.reschedule(slot.task)


def _abort_parked(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.SUCCEEDED


class _Slot:
    __slots__ = ("payload", "reply", "task")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.reply: RedisReply = None
        self.task: trio.lowlevel.Task | None = None


class BareSocket:
    """One request at a time over a bare trio stream: the floor."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._reader = new_reply_reader()

    async def execute(self, *args: Any) -> RedisReply:
        await self._stream.send_all(pack_command(args))
        return await self._next_reply()

    async def get_50_pipelined(self, key: str) -> None:
        await self._stream.send_all(pack_command(("GET", key)) * CONCURRENT_CALLERS)
        for _ in range(CONCURRENT_CALLERS):
            await self._next_reply()

    async def _next_reply(self) -> RedisReply:
        while (reply := self._reader.gets()) is NOT_ENOUGH_DATA:
            self._reader.feed(await self._stream.receive_some(65536))
        result: RedisReply = reply
        return result


async def time_sequential(get: Execute, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        value = await get(KEYS[0])
    elapsed = time.perf_counter() - start
    assert value == VALUE
    return elapsed / calls * 1e6


async def time_concurrent(get: Execute) -> float:
    async def caller(key: str) -> None:
        for _ in range(CALLS_PER_CALLER):
            assert await get(key) == VALUE

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(CONCURRENT_CALLERS):
            nursery.start_soon(caller, KEYS[i])
    return (time.perf_counter() - start) / (CONCURRENT_CALLERS * CALLS_PER_CALLER) * 1e6


async def time_mget(mget: Execute, calls: int = MGET_CALLS) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        values = await mget(KEYS)
    elapsed = time.perf_counter() - start
    assert list(values) == [VALUE] * len(KEYS)
    return elapsed / (calls * len(KEYS)) * 1e6


async def measure_bare(url_port: int, results: dict[str, list[float]]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", url_port)
    async with stream:
        bare = BareSocket(stream)
        results["bare socket|seq"].append(
            await time_sequential(lambda key: bare.execute("GET", key), SEQUENTIAL_CALLS)
        )
        calls = SEQUENTIAL_CALLS // CONCURRENT_CALLERS
        start = time.perf_counter()
        for _ in range(calls):
            await bare.get_50_pipelined(KEYS[1])
        results["bare socket|c50"].append(
            (time.perf_counter() - start) / (calls * CONCURRENT_CALLERS) * 1e6
        )
        results["bare socket|mget"].append(
            await time_mget(lambda keys: bare.execute("MGET", *keys))
        )


async def measure_native(url: str, results: dict[str, list[float]]) -> None:
    async with RedisClient.from_url(url) as client:

        async def get(key: str) -> RedisReply:
            return await client.execute("GET", key)

        async def mget(keys: list[str]) -> RedisReply:
            return await client.execute("MGET", *keys)

        results["native RedisClient|seq"].append(await time_sequential(get, SEQUENTIAL_CALLS))
        results["native RedisClient|c50"].append(await time_concurrent(get))
        results["native RedisClient|mget"].append(await time_mget(mget))
    async with RedisStorage(url, prefix="") as store:
        results["RedisStorage (native)|seq"].append(
            await time_sequential(store.get, SEQUENTIAL_CALLS)
        )
        results["RedisStorage (native)|c50"].append(await time_concurrent(store.get))
        results["RedisStorage (native)|mget"].append(await time_mget(store.get_many))


async def measure_task_driven(port: int, results: dict[str, list[float]]) -> None:
    async with trio.open_nursery() as nursery:
        client = TaskDrivenClient(await trio.open_tcp_stream("127.0.0.1", port))
        await nursery.start(client.run)

        async def get(key: str) -> RedisReply:
            return await client.execute("GET", key)

        async def mget(keys: list[str]) -> RedisReply:
            return await client.execute("MGET", *keys)

        results["task-driven (writer+reader tasks)|seq"].append(
            await time_sequential(get, SEQUENTIAL_CALLS)
        )
        results["task-driven (writer+reader tasks)|c50"].append(await time_concurrent(get))
        results["task-driven (writer+reader tasks)|mget"].append(await time_mget(mget))
        nursery.cancel_scope.cancel()


async def measure_trio_asyncio(url: str, results: dict[str, list[float]]) -> None:
    async with trio_asyncio.open_loop():

        async def make() -> redis.asyncio.Redis:
            return redis.asyncio.Redis.from_url(url, max_connections=CONCURRENT_CALLERS)

        client = await trio_asyncio.aio_as_trio(make)()
        get = trio_asyncio.aio_as_trio(client.get)
        mget = trio_asyncio.aio_as_trio(client.mget)
        results["redis.asyncio via trio-asyncio|seq"].append(
            await time_sequential(get, SLOW_SEQUENTIAL_CALLS)
        )
        results["redis.asyncio via trio-asyncio|c50"].append(await time_concurrent(get))
        results["redis.asyncio via trio-asyncio|mget"].append(await time_mget(mget))
        async with RedisStorage(client, prefix="") as store:
            results["RedisStorage (trio-asyncio)|seq"].append(
                await time_sequential(store.get, SLOW_SEQUENTIAL_CALLS)
            )
        await trio_asyncio.aio_as_trio(client.aclose)()


async def measure_thread(url: str, results: dict[str, list[float]]) -> None:
    client = redis.Redis.from_url(url, max_connections=CONCURRENT_CALLERS)
    limiter = trio.CapacityLimiter(CONCURRENT_CALLERS)

    async def get(key: str) -> Any:
        return await trio.to_thread.run_sync(client.get, key, limiter=limiter)

    async def mget(keys: list[str]) -> Any:
        return await trio.to_thread.run_sync(client.mget, keys, limiter=limiter)

    results["redis-py sync in to_thread|seq"].append(
        await time_sequential(get, SLOW_SEQUENTIAL_CALLS)
    )
    results["redis-py sync in to_thread|c50"].append(await time_concurrent(get))
    results["redis-py sync in to_thread|mget"].append(await time_mget(mget))
    client.close()


def redis_benchmark(port: int, results: dict[str, list[float]]) -> None:
    """The C client's figures: µs per GET at 1 and 50 clients, per key of MGET 100."""

    def rps(*args: str) -> float:
        command = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "--csv", *args]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return float(out.strip().splitlines()[-1].split(",")[1].strip('"'))

    results["redis-benchmark (C)|seq"].append(
        1e6 / rps("-c", "1", "-n", "20000", "-t", "get", "-d", "1024")
    )
    results["redis-benchmark (C)|c50"].append(
        1e6 / rps("-c", "50", "-n", "50000", "-t", "get", "-d", "1024")
    )
    results["redis-benchmark (C)|mget"].append(
        1e6 / rps("-c", "1", "-n", "2000", "MGET", *KEYS) / 100
    )


async def one_round(
    server: RedisServer, results: dict[str, list[float]], round_number: int
) -> None:
    # The machine is shared and noisy: rotate the order so that no path is
    # always measured in the same slot of a round.
    steps: list[Callable[[], Awaitable[None]]] = [
        lambda: measure_bare(server.port, results),
        lambda: measure_native(server.url, results),
        lambda: measure_task_driven(server.port, results),
        lambda: measure_trio_asyncio(server.url, results),
        lambda: measure_thread(server.url, results),
    ]
    shift = round_number % len(steps)
    for step in steps[shift:] + steps[:shift]:
        await step()


def populate(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    client.mset({key: VALUE for key in KEYS})
    # redis-benchmark's GET reads this literal key (no -r): give it a 1 KB value.
    client.set("key:__rand_int__", VALUE)
    client.close()


def report(results: dict[str, list[float]]) -> None:
    columns = ("seq", "c50", "mget")
    order = [
        "redis-benchmark (C)",
        "bare socket",
        "native RedisClient",
        "RedisStorage (native)",
        "task-driven (writer+reader tasks)",
        "redis.asyncio via trio-asyncio",
        "RedisStorage (trio-asyncio)",
        "redis-py sync in to_thread",
    ]
    measured = {name.split("|")[0] for name in results}
    paths = [path for path in order if path in measured]
    medians = {name: statistics.median(values) for name, values in results.items()}
    reference = {column: medians[f"redis-benchmark (C)|{column}"] for column in columns}
    print()
    print("µs per GET (seq: one caller; c50: 50 concurrent callers) and per key of MGET 100;")
    print("medians of the rounds, (x) = ratio to redis-benchmark in the same column")
    print(f"{'path':40s} {'sequential GET':>18s} {'50 concurrent GETs':>20s} {'MGET of 100':>16s}")
    for path in paths:
        cells = []
        for column in columns:
            median = medians.get(f"{path}|{column}")
            if median is None:
                cells.append("—")
            else:
                cells.append(f"{median:7.2f} ({median / reference[column]:4.1f}x)")
        print(f"{path:40s} {cells[0]:>18s} {cells[1]:>20s} {cells[2]:>16s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    results: dict[str, list[float]] = defaultdict(list)
    with RedisServer() as server:
        populate(server)
        for round_number in range(1, rounds + 1):
            redis_benchmark(server.port, results)
            trio.run(one_round, server, results, round_number)
            print(f"round {round_number}/{rounds} done", file=sys.stderr)
    report(results)


if __name__ == "__main__":
    main()
