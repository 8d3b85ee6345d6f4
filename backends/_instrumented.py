"""A store wrapper that reports every operation to a metrics collector."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Self, final

from . import _ops as ops
from ._metrics_protocol import StorageMetrics
from ._protocol import StorageBackend
from ._validation import check_items, check_key, check_keys, check_prefix, check_ttl, check_value

logger = logging.getLogger(__name__)

Reading = tuple[bytes | None, float | None]


@final
class InstrumentedStorage:
    """Wraps any store and records each operation on ``metrics`` under ``name``.

    Every ``get*`` records a hit or a miss per key, ``set*`` a set per item
    with its size, ``delete`` a delete of the key and ``delete_prefix`` one
    delete with the prefix as the key; every operation records its latency
    (success or failure) and a failure also records an error with the
    exception's class name, then the exception propagates unchanged.  A
    cancelled operation records nothing.  ``aclose`` closes the wrapped store
    and is not recorded.  A collector that raises is logged, never allowed
    to fail the storage operation.

    Values come back as ``bytes`` even if the wrapped store returns ``str``.
    Optional operations the wrapped store lacks are emulated as in
    :mod:`backends.ops` (``delete_prefix`` then raises
    ``StorageUnsupportedError``).

    Args:
        store: the store to wrap.
        metrics: the collector (see :class:`StorageMetrics`).
        name: the ``cache_name`` passed with every record.
        timer: monotonic seconds for latencies; tests inject their own.

    Raises:
        TypeError: ``store`` is not a ``StorageBackend`` or ``name`` not a ``str``.
    """

    def __init__(
        self,
        store: StorageBackend,
        metrics: StorageMetrics,
        *,
        name: str = "default",
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not isinstance(store, StorageBackend):
            raise TypeError(f"store must be a storage backend, not {type(store).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be str, not {type(name).__name__}")
        self._store = store
        self._metrics = metrics
        self._name = name
        self._timer = timer

    @property
    def store(self) -> StorageBackend:
        """The wrapped store."""
        return self._store

    @property
    def inner_stores(self) -> tuple[StorageBackend]:
        """The wrapped store, as the one item of a tuple (see :class:`StorageBackend`)."""
        return (self._store,)

    @property
    def name(self) -> str:
        """The ``cache_name`` recorded with every event."""
        return self._name

    @property
    def reports_ttl(self) -> bool:
        """Whether the wrapped store reports remaining TTLs."""
        return ops.reports_ttl(self._store)

    async def get(self, key: str) -> bytes | None:
        """Return the wrapped store's value for ``key``; record a hit or miss.

        Raises:
            TypeError, ValueError: ``key`` is not a usable key.
            Anything the wrapped store raises, after recording the error.
        """
        check_key(key)
        with self._measuring("get"):
            value = await ops.get(self._store, key)
        self._record_reads([key], [value])
        return value

    async def get_with_ttl(self, key: str) -> Reading:
        """Return ``(value, seconds left)`` for ``key``; recorded as a ``get``.

        The seconds left are ``None`` when the wrapped store cannot report them.

        Raises:
            Same as :meth:`get`.
        """
        check_key(key)
        with self._measuring("get"):
            [reading] = await ops.get_many_with_ttl(self._store, [key])
        self._record_reads([key], [reading[0]])
        return reading

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return one value per key, in order; record a hit or miss per key.

        Raises:
            TypeError, ValueError: ``keys`` is not a sequence of usable keys.
            Anything the wrapped store raises, after recording the error.
        """
        checked = check_keys(keys)
        with self._measuring("get_many"):
            values = await ops.get_many(self._store, checked)
        self._record_reads(checked, values)
        return values

    async def get_many_with_ttl(self, keys: Sequence[str]) -> list[Reading]:
        """Return one ``(value, seconds left)`` pair per key; recorded as a ``get_many``.

        Raises:
            Same as :meth:`get_many`.
        """
        checked = check_keys(keys)
        with self._measuring("get_many"):
            readings = await ops.get_many_with_ttl(self._store, checked)
        self._record_reads(checked, [value for value, _ in readings])
        return readings

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``; record a set with the value's size.

        Raises:
            TypeError, ValueError: bad key, value or ttl.
            Anything the wrapped store raises, after recording the error.
        """
        check_key(key)
        check_value(value)
        check_ttl(ttl)
        with self._measuring("set"):
            await self._store.set(key, value, ttl)
        self._record(self._metrics.record_set, self._name, key, len(value))

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Store every item with ``ttl``; record a set per item.

        Raises:
            TypeError, ValueError: bad items or ttl.
            Anything the wrapped store raises, after recording the error.
        """
        checked = check_items(items)
        check_ttl(ttl)
        with self._measuring("set_many"):
            await ops.set_many(self._store, checked, ttl)
        for key, value in checked.items():
            self._record(self._metrics.record_set, self._name, key, len(value))

    async def delete(self, key: str) -> None:
        """Remove ``key``; record a delete.

        Raises:
            TypeError, ValueError: ``key`` is not a usable key.
            Anything the wrapped store raises, after recording the error.
        """
        check_key(key)
        with self._measuring("delete"):
            await self._store.delete(key)
        self._record(self._metrics.record_delete, self._name, key)

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every key starting with ``prefix``; record one delete keyed by the prefix.

        Returns:
            How many entries the wrapped store removed.

        Raises:
            TypeError, ValueError: ``prefix`` is not a usable prefix.
            StorageUnsupportedError: the wrapped store has no ``delete_prefix``
                (recorded as an error).
            Anything the wrapped store raises, after recording the error.
        """
        check_prefix(prefix)
        with self._measuring("delete_prefix"):
            removed = await ops.delete_prefix(self._store, prefix)
        self._record(self._metrics.record_delete, self._name, prefix)
        return removed

    async def aclose(self) -> None:
        """Close the wrapped store (if it can be closed).

        Raises:
            Anything the wrapped store's ``aclose`` raises.
        """
        await ops.aclose(self._store)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @contextmanager
    def _measuring(self, operation: str) -> Iterator[None]:
        start = self._timer()
        try:
            yield
        except Exception as exc:
            self._record(self._metrics.record_latency, self._name, operation, self._elapsed(start))
            self._record(self._metrics.record_error, self._name, operation, type(exc).__name__)
            raise
        self._record(self._metrics.record_latency, self._name, operation, self._elapsed(start))

    def _elapsed(self, start: float) -> float:
        return self._timer() - start

    def _record_reads(self, keys: list[str], values: Sequence[bytes | None]) -> None:
        for key, value in zip(keys, values, strict=True):
            if value is None:
                self._record(self._metrics.record_miss, self._name, key)
            else:
                self._record(self._metrics.record_hit, self._name, key)

    def _record(self, method: Callable[..., object], *args: object) -> None:
        try:
            method(*args)
        except Exception:
            # Metrics are a side channel: a broken collector must not break the cache.
            logger.exception("metrics collector failed in %s", getattr(method, "__name__", method))
