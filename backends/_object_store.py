"""What the cloud object stores (S3, GCS) share: naming, TTL metadata, threads."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from functools import partial
from typing import TypeVar, TypeVarTuple

import trio

from ._base import ByteStore, Reading
from ._concurrency import gather_limited
from ._expiry import expiry_deadline, format_deadline, is_expired, parse_deadline, remaining_ttl

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

EXPIRY_METADATA_KEY = "sq-expires-at"
"""Object metadata holding the expiry as wall-clock seconds since the epoch."""


class ObjectStore(ByteStore):
    """A store with one object per key, named ``prefix + key``, in a cloud bucket.

    The expiry of an entry is object metadata (wall-clock time from ``clock``)
    and is enforced on read; expired objects stay in the bucket until
    overwritten or deleted (a bucket lifecycle rule can remove them).  SDK calls
    block, so each runs in a worker thread, at most ``max_concurrency`` at a
    time per store; a batch runs its keys concurrently.  Cancelled, an
    operation whose thread already started runs to completion before
    ``Cancelled`` is raised, so a cancelled ``set`` or ``delete`` may have
    taken effect.
    """

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        clock: Callable[[], float],
        max_concurrency: int,
        unavailable: tuple[type[BaseException], ...],
    ) -> None:
        if not isinstance(bucket, str):
            raise TypeError(f"bucket must be str, not {type(bucket).__name__}")
        if not bucket:
            raise ValueError("bucket must not be empty")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise TypeError(f"max_concurrency must be an int, not {type(max_concurrency).__name__}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._prefix = prefix
        self._clock = clock
        self._max_concurrency = max_concurrency
        self._limiter = trio.CapacityLimiter(max_concurrency)
        self._unavailable = (*unavailable, ConnectionError, TimeoutError)

    @property
    def prefix(self) -> str:
        """The text put before every key to name its object."""
        return self._prefix

    def object_name(self, key: str) -> str:
        """Return the name of the object that holds ``key``."""
        return self._prefix + key

    # The SDK calls, run in worker threads.

    @abc.abstractmethod
    def _fetch_sync(self, name: str) -> tuple[bytes, Mapping[str, str]] | None:
        """Return the object's data and metadata, or ``None`` if it does not exist."""

    @abc.abstractmethod
    def _store_sync(self, name: str, data: bytes, metadata: dict[str, str]) -> None:
        """Create or replace the object with exactly this data and metadata."""

    @abc.abstractmethod
    def _remove_sync(self, name: str) -> None:
        """Remove the object; an absent object is not an error."""

    @abc.abstractmethod
    def _remove_prefix_sync(self, prefix: str) -> int:
        """Remove every object whose name starts with ``prefix``; return how many."""

    @abc.abstractmethod
    def _close_sync(self) -> None:
        """Release the SDK client if this store made it."""

    async def _read(self, keys: list[str]) -> list[Reading]:
        return await gather_limited(
            [partial(self._in_thread, self._read_sync, key) for key in keys],
            max_concurrency=self._max_concurrency,
        )

    async def _write(self, items: dict[str, bytes], ttl: float | None) -> None:
        deadline = expiry_deadline(self._clock(), ttl)
        metadata = {} if deadline is None else {EXPIRY_METADATA_KEY: format_deadline(deadline)}
        await gather_limited(
            [
                partial(self._in_thread, self._store_sync, self.object_name(key), value, metadata)
                for key, value in items.items()
            ],
            max_concurrency=self._max_concurrency,
        )

    async def _delete(self, key: str) -> None:
        await self._in_thread(self._remove_sync, self.object_name(key))

    async def _delete_prefix(self, prefix: str) -> int:
        return await self._in_thread(self._remove_prefix_sync, self.object_name(prefix))

    async def _close(self) -> None:
        await self._in_thread(self._close_sync)

    async def _in_thread(self, function: Callable[[*Ts], T], *args: *Ts) -> T:
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    def _read_sync(self, key: str) -> Reading:
        fetched = self._fetch_sync(self.object_name(key))
        if fetched is None:
            return (None, None)
        data, metadata = fetched
        deadline = parse_deadline(metadata.get(EXPIRY_METADATA_KEY))
        now = self._clock()
        if is_expired(deadline, now):
            return (None, None)
        return (data, remaining_ttl(deadline, now))
