"""N stores stacked as one: read-through from the fastest, write-through to all."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import final

from . import _ops as ops
from ._base import ByteStore, Reading
from ._expiry import cap_ttl
from ._protocol import StorageBackend
from ._validation import check_ttl

logger = logging.getLogger(__name__)


@final
class ChainStorage(ByteStore):
    """Levels of stores, fastest first, that behave as one store.

    * A read tries each level in turn.  A hit at a lower level is copied up
      into every level above it with the entry's *remaining* TTL, capped by
      each upper level's own TTL, so a copy never outlives its source.
    * A level that cannot report remaining TTLs (see
      :func:`backends.ops.reports_ttl`; stores without ``get_with_ttl``) has
      its hits copied up with the upper level's TTL instead; to an upper level
      without a TTL such a hit is not copied at all, since it could then be
      served forever after its source expired.
    * Writes and deletes reach every level, lowest (most authoritative) first.
      If a write fails at some level, the key is deleted from the levels above
      it so that they do not keep serving the value it was replacing, and the
      error is raised.  A delete goes on to the upper levels after a failure and
      then raises the first error.
    * ``delete_prefix`` returns the largest count any level removed (the
      lowest level usually holds every key the others do).
    * Any level's error is raised to the caller as is (already a
      ``StorageError`` for this package's stores).
    * ``aclose`` closes every level.

    Operations run level by level; cancelled between levels, a write or delete
    may have reached only the lower levels.

    Args:
        *stores: the levels, fastest first; any :class:`StorageBackend`.
        ttls: the most seconds each level keeps an entry (``None``: as long as
            the write asks); one per store.  Default: no caps.

    Raises:
        ValueError: no stores, or ``ttls`` is not one per store, or a ttl is
            not positive and finite.
        TypeError: a store is not a ``StorageBackend``, or a ttl not a number.
    """

    def __init__(self, *stores: StorageBackend, ttls: Sequence[float | None] | None = None) -> None:
        if not stores:
            raise ValueError("ChainStorage needs at least one store")
        for depth, store in enumerate(stores):
            if not isinstance(store, StorageBackend):
                raise TypeError(
                    f"ChainStorage level {depth} must be a storage backend, "
                    f"not {type(store).__name__}"
                )
        if ttls is None:
            ttls = [None] * len(stores)
        if isinstance(ttls, str) or not isinstance(ttls, Sequence):
            raise TypeError(f"ttls must be a sequence, not {type(ttls).__name__}")
        if len(ttls) != len(stores):
            raise ValueError(f"ttls must have one entry per store: {len(ttls)} for {len(stores)}")
        self._levels = tuple(stores)
        self._ttls = tuple(check_ttl(ttl) for ttl in ttls)
        self._reporting = tuple(ops.reports_ttl(store) for store in stores)

    @property
    def levels(self) -> tuple[StorageBackend, ...]:
        """The stores, fastest first."""
        return self._levels

    @property
    def inner_stores(self) -> tuple[StorageBackend, ...]:
        """The levels, fastest first (see :class:`StorageBackend`)."""
        return self._levels

    @property
    def reports_ttl(self) -> bool:
        """Whether every level reports remaining TTLs (else a hit's TTL may be unknown)."""
        return all(self._reporting)

    async def _read(self, keys: list[str]) -> list[Reading]:
        readings: list[Reading] = [(None, None)] * len(keys)
        pending = list(range(len(keys)))
        for depth, store in enumerate(self._levels):
            if not pending:
                break
            level_keys = [keys[index] for index in pending]
            if self._reporting[depth]:
                found = await ops.get_many_with_ttl(store, level_keys)
            else:
                found = [(value, None) for value in await ops.get_many(store, level_keys)]
            missing: list[int] = []
            hits: list[tuple[str, bytes, float | None]] = []
            for index, (value, remaining) in zip(pending, found, strict=True):
                if value is None:
                    missing.append(index)
                    continue
                readings[index] = (value, remaining)
                hits.append((keys[index], value, remaining))
            if depth and hits:
                await self._copy_up(depth, hits)
            pending = missing
        return readings

    async def _copy_up(self, depth: int, hits: list[tuple[str, bytes, float | None]]) -> None:
        known = self._reporting[depth]
        for upper in reversed(range(depth)):
            by_ttl: dict[float | None, dict[str, bytes]] = {}
            for key, value, remaining in hits:
                if known:
                    if remaining is not None and remaining <= 0:
                        continue
                    ttl = cap_ttl(remaining, self._ttls[upper])
                else:
                    ttl = self._ttls[upper]
                    if ttl is None:
                        continue
                by_ttl.setdefault(ttl, {})[key] = value
            for ttl, items in by_ttl.items():
                await ops.set_many(self._levels[upper], items, ttl)

    async def _write(self, items: dict[str, bytes], ttl: float | None) -> None:
        for depth in reversed(range(len(self._levels))):
            try:
                await ops.set_many(self._levels[depth], items, cap_ttl(ttl, self._ttls[depth]))
            except Exception:
                await self._forget_above(depth, items)
                raise

    async def _forget_above(self, depth: int, keys: Iterable[str]) -> None:
        for upper in reversed(range(depth)):
            for key in keys:
                try:
                    await self._levels[upper].delete(key)
                except Exception:
                    # The write's own error is what the caller gets; this one is logged.
                    logger.warning(
                        "ChainStorage could not delete %r from level %d after a failed write",
                        key,
                        upper,
                        exc_info=True,
                    )

    async def _delete(self, key: str) -> None:
        first_error: Exception | None = None
        for depth in reversed(range(len(self._levels))):
            try:
                await self._levels[depth].delete(key)
            except Exception as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    async def _delete_prefix(self, prefix: str) -> int:
        first_error: Exception | None = None
        removed = 0
        for depth in reversed(range(len(self._levels))):
            try:
                removed = max(removed, await ops.delete_prefix(self._levels[depth], prefix))
            except Exception as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return removed

    async def _close(self) -> None:
        first_error: Exception | None = None
        for store in self._levels:
            try:
                await ops.aclose(store)
            except Exception as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
