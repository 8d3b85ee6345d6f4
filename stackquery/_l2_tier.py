"""L2Tier: what a key's snapshot becomes in the L2 store, and how an entry comes back.

:class:`~stackquery._l2.L2Cache` moves bytes (batched reads, write-behind);
this is the half that knows snapshots: it queues a key's data for the store
when it is published (:meth:`L2Tier.persist`), and publishes an entry read
from the store into the L1 table unless L1 holds data as new
(:meth:`L2Tier.apply_entry`).  It also holds the cold keys a caller is
reading from L2 in its own task (:attr:`L2Tier.cold_reads`; the reads
themselves are run by ``_hydration``), so that any other reader of such a key
joins that read instead of starting another.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import trio

from actors import Reply

from . import _state
from ._entry import StoredEntry, bound_future
from ._entry_batch import BatchEntries
from ._l2 import L2Cache
from ._option_checks import UNSET
from ._options import QueryOptions
from ._query_cache import QueryCache
from ._state import Snapshot


@attrs.define(eq=False)
class ColdRead:
    """One cold key's L2 read, started by a caller; the key's fetch until it lands."""

    options: QueryOptions[Any]
    previous: Snapshot
    """The key's snapshot before it was published as fetching."""
    read: Reply[StoredEntry | None]
    """What the store answered; set by the starting caller itself when ``direct``."""
    direct: bool = False
    """The starting caller reads the store from its own task (``L2Cache.read_now``)."""
    reply: Reply[Any] = attrs.field(factory=Reply)
    """What every caller of the key waits on."""
    waiting: trio.CancelScope | None = None
    """Around the starting caller's wait for ``read`` (made when it starts
    waiting; none for a batch's reads): cancelled once ``reply`` is settled
    without the read (cancel_queries, a removal, a reset), so that caller
    hears at once rather than when the store answers."""
    batch: BatchRead | None = None
    """The batch the key is read in, if any (told when the key is settled early)."""

    def settle_early(self, error: BaseException) -> None:
        """Settle the key's fetch with ``error`` before the read lands; wake its caller."""
        self.reply.set_error(error)
        if self.waiting is not None:
            self.waiting.cancel()
        if self.batch is not None:
            self.batch.settled_early()


@attrs.define(eq=False)
class BatchRead:
    """The cold keys of one ``fetch_queries`` call, read from L2 together: one object for
    them all, in :attr:`L2Tier.cold_reads` under each of them until it lands.

    A read per key (its own :class:`ColdRead` and replies) costs more than landing the
    key does; most keys of a batch need none.  So a key gets one only when something
    else needs it (:meth:`L2Tier.cold_read`: a caller or an actor joining the read,
    cancel_queries, a removal; at the landing, an entry that cannot land fresh), and
    the keys nothing touched land from here, their data in :attr:`values`.
    """

    keys: list[str]
    """The keys' hashes, in the order of ``options``."""
    options: list[QueryOptions[Any]]
    shapes: list[_state.Shape]
    """The shape each key was made in, fetching, with no data, at trio time
    :attr:`claimed_at`: its snapshot before the read (see :attr:`ColdRead.previous`
    and :meth:`previous`)."""
    bounded: set[int]
    """The places of the keys whose options have a ``max_age`` or a ``max_stale``."""
    claimed_at: float
    read: Reply[BatchEntries]
    """What the store answered, by place."""
    values: list[Any] = attrs.field(factory=list)
    """Once landed, each key's data by place, but for a key with a :class:`ColdRead` of
    its own in :attr:`colds`: that lands the key instead."""
    colds: dict[int, ColdRead] = attrs.field(factory=dict)
    """By place: the keys given a :class:`ColdRead` of their own."""
    landed: trio.Event = attrs.field(factory=trio.Event)
    """Set once every key landed or is a :class:`ColdRead` of its own, or once every key
    was settled before the read landed (its caller then waits no more)."""
    _places: dict[str, int] | None = attrs.field(default=None, init=False)
    _early: int = attrs.field(default=0, init=False)

    def settled_early(self) -> None:
        """A key was settled before the read landed (cancel_queries, a removal, a reset)."""
        self._early += 1
        if self._early == len(self.keys):
            self.landed.set()

    def previous(self, place: int) -> Snapshot:
        """The snapshot of the key at ``place`` before the read, as it was made.

        Made again rather than kept: a list of them would keep every one alive
        past its landing, for the cyclic GC to walk.  Equal to it in what a
        fetch cancelled or handed on reads of it (its data, none, and its shape).
        """
        return _state.empty_of_shape(self.keys[place], self.shapes[place], self.claimed_at)

    def place(self, key_hash: str) -> int:
        """The key's place in :attr:`keys` (a key of this batch)."""
        places = self._places
        if places is None:
            places = self._places = dict(zip(self.keys, range(len(self.keys)), strict=True))
        return places[key_hash]


class L2Tier:
    """The L1 table's link to the L2 store.

    Args:
        cache: the L1 table entries are published into.
        l2: the store, behind the client's serializer and key prefix.
        storage_ttl: the configured ``storage_ttl`` (``UNSET``: follow each
            key's ``gc_time``).
    """

    def __init__(self, cache: QueryCache, l2: L2Cache, storage_ttl: Any) -> None:
        self.cache = cache
        self.l2 = l2
        self.storage_ttl = storage_ttl
        self.cold_reads: dict[str, ColdRead | BatchRead] = {}
        """Cold keys a caller is reading from L2 (busy like a key with an actor); read
        them with :meth:`cold_read`."""

    def cold_read(self, key_hash: str) -> ColdRead | None:
        """The key's cold read out, or ``None``; a key of a :class:`BatchRead` gets a
        :class:`ColdRead` of its own, there from now on.  Synchronous."""
        cold = self.cold_reads.get(key_hash)
        if cold is None or isinstance(cold, ColdRead):
            return cold
        return self.one_of(cold, key_hash)

    def one_of(self, batch: BatchRead, key_hash: str) -> ColdRead:
        """Give a key of ``batch``, still in its read, a :class:`ColdRead` of its own: its
        ``read`` is set when the batch lands."""
        place = batch.place(key_hash)
        cold = batch.colds[place] = ColdRead(
            batch.options[place], batch.previous(place), Reply(), batch=batch
        )
        self.cold_reads[key_hash] = cold
        return cold

    def ttl(self, snap: Snapshot) -> float | None:
        """Seconds the key's L2 entry lives: ``storage_ttl``, else the key's gc_time (0: none)."""
        ttl = self.storage_ttl
        if ttl is not UNSET:
            return ttl  # type: ignore[no-any-return]
        if snap.gc_time == math.inf:
            return None
        return max(snap.gc_time, 0.0)

    def persist(self, snap: Snapshot | None) -> None:
        """Queue the key's data (and its invalidation) for L2; synchronous, never raises."""
        if snap is None:
            return
        state = snap.state
        if state.data_updated_at is None:
            return
        ttl = self.ttl(snap)
        if ttl == 0:
            return  # gc_time=0: the entry would expire as it lands
        self.l2.write_soon(
            snap.key_hash,
            state.data,
            data_updated_at=state.data_updated_at,
            ttl=ttl,
            invalidated=state.is_invalidated,
        )

    def delete_soon(self, key_hash: str) -> None:
        """Queue the key's deletion from L2; synchronous, never raises."""
        self.l2.delete_soon(key_hash)

    async def read(self, key_hash: str) -> StoredEntry | None:
        """The key's entry in L2, sharing a caller's cold read of it if one is out.

        Never raises: a store that fails, is slow or holds a corrupt entry is a miss.
        """
        cold = self.cold_read(key_hash)
        return await (self.l2.read(key_hash) if cold is None else cold.read.wait())

    def apply_entry(self, key_hash: str, entry: StoredEntry) -> Snapshot | None:
        """Publish an L2 entry into L1 unless L1 holds data as new; return the new snapshot."""
        snap = self.cache.get(key_hash)
        if snap is None:
            return None
        new = self.entry_snapshot(snap, entry, now=trio.current_time())
        return None if new is None else self.cache.publish(new)

    def entry_snapshot(
        self, snap: Snapshot, entry: StoredEntry, *, now: float, idle: bool = False
    ) -> Snapshot | None:
        """``snap`` holding ``entry`` (``None``: L1 holds data as new); pure, not published.

        ``idle``: and the key's fetch ended (see :func:`_state.with_data`).
        """
        cache = self.cache
        clock = cache.clock
        entry = bound_future(entry, clock.wall(now), self.l2.count_future_entry)
        held = snap.data_updated_at
        if held is not None and held >= entry.data_updated_at:
            return None  # L1 already has data as new: a late read never overwrites it
        # Judged with the key's own stale time (not the client's default), so
        # that an entry another process wrote a moment ago is fresh here too.
        new = _state.with_data(
            snap,
            entry.value,
            updated_at_wall=entry.data_updated_at,
            updated_at=clock.from_wall(entry.data_updated_at),
            stale_time=snap.stale_time,
            resolved_stale_time=cache.fresh_period(snap.stale_time, entry.value, None),
            now=now,
            idle=idle,
        )
        if entry.invalidated:
            new = _state.invalidated(new, now=now)
        return new


__all__ = ["BatchRead", "ColdRead", "L2Tier"]
