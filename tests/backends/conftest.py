"""The stores the conformance suite runs against, and the fixtures that build them.

To add a backend to the conformance suite, append ``(name, factory)`` to
``STORE_FACTORIES``.  A factory takes the test's ``request`` (for other
fixtures: ``request.getfixturevalue("redis_url")``) and ``tmp_path``, and
returns an async context manager that yields a :class:`StoreHarness` and
cleans up after.  Tests that advance time run under trio's ``autojump_clock``: a
store on trio's clock advances with ``trio.sleep``; a wall-clock store gets a
``ManualClock``; a store on real time (Redis) sets ``time_scale`` small,
``exact_clock=False``, and sleeps for real in ``advance`` (for example
``trio.to_thread.run_sync(time.sleep, seconds)``, which the mock clock does
not skip).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
import trio
import trio.testing
from moto import mock_aws

from backends import (
    ChainStorage,
    FileStorage,
    GCSStorage,
    InstrumentedStorage,
    MemoryStorage,
    S3Storage,
    SQLiteStorage,
)
from backends._redis import RedisStorage
from tests.backends.gcs_fake import FakeGCSClient
from tests.backends.harness import S3_BUCKET, ManualClock, RecordingMetrics, StoreHarness

StoreFactory = Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[StoreHarness]]


async def mock_sleep(seconds: float) -> None:
    """Sleep on trio's clock, which must be the autojump mock clock (else this would wait)."""
    if not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        raise RuntimeError("a test that advances time must request the autojump_clock fixture")
    await trio.sleep(seconds)


@asynccontextmanager
async def memory_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    """A ``MemoryStorage``, expiring on trio's (mock) clock."""
    async with MemoryStorage() as store:
        yield StoreHarness(store, mock_sleep)


@asynccontextmanager
async def file_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    """A ``FileStorage`` in ``tmp_path`` on a manual wall clock."""
    clock = ManualClock()
    async with FileStorage(tmp_path / "files", clock=clock) as store:
        yield StoreHarness(store, clock.advance)


@asynccontextmanager
async def sqlite_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    """A ``SQLiteStorage`` file in ``tmp_path`` on a manual wall clock."""
    clock = ManualClock()
    async with SQLiteStorage(tmp_path / "cache.db", clock=clock) as store:
        yield StoreHarness(store, clock.advance)


@pytest.fixture
def moto_s3() -> Iterator[Any]:
    """A boto3 S3 client on moto's in-process S3, with the test bucket made."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=S3_BUCKET)
        yield client


@asynccontextmanager
async def s3_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    """An ``S3Storage`` on moto, on a manual wall clock."""
    clock = ManualClock()
    client = request.getfixturevalue("moto_s3")
    async with S3Storage(S3_BUCKET, prefix="cache/", client=client, clock=clock) as store:
        yield StoreHarness(store, clock.advance)


@asynccontextmanager
async def gcs_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    """A ``GCSStorage`` on the in-memory GCS fake, on a manual wall clock."""
    clock = ManualClock()
    async with GCSStorage("bucket", prefix="cache/", client=FakeGCSClient(), clock=clock) as store:
        yield StoreHarness(store, clock.advance)


@asynccontextmanager
async def chain_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    """A ``ChainStorage`` of a ``MemoryStorage`` over a ``SQLiteStorage``, no TTL caps."""
    clock = ManualClock()

    async def advance(seconds: float) -> None:
        await mock_sleep(seconds)
        await clock.advance(seconds)

    top = MemoryStorage()
    bottom = SQLiteStorage(tmp_path / "chain.db", clock=clock)
    async with ChainStorage(top, bottom) as store:
        yield StoreHarness(store, advance)


@asynccontextmanager
async def instrumented_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    """An ``InstrumentedStorage`` around a ``MemoryStorage``."""
    async with InstrumentedStorage(MemoryStorage(), RecordingMetrics(), name="suite") as store:
        yield StoreHarness(store, mock_sleep)


# --- Redis: RedisStorage on the test's own redis-server (tests/redis_fixtures.py) ---------


@asynccontextmanager
async def redis_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    """A ``RedisStorage`` on this test's own redis-server; its TTLs run on real time."""
    url = request.getfixturevalue("redis_url")

    async def advance(seconds: float) -> None:
        await trio.to_thread.run_sync(time.sleep, seconds)

    # timeout=None: under the autojump clock a request's deadline would be jumped to
    # while the real reply is on its way.
    # time_scale 0.15: a 10-unit TTL is 1.5 s, so the 4-unit margins the TTL
    # specifications leave are 0.6 s of real time, enough for a loaded 2-core box.
    async with RedisStorage(url, timeout=None) as store:
        yield StoreHarness(store, advance, time_scale=0.15, exact_clock=False)


@asynccontextmanager
async def redis_cluster_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    """A ``RedisStorage`` on the session's Redis Cluster, under a prefix of this test's own."""
    url = request.getfixturevalue("redis_cluster_url")
    prefix = request.getfixturevalue("cluster_prefix")

    async def advance(seconds: float) -> None:
        await trio.to_thread.run_sync(time.sleep, seconds)

    async with RedisStorage(url, prefix=prefix, timeout=None) as store:
        yield StoreHarness(store, advance, time_scale=0.15, exact_clock=False)


# ---------------------------------------------------------------------------------------


STORE_FACTORIES: list[tuple[str, StoreFactory]] = [
    ("memory", memory_store),
    ("file", file_store),
    ("sqlite", sqlite_store),
    ("s3", s3_store),
    ("gcs", gcs_store),
    ("chain", chain_store),
    ("instrumented", instrumented_store),
    ("redis", redis_store),
    ("redis-cluster", redis_cluster_store),
]


@pytest.fixture(
    params=[factory for _, factory in STORE_FACTORIES], ids=[name for name, _ in STORE_FACTORIES]
)
async def store_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    """Each backend of ``STORE_FACTORIES`` in turn.

    A test that advances time must itself request ``autojump_clock``: pytest-trio
    takes the run's clock only from the test function's own arguments.
    """
    factory: StoreFactory = request.param
    async with factory(request, tmp_path) as harness:
        yield harness


@pytest.fixture
def store(store_harness: StoreHarness) -> Any:
    """The store under test."""
    return store_harness.store


@pytest.fixture
def advance(store_harness: StoreHarness) -> Callable[[float], Any]:
    """Move the store's clock forward by ``units * time_scale`` seconds."""

    async def advance_units(units: float) -> None:
        await store_harness.advance(units * store_harness.time_scale)

    return advance_units


@pytest.fixture
def units(store_harness: StoreHarness) -> Callable[[float], float]:
    """Turn a number of time units into seconds for the store under test."""
    return lambda count: count * store_harness.time_scale
