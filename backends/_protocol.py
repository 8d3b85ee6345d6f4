"""The L2 byte-store protocol every backend implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class StorageBackend(Protocol):
    """A byte store keyed by ``str``: the second tier under the query client.

    Keys are text; values are ``bytes``.  A ``ttl`` is in seconds (``None``: no
    expiry).  Only ``get``, ``set`` and ``delete`` are required; the client
    uses ``get_many``, ``set_many``, ``delete_prefix`` and ``aclose`` when a
    store has them (see :mod:`backends._ops`).

    A store whose ``get`` returns ``str`` (as PyStackQuery's protocol does) is
    accepted: the text is encoded as UTF-8 before use.

    A store that wraps others (:class:`~backends.InstrumentedStorage`,
    :class:`~backends.ChainStorage`, or one of yours) lists them in an
    ``inner_stores`` attribute, a tuple in the order it consults them, so
    that code looking for a particular store (the query client looks for a
    ``RedisStorage`` to run its fleet on) finds it through the wrappers; see
    :func:`backends.ops.stores_within`.
    """

    async def get(self, key: str) -> bytes | str | None:
        """Return the value stored under ``key``, or ``None`` if absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (``None``: forever)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        ...


@runtime_checkable
class BatchStorageBackend(StorageBackend, Protocol):
    """A store with batch operations, all optional extensions of the protocol."""

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | str | None]:
        """Return one value (or ``None``) per key, in the order of ``keys``."""
        ...

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        """Store every item with the same ``ttl``."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every key that starts with ``prefix``; return how many were removed.

        An expired entry that the store had not purged yet may be counted.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and files; the store is unusable afterwards."""
        ...


@runtime_checkable
class TTLStorageBackend(StorageBackend, Protocol):
    """A store that can tell how long an entry has left to live.

    :class:`~backends.ChainStorage` uses this to copy a lower level's hit up
    with the remaining TTL rather than a fresh one.  A remaining TTL of
    ``None`` next to a value means the entry never expires; next to ``None``
    (a miss) it means nothing.
    """

    async def get_with_ttl(self, key: str) -> tuple[bytes | str | None, float | None]:
        """Return ``(value, seconds left)`` for ``key``; ``(None, None)`` if absent."""
        ...

    async def get_many_with_ttl(
        self, keys: Sequence[str]
    ) -> Sequence[tuple[bytes | str | None, float | None]]:
        """Return one ``(value, seconds left)`` pair per key, in the order of ``keys``."""
        ...
