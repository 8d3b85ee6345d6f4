"""Test doubles and the store harness shared by the backends tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from backends import StorageError

S3_BUCKET = "stackquery-tests"
"""The bucket the ``moto_s3`` fixture makes."""


@attrs.frozen
class StoreHarness:
    """A store under test and how to move the clock its TTLs follow."""

    store: Any
    """The store (any ``StorageBackend``; this package's stores have the whole API)."""
    advance: Callable[[float], Awaitable[None]]
    """Move the store's clock forward by this many seconds (times ``time_scale``)."""
    time_scale: float = 1.0
    """Seconds per unit of time in the TTL tests: a store on real time (Redis) uses less."""
    exact_clock: bool = True
    """Whether remaining TTLs are exact (a mock or manual clock) or real time."""


@attrs.define
class ManualClock:
    """A wall clock that moves only when told: the ``clock=`` of the wall-clock stores."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (async so it can serve as a harness ``advance``)."""
        self.now += seconds
        await trio.lowlevel.checkpoint()


class PlainStore:
    """A store with only ``get`` / ``set`` / ``delete``: the minimal protocol."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ttls: dict[str, float | None] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.delay = 0.0

    async def get(self, key: str) -> bytes | None:
        await self._pause()
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._pause()
        self.data[key] = value
        self.ttls[key] = ttl

    async def delete(self, key: str) -> None:
        await self._pause()
        self.data.pop(key, None)

    async def _pause(self) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await trio.sleep(self.delay)
        finally:
            self.in_flight -= 1


class TextStore:
    """Wraps a store and returns ``str`` from ``get``, as PyStackQuery's stores do."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def get(self, key: str) -> str | None:
        value = await self.inner.get(key)
        return None if value is None else value.decode("utf-8")

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.inner.set(key, value, ttl)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)


class FailingStore:
    """A full store whose every operation raises ``StorageError`` (or ``error``)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error or StorageError("down", backend="FailingStore")
        self.calls: list[str] = []

    async def _fail(self, operation: str) -> Any:
        self.calls.append(operation)
        await trio.lowlevel.checkpoint()
        raise self.error

    async def get(self, key: str) -> bytes | None:
        return await self._fail("get")  # type: ignore[no-any-return]

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return await self._fail("get_many")  # type: ignore[no-any-return]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._fail("set")

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        await self._fail("set_many")

    async def delete(self, key: str) -> None:
        await self._fail("delete")

    async def delete_prefix(self, prefix: str) -> int:
        return await self._fail("delete_prefix")  # type: ignore[no-any-return]


@attrs.define
class RecordingMetrics:
    """A ``StorageMetrics`` that keeps every call, in order, as a tuple."""

    calls: list[tuple[Any, ...]] = attrs.field(factory=list)

    def record_hit(self, cache_name: str, key: str | None = None) -> None:
        self.calls.append(("hit", cache_name, key))

    def record_miss(self, cache_name: str, key: str | None = None) -> None:
        self.calls.append(("miss", cache_name, key))

    def record_set(
        self, cache_name: str, key: str | None = None, value_size: int | None = None
    ) -> None:
        self.calls.append(("set", cache_name, key, value_size))

    def record_delete(self, cache_name: str, key: str | None = None) -> None:
        self.calls.append(("delete", cache_name, key))

    def record_latency(self, cache_name: str, operation: str, duration_seconds: float) -> None:
        self.calls.append(("latency", cache_name, operation, duration_seconds))

    def record_error(self, cache_name: str, operation: str, error_type: str) -> None:
        self.calls.append(("error", cache_name, operation, error_type))


class StepTimer:
    """A monotonic timer that advances by one second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now
