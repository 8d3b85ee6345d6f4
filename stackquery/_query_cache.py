"""QueryCache: the L1 table, one immutable :class:`Snapshot` per key.

The table is the one place snapshots live.  Each key's owner (its actor, a
caller's L2 read, or a door of the client for a passivated key) builds the
next snapshot with a pure transition of ``_state`` and hands it to
:meth:`QueryCache.publish`; readers look snapshots up in
:attr:`QueryCache.snapshots` directly, which is what makes a fresh hit a dict
lookup and a flag test.

Keys are kept in eviction order (least recently used first) under
``max_queries``, else in the order they were made, each with at most one
pending timer entry for its staleness or its gc.  Publishing arms
the key's timer; the timer flips staleness, collects idle keys and keeps the
table within ``max_queries``.  The cache never awaits anything but its own
timer tasks, and knows nothing of actors, L2 or the fleet: what counts as
busy (not to be collected) is a callable it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Sequence
from itertools import repeat
from typing import Any, Protocol

import trio

from . import _state
from ._clock import Clock
from ._errors import ClientClosedError
from ._events import CacheEventType, EventHub
from ._freshness import Freshness
from ._keys import QueryKey, hash_matches, key_from_hash, prefix_hash
from ._option_checks import UNSET
from ._options import QueryClientConfig, QueryOptions
from ._origin_record import OriginRecord
from ._remembered import Run, Templates
from ._state import QueryState, Snapshot, StaleTime
from ._timers import KeyTimers

USE_CLOCK_RESOLUTION = 1.0
"""Seconds within which the last use of a key by fresh hits is known.

A fresh hit records an upper bound of "now" kept by a ticker, never an
earlier time, so a key read only by fresh hits leaves L1 between ``gc_time``
and ``gc_time`` + this after its last hit (other uses are exact).
"""

Predicate = Callable[[QueryKey, QueryState[Any]], bool]

EMPTY_STATE: QueryState[Any] = QueryState()
"""The state of a key that has no snapshot."""


class UseBoundReader(Protocol):
    """Whatever keeps a copy of :attr:`QueryCache.use_bound` (see ``share_use_bound``)."""

    use_bound: float


def _never_busy(_key_hash: str) -> bool:
    return False


class _Landing:
    """What a fetch landing with a fixed fresh period computed (see ``QueryCache.with_data``),
    from the shape ``shape`` with the settings of ``options``: the same for the next alike."""

    __slots__ = (
        "collect_after",
        "gc_time",
        "jitter",
        "landed",
        "period",
        "shape",
        "stale_after",
        "stale_time",
    )

    def __init__(
        self,
        shape: _state.Shape,
        options: QueryOptions[Any],
        period: float,
        landed: _state.Shape,
        stale_after: _state.AfterData,
        collect_after: _state.AfterData,
    ) -> None:
        self.shape = shape
        self.stale_time = options.stale_time
        self.gc_time = options.gc_time
        self.jitter = options.jitter
        self.period = period
        self.landed = landed
        self.stale_after = stale_after
        self.collect_after = collect_after


class QueryCache:
    """The L1 table: snapshots by key hash, their timers, gc and eviction.

    Args:
        config: the client's configuration (default stale and gc times,
            ``max_queries``).
        events: where additions, changes and removals are reported.
    """

    def __init__(self, config: QueryClientConfig, events: EventHub) -> None:
        self.config = config
        self.events = events
        self.snapshots: dict[str, Snapshot] = {}
        """Every key's snapshot.  Read it freely; change it only through this class."""
        self.use_bound = 0.0
        """An upper bound of "now", kept ahead by :meth:`run_use_clock`: what a fresh hit
        stores in its snapshot's ``hit`` (no clock read, no allocation)."""
        self._ordered = config.max_queries is not None
        """Whether the table is kept in eviction order (only ``max_queries`` evicts)."""
        self._templates = Templates()
        """What keys read alike share of their options (see :mod:`._remembered`)."""
        self._use_bound_readers: list[UseBoundReader] = []
        self._unplaced_options: dict[str, object] = {}
        """Options remembered for keys not in the table yet (a cold read, a fetch about to
        make the key), as the table keeps them: moved into the key's snapshot when it is made."""
        self._timers = KeyTimers(self._on_timer, self._timer_deadline)
        self._dead_timers = 0
        """Timer entries of dropped keys, still in the heap (see :meth:`drop`)."""
        self._clock: Clock | None = None
        self.now: Callable[[], float] = trio.current_time
        """Trio time now: once the table is open, the run's clock read directly (one call
        where ``trio.current_time()`` makes three; a cold key reads it twice)."""
        self.origin = OriginRecord()
        """Circuit breakers used and stale-if-error serves, for statistics and records."""
        self._is_busy: Callable[[str], bool] = _never_busy
        self.freshness = Freshness(config.stale_time, config.jitter, config.seed)
        """Fresh periods computed and jittered when data lands; the client's random source."""
        self._after_data: dict[float, _state.AfterData] = {}
        """The deadlines counted from the data that landings keep, by their seconds (see
        :meth:`with_data`): one object per period for every key alike."""
        self._landing: _Landing | None = None
        """What the last fetch landing with a fixed period computed, for the next alike."""
        self._empty: _state.Shape | None = None
        """The shape of the last key made (see :meth:`create_for_key`), for the next alike."""
        self._landed_shapes: dict[int, tuple[_state.Shape, _state.Shape | None, float | None]] = {}
        """A fetching shape, its landed shape and fixed fresh period (see
        :meth:`_landed_of`) by the shape's id, with the shape itself, held so that its id
        is not another's while it is here."""

    def open(self, clock: Clock, is_busy: Callable[[str], bool]) -> None:
        """Start keeping time with ``clock``; ``is_busy(key_hash)`` keeps a key from gc."""
        self._clock = clock
        self._is_busy = is_busy
        self.now = trio.lowlevel.current_clock().current_time
        self._set_use_bound(trio.current_time() + USE_CLOCK_RESOLUTION)

    def share_use_bound(self, reader: UseBoundReader) -> None:
        """Keep ``reader.use_bound`` equal to :attr:`use_bound` from now on.

        For the fresh hit of ``fetch_query``: one attribute of the client away
        rather than two, on the path that matters most for speed.
        """
        reader.use_bound = self.use_bound
        self._use_bound_readers.append(reader)

    def _set_use_bound(self, bound: float) -> None:
        self.use_bound = bound
        for reader in self._use_bound_readers:
            reader.use_bound = bound

    async def run_timers(self) -> None:
        """Fire the keys' timers until cancelled."""
        await self._timers.run()

    async def run_use_clock(self) -> None:
        """Keep :attr:`use_bound` a little ahead of the clock, until cancelled.

        It rests while no key has a timer (no gc to time, no staleness to
        flip): a bound left behind then is older than any key's last use,
        so the hits that record it count for nothing rather than for too early.
        """
        while True:
            await self._timers.wait_nonempty()
            self._set_use_bound(trio.current_time() + USE_CLOCK_RESOLUTION)
            await trio.sleep_until(self.use_bound)

    @property
    def clock(self) -> Clock:
        """The client's clock (trio time mapped to wall time).

        Raises:
            ClientClosedError: the client was never opened.
        """
        if self._clock is None:
            raise ClientClosedError("the query client is not open: use it inside `async with`")
        return self._clock

    @property
    def timer_count(self) -> int:
        """Pending staleness and gc timer entries."""
        return len(self._timers)

    def __len__(self) -> int:
        return len(self.snapshots)

    def get(self, key_hash: str) -> Snapshot | None:
        """The key's snapshot, or ``None``."""
        return self.snapshots.get(key_hash)

    def state(self, key_hash: str) -> QueryState[Any]:
        """The key's state (the empty state for a key not in the table)."""
        snap = self.snapshots.get(key_hash)
        return snap.state if snap is not None else EMPTY_STATE

    def remember(self, options: QueryOptions[Any]) -> None:
        """Record ``options`` as what the key was last read with (see :meth:`last_options`).

        Kept in the key's snapshot (``Snapshot.options``), or until the key is
        made for a key not in the table yet; those of keys never made (a read
        that failed first) are swept once they could be as many as the keys.
        Kept compact: the key's ``query_fn`` and settings shared with the keys
        read alike (see :class:`Templates`).
        """
        key_hash = options.key_hash
        kept = self._templates.compact(options)
        snap = self.snapshots.get(key_hash)
        if snap is not None:
            snap.options = kept
            return
        unplaced = self._unplaced_options
        if len(unplaced) > len(self.snapshots) + 1024:
            unplaced.clear()
        unplaced[key_hash] = kept

    def last_options(self, key_hash: str) -> QueryOptions[Any] | None:
        """The options the key was last read or fetched with (not by fresh hits), or ``None``:
        what ``refetch_queries`` fetches an unobserved key with."""
        snap = self.snapshots.get(key_hash)
        kept = snap.options if snap is not None else self._unplaced_options.get(key_hash)
        return self._templates.expand(key_hash, kept)

    def note_use(self, key_hash: str) -> None:
        """Count a use of the key that publishes nothing (a read served from the table) as a
        fresh hit does: the key's gc counts from :attr:`use_bound`; synchronous."""
        snap = self.snapshots.get(key_hash)
        if snap is not None:
            snap.hit = self.use_bound

    def matches(
        self, key: QueryKey, exact: bool, predicate: Predicate | None
    ) -> list[tuple[str, Snapshot]]:
        """The keys under ``key`` (or equal to it if ``exact``) that ``predicate`` accepts.

        Raises:
            InvalidKeyError: ``key`` is not a valid query key.
        """
        prefix = prefix_hash(key)
        return [
            (key_hash, snap)
            for key_hash, snap in list(self.snapshots.items())
            if hash_matches(key_hash, prefix, exact=exact)
            and (predicate is None or predicate(snap.key, snap.state))
        ]

    def matching(self, key: QueryKey, exact: bool, predicate: Predicate | None) -> list[str]:
        """The key hashes of :meth:`matches`."""
        return [key_hash for key_hash, _ in self.matches(key, exact, predicate)]

    # -- freshness -------------------------------------------------------------------

    def resolve_stale_time(self, stale_time: Any) -> Any:
        """A query's ``stale_time``, or the client's when the query leaves it ``None``."""
        return self.config.stale_time if stale_time is None else stale_time

    def fresh_period(self, stale_time: Any, data: Any, jitter: float | None) -> float:
        """Seconds ``data`` stays fresh (see :meth:`Freshness.fresh_period`); never raises."""
        return self.freshness.fresh_period(stale_time, data, jitter)

    def fixed_fresh_period(self, stale_time: Any) -> float | None:
        """Seconds any data judged by ``stale_time`` stays fresh, if the same for all, else
        ``None`` (see :meth:`Freshness.fixed_period`); never raises."""
        return self.freshness.fixed_period(stale_time)

    def refetch_interval(self, options: QueryOptions[Any]) -> float | None:
        """Seconds to the next refetch of an observed key, or ``None`` (see
        :meth:`Freshness.refetch_interval`: a function is asked with the key's state)."""
        interval = options.refetch_interval
        if not callable(interval):
            return interval
        return self.freshness.refetch_interval(interval, self.state(options.key_hash))

    def remembered_error(self, key_hash: str) -> BaseException | None:
        """The key's last error while ``error_ttl`` still holds it, else ``None``.

        Its traceback is put back to what it was when its fetch failed, so that
        raising it again adds only the frames of that raise.
        """
        snap = self.snapshots.get(key_hash)
        return None if snap is None else self.remembered_error_of(snap)

    def remembered_error_of(self, snap: Snapshot) -> BaseException | None:
        """:meth:`remembered_error` of the key whose snapshot is ``snap``."""
        failure = snap.shape.failure
        if failure is None or failure.error is None or failure.error_until == -math.inf:
            return None
        if trio.current_time() >= failure.error_until:
            return None
        return failure.error.with_traceback(failure.traceback)

    def is_fresh(self, snap: Snapshot, options: QueryOptions[Any]) -> bool:
        """Whether ``snap`` is fresh for a query with ``options`` (its own ``stale_time``).

        Judged by another ``stale_time`` than the snapshot's, a ``stale_time`` function
        runs now, on the data (without jitter).
        """
        if snap.shape.stale_time == options.stale_time:
            return snap.fresh_for is not _state.NOT_FRESH
        state = snap.state
        if state.status is not _state.QueryStatus.SUCCESS or state.is_invalidated:
            return False
        assert state.data_updated_at is not None
        updated = self.clock.from_wall(state.data_updated_at)
        return updated + self.fresh_period(options.stale_time, snap.data, 0.0) > trio.current_time()

    def is_fresh_for(self, options: QueryOptions[Any]) -> bool:
        """Whether the table holds fresh data for ``options``."""
        snap = self.snapshots.get(options.key_hash)
        return snap is not None and self.is_fresh(snap, options)

    def servable_until(self, snap: Snapshot, options: QueryOptions[Any]) -> float | None:
        """Trio time from which ``snap``'s data is no longer served (a read waits for a new
        fetch): ``fetched_at + max_age`` or ``stale_at + max_stale`` (its computed, jittered
        stale time), whichever comes first; ``None``: no bound (or no data).

        The one notion of "past max age": reads (``too_old``) and ``stale_if_error``
        (which extends it for failed fetches) both count from it.
        """
        updated = snap.data_updated_at
        if updated is None:
            return None
        until: float | None = None
        if options.max_stale is not None:
            until = snap.stale_at + options.max_stale
        max_age = options.max_age
        if max_age is not None:
            aged = self.clock.from_wall(updated) + max_age
            until = aged if until is None else min(until, aged)
        return until

    def too_old(self, snap: Snapshot, options: QueryOptions[Any]) -> bool:
        """Whether the key's data is past the query's ``max_age`` or ``max_stale`` (then it is
        never served but by ``stale_if_error``)."""
        until = self.servable_until(snap, options)
        return until is not None and until <= trio.current_time()

    def stale_if_error_window(self, options: QueryOptions[Any]) -> float:
        """Seconds past :meth:`servable_until` a failed fetch still serves the data."""
        window = options.stale_if_error
        return self.config.stale_if_error if window is None else window

    def servable(self, snap: Snapshot | None, options: QueryOptions[Any]) -> bool:
        """Whether ``snap`` holds data a read with ``options`` may return (fresh or stale)."""
        if snap is None or snap.data_updated_at is None:
            return False
        # Every stale read asks: with no bound (the usual case) there is no clock to read.
        return (options.max_age is None and options.max_stale is None) or not self.too_old(
            snap, options
        )

    # -- building snapshots -------------------------------------------------------------

    def create(self, options: QueryOptions[Any], *, fetching: bool = False) -> Snapshot:
        """Put a new key in the table (with ``initial_data`` if the options have it).

        The key's timer is armed by its first publish (a fetch starting, data
        set), which every caller makes next.  ``fetching``: the key's first
        fetch starts now, published as :func:`_state.fetching` would (a key
        with no initial data and nobody listening to events is made so at once).

        Raises:
            Exception: whatever an ``initial_data`` factory raised.
        """
        initial = options.initial_data
        if initial is not UNSET:  # first: a factory that raises leaves nothing behind
            data = initial() if callable(initial) else initial
        at_once = fetching and initial is UNSET and not self.events.listening
        snap = self.create_for_key(
            options.key_hash,
            stale_time=options.stale_time,
            gc_time=options.gc_time,
            fetching=at_once,
        )
        if initial is not UNSET:
            wall = options.initial_data_updated_at
            updated = self.clock.from_wall(wall) if wall is not None else trio.current_time()
            snap = self.publish(self.with_data(snap, data, options, updated_at=updated))
        if fetching and not at_once:
            snap = self.publish(_state.fetching(snap, now=trio.current_time()))
        return snap

    def create_fetching_many(
        self, options_list: list[QueryOptions[Any]], keys: list[str], now: float
    ) -> tuple[list[_state.Shape], list[Run]] | None:
        """:meth:`create` with ``fetching`` then :meth:`remember`, of each options; the new
        snapshots' shapes, in order, and the runs of options read alike that cover them
        (see :meth:`Templates.compact_many`); ``None``, and nothing made, if one of them
        has ``initial_data``.  For keys not in the table, each listed once; ``keys``: their
        hashes, in order; ``now``: the trio time now, the batch's claim (the time the keys
        are made at, which :meth:`BatchRead.previous` makes them again at).

        What the keys share is looked up once (the clock, whether anybody listens,
        the interned shape of a run of keys read alike): a batch of cold keys pays
        per key a snapshot and a place in the table, and its options are not read
        again.  Only their shapes are returned: a key whose snapshot still has it
        when its fetch lands was changed by nothing meanwhile (see
        :meth:`land_fresh_many`), and a list of the snapshots themselves would keep
        them alive past their landing, for the cyclic GC to walk.
        """
        shapes: list[_state.Shape] = []
        if self.events.listening or self.config.max_queries is not None:
            if any(options.initial_data is not UNSET for options in options_list):
                return None
            for options in options_list:
                shapes.append(self.create(options, fetching=True).shape)
                self.remember(options)
            return shapes, [
                Run(place, place + 1, options) for place, options in enumerate(options_list)
            ]
        default_gc_time = self.config.gc_time
        snapshots = self.snapshots
        unplaced = self._unplaced_options
        empty_of_shape = _state.empty_of_shape
        shape: _state.Shape | None = None
        collect_at = now
        # What remember() writes.
        kept_list, runs = self._templates.compact_many(options_list)
        if any(like.initial_data is not UNSET for _, _, like in runs):
            return None
        for start, end, like in runs:
            gc_time = default_gc_time if like.gc_time is None else like.gc_time
            made = _state.empty_shape(like.stale_time, gc_time, fetching=True)
            if made is not shape:  # interned: runs read alike share it
                shape = made
                collect_at = now + shape.gc_time  # one float for their gc deadlines
            for key_hash, kept in zip(keys[start:end], kept_list[start:end], strict=True):
                if unplaced:
                    unplaced.pop(key_hash, None)
                snapshots[key_hash] = empty_of_shape(key_hash, shape, now, kept, collect_at)
            shapes += repeat(shape, end - start)
        return shapes, runs

    def create_for_key(
        self,
        key_hash: str,
        *,
        stale_time: StaleTime | None = None,
        gc_time: float | None = None,
        fetching: bool = False,
    ) -> Snapshot:
        """Put a new, empty key in the table, making room first under ``max_queries``
        (``fetching``: see :func:`_state.empty_snapshot`)."""
        if gc_time is None:
            gc_time = self.config.gc_time
        empty = self._empty
        if (
            empty is None
            or empty.stale_time is not stale_time
            or empty.gc_time != gc_time
            or empty.fetch_count != fetching  # 1 for a key made fetching, else 0
        ):
            empty = self._empty = _state.empty_shape(stale_time, gc_time, fetching=fetching)
        snap = _state.empty_of_shape(key_hash, empty, now=self.now())
        max_queries = self.config.max_queries
        if max_queries is not None and len(self.snapshots) >= max_queries:
            # Room is made before the new key goes in, so the new key is never the one evicted.
            self._evict(max_queries - 1)
        unplaced = self._unplaced_options
        if unplaced:
            snap.options = unplaced.pop(key_hash, None)
        self.snapshots[key_hash] = snap
        if self.events.listening:
            self.events.emit(CacheEventType.ADDED, snap.key, snap.state)
        return snap

    def with_data(
        self,
        snap: Snapshot,
        data: Any,
        options: QueryOptions[Any] | None,
        *,
        updated_at: float,
        idle: bool = False,
        now: float | None = None,
    ) -> Snapshot:
        """``snap`` holding ``data`` fetched or set at trio time ``updated_at``; not published.

        The fresh period is computed here, once per landing (see :meth:`fresh_period`).
        ``idle``: and its fetch ended (see :func:`_state.with_data`).  ``now``: the trio
        time now, if the caller has it (else it is read).
        """
        if idle and options is not None:
            plan = self._landing
            if (
                plan is not None
                and updated_at == now
                and plan.shape is snap.shape
                and plan.stale_time is options.stale_time
                and plan.gc_time is options.gc_time
                and plan.jitter is options.jitter
                and options.max_stale is None
            ):
                # A fetch landing now from the shape, with the settings, of the last one
                # that did (keys read alike): what that one computed, but the time.
                clock = self._clock
                assert clock is not None  # that one stamped its data with it
                wall, at = clock.stamp(now)
                fresh_for = options.stale_time if at + plan.period > now else _state.NOT_FRESH
                return _state.with_data_as(
                    snap, data, fresh_for, wall, plan.stale_after, plan.collect_after, plan.landed
                )
        stale_time = options.stale_time if options is not None else None
        gc_time = (
            options.gc_time if options is not None and options.gc_time is not None else snap.gc_time
        )
        jitter = options.jitter if options is not None else None
        period = self.freshness.fresh_period(stale_time, data, jitter)
        if options is not None and options.max_stale is not None:
            # Kept (in L1, and in L2 whose TTL is gc_time) while it may be served, by a
            # read or by a failed fetch's stale_if_error.
            window = self.stale_if_error_window(options)
            gc_time = max(gc_time, period + options.max_stale + window)
        clock = self.clock
        if now is None:
            now = trio.current_time()
        if updated_at == now and self.freshness.fixed_period(stale_time, jitter) is not None:
            # Landing now, with a period every key alike has: its stale and gc deadlines
            # count from its stamp, through objects those keys share (24 bytes a key each).
            wall, at = clock.stamp(now)
            after = self._after_data
            stale_after = after.get(period) or self._after(period)
            collect_after = after.get(gc_time) or self._after(gc_time)
            landed = _state.with_data(
                snap,
                data,
                updated_at_wall=wall,
                updated_at=at,
                stale_time=stale_time,
                resolved_stale_time=period,
                now=now,
                idle=idle,
                gc_time=gc_time,
                stale_after=stale_after,
                collect_after=collect_after,
            )
            # Without a failure before, the landed shape is an interned one, for keys alike.
            if (
                idle
                and options is not None
                and options.max_stale is None
                and snap.shape.failure is None
            ):
                self._landing = _Landing(
                    snap.shape, options, period, landed.shape, stale_after, collect_after
                )
            return landed
        return _state.with_data(
            snap,
            data,
            updated_at_wall=clock.wall(updated_at),
            updated_at=updated_at,
            stale_time=stale_time,
            resolved_stale_time=period,
            now=now,
            idle=idle,
            gc_time=gc_time,
        )

    def _after(self, seconds: float) -> _state.AfterData:
        """The deadline ``seconds`` after a key's data, as landings keep it (one per value)."""
        found = self._after_data.get(seconds)
        if found is None:
            if len(self._after_data) >= 4096:  # sharing saves memory; it is not needed
                self._after_data.clear()
            found = self._after_data[seconds] = _state.AfterData(self.clock, seconds)
        return found

    def set_data(
        self,
        key_hash: str,
        updater: Callable[[Any], Any],
        updated_at: float | None,
        options: QueryOptions[Any] | None,
    ) -> Snapshot:
        """Publish ``updater(old data)`` as the key's data, as of wall time ``updated_at``.

        Raises:
            Exception: whatever ``updater`` raised (nothing is changed).
        """
        snap = self.snapshots.get(key_hash)
        data = updater(snap.data if snap is not None and snap.has_data else None)
        if snap is None:
            snap = self.create_for_key(key_hash) if options is None else self.create(options)
        if updated_at is None:
            now = trio.current_time()
            return self.publish(self.with_data(snap, data, options, updated_at=now, now=now))
        when = self.clock.from_wall(updated_at)
        return self.publish(self.with_data(snap, data, options, updated_at=when))

    # -- publishing and dropping ------------------------------------------------------

    def publish(self, snap: Snapshot) -> Snapshot:
        """Make ``snap`` the key's state, its timer armed; return what was stored."""
        key_hash = snap.key_hash
        snapshots = self.snapshots
        if self.events.listening:
            self.events.published(snapshots.get(key_hash), snap)
        # Under max_queries, moved to the back: the table's order is the eviction order
        # (least recently used first).  Else replaced in place: nothing is evicted, and each
        # pop would leave a dead slot in the dict, which then grows to twice the size it
        # needs (60 MB instead of 30 for a million keys) before it cleans them up.
        old = snapshots.pop(key_hash, None) if self._ordered else snapshots.get(key_hash)
        # Most snapshots carry them already (built from the one in the table).
        if old is not None and (old.options is not snap.options or old.hit is not snap.hit):
            _carry_uses(old, snap)
        # The key's one timer fires by its next deadline (staleness or gc).  One pending
        # entry per key, not one per publish: a later deadline (a refetch pushes staleness
        # back) is found when the earlier entry fires.
        deadline = self._timer_due(snap)
        if deadline is not None:
            self._timers.push(deadline, key_hash)
        snapshots[key_hash] = snap
        return snap

    def land_fresh_many(
        self,
        keys: list[str],
        bounded: Container[int],
        shapes: list[_state.Shape],
        values: list[Any],
        times: list[float | None],
        claims: dict[str, Any],
        claimed_by: Sequence[object],
        busy: Container[str],
        skew: float,
    ) -> list[int]:
        """Publish the data of the keys whose fetch ended with it that can land as they are;
        return the places of the others (nothing done for them).  Synchronous, never raises.

        Each place is a key: ``keys[place]``, made with no data in the shape
        ``shapes[place]`` (fetching) when its fetch, the claim ``claimed_by[place]``
        in ``claims``, started; in ``bounded`` if the options it is read with have a
        ``max_age`` or a ``max_stale`` (looked up by the caller, which has the
        options at hand: here they would be one more object to reach per key).  The
        fetch ended with ``values[place]``, stamped (wall time) ``times[place]``
        (``None``: data to judge with care, or none).

        A key lands here if nothing changed it meanwhile: its claim is still
        ``claims[key]`` (taken out as it lands), it is not ``busy``, and its
        snapshot still has no data and that shape (each door that changes a key's
        state changes its shape; a use does not, and the key lands from the
        snapshot with the use); and if its data is fresh: stamped at most ``skew``
        seconds past now, fresh by the key's stale time, and not ``bounded``.  It
        lands as :meth:`with_data` (idle) and :meth:`publish` would land it, in
        fewer steps: one snapshot, published at once (so that the one it replaces
        is freed at once, not walked by the cyclic GC), with what keys alike share
        (landed shape, fresh period) looked up once.
        """
        snapshots = self.snapshots
        get = snapshots.get
        # Listeners hear of each key, and the table's order is kept, by publish itself.
        publish = self.publish if self.events.listening or self._ordered else None
        now = self.now()
        clock = self.clock
        latest = clock.wall(now) + skew
        trio_start, wall_start = clock.trio_start, clock.wall_start
        landed_fresh = _state.landed_fresh
        rest: list[int] = []
        deadlines: list[float] = []
        timed: list[str] = []
        # What keys alike share is looked up once for a run of them.
        last_shape: _state.Shape | None = None
        landed: _state.Shape | None = None
        fixed: float | None = None
        collect_at = now
        if not bounded:
            bounded = ()  # nothing to look up per key
        for place, updated_at in enumerate(times):
            if updated_at is None or updated_at > latest:
                rest.append(place)
                continue
            key_hash = keys[place]
            snap = get(key_hash)
            shape = shapes[place]
            if (
                snap is None
                or snap.shape is not shape
                or snap.data_updated_at is not None
                or key_hash in busy
                or place in bounded
            ):
                rest.append(place)
                continue
            if shape is not last_shape:
                landed, fixed = self._landed_of(shape)
                last_shape = shape
                # Every key of the run is used now: one float for all their gc deadlines.
                collect_at = now + shape.gc_time
            if landed is None:  # a shape with a failure
                rest.append(place)
                continue
            value = values[place]
            period = fixed
            if period is None:
                period = self.freshness.fresh_period(shape.stale_time, value, None)
            stale_at = trio_start + (updated_at - wall_start) + period  # clock.from_wall
            if stale_at <= now:  # stale: served and refetched, by its fetch's owner
                rest.append(place)
                continue
            # Taken out last, once nothing else keeps the key from landing here.
            claim = claims.pop(key_hash, None)
            if claim is not claimed_by[place]:
                if claim is not None:
                    claims[key_hash] = claim
                rest.append(place)
                continue
            # _state._collect_at, _timer_kept and _timer_due written out: per key.
            kept_collect = stale_at if stale_at == collect_at else collect_at
            timer_at = snap.timer_kept
            if timer_at.__class__ is not float:
                timer_at = snap.timer_at
            if publish is not None:
                publish(
                    landed_fresh(snap, landed, value, updated_at, stale_at, kept_collect, timer_at)
                )
                continue
            deadline = stale_at if stale_at < kept_collect else kept_collect
            if deadline < timer_at:
                timer_at = deadline
                deadlines.append(deadline)
                timed.append(key_hash)
            snapshots[key_hash] = landed_fresh(
                snap, landed, value, updated_at, stale_at, kept_collect, timer_at
            )
        if timed:
            self._timers.push_many(deadlines, timed)
        return rest

    def _landed_of(self, fetching: _state.Shape) -> tuple[_state.Shape | None, float | None]:
        """The landed shape of the shape ``fetching`` (``None``: one with a failure, not
        landed by :meth:`land_fresh_many`) and its fixed fresh period (``None``: none),
        looked up once for many keys."""
        known = self._landed_shapes.get(id(fetching))
        if known is None:
            if len(self._landed_shapes) >= 64:
                self._landed_shapes.clear()
            landed = None if fetching.failure is not None else _state.landed_shape(fetching)
            known = self._landed_shapes[id(fetching)] = (
                fetching,
                landed,
                self.freshness.fixed_period(fetching.stale_time),
            )
        return known[1], known[2]

    def mark_invalidated(self, key_hash: str) -> Snapshot | None:
        """Publish the key as invalidated, if it is in the table; return the new snapshot."""
        snap = self.snapshots.get(key_hash)
        if snap is None:
            return None
        return self.publish(_state.invalidated(snap, now=trio.current_time()))

    def mark_all_invalidated(self) -> None:
        """Mark every key with data invalidated, without publishing (no event, no timer)."""
        now = trio.current_time()
        snapshots = self.snapshots
        marked = [
            (key_hash, snap)
            for key_hash, snap in snapshots.items()
            if snap.data_updated_at is not None and not snap.shape.is_invalidated
        ]
        for key_hash, snap in marked:
            snapshots[key_hash] = _state.invalidated(snap, now=now)

    def drop(self, key_hash: str, *, timer_fired: bool = False) -> None:
        """Remove the key from the table (nothing else: L2 is the caller's business).

        ``timer_fired``: the key's timer entry was just taken off the heap.
        """
        snaps = self.snapshots
        snap = snaps.pop(key_hash, None)
        if snap is None:
            return
        if self.events.listening:
            self.events.emit(CacheEventType.REMOVED, snap.key, None)
        if snap.timer_at != math.inf and not timer_fired:
            # Its entry stays in the heap until its deadline; under key churn
            # (max_queries) those would pile up: sweep them once they are as
            # many as the live keys (amortized: a sweep of 2n entries per n drops).
            self._dead_timers += 1
            if self._dead_timers >= len(snaps):
                self._dead_timers = 0
                self._timers.compact()

    def emit_observer(self, key_hash: str, *, added: bool) -> None:
        """Report an observer added to or removed from the key."""
        if not self.events.listening:
            return
        kind = CacheEventType.OBSERVER_ADDED if added else CacheEventType.OBSERVER_REMOVED
        snap = self.snapshots.get(key_hash)
        if snap is not None:
            self.events.emit(kind, snap.key, snap.state)
        else:  # a cold key: its snapshot is made when its first fetch starts
            self.events.emit(kind, key_from_hash(key_hash), EMPTY_STATE)

    # -- timers, gc, eviction --------------------------------------------------------------

    def _timer_due(self, snap: Snapshot) -> float | None:
        """The deadline of the timer entry ``snap`` needs, for :meth:`publish` to push
        (written into it as kept), or ``None`` when its entry is due by then already."""
        if snap.shape.fetch_status is _state.FetchStatus.FETCHING:
            # Busy: nothing to collect.  The publish that ends the fetch arms
            # the timer, so a cold key gets one entry (its staleness) instead
            # of two (a gc entry, then an earlier one); only data set while
            # the fetch runs has a staleness to time meanwhile.
            if snap.fresh_for is _state.NOT_FRESH:
                return None
            kept, deadline = _due(snap, True, False)
        else:
            # Its gc is due, or before that it goes stale.
            kept, deadline = _due(snap, snap.fresh_for is not _state.NOT_FRESH, True)
        timer_at = snap.timer_kept
        if timer_at.__class__ is not float:  # read as _due reads a deadline
            timer_at = snap.timer_at
        if deadline < timer_at:
            # Written in place, as a hit is: the deadline is the table's bookkeeping, not
            # the key's state, and a copy of the snapshot for it cost a construction a publish.
            # Kept as the snapshot keeps it (shared by keys alike), not as a float of its own.
            snap.timer_kept = kept
            return deadline
        return None

    def _timer_deadline(self, key_hash: str) -> float | None:
        """The deadline of the key's timer entry that counts, or ``None`` (see KeyTimers)."""
        snap = self.snapshots.get(key_hash)
        return snap.timer_at if snap is not None else None

    def _on_timer(self, key_hash: str, deadline: float) -> None:
        """The key's timer came due: flip its staleness flag, collect it, or look again later."""
        snap = self.snapshots.get(key_hash)
        if snap is None or snap.timer_at != deadline:
            return  # superseded by an earlier entry, or the key is gone
        now = trio.current_time()
        if snap.fresh and snap.stale_at <= now:
            snap = _state.went_stale(snap)
        hit = snap.hit
        if hit is not None and hit + snap.gc_time > snap.collect_at:
            snap = _state.used(snap, now=hit)
        if self._is_busy(key_hash):
            # In use (a fetch, observers): look again later; the last observer
            # leaving restarts the countdown through collect_at.  Not sooner
            # than a second: with gc_time 0 the timer task would spin.
            kept: _state.Deadline
            kept = deadline = now + max(snap.gc_time, 1.0)
            if snap.fresh and snap.stale_at < deadline:
                kept, deadline = _due(snap, True, False)
        elif snap.collect_at <= now:
            self.drop(key_hash, timer_fired=True)
            return
        else:
            # Its gc is due, or before that it goes stale (went_stale above flipped it if
            # its time had come).
            kept, deadline = _due(snap, snap.fresh, True)
        self._timers.push(deadline, key_hash)
        # In place, as publish does: the deadline is the table's bookkeeping, not the key's state.
        snap.timer_kept = kept
        self.snapshots[key_hash] = snap

    def _evict(self, max_queries: int) -> None:
        table = self.snapshots
        # Two rounds: the first may give every key its second chance (all hit
        # since the last pass), the second then evicts; only busy keys stay.
        for _ in range(2 * len(table)):
            if len(table) <= max_queries:
                return
            key_hash = next(iter(table))
            snap = table[key_hash]
            hit = snap.hit
            hit_since = hit is not None and hit + snap.gc_time > snap.collect_at
            if self._is_busy(key_hash) or hit_since:
                # Second chance (the CLOCK approximation of LRU): busy, or hit
                # since it was last moved to the back.
                del table[key_hash]
                table[key_hash] = _state.used(snap, now=hit) if hit_since else snap  # type: ignore[arg-type]
                continue
            self.drop(key_hash)


def _due(snap: Snapshot, stale: bool, collect: bool) -> tuple[_state.Deadline, float]:
    """The earlier of the key's stale deadline (if ``stale``) and its gc deadline (if
    ``collect``), as the snapshot keeps it and as a trio time (at least one is asked).
    Positional: each publish asks (a batch, thousands of times)."""
    # A deadline kept as a float is read as it is, not through the snapshot's property:
    # each publish asks, and most deadlines are floats.
    stale_kept = snap.stale_kept
    if not collect:
        return stale_kept, stale_kept if stale_kept.__class__ is float else snap.stale_at
    kept = snap.collect_kept
    # Snapshot.collect_at written out: a landing keeps its deadlines as AfterData.
    collect_at = kept.at(snap.data_updated_at) if isinstance(kept, _state.AfterData) else kept
    if stale and kept is not stale_kept:  # the same object: the same deadline
        stale_at = stale_kept if stale_kept.__class__ is float else snap.stale_at
        if stale_at < collect_at:
            return stale_kept, stale_at
    return kept, collect_at


def _carry_uses(old: Snapshot, snap: Snapshot) -> None:
    """Write into ``snap`` what uses wrote in place into ``old``, the key's snapshot in the
    table: the latest, even if ``snap`` was built from an older one (not visible yet:
    written there, not evolved)."""
    snap.options = old.options
    hit = old.hit
    if hit is not None and (snap.hit is None or hit > snap.hit):
        snap.hit = hit


__all__ = ["EMPTY_STATE", "USE_CLOCK_RESOLUTION", "Predicate", "QueryCache"]
