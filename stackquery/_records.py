"""What a query client reports about itself: statistics and one record per key."""

from __future__ import annotations

import attrs
import trio

from . import _state
from ._keys import QueryKey
from ._owners import QueryOwners
from ._query_cache import QueryCache


@attrs.frozen
class ClientStatistics:
    """A point-in-time view of a query client."""

    queries: int
    """Keys held in L1."""
    active_actors: int
    """Keys whose actor task is running (fetching or observed)."""
    activations: int
    passivations: int
    restarts: int
    timers: int
    """Pending staleness and gc timers."""
    freshness_errors: int = 0
    """Calls of a ``stale_time`` / ``refetch_interval`` / ``@cache`` ``ttl`` function that
    raised or returned no valid number of seconds (logged; the data was stale at once)."""


@attrs.frozen
class QueryRecord:
    """What :meth:`QueryClient.snapshot` reports of one key."""

    key: QueryKey
    status: _state.QueryStatus
    fetch_status: _state.FetchStatus
    data_age: float | None
    """Seconds since the data was fetched or set; ``None``: no data."""
    is_stale: bool
    observers: int
    fetch_count: int
    error_count: int
    active: bool
    """Whether the key's actor task is running (``False``: passivated, a snapshot only)."""


def query_records(
    cache: QueryCache, owners: QueryOwners | None, *, opened: bool
) -> list[QueryRecord]:
    """One :class:`QueryRecord` per key in ``cache``; synchronous."""
    now = trio.current_time() if opened else 0.0
    wall = cache.clock.wall(now) if opened else 0.0
    records = []
    for snap in list(cache.snapshots.values()):
        actor = owners.actor(snap.key_hash) if owners is not None else None
        state = snap.state
        records.append(
            QueryRecord(
                key=snap.key,
                status=state.status,
                fetch_status=state.fetch_status,
                data_age=None if state.data_updated_at is None else wall - state.data_updated_at,
                is_stale=not snap.fresh,
                observers=len(actor.observers) if actor is not None else 0,
                fetch_count=snap.fetch_count,
                error_count=snap.error_count,
                active=actor is not None,
            )
        )
    return records


__all__ = ["ClientStatistics", "QueryRecord", "query_records"]
