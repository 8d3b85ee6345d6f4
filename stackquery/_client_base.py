"""ClientBase: a query client's parts, their state, and what can be read about them.

:class:`~stackquery._client.QueryClient` is the facade of the query
operations (fetch, watch, set, invalidate, refetch, mutate ...) and of the
open/close lifecycle; it stands on this base, which builds the client's parts
(:class:`~stackquery._parts.ClientParts` and the client-wide registries of
:class:`~stackquery._client_wide.ClientWide`), tells whether they are open,
and answers the questions about the client that change nothing (statistics,
per-key records, the event stream, ``dehydrate``).  One class, split across
two files by job so that neither outgrows a reader: no method here runs a
query operation, and no other class derives from it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

from ._client_wide import ClientWide
from ._clock import Clock
from ._dehydrate import DehydratePredicate, dehydrate
from ._errors import ClientClosedError
from ._events import EventStream
from ._l2 import L2Cache, L2Statistics
from ._options import QueryClientConfig
from ._owners import QueryOwners
from ._parts import ClientParts, require_trio
from ._query_cache import QueryCache
from ._records import ClientStatistics, QueryRecord, query_records
from ._state import Snapshot
from .fleet._counters import FleetStatistics
from .serializers import Serializer


class ClientBase:
    """The parts of a query client and the answers about them; see :class:`QueryClient`."""

    def __init__(self, config: QueryClientConfig | None = None) -> None:
        if config is not None and not isinstance(config, QueryClientConfig):
            raise TypeError(f"config must be a QueryClientConfig, got {type(config).__name__}")
        self.config = config if config is not None else QueryClientConfig()
        self._parts = parts = ClientParts(self.config)
        # For the decorators and tools built on the client: read these, change
        # keys only through the client's methods.
        self.cache: QueryCache = parts.cache
        """The L1 table."""
        self.snapshots: Mapping[str, Snapshot] = parts.cache.snapshots
        """Every key's snapshot by key hash: the cache's own dict, never rebound, so that a
        fresh hit of ``fetch_query`` or of a decorated function is one lookup here."""
        self.l2: L2Cache | None = parts.l2
        """The L2 store behind the client's serializer and key prefix, or ``None``."""
        self.serializer: Serializer = parts.serializer
        """What values go through on their way to L2 (and ``dehydrate``)."""
        self.use_bound = 0.0
        """:attr:`QueryCache.use_bound`, kept equal to it by the cache: what a fresh hit
        records as its time, read one attribute away."""
        parts.cache.share_use_bound(self)
        self._cache = parts.cache
        self._events = parts.events
        self._fleet = parts.fleet
        self._wide = ClientWide(parts.cache)
        self._owners: QueryOwners | None = None
        self._stack: AsyncExitStack | None = None
        self._token: contextvars.Token[Any] | None = None
        self._call_token: contextvars.Token[Any] | None = None
        self._closed = False

    def _check_open(self) -> QueryOwners:
        owners = self._owners
        if owners is None or owners.closed:
            require_trio()
            raise ClientClosedError("the query client is not open: use it inside `async with`")
        return owners

    @property
    def is_open(self) -> bool:
        """Whether the client is inside its ``async with`` block."""
        return self._owners is not None and not self._owners.closed

    @property
    def clock(self) -> Clock:
        """The client's clock (trio time mapped to wall time).

        Raises:
            ClientClosedError: the client was never opened.
        """
        return self._cache.clock

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: Any, name: str) -> None:
        """Run ``async_fn(*args)`` in the client's nursery; cancelled when the client closes."""
        self._check_open().start_soon(async_fn, *args, name=name)

    def events(self, *, buffer: int = 1000) -> EventStream:
        """Return a stream of :class:`CacheEvent` for every key, from now on.

        ``async for event in client.events(): ...``.  The stream buffers at
        most ``buffer`` unread events; past that the oldest are dropped and
        the next event read carries how many in ``missed``, so a slow consumer
        never slows the cache.  The stream ends when the client closes or
        the stream is closed (``aclose()`` / ``async with``).

        Raises:
            InvalidOptionError: ``buffer`` is below 1.
        """
        self._check_open()
        return self._events.open(buffer)

    def snapshot(self) -> list[QueryRecord]:
        """Return one :class:`QueryRecord` per key in L1, for introspection; synchronous."""
        return query_records(self._cache, self._owners, opened=self._owners is not None)

    def statistics(self) -> ClientStatistics:
        """Return the client's current :class:`ClientStatistics`."""
        return self._parts.statistics()

    def l2_statistics(self) -> L2Statistics | None:
        """Return the second tier's :class:`L2Statistics`, or ``None`` without storage."""
        return self.l2.statistics() if self.l2 is not None else None

    def fleet_statistics(self) -> FleetStatistics | None:
        """Return the :class:`FleetStatistics`, or ``None`` when the client has no fleet."""
        return self._fleet.statistics() if self._fleet is not None else None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._owners is not None else "new"
        return f"<QueryClient {state} queries={len(self._cache)}>"

    def dehydrate(self, predicate: DehydratePredicate | None = None) -> dict[str, Any]:
        """Return the cached data as a dict for :meth:`hydrate`; synchronous, works once closed too.

        Raises:
            SerializationError: a value the serializer cannot encode.
        """
        return dehydrate(self.snapshots, self.serializer, predicate)


__all__ = ["ClientBase"]
