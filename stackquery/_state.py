"""Query state: the public QueryState and the snapshot the L1 table holds.

Every change to a key's state is one of the pure functions below, from one
frozen :class:`Snapshot` to the next.  A key's actor applies them while it
runs; for a passivated key the client applies them directly (nothing else can
be changing that key then: no fetch, no observer).
"""

from __future__ import annotations

import enum
import math
from typing import Any, Generic, TypeVar

import attrs

from ._keys import QueryKey

T = TypeVar("T")


class QueryStatus(enum.Enum):
    """Whether a key has data, an error, or neither yet."""

    PENDING = "pending"
    SUCCESS = "success"
    ERROR = "error"


class FetchStatus(enum.Enum):
    """Whether ``query_fn`` is running for a key right now."""

    IDLE = "idle"
    FETCHING = "fetching"


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
class Snapshot:
    """The published state of one key: what the L1 table holds.

    Fresh hits read ``fresh`` and ``state.data`` and nothing else, so the
    flag is computed when the snapshot is made and flipped by a timer when
    the data goes stale; nothing on the hit path reads the clock.
    """

    key: QueryKey
    key_hash: str
    """The key's canonical hash: its place in the L1 table."""
    state: QueryState[Any]
    fresh: bool
    """Successful, not invalidated, and younger than ``stale_time``."""
    stale_time: float | None
    """The option the freshness was judged with (``None``: the client's)."""
    stale_at: float
    """Trio time the data goes stale (``inf``: never; ``-inf``: no data)."""
    active_at: float
    """Trio time of the last change or use that was not a fresh hit."""
    gc_time: float
    """Seconds this key may stay unused and unobserved before it is dropped."""
    incarnation: int
    """Tells a key apart from an earlier one under the same hash (after removal)."""
    fetch_count: int = 0
    """Fetches started for this key since it entered L1."""
    error_count: int = 0
    """Fetches of this key that failed for good since it entered L1."""


def empty_snapshot(
    key: QueryKey,
    key_hash: str,
    *,
    stale_time: float | None,
    gc_time: float,
    now: float,
    incarnation: int,
) -> Snapshot:
    """A key with no data and no fetch yet."""
    return Snapshot(
        key=key,
        key_hash=key_hash,
        state=QueryState(),
        fresh=False,
        stale_time=stale_time,
        stale_at=-math.inf,
        active_at=now,
        gc_time=gc_time,
        incarnation=incarnation,
    )


def with_data(
    snap: Snapshot,
    data: Any,
    *,
    updated_at_wall: float,
    updated_at: float,
    stale_time: float | None,
    resolved_stale_time: float,
    now: float,
) -> Snapshot:
    """The key now holds ``data``, current as of ``updated_at`` (trio time)."""
    stale_at = updated_at + resolved_stale_time
    fresh = stale_at > now
    return attrs.evolve(
        snap,
        state=attrs.evolve(
            snap.state,
            status=QueryStatus.SUCCESS,
            data=data,
            error=None,
            data_updated_at=updated_at_wall,
            fetch_failure_count=0,
            is_stale=not fresh,
            is_invalidated=False,
        ),
        fresh=fresh,
        stale_time=stale_time,
        stale_at=stale_at,
        active_at=now,
    )


def fetching(snap: Snapshot, *, now: float) -> Snapshot:
    """A fetch started for the key."""
    return attrs.evolve(
        snap,
        state=attrs.evolve(snap.state, fetch_status=FetchStatus.FETCHING),
        active_at=now,
        fetch_count=snap.fetch_count + 1,
    )


def idle(snap: Snapshot, *, now: float) -> Snapshot:
    """The key's fetch ended without changing its data (it was cancelled or superseded)."""
    return attrs.evolve(
        snap, state=attrs.evolve(snap.state, fetch_status=FetchStatus.IDLE), active_at=now
    )


def attempt_failed(snap: Snapshot, *, now: float) -> Snapshot:
    """One attempt of the fetch failed; a retry follows."""
    return attrs.evolve(
        snap,
        state=attrs.evolve(snap.state, fetch_failure_count=snap.state.fetch_failure_count + 1),
        active_at=now,
    )


def failed(snap: Snapshot, error: BaseException, *, now: float, now_wall: float) -> Snapshot:
    """The fetch failed for good; data already held is kept and served stale."""
    return attrs.evolve(
        snap,
        state=attrs.evolve(
            snap.state,
            status=QueryStatus.ERROR,
            fetch_status=FetchStatus.IDLE,
            error=error,
            error_updated_at=now_wall,
            fetch_failure_count=snap.state.fetch_failure_count + 1,
            is_stale=True,
        ),
        fresh=False,
        active_at=now,
        error_count=snap.error_count + 1,
    )


def invalidated(snap: Snapshot, *, now: float) -> Snapshot:
    """The key's data must be refetched before it counts as fresh again."""
    return attrs.evolve(
        snap,
        state=attrs.evolve(snap.state, is_invalidated=True, is_stale=True),
        fresh=False,
        active_at=now,
    )


def went_stale(snap: Snapshot) -> Snapshot:
    """The data reached its stale time (no use, so ``active_at`` is kept)."""
    return attrs.evolve(snap, state=attrs.evolve(snap.state, is_stale=True), fresh=False)


def used(snap: Snapshot, *, now: float) -> Snapshot:
    """The key was used (an observer left, a stale read): its gc countdown restarts."""
    return attrs.evolve(snap, active_at=now)


def restored(snap: Snapshot, previous: QueryState[Any], *, now: float) -> Snapshot:
    """A cancelled fetch puts back the state from before it started."""
    fresh = (
        previous.status is QueryStatus.SUCCESS
        and not previous.is_invalidated
        and snap.stale_at > now
    )
    return attrs.evolve(
        snap,
        state=attrs.evolve(previous, fetch_status=FetchStatus.IDLE, is_stale=not fresh),
        fresh=fresh,
        active_at=now,
    )
