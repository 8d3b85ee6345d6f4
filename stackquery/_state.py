"""Query state: the public QueryState and the snapshot the L1 table holds.

Every change to a key's state is one of the pure functions below, from one
frozen :class:`Snapshot` to the next.  A key's actor applies them while it
runs; for a passivated key the client applies them directly (nothing else can
be changing that key then: no fetch, no observer).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

import attrs

from ._clock import Clock
from ._keys import QueryKey, key_from_hash

T = TypeVar("T")

StaleTime = float | Callable[[Any], float]
"""A ``stale_time``: seconds, or ``stale_time(data) -> float``."""


class QueryStatus(enum.Enum):
    """Whether a key has data, an error, or neither yet."""

    PENDING = "pending"
    SUCCESS = "success"
    ERROR = "error"

    # Members are singletons compared by identity: hashed so too, in C (Enum's own hash is
    # a Python call on the name, and the L1 table interns shapes by these, a few per fetch).
    __hash__ = object.__hash__


class FetchStatus(enum.Enum):
    """Whether ``query_fn`` is running for a key right now."""

    IDLE = "idle"
    FETCHING = "fetching"

    # Members are singletons compared by identity: hashed so too, in C (Enum's own hash is
    # a Python call on the name, and the L1 table interns shapes by these, a few per fetch).
    __hash__ = object.__hash__


@attrs.frozen
class QueryState(Generic[T]):
    """What is known about one key at one moment.

    ``data`` keeps the last successful value through later errors and
    refetches (stale-while-revalidate); ``None`` is a value like any other, so
    ``data_updated_at is None`` is what says "no data yet".
    """

    status: QueryStatus = QueryStatus.PENDING
    """``pending`` (no data, no error yet), ``success`` or ``error`` (the last fetch failed)."""
    fetch_status: FetchStatus = FetchStatus.IDLE
    """``fetching`` while ``query_fn`` runs (first load or refetch)."""
    data: T | None = None
    """The last successful value (an observer sees it through its ``select``)."""
    error: BaseException | None = None
    """The error of the last failed fetch, cleared by the next success."""
    data_updated_at: float | None = None
    """Wall-clock time (client clock) the data was fetched or set; ``None``: never."""
    error_updated_at: float | None = None
    """Wall-clock time of the last failed fetch; ``None``: never."""
    fetch_failure_count: int = 0
    """Failed attempts since the last success (retries included)."""
    is_stale: bool = True
    """Whether the data is older than the stale time it was judged with."""
    is_invalidated: bool = False
    """Whether the data was invalidated and not refetched since."""
    is_placeholder_data: bool = False
    """Whether ``data`` is an observer's placeholder (never cached)."""

    @property
    def has_data(self) -> bool:
        """Whether a value was ever fetched or set (``data`` may still be ``None``)."""
        return self.data_updated_at is not None


@attrs.frozen
class Failure:
    """What a key's failed fetches left: kept apart so a healthy key carries one empty slot."""

    error: BaseException | None = None
    """The error of the last fetch that failed for good (``None`` after a success)."""
    traceback: TracebackType | None = None
    """``error``'s traceback when its fetch failed: each read within ``error_ttl`` raises
    the error from it, so that the traceback does not grow by every read's frames."""
    error_updated_at: float | None = None
    """Wall time of that failure (kept through later successes, as TanStack does)."""
    fetch_failure_count: int = 0
    """Failed attempts since the last success."""
    error_count: int = 0
    """Fetches that failed for good since the key entered L1 (kept through successes)."""
    error_until: float = -math.inf
    """Trio time until which reads get ``error`` without an origin call (``error_ttl``);
    ``-inf``: not remembered (a success or an invalidation forgets it)."""


NOT_FRESH: Final = object()
"""``Snapshot.fresh_for`` of data that is not fresh (no stale time is this object)."""


@attrs.frozen(weakref_slot=False)
class Shape:
    """The part of a :class:`Snapshot` that most keys have in common: shared, not copied.

    A million idle keys fetched once and never failed are in one of a handful
    of shapes, so each snapshot holds a reference to an interned shape
    (see :func:`shape`) instead of seven fields of its own.
    """

    status: QueryStatus = QueryStatus.PENDING
    fetch_status: FetchStatus = FetchStatus.IDLE
    is_invalidated: bool = False
    failure: Failure | None = None
    """Errors and failed attempts, ``None`` for a key that never failed."""
    stale_time: StaleTime | None = None
    """The option the freshness was judged with (``None``: the client's)."""
    gc_time: float = 300.0
    """Seconds the key may stay unused and unobserved before it is dropped."""
    fetch_count: int = 0
    """Fetches started for the key since it entered L1."""


_SHAPES: dict[tuple[Any, ...], Shape] = {}
"""Interned shapes without a failure, by their fields (``stale_time`` by identity)."""
_SHAPES_MAX = 4096
"""Past this many shapes the table starts over: sharing saves memory, it is not needed
for correctness, and a program that makes new ``stale_time`` objects must not grow it."""


def shape(
    status: QueryStatus,
    fetch_status: FetchStatus,
    is_invalidated: bool,
    failure: Failure | None,
    stale_time: StaleTime | None,
    gc_time: float,
    fetch_count: int,
) -> Shape:
    """The shape with these fields: an interned one unless ``failure`` is set; never raises.

    ``stale_time`` counts by identity (the fresh hit compares it with ``is``):
    the interned shape holds it, so its ``id`` is not reused while the entry lives.
    """
    if failure is not None:
        return Shape(
            status, fetch_status, is_invalidated, failure, stale_time, gc_time, fetch_count
        )
    # The enum members hash and compare by identity, in C (see QueryStatus).  ``stale_time``
    # by its id: the shape found holds the object, so no other object has that id meanwhile.
    key = (status, fetch_status, is_invalidated, id(stale_time), gc_time, fetch_count)
    found = _SHAPES.get(key)
    if found is None:
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        found = _SHAPES[key] = Shape(
            status, fetch_status, is_invalidated, None, stale_time, gc_time, fetch_count
        )
    return found


@attrs.frozen(weakref_slot=False, eq=False)
class AfterData:
    """A deadline counted from a key's data: ``seconds`` after the trio time of its
    ``data_updated_at`` (see :meth:`Clock.from_wall`).

    What a snapshot keeps, instead of a float of its own, for a deadline that a landing
    counts from the data's time with a period every key alike has (``@cache(ttl)``'s
    stale time and gc time): one such object per client and period, shared by all its
    keys, so that a landed key keeps one float (its wall time) rather than two or three.
    The deadline is derived from the wall time, never the other way round (L2 compares
    the wall time exactly); the landing takes as the data's trio time the one its stamp
    maps back to (:meth:`Clock.stamp`), so that both ways of counting agree exactly.
    """

    clock: Clock
    seconds: float

    def at(self, data_updated_at: float | None) -> float:
        """The deadline, for data stamped ``data_updated_at`` (wall time; never ``None``)."""
        clock = self.clock
        # Clock.from_wall(data_updated_at) + seconds, to the bit, without the call: this
        # runs each time the table reads a kept deadline (a publish reads two or three).
        wall: float = data_updated_at  # type: ignore[assignment]
        return clock.trio_start + (wall - clock.wall_start) + self.seconds


Deadline = float | AfterData
"""A snapshot's deadline as kept: a trio time, or one counted from its data (:class:`AfterData`)."""


@attrs.define(weakref_slot=False, eq=False)
class Snapshot:
    """The published state of one key: what the L1 table holds.

    One object per key, kept small because a million cached keys are a
    million of these: what most keys share is one interned :class:`Shape`,
    the :class:`QueryState` users see is built from it on demand, and the key
    tuple is parsed back from its canonical hash.  Fresh hits read ``fresh_for``
    and ``data`` and nothing else, so the flag is computed when the snapshot is
    made and flipped by a timer when the data goes stale; nothing on the hit
    path reads the clock.

    The three deadlines (``stale_at``, ``collect_at``, ``timer_at``) are properties of
    what is kept (``stale_kept`` ...): a trio time, or an :class:`AfterData` shared by
    the keys that landed alike; a transition that changes the data keeps its
    ``timer_at`` as a trio time (counted from the old data, it would move).

    Immutable but for ``hit``, ``options`` and ``timer_kept``, which are bookkeeping
    of the table, not state: every change of state is a new snapshot (the transitions
    below), never a change in place.  The class is not
    attrs-frozen only because a frozen class's ``__setattr__`` would turn the
    fresh hit's store of ``hit`` into a Python call.
    """

    key_hash: str
    """The key's canonical hash: its place in the L1 table."""
    data: Any = None
    fresh_for: object = NOT_FRESH
    """While the data is fresh (successful, not invalidated, younger than
    ``stale_time``): the ``stale_time`` object it was judged with, else
    :data:`NOT_FRESH`.  So the fresh-hit test is one identity comparison
    with the caller's ``stale_time``."""
    data_updated_at: float | None = None
    """Wall time the data was fetched or set; ``None``: no data."""
    stale_kept: Deadline = -math.inf
    """:attr:`stale_at` as kept (a trio time, or an :class:`AfterData` shared by keys alike)."""
    collect_kept: Deadline = 300.0
    """:attr:`collect_at` as kept."""
    timer_kept: Deadline = math.inf
    """:attr:`timer_at` as kept: one of the two above, or a trio time.  Written in place by
    the table when it arms the key's timer, as ``hit`` is: its bookkeeping, not state."""
    shape: Shape = attrs.field(factory=Shape)
    """Status, fetch status, failure, stale and gc time, fetch count: shared."""
    hit: float | None = attrs.field(default=None, repr=False)
    """Written in place by a fresh hit (and other uses that publish nothing): an
    upper bound of its time, kept by the table's ticker.  The key's timer folds
    it into ``collect_at``."""
    options: Any = attrs.field(default=None, repr=False)
    """The options the key was last read or fetched with (not by fresh hits), or
    ``None``: what ``refetch_queries`` fetches an unobserved key with.  Written in
    place by :meth:`QueryCache.remember`, in a compact form (see ``Templates``); read
    them through ``QueryCache.last_options``."""

    @property
    def stale_at(self) -> float:
        """Trio time the data goes stale (``inf``: never; ``-inf``: no data)."""
        kept = self.stale_kept
        return kept.at(self.data_updated_at) if kept.__class__ is AfterData else kept  # type: ignore[return-value]

    @property
    def collect_at(self) -> float:
        """Trio time the key may be dropped, unused and unobserved: its last change or use
        plus ``gc_time``.  Kept rather than the time of that use, so that the key's gc
        timer, usually due then, shares it instead of holding a float of its own."""
        kept = self.collect_kept
        return kept.at(self.data_updated_at) if kept.__class__ is AfterData else kept  # type: ignore[return-value]

    @property
    def timer_at(self) -> float:
        """Deadline of the key's one pending timer (staleness and gc); ``inf``: none."""
        kept = self.timer_kept
        return kept.at(self.data_updated_at) if kept.__class__ is AfterData else kept  # type: ignore[return-value]

    @property
    def status(self) -> QueryStatus:
        """``pending`` (no data, no error yet), ``success`` or ``error``."""
        return self.shape.status

    @property
    def fetch_status(self) -> FetchStatus:
        """``fetching`` while ``query_fn`` runs."""
        return self.shape.fetch_status

    @property
    def is_invalidated(self) -> bool:
        """Whether the data was invalidated and not refetched since."""
        return self.shape.is_invalidated

    @property
    def failure(self) -> Failure | None:
        """Errors and failed attempts, ``None`` for a key that never failed."""
        return self.shape.failure

    @property
    def stale_time(self) -> StaleTime | None:
        """The option the freshness was judged with (``None``: the client's)."""
        return self.shape.stale_time

    @property
    def gc_time(self) -> float:
        """Seconds this key may stay unused and unobserved before it is dropped."""
        return self.shape.gc_time

    @property
    def fetch_count(self) -> int:
        """Fetches started for this key since it entered L1."""
        return self.shape.fetch_count

    @property
    def fresh(self) -> bool:
        """Successful, not invalidated, and younger than ``stale_time``."""
        return self.fresh_for is not NOT_FRESH

    @property
    def error(self) -> BaseException | None:
        """The last final fetch error (see :class:`Failure`)."""
        failure = self.shape.failure
        return failure.error if failure is not None else None

    @property
    def error_updated_at(self) -> float | None:
        """Wall time of the last final fetch error."""
        failure = self.shape.failure
        return failure.error_updated_at if failure is not None else None

    @property
    def error_count(self) -> int:
        """Fetches of this key that failed for good since it entered L1 (kept in ``failure``,
        which only a key that ever failed has)."""
        failure = self.shape.failure
        return failure.error_count if failure is not None else 0

    @property
    def fetch_failure_count(self) -> int:
        """Failed attempts since the last success."""
        failure = self.shape.failure
        return failure.fetch_failure_count if failure is not None else 0

    @property
    def has_data(self) -> bool:
        """Whether a value was ever fetched or set (``data`` may still be ``None``)."""
        return self.data_updated_at is not None

    @property
    def key(self) -> QueryKey:
        """The canonical key (parsed from ``key_hash``)."""
        return key_from_hash(self.key_hash)

    @property
    def state(self) -> QueryState[Any]:
        """The key's :class:`QueryState`, built now."""
        shape = self.shape
        failure = shape.failure
        return QueryState(
            status=shape.status,
            fetch_status=shape.fetch_status,
            data=self.data,
            error=failure.error if failure is not None else None,
            data_updated_at=self.data_updated_at,
            error_updated_at=failure.error_updated_at if failure is not None else None,
            fetch_failure_count=failure.fetch_failure_count if failure is not None else 0,
            is_stale=self.fresh_for is NOT_FRESH,
            is_invalidated=shape.is_invalidated,
        )


_NO_DATA: Final = -math.inf
"""``stale_at`` of a key with no data (one float object for every such key)."""
_NO_TIMER: Final = math.inf
"""``timer_at`` of a key with no pending timer."""

# How the snapshots of a batch are built (empty_of_shape, landed_fresh): Snapshot(...)
# runs the class's __init__ in a frame of its own, entered from C, about 3,100
# instructions, more than the rest of a batch key's landing; object.__new__ and the ten
# slots set in the caller's frame make the same snapshot (the class has no validator,
# converter nor hook for __init__ to run) in about 1,800.  Every slot is set: one left
# unset would raise when read.
_new: Final = object.__new__


def _changed(snap: Snapshot, shape: Shape, fresh_for: object, collect_at: Deadline) -> Snapshot:
    """``snap`` with another shape, freshness and gc deadline; its data and the table's
    bookkeeping kept.  What most transitions below are: a positional call of the class,
    because a fetch makes two or more snapshots and keywords cost a cold key measurably."""
    return Snapshot(
        snap.key_hash,
        snap.data,
        fresh_for,
        snap.data_updated_at,
        snap.stale_kept,
        collect_at,
        snap.timer_kept,
        shape,
        snap.hit,
        snap.options,
    )


def _timer_kept(snap: Snapshot) -> Deadline:
    """``snap``'s timer deadline for a snapshot with other data: a trio time (one counted
    from ``snap``'s data would count from the new data's time there)."""
    kept = snap.timer_kept
    return snap.timer_at if kept.__class__ is AfterData else kept


def empty_snapshot(
    key_hash: str,
    *,
    stale_time: StaleTime | None,
    gc_time: float,
    now: float,
    fetching: bool = False,
) -> Snapshot:
    """A key with no data and no fetch yet (``fetching``: its first fetch starts now, as
    :func:`fetching` of the empty key would say, made at once)."""
    return empty_of_shape(key_hash, empty_shape(stale_time, gc_time, fetching=fetching), now)


def empty_shape(stale_time: StaleTime | None, gc_time: float, *, fetching: bool) -> Shape:
    """The (interned) shape of :func:`empty_snapshot`: keys made alike share it."""
    if fetching:
        return shape(QueryStatus.PENDING, FetchStatus.FETCHING, False, None, stale_time, gc_time, 1)
    return shape(QueryStatus.PENDING, FetchStatus.IDLE, False, None, stale_time, gc_time, 0)


def empty_of_shape(
    key_hash: str,
    empty: Shape,
    now: float,
    options: object = None,
    collect_at: float | None = None,
) -> Snapshot:
    """:func:`empty_snapshot` with its shape given (:func:`empty_shape`, looked up once for
    the keys of a batch), holding ``options`` (see :attr:`Snapshot.options`); its gc
    deadline ``collect_at``, ``now`` plus its gc time (given: one float shared by the keys
    of a batch).  Built slot by slot (see ``_new``): a batch makes thousands of keys."""
    snap: Snapshot = _new(Snapshot)
    snap.key_hash = key_hash
    snap.data = None
    snap.fresh_for = NOT_FRESH
    snap.data_updated_at = None
    snap.stale_kept = _NO_DATA
    snap.collect_kept = now + empty.gc_time if collect_at is None else collect_at
    snap.timer_kept = _NO_TIMER
    snap.shape = empty
    snap.hit = None
    snap.options = options
    return snap


def _collect_at(now: float, gc_time: float, stale_at: float) -> float:
    """``now + gc_time``, the landing key's gc deadline: ``stale_at`` itself when equal, so
    that one float object serves both (and the timer, due then): 24 bytes a key less when
    the gc time is the fresh period, as with ``@cache(ttl)``."""
    collect_at = now + gc_time
    return stale_at if collect_at == stale_at else collect_at


def with_data(
    snap: Snapshot,
    data: Any,
    *,
    updated_at_wall: float,
    updated_at: float,
    stale_time: StaleTime | None,
    resolved_stale_time: float,
    now: float,
    idle: bool = False,
    gc_time: float | None = None,
    stale_after: AfterData | None = None,
    collect_after: AfterData | None = None,
) -> Snapshot:
    """The key now holds ``data``, current as of ``updated_at`` (trio time); ``idle``: and
    its fetch ended (:func:`idle` folded in: a fetch's landing makes one snapshot);
    ``gc_time``: the key's from now on (``None``: kept).

    ``stale_after`` / ``collect_after``: the stale and gc deadlines as counted from the
    data (``resolved_stale_time`` / ``gc_time`` after ``updated_at``, which must be the
    trio time ``updated_at_wall`` maps to), kept instead of floats of their own."""
    old = snap.shape
    if gc_time is None:
        gc_time = old.gc_time
    # stale_after.at(updated_at_wall) to the bit, when given (see above).
    stale_at = updated_at + resolved_stale_time
    kept_stale: Deadline = stale_at if stale_after is None else stale_after
    kept_collect: Deadline = (
        _collect_at(now, gc_time, stale_at) if collect_after is None else collect_after
    )
    failure = old.failure
    if failure is not None:
        failure = (
            None
            if failure.error_updated_at is None
            else Failure(error_updated_at=failure.error_updated_at, error_count=failure.error_count)
        )
    new = shape(
        QueryStatus.SUCCESS,
        FetchStatus.IDLE if idle else old.fetch_status,
        False,
        failure,
        stale_time,
        gc_time,
        old.fetch_count,
    )
    return Snapshot(
        snap.key_hash,
        data,
        stale_time if stale_at > now else NOT_FRESH,
        updated_at_wall,
        kept_stale,
        kept_collect,
        _timer_kept(snap),
        new,
        snap.hit,
        snap.options,
    )


def with_data_as(
    snap: Snapshot,
    data: Any,
    fresh_for: object,
    updated_at_wall: float,
    stale_after: AfterData,
    collect_after: AfterData,
    landed: Shape,
) -> Snapshot:
    """:func:`with_data` of a key whose landing's shape, freshness and deadlines are known
    already (computed by :func:`with_data` for a key alike, see ``QueryCache.with_data``)."""
    timer_kept = snap.timer_kept  # _timer_kept written out: most landings come here
    if timer_kept.__class__ is AfterData:
        timer_kept = snap.timer_at
    return Snapshot(
        snap.key_hash,
        data,
        fresh_for,
        updated_at_wall,
        stale_after,
        collect_after,
        timer_kept,
        landed,
        snap.hit,
        snap.options,
    )


def landed_shape(fetching: Shape) -> Shape:
    """The shape a key in ``fetching`` (a shape without a failure) has once its fetch ended
    with data: :func:`with_data` with ``idle``, for the keys of a batch to share."""
    return shape(
        QueryStatus.SUCCESS,
        FetchStatus.IDLE,
        False,
        None,
        fetching.stale_time,
        fetching.gc_time,
        fetching.fetch_count,
    )


def landed_fresh(
    snap: Snapshot,
    landed: Shape,
    data: Any,
    updated_at_wall: float,
    stale_at: float,
    collect_at: float,
    timer_at: float,
) -> Snapshot:
    """:func:`with_data` with ``idle`` of a key with no data and no failure, whose ``data``
    (stamped ``updated_at_wall``) is fresh until ``stale_at``; ``landed`` is
    :func:`landed_shape` of its shape, ``collect_at`` its gc deadline from now (the object
    ``stale_at`` when equal: see :func:`_collect_at`), ``timer_at`` the deadline of its
    timer entry as the table keeps it.  Built slot by slot (see ``_new``): a
    batch lands thousands of keys."""
    new: Snapshot = _new(Snapshot)
    new.key_hash = snap.key_hash
    new.data = data
    new.fresh_for = landed.stale_time
    new.data_updated_at = updated_at_wall
    new.stale_kept = stale_at
    new.collect_kept = collect_at
    new.timer_kept = timer_at
    new.shape = landed
    new.hit = snap.hit
    new.options = snap.options
    return new


def fetching(snap: Snapshot, *, now: float) -> Snapshot:
    """A fetch started for the key."""
    old = snap.shape
    new = _with_fetch_status(old, FetchStatus.FETCHING, old.fetch_count + 1)
    return _changed(snap, new, snap.fresh_for, now + old.gc_time)


def still_fetching(snap: Snapshot) -> Snapshot:
    """``snap``, built idle, for a key whose fetch goes on (no new fetch is counted)."""
    old = snap.shape
    if old.fetch_status is FetchStatus.FETCHING:
        return snap
    new = _with_fetch_status(old, FetchStatus.FETCHING, old.fetch_count)
    return _changed(snap, new, snap.fresh_for, snap.collect_kept)


def idle(snap: Snapshot, *, now: float) -> Snapshot:
    """The key's fetch ended (its data, if any, is already in ``snap``)."""
    old = snap.shape
    new = (
        old
        if old.fetch_status is FetchStatus.IDLE
        else _with_fetch_status(old, FetchStatus.IDLE, old.fetch_count)
    )
    return _changed(snap, new, snap.fresh_for, now + old.gc_time)


def _with_fetch_status(old: Shape, fetch_status: FetchStatus, fetch_count: int) -> Shape:
    """``old`` with another fetch status and fetch count."""
    return shape(
        old.status,
        fetch_status,
        old.is_invalidated,
        old.failure,
        old.stale_time,
        old.gc_time,
        fetch_count,
    )


def _with_failure(old: Shape, failure: Failure | None, gc_time: float) -> Shape:
    """``old`` with another failure and gc time."""
    return shape(
        old.status,
        old.fetch_status,
        old.is_invalidated,
        failure,
        old.stale_time,
        gc_time,
        old.fetch_count,
    )


def attempt_failed(snap: Snapshot, *, now: float) -> Snapshot:
    """One attempt of the fetch failed; a retry follows."""
    old = snap.shape
    failure = old.failure or Failure()
    failure = attrs.evolve(failure, fetch_failure_count=failure.fetch_failure_count + 1)
    return _changed(
        snap, _with_failure(old, failure, old.gc_time), snap.fresh_for, now + old.gc_time
    )


def failed(snap: Snapshot, error: BaseException, *, now: float, now_wall: float) -> Snapshot:
    """The fetch failed for good; data already held is kept and served stale."""
    old = snap.shape
    failure = Failure(
        error=error,
        traceback=error.__traceback__,
        error_updated_at=now_wall,
        fetch_failure_count=snap.fetch_failure_count + 1,
        error_count=snap.error_count + 1,
    )
    new = shape(
        QueryStatus.ERROR,
        FetchStatus.IDLE,
        old.is_invalidated,
        failure,
        old.stale_time,
        old.gc_time,
        old.fetch_count,
    )
    return _changed(snap, new, NOT_FRESH, now + old.gc_time)


def invalidated(snap: Snapshot, *, now: float) -> Snapshot:
    """The key's data must be refetched before it counts as fresh again (a remembered
    error is forgotten: the next read asks the origin)."""
    old = snap.shape
    new = shape(
        old.status,
        old.fetch_status,
        True,
        error_forgotten(old.failure),
        old.stale_time,
        old.gc_time,
        old.fetch_count,
    )
    return _changed(snap, new, NOT_FRESH, now + old.gc_time)


def went_stale(snap: Snapshot) -> Snapshot:
    """The data reached its stale time (no use, so ``collect_at`` is kept)."""
    return _changed(snap, snap.shape, NOT_FRESH, snap.collect_kept)


def used(snap: Snapshot, *, now: float) -> Snapshot:
    """The key was used (an observer left, a stale read): its gc countdown restarts."""
    return _changed(snap, snap.shape, snap.fresh_for, now + snap.shape.gc_time)


def restored(snap: Snapshot, previous: Snapshot, *, now: float) -> Snapshot:
    """A cancelled fetch puts back the data and status from before it started."""
    old = snap.shape
    before = previous.shape
    new = shape(
        before.status,
        FetchStatus.IDLE,
        before.is_invalidated,
        before.failure,
        before.stale_time,
        old.gc_time,
        old.fetch_count,
    )
    return Snapshot(
        snap.key_hash,
        previous.data,
        previous.fresh_for if previous.stale_at > now else NOT_FRESH,
        previous.data_updated_at,
        previous.stale_kept,
        now + old.gc_time,
        _timer_kept(snap),
        new,
        snap.hit,
        snap.options,
    )


def error_remembered(snap: Snapshot, *, until: float) -> Snapshot:
    """The key's last error stands until trio time ``until`` (``error_ttl``): reads get it
    without an origin call.  The key stays in L1 at least that long: ``gc_time`` grows so
    that its last use (``collect_at - gc_time``) plus ``gc_time`` reaches ``until``, and
    later uses keep it at least that long too."""
    old = snap.shape
    failure = attrs.evolve(old.failure or Failure(), error_until=until)
    used_at = snap.collect_at - old.gc_time
    new = _with_failure(old, failure, max(old.gc_time, until - used_at))
    return _changed(snap, new, snap.fresh_for, max(snap.collect_at, until))


def error_forgotten(failure: Failure | None) -> Failure | None:
    """``failure`` with its error no longer remembered (the same object if it was not)."""
    if failure is None or failure.error_until == -math.inf:
        return failure
    return attrs.evolve(failure, error_until=-math.inf)
