"""Helpers for the in-process fleet tests: several clients in one trio.run on one real Redis.

Each client gets its own ``RedisStorage`` (so its own connections), as a
separate process would.  Messages travel through a real redis-server, so these
tests run on the real clock; every wait is a condition with a deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

import stackquery as sq
from backends._redis import RedisStorage
from backends._redis_client import RedisClient
from stackquery.fleet._counters import FleetStatistics

DEADLINE = 10.0
"""Seconds any awaited condition may take before the test fails."""


def fleet_config(url: str, **settings: Any) -> sq.QueryClientConfig:
    """A client config on ``url``: fresh for a minute, short L2 timeouts."""
    values: dict[str, Any] = {
        "storage": RedisStorage(url, timeout=2.0),
        "stale_time": 60.0,
        "l2_timeout": 1.0,
        "shutdown_timeout": 1.0,
        "retry": 0,
    }
    values.update(settings)
    return sq.QueryClientConfig(**values)


@asynccontextmanager
async def open_clients(
    url: str, count: int, **settings: Any
) -> AsyncIterator[list[sq.QueryClient]]:
    """Open ``count`` clients on ``url``, all subscribed to the fleet channel.

    ``storage=`` may be a function that makes each client's store.
    """
    make_storage = settings.pop("storage", None)
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            if make_storage is not None:
                settings["storage"] = make_storage()
            config = fleet_config(url, **settings)
            clients.append(await stack.enter_async_context(sq.open_query_client(config)))
        for client in clients:
            if settings.get("broadcast") is not False:
                await wait_until(lambda c=client: fleet(c).connected)
        yield clients


def fleet(client: sq.QueryClient) -> FleetStatistics:
    """The client's fleet statistics (it must have a fleet)."""
    stats = client.fleet_statistics()
    assert stats is not None
    return stats


async def wait_until(condition: Callable[[], bool], seconds: float = DEADLINE) -> None:
    """Return once ``condition()`` holds; fail the test after ``seconds``."""
    with trio.fail_after(seconds):
        # Polled: the state changes when a message comes back from the real
        # server, and no event marks that moment.
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.002)


async def raw_redis(url: str) -> RedisClient:
    """A plain Redis client for the test's own commands (close it with ``aclose``)."""
    return RedisClient.from_url(url, timeout=2.0)


async def redis_command(url: str, *args: Any) -> Any:
    """Run one command on ``url`` through a connection of its own, as another tool would."""
    redis = await raw_redis(url)
    try:
        return await redis.execute(*args)
    finally:
        await redis.aclose()


class Gate:
    """A ``query_fn`` that waits for the test to open it; returns its label and call number."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.calls = 0
        self.started = trio.Event()
        self.opened = trio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        await self.opened.wait()
        return f"{self.label}{self.calls}"

    def open(self) -> None:
        self.opened.set()


class Counted:
    """A ``query_fn`` that returns at once: its label and call number."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        return f"{self.label}{self.calls}"
