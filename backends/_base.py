"""The shared shape of this package's stores: checks and error translation in one place.

A concrete store implements five primitives on already-checked input; the
public methods here check the input, refuse use after ``aclose()`` and
translate library errors into the :class:`~backends.StorageError` family.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Self

from ._errors import StorageClosedError, map_storage_errors
from ._validation import check_items, check_key, check_keys, check_prefix, check_ttl, check_value

Reading = tuple[bytes | None, float | None]
"""A value (``None``: absent or expired) and its remaining TTL (``None``: no expiry)."""


class ByteStore(abc.ABC):
    """Base of the stores in this package (not needed to implement the protocol).

    Subclasses implement ``_read``, ``_write``, ``_delete``, ``_delete_prefix``
    and ``_close``; every public method checks its arguments first, so bad input
    raises ``TypeError`` / ``ValueError`` before any I/O, and a failure inside a
    primitive that is not already a ``StorageError`` is re-raised as one.
    """

    _unavailable: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    _closed: bool = False

    @property
    def reports_ttl(self) -> bool:
        """Whether ``get_with_ttl`` reports real remaining TTLs (see ``ops.reports_ttl``)."""
        return True

    @abc.abstractmethod
    async def _read(self, keys: list[str]) -> list[Reading]:
        """Return one reading per key, in order."""

    @abc.abstractmethod
    async def _write(self, items: dict[str, bytes], ttl: float | None) -> None:
        """Store every item with ``ttl``."""

    @abc.abstractmethod
    async def _delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    @abc.abstractmethod
    async def _delete_prefix(self, prefix: str) -> int:
        """Remove every key starting with ``prefix``; return how many."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release resources; called once."""

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``.

        Returns:
            The value, or ``None`` if ``key`` is absent or expired.

        Raises:
            TypeError: ``key`` is not a ``str``.
            ValueError: ``key`` holds a lone surrogate.
            StorageClosedError: the store was closed.
            StorageError: the store failed; the cause is chained.
        """
        return (await self.get_with_ttl(key))[0]

    async def get_with_ttl(self, key: str) -> Reading:
        """Return the value stored under ``key`` and the seconds it has left.

        Returns:
            ``(value, seconds left)``; seconds left is ``None`` for an entry
            without expiry, and ``(None, None)`` means absent or expired.

        Raises:
            Same as :meth:`get`.
        """
        keys = [check_key(key)]
        self._check_open("get")
        with self._translating("get"):
            return (await self._read(keys))[0]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return the values stored under ``keys``.

        Returns:
            One value (or ``None``) per key, in the order of ``keys``.

        Raises:
            TypeError: ``keys`` is a ``str`` or not a sequence, or holds a non-``str``.
            ValueError: a key holds a lone surrogate.
            StorageClosedError: the store was closed.
            StorageError: the store failed; the cause is chained.
        """
        return [value for value, _ in await self.get_many_with_ttl(keys)]

    async def get_many_with_ttl(self, keys: Sequence[str]) -> list[Reading]:
        """Return one ``(value, seconds left)`` pair per key, in the order of ``keys``.

        Raises:
            Same as :meth:`get_many`.
        """
        checked = check_keys(keys)
        self._check_open("get_many")
        with self._translating("get_many"):
            return await self._read(checked) if checked else []

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any previous value.

        Args:
            key: the key.
            value: the bytes to store (``b""`` is a value like any other).
            ttl: seconds until the entry expires; ``None``: never.

        Raises:
            TypeError: ``key`` is not ``str``, ``value`` not ``bytes``, or ``ttl``
                not a number.
            ValueError: ``ttl`` is not positive and finite, or ``key`` holds a
                lone surrogate.
            StorageClosedError: the store was closed.
            StorageError: the store failed; the cause is chained.
        """
        items = {check_key(key): check_value(value)}
        checked_ttl = check_ttl(ttl)
        self._check_open("set")
        with self._translating("set"):
            await self._write(items, checked_ttl)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Store every item of ``items`` with the same ``ttl``.

        Raises:
            TypeError: ``items`` is not a mapping of ``str`` to ``bytes``, or
                ``ttl`` is not a number.
            ValueError: as for :meth:`set`.
            StorageClosedError: the store was closed.
            StorageError: the store failed (some items may have been stored).
        """
        checked = check_items(items)
        checked_ttl = check_ttl(ttl)
        self._check_open("set_many")
        with self._translating("set_many"):
            if checked:
                await self._write(checked, checked_ttl)

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error.

        Raises:
            TypeError, ValueError, StorageClosedError, StorageError: as for :meth:`get`.
        """
        checked = check_key(key)
        self._check_open("delete")
        with self._translating("delete"):
            await self._delete(checked)

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every key that starts with ``prefix`` (``""``: every key).

        Returns:
            How many entries were removed; an expired entry that had not been
            purged yet may be counted.

        Raises:
            TypeError: ``prefix`` is not a ``str``.
            ValueError: ``prefix`` holds a lone surrogate.
            StorageClosedError: the store was closed.
            StorageError: the store failed (some keys may have been removed).
        """
        checked = check_prefix(prefix)
        self._check_open("delete_prefix")
        with self._translating("delete_prefix"):
            return await self._delete_prefix(checked)

    async def aclose(self) -> None:
        """Release the store's resources; later operations raise ``StorageClosedError``.

        Closing twice is not an error.

        Raises:
            StorageError: releasing a resource failed (the store is closed anyway).
        """
        if self._closed:
            return
        self._closed = True
        with self._translating("aclose"):
            await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _translating(self, operation: str) -> AbstractContextManager[None]:
        """Return a context that re-raises library errors of ``operation`` as StorageError."""
        return map_storage_errors(type(self).__name__, operation, unavailable=self._unavailable)

    def _check_open(self, operation: str) -> None:
        if self._closed:
            name = type(self).__name__
            raise StorageClosedError(f"{name} is closed", backend=name, operation=operation)
