"""An in-process byte store on trio's clock: the test store and a bounded local tier."""

from __future__ import annotations

from collections import OrderedDict
from typing import final

import attrs
import trio

from ._base import ByteStore, Reading
from ._expiry import expiry_deadline, is_expired, remaining_ttl


@attrs.frozen
class MemoryStorageStatistics:
    """Counts of what a :class:`MemoryStorage` was asked to do since it was made."""

    gets: int
    """Keys read (``get_many`` of three keys counts three)."""
    hits: int
    """Reads that found a live entry."""
    misses: int
    """Reads that found nothing, or an expired entry."""
    sets: int
    """Keys written (``set_many`` of three items counts three)."""
    deletes: int
    """Calls of ``delete``."""
    prefix_deletes: int
    """Calls of ``delete_prefix``."""
    evictions: int
    """Entries dropped because the store was full."""
    entries: int
    """Entries held now, expired ones not yet purged included."""


@attrs.frozen
class _Entry:
    value: bytes
    deadline: float | None


@final
class MemoryStorage(ByteStore):
    """A dict of entries with expiry on ``trio.current_time()`` and an optional LRU bound.

    Because expiry follows trio's clock, a ``trio.testing.MockClock`` drives it:
    ``await trio.sleep(ttl)`` under the ``autojump_clock`` fixture expires an
    entry without waiting.  Every operation is a checkpoint and then takes
    effect at once, so a cancelled call has no effect.  Expired entries are
    dropped when read, by ``delete_prefix`` and by :meth:`purge_expired`.

    Args:
        max_entries: the most entries to hold; past it, the least recently
            read or written entry is evicted.  ``None``: unbounded.

    Raises:
        TypeError: ``max_entries`` is not an ``int`` or ``None``.
        ValueError: ``max_entries`` is less than 1.
    """

    def __init__(self, max_entries: int | None = None) -> None:
        if max_entries is not None:
            if isinstance(max_entries, bool) or not isinstance(max_entries, int):
                raise TypeError(
                    f"max_entries must be None or an int, not {type(max_entries).__name__}"
                )
            if max_entries < 1:
                raise ValueError(f"max_entries must be None or at least 1, got {max_entries}")
        self._max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._gets = self._hits = self._misses = self._sets = 0
        self._deletes = self._prefix_deletes = self._evictions = 0

    def statistics(self) -> MemoryStorageStatistics:
        """Return the counts of operations so far and the number of entries held."""
        return MemoryStorageStatistics(
            gets=self._gets,
            hits=self._hits,
            misses=self._misses,
            sets=self._sets,
            deletes=self._deletes,
            prefix_deletes=self._prefix_deletes,
            evictions=self._evictions,
            entries=len(self._entries),
        )

    async def purge_expired(self) -> int:
        """Drop every expired entry now; return how many were dropped."""
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        expired = [key for key, entry in self._entries.items() if is_expired(entry.deadline, now)]
        for key in expired:
            del self._entries[key]
        return len(expired)

    async def _read(self, keys: list[str]) -> list[Reading]:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        readings: list[Reading] = []
        for key in keys:
            self._gets += 1
            entry = self._entries.get(key)
            if entry is None or is_expired(entry.deadline, now):
                if entry is not None:
                    del self._entries[key]
                self._misses += 1
                readings.append((None, None))
                continue
            self._hits += 1
            self._entries.move_to_end(key)
            readings.append((entry.value, remaining_ttl(entry.deadline, now)))
        return readings

    async def _write(self, items: dict[str, bytes], ttl: float | None) -> None:
        await trio.lowlevel.checkpoint()
        deadline = expiry_deadline(trio.current_time(), ttl)
        for key, value in items.items():
            self._sets += 1
            self._entries[key] = _Entry(value, deadline)
            self._entries.move_to_end(key)
        if self._max_entries is not None:
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
                self._evictions += 1

    async def _delete(self, key: str) -> None:
        await trio.lowlevel.checkpoint()
        self._deletes += 1
        self._entries.pop(key, None)

    async def _delete_prefix(self, prefix: str) -> int:
        await trio.lowlevel.checkpoint()
        self._prefix_deletes += 1
        now = trio.current_time()
        doomed = [key for key in self._entries if key.startswith(prefix)]
        live = 0
        for key in doomed:
            live += not is_expired(self._entries.pop(key).deadline, now)
        return live

    async def _close(self) -> None:
        await trio.lowlevel.checkpoint()
        self._entries.clear()
