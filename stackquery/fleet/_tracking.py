"""Hearing writes we did not make: the server's key invalidations applied to L1.

With ``redis_tracking`` on, the fleet's subscription also tracks the client's
entry keys (``CLIENT TRACKING ... BCAST PREFIX <prefix>[``, see
:mod:`backends._redis_tracking`; on a cluster on every master, see
:mod:`backends._cluster_tracking`), so the server names every entry that
changes, whoever changed it: another tool's write, an expiry, an eviction,
a ``FLUSHDB``.  Lease keys (``<prefix>lease:``) and the channel are outside
the tracked prefix: every entry's key is a canonical hash, which starts
with ``[``, and nothing else of ours does.

The server names our own writes too (the writes go out on the shared data
connection, not on the tracking one, so ``NOLOOP`` cannot spare them), and
the writes of the other stackquery processes, which their update messages
announce as well.  Marking each of those stale would refetch every key after
every write: a refetch storm.  So a named key is checked, not trusted:

* not held in L1, or held already invalidated: nothing to do, nothing read;
* otherwise its L2 entry is read (concurrent reads share one ``get_many``):
  a valid entry as new as L1's data is our own write or one already applied:
  nothing; a newer one is taken into L1 (as an update message would); no
  entry, an invalidated one, or one that does not read as ours (another
  tool's value, a store error): the key is marked stale in L1 only (L2 is
  left alone: writing it would be heard again), and observed keys refetch.

A flush (the server names no keys) marks everything stale, as a lost
subscription does.  Malformed messages are counted as rejected, never raised.
"""

from __future__ import annotations

import trio

from backends import Invalidation

from .._entry import StoredEntry
from .._l2_tier import L2Tier
from .._owners import QueryOwners
from .._query_cache import QueryCache
from ._counters import FleetCounters

ENTRY_KEY_START = "["
"""The first character of every entry's canonical key hash (the JSON of a tuple)."""


def tracked_prefix(key_prefix: str) -> str:
    """The prefix the server tracks for a client whose keys live under ``key_prefix``."""
    return key_prefix + ENTRY_KEY_START


class KeyTracking:
    """Applies the server's invalidations of one client's entry keys.

    Args:
        cache: the L1 table.
        tier: the L2 tier (entries are read through it).
        counters: the fleet's counts.
        key_prefix: the whole text in front of each key hash in Redis.
    """

    def __init__(
        self, cache: QueryCache, tier: L2Tier, counters: FleetCounters, *, key_prefix: str
    ) -> None:
        self._cache = cache
        self._tier = tier
        self._counters = counters
        self._prefix = key_prefix.encode("utf-8")
        self.prefix = tracked_prefix(key_prefix)

    async def apply(self, owners: QueryOwners, invalidation: Invalidation) -> None:
        """Apply one invalidation message; never raises but Cancelled and ClientClosedError.

        Raises:
            ClientClosedError: the client is not open.
        """
        owners.check_open()
        counts = self._counters.counts
        if invalidation.malformed:
            counts["rejected"] += 1
            return
        if invalidation.keys is None:
            counts["flushes"] += 1
            owners.mark_all_stale()
            return
        counts["keys_invalidated"] += len(invalidation.keys)
        wanted = self._held(invalidation.keys)
        if not wanted:
            return
        counts["invalidations_checked"] += len(wanted)
        entries = await self._read(wanted)
        stale = []
        for key_hash in wanted:
            snap = self._cache.snapshots.get(key_hash)
            if snap is None or snap.is_invalidated or snap.data_updated_at is None:
                continue  # changed while L2 was read: whatever did it knows better
            entry = entries.get(key_hash)
            if entry is None or entry.invalidated:
                stale.append(key_hash)
            elif entry.data_updated_at > snap.data_updated_at:
                counts["invalidations_applied"] += 1
                await owners.apply_entry(key_hash, entry)
        counts["invalidations_stale"] += owners.mark_stale(stale)

    def _held(self, keys: tuple[bytes, ...]) -> list[str]:
        """The key hashes named in ``keys`` that L1 holds with valid data, each once."""
        prefix, snapshots = self._prefix, self._cache.snapshots
        held: dict[str, None] = {}
        for key in keys:
            if not key.startswith(prefix):
                continue
            try:
                key_hash = key[len(prefix) :].decode("utf-8")
            except UnicodeDecodeError:
                continue
            snap = snapshots.get(key_hash)
            if snap is not None and snap.has_data and not snap.is_invalidated:
                held[key_hash] = None
        return list(held)

    async def _read(self, key_hashes: list[str]) -> dict[str, StoredEntry | None]:
        entries: dict[str, StoredEntry | None] = {}

        async def read(key_hash: str) -> None:
            entries[key_hash] = await self._tier.l2.read(key_hash)

        async with trio.open_nursery() as nursery:  # concurrent reads share one get_many
            for key_hash in key_hashes:
                nursery.start_soon(read, key_hash)
        return entries


__all__ = ["ENTRY_KEY_START", "KeyTracking", "tracked_prefix"]
