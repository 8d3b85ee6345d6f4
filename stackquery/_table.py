"""QueryTable: the L1 table half of :class:`~stackquery._client.QueryClient`.

One :class:`Snapshot` per key, in eviction order (least recently used
first), each with at most one pending timer entry for its staleness or its
gc.  Publishing a snapshot arms its timer; the timer flips staleness,
collects idle keys and keeps the table within ``max_queries``.  Entries go
to L2 and come back from it through here too.  The fresh-hit path in
``fetch_query`` reads ``_table`` and writes ``_hits`` directly; nothing here
runs on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from . import _state
from ._clock import Clock
from ._entry import StoredEntry
from ._errors import ClientClosedError
from ._events import CacheEventType, EventHub
from ._options import UNSET, QueryClientConfig, QueryOptions
from ._state import Snapshot
from ._timers import KeyTimers

if TYPE_CHECKING:
    from actors import Registry

    from ._l2 import L2Cache
    from ._query_actor import QueryActor

USE_CLOCK_RESOLUTION = 1.0
"""Seconds within which the last use of a key by fresh hits is known.

A fresh hit records an upper bound of "now" kept by a ticker, never an
earlier time, so a key read only by fresh hits leaves L1 between ``gc_time``
and ``gc_time`` + this after its last hit (other uses are exact).
"""


class QueryTable:
    """The L1 table half of :class:`~stackquery._client.QueryClient`: a mixin, not used alone.

    :class:`~stackquery._client.QueryClient` inherits it and sets up the
    attributes declared here in its ``__init__`` and ``__aenter__``.
    """

    config: QueryClientConfig
    _table: dict[str, Snapshot]
    _hits: dict[str, float]
    _use_bound: float
    _timers: KeyTimers
    _events: EventHub
    _registry: Registry[str, QueryActor] | None
    _clock: Clock | None
    _l2: L2Cache | None
    _hydrations: dict[str, Any]
    """Cold keys a caller is reading from L2 (see ``_hydration``): busy like an actor's."""

    @property
    def clock(self) -> Clock:
        """The client's clock (trio time mapped to wall time)."""
        if self._clock is None:
            raise ClientClosedError("the query client is not open: use it inside `async with`")
        return self._clock

    def _resolve_stale_time(self, stale_time: float | None) -> float:
        return self.config.stale_time if stale_time is None else stale_time

    def _is_fresh(self, snap: Snapshot, options: QueryOptions[Any]) -> bool:
        if snap.stale_time == options.stale_time:
            return snap.fresh
        state = snap.state
        if state.status is not _state.QueryStatus.SUCCESS or state.is_invalidated:
            return False
        assert state.data_updated_at is not None
        updated = self.clock.from_wall(state.data_updated_at)
        return updated + self._resolve_stale_time(options.stale_time) > trio.current_time()

    def _is_fresh_for(self, options: QueryOptions[Any]) -> bool:
        snap = self._table.get(options.key_hash)
        return snap is not None and self._is_fresh(snap, options)

    def _too_old(self, snap: Snapshot, options: QueryOptions[Any]) -> bool:
        """Whether the key's data is past the query's ``max_age`` (then it is never served)."""
        max_age = options.max_age
        updated = snap.data_updated_at
        if max_age is None or updated is None:
            return False
        return self.clock.from_wall(updated) + max_age <= trio.current_time()

    # -- the table and its timers ------------------------------------------------------

    def _create_snapshot(self, options: QueryOptions[Any]) -> Snapshot:
        """Put a new key in L1 (with ``initial_data`` if the options have it).

        The key's timer is armed by its first publish (a fetch starting, data
        set), which every caller makes next.
        """
        snap = self._create_snapshot_for_key(
            options.key_hash, stale_time=options.stale_time, gc_time=options.gc_time
        )
        if options.initial_data is not UNSET:
            initial = options.initial_data
            data = initial() if callable(initial) else initial
            wall = options.initial_data_updated_at
            updated = self.clock.from_wall(wall) if wall is not None else trio.current_time()
            snap = self._with_data(snap, data, options, updated_at=updated)
            self._publish(snap)
        return snap

    def _create_snapshot_for_key(
        self,
        key_hash: str,
        *,
        stale_time: float | None = None,
        gc_time: float | None = None,
    ) -> Snapshot:
        snap = _state.empty_snapshot(
            key_hash,
            stale_time=stale_time,
            gc_time=self.config.gc_time if gc_time is None else gc_time,
            now=trio.current_time(),
        )
        max_queries = self.config.max_queries
        if max_queries is not None and len(self._table) >= max_queries:
            # Room is made before the new key goes in, so the new key is never the one evicted.
            self._evict(max_queries - 1)
        self._table[key_hash] = snap
        if self._events.streams:
            self._events.emit(CacheEventType.ADDED, snap.key, snap.state)
        return snap

    def _with_data(
        self, snap: Snapshot, data: Any, options: QueryOptions[Any] | None, *, updated_at: float
    ) -> Snapshot:
        stale_time = options.stale_time if options is not None else None
        gc_time = (
            options.gc_time if options is not None and options.gc_time is not None else snap.gc_time
        )
        if gc_time != snap.gc_time:
            snap = attrs.evolve(snap, gc_time=gc_time)
        return _state.with_data(
            snap,
            data,
            updated_at_wall=self.clock.wall(updated_at),
            updated_at=updated_at,
            stale_time=stale_time,
            resolved_stale_time=self._resolve_stale_time(stale_time),
            now=trio.current_time(),
        )

    def _apply_set_data(
        self,
        key_hash: str,
        updater: Callable[[Any], Any],
        updated_at: float | None,
        options: QueryOptions[Any] | None,
    ) -> Any:
        snap = self._table.get(key_hash)
        data = updater(snap.data if snap is not None and snap.has_data else None)
        if snap is None:  # an actor's key never fetched: its observers are all disabled
            assert options is not None
            snap = self._create_snapshot(options)
        when = self.clock.from_wall(updated_at) if updated_at is not None else trio.current_time()
        self._persist(self._publish(self._with_data(snap, data, options, updated_at=when)))
        return data

    def _publish(self, snap: Snapshot) -> Snapshot:
        """Make ``snap`` the key's state, its timer armed; return what was stored."""
        key_hash = snap.key_hash
        if self._events.streams:
            self._events.published(self._table.get(key_hash), snap)
        # Moved to the back: the table's order is the eviction order (least recently used first).
        self._table.pop(key_hash, None)
        snap = self._arm(snap)
        self._table[key_hash] = snap
        return snap

    async def _run_use_clock(self) -> None:
        """Keep ``_use_bound`` a little ahead of the clock, for fresh hits to record.

        It rests while no key has a timer (no gc to time, no staleness to
        flip): a bound left behind then is older than any key's ``active_at``,
        so the hits that record it count for nothing rather than for too early.
        """
        while True:
            await self._timers.wait_nonempty()
            self._use_bound = trio.current_time() + USE_CLOCK_RESOLUTION
            await trio.sleep_until(self._use_bound)

    def _arm(self, snap: Snapshot) -> Snapshot:
        """Make sure the key's one timer fires by its next deadline (staleness or gc).

        One pending entry per key, not one per publish: a later deadline (a
        refetch pushes staleness back) is found when the earlier entry fires.
        """
        if snap.fetch_status is _state.FetchStatus.FETCHING:
            # Busy: nothing to collect, nothing fresh to go stale.  The publish
            # that ends the fetch arms the timer, so a cold key gets one entry
            # (its staleness) instead of two (a gc entry, then an earlier one).
            return snap
        deadline = _next_deadline(snap)
        if deadline < snap.timer_at:
            self._timers.push(deadline, snap.key_hash)
            snap = attrs.evolve(snap, timer_at=deadline)
        return snap

    def _on_timer(self, key_hash: str, deadline: float) -> None:
        """The key's timer came due: flip its staleness flag, collect it, or look again later."""
        snap = self._table.get(key_hash)
        if snap is None or snap.timer_at != deadline:
            return  # superseded by an earlier entry, or the key is gone
        now = trio.current_time()
        if snap.fresh and snap.stale_at <= now:
            snap = _state.went_stale(snap)
        hits = self._hits
        hit = hits.pop(key_hash, None)
        if hit is not None and hit > snap.active_at:
            snap = _state.used(snap, now=hit)
        if not hits:
            self._hits = {}  # a dict never shrinks: let a burst's table go
        registry = self._registry
        if (registry is not None and key_hash in registry) or key_hash in self._hydrations:
            # In use by an actor (a fetch, observers): look again later; the
            # last observer leaving restarts the countdown through active_at.
            # Not sooner than a second: with gc_time 0 the timer task would spin.
            deadline = now + max(snap.gc_time, 1.0)
        elif snap.active_at + snap.gc_time <= now:
            self._drop(key_hash, delete_l2=False)
            return
        else:
            deadline = snap.active_at + snap.gc_time
        if snap.fresh:  # went_stale above flipped it if its time had come
            deadline = min(deadline, snap.stale_at)
        self._timers.push(deadline, key_hash)
        self._table[key_hash] = attrs.evolve(snap, timer_at=deadline)

    def _evict(self, max_queries: int) -> None:
        table = self._table
        registry = self._registry
        for _ in range(len(table)):
            if len(table) <= max_queries:
                return
            key_hash = next(iter(table))
            snap = table[key_hash]
            hit = self._hits.pop(key_hash, None)
            hit_since = hit is not None and hit > snap.active_at
            busy = (registry is not None and key_hash in registry) or key_hash in self._hydrations
            if busy or hit_since:
                # Second chance (the CLOCK approximation of LRU): busy, or hit
                # since it was last moved to the back.
                del table[key_hash]
                table[key_hash] = _state.used(snap, now=hit) if hit_since else snap  # type: ignore[arg-type]
                continue
            self._drop(key_hash, delete_l2=False)

    def _drop(self, key_hash: str, *, delete_l2: bool) -> None:
        snap = self._table.pop(key_hash, None)
        self._hits.pop(key_hash, None)
        if snap is not None and self._events.streams:
            self._events.emit(CacheEventType.REMOVED, snap.key, None)
        if delete_l2 and self._l2 is not None:
            self._l2.delete_soon(key_hash)

    # -- L2 ---------------------------------------------------------------------------

    def _persist(self, snap: Snapshot) -> None:
        """Queue the key's data (and its invalidation) for L2; synchronous."""
        l2 = self._l2
        state = snap.state
        if l2 is None or state.data_updated_at is None:
            return
        ttl = self._l2_ttl(snap)
        if ttl == 0:
            return  # gc_time=0: the entry would expire as it lands
        l2.write_soon(
            snap.key_hash,
            state.data,
            data_updated_at=state.data_updated_at,
            ttl=ttl,
            invalidated=state.is_invalidated,
        )

    def _l2_ttl(self, snap: Snapshot) -> float | None:
        """Seconds the key's L2 entry lives: ``storage_ttl``, else the key's gc_time (0: none)."""
        ttl = self.config.storage_ttl
        if ttl is not UNSET:
            return ttl  # type: ignore[no-any-return]
        if snap.gc_time == math.inf:
            return None
        return max(snap.gc_time, 0.0)

    async def _hydrate(self, key_hash: str) -> Snapshot | None:
        """Load the key from L2 into L1 unless L1 holds data as new; return the snapshot.

        Never raises: a store that fails, is slow or holds a corrupt entry is a miss.
        """
        l2 = self._l2
        if l2 is None:
            return self._table.get(key_hash)
        hydration = self._hydrations.get(key_hash)
        # A caller reading the key already (an observer came meanwhile): share its read.
        entry = await (l2.read(key_hash) if hydration is None else hydration.read.wait())
        snap = self._table.get(key_hash)
        if entry is None or snap is None:
            return snap
        return self._apply_entry(key_hash, entry) or snap

    def _apply_entry(self, key_hash: str, entry: StoredEntry) -> Snapshot | None:
        """Publish an L2 entry into L1 unless L1 holds data as new; return the new snapshot."""
        snap = self._table.get(key_hash)
        if snap is None:
            return None
        held = snap.data_updated_at
        if held is not None and held >= entry.data_updated_at:
            return None  # L1 already has data as new: a late hydration never overwrites it
        # Judged with the key's own stale time (not the client's default), so
        # that an entry another process wrote a moment ago is fresh here too.
        new = _state.with_data(
            snap,
            entry.value,
            updated_at_wall=entry.data_updated_at,
            updated_at=self.clock.from_wall(entry.data_updated_at),
            stale_time=snap.stale_time,
            resolved_stale_time=self._resolve_stale_time(snap.stale_time),
            now=trio.current_time(),
        )
        if entry.invalidated:
            new = _state.invalidated(new, now=trio.current_time())
        return self._publish(new)


def _next_deadline(snap: Snapshot) -> float:
    """When the key's timer must next look at it: it goes stale, or its gc is due."""
    collect_at = snap.active_at + snap.gc_time
    if snap.fresh and snap.stale_at < collect_at:
        return snap.stale_at
    return collect_at
