"""What protects the origin around each fetch: circuit breakers, query contexts, stale-if-error.

The key's actor calls these at three points of a fetch: each attempt
(:func:`origin_attempt`: the query's context, its circuit breaker), the
attempts' outcome (:func:`settle_not_modified`: a ``NOT_MODIFIED`` answer),
and a failed fetch (:func:`serve_stale_if_error`: hand out the last good
data instead of the error while the ``stale_if_error`` window lasts).

**Servable until.**  Data stops being served to a read (which then waits
for a new fetch) at ``QueryCache.servable_until``: ``fetched_at + max_age``
or ``stale_at + max_stale`` (``stale_at`` as computed by ``stale_time(data)``
and jittered), whichever comes first; neither set: never.  ``@cache(ttl,
stale=)`` sets ``max_stale = stale`` and ``@bg(ttl=)`` ``max_age = ttl``.
``stale_if_error=S`` extends it for failures only: when a fetch fails
before that moment + ``S``, its waiting callers get the data instead of
the error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from . import _state
from ._circuit import CircuitState, call_through
from ._events import CacheEventType
from ._options import QueryOptions
from ._query_cache import QueryCache
from ._query_context import NOT_MODIFIED, QueryContext, not_modified_error
from ._query_fn import call_query_fn

_CIRCUIT_EVENTS = {
    CircuitState.OPEN: CacheEventType.CIRCUIT_OPENED,
    CircuitState.HALF_OPEN: CacheEventType.CIRCUIT_HALF_OPENED,
    CircuitState.CLOSED: CacheEventType.CIRCUIT_CLOSED,
}


def origin_attempt(options: QueryOptions[Any], cache: QueryCache) -> Callable[[], Awaitable[Any]]:
    """Return one fetch's attempt function: each call is one call of ``options.query_fn``.

    Each attempt gets a fresh :class:`QueryContext` (if the ``query_fn`` takes
    one) and goes through the query's circuit breaker (if it has one).

    The attempt raises ``CircuitOpenError`` when the breaker refuses it (no
    call made), else whatever ``call_query_fn`` raises.
    """
    attempts = 0
    key_hash = options.key_hash
    breaker = options.circuit

    def on_transition(state: CircuitState) -> None:
        events = cache.events
        if events.listening:
            events.emit(_CIRCUIT_EVENTS[state], options.key, cache.state(key_hash))

    async def attempt() -> Any:
        nonlocal attempts
        attempts += 1
        context = _context(options, cache, attempts) if options.takes_context else None
        if breaker is None:
            return await call_query_fn(options, context)
        cache.origin.used(key_hash, breaker, cache.snapshots)
        return await call_through(breaker, lambda: call_query_fn(options, context), on_transition)

    return attempt


def _context(options: QueryOptions[Any], cache: QueryCache, attempt: int) -> QueryContext[Any]:
    snap = cache.get(options.key_hash)
    has_data = snap is not None and snap.has_data
    return QueryContext(
        key=options.key,
        meta=options.meta,
        previous_data=snap.data if has_data and snap is not None else None,
        data_updated_at=snap.data_updated_at if snap is not None else None,
        attempt=attempt,
    )


def settle_not_modified(
    snap: _state.Snapshot, ok: bool, result: Any, options: QueryOptions[Any]
) -> tuple[bool, Any]:
    """The attempts' outcome with a ``NOT_MODIFIED`` answer turned into the data it keeps.

    ``(True, data held)`` when the key holds data (it lands again as fetched
    now); ``(False, NotModifiedWithoutDataError)`` when it holds none.  Any
    other outcome is returned as it is.
    """
    if not ok or result is not NOT_MODIFIED:
        return ok, result
    if snap.has_data:
        return True, snap.data
    return False, not_modified_error(options.key)


def serve_stale_if_error(
    cache: QueryCache, snap: _state.Snapshot, options: QueryOptions[Any], waiters: int
) -> bool:
    """Whether the callers of a fetch that just failed get ``snap``'s data instead of its error.

    True until ``stale_if_error`` seconds past the moment the data stopped being
    servable (``QueryCache.servable_until``).  The
    ``waiters`` callers it is served to are counted
    (``ClientStatistics.stale_if_error_served``) and, if there are any,
    reported by one ``CacheEventType.STALE_IF_ERROR`` event (a background
    refetch nobody waits on serves nobody).
    """
    until = cache.servable_until(snap, options)
    if until is None:
        return False  # no bound: data is served stale by the read itself, however old
    window = cache.stale_if_error_window(options)
    if not window or until + window <= trio.current_time():
        return False
    if not waiters:
        return True
    cache.origin.stale_if_error_served += waiters
    events = cache.events
    if events.listening:
        events.emit(CacheEventType.STALE_IF_ERROR, options.key, snap.state)
    return True


__all__ = ["origin_attempt", "serve_stale_if_error", "settle_not_modified"]
