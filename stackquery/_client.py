"""QueryClient: the facade users call, and the hot path.

Its parts are built and run by :class:`~stackquery._parts.ClientParts`; its methods
check their input, then delegate, mostly to :class:`~stackquery._owners.QueryOwners`
(who owns a key).  The fresh hit in :meth:`QueryClient.fetch_query` is the path that
matters most for speed: one dict lookup of the key's canonical hash, one identity
test, no clock read, no message, no checkpoint.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import trio

from ._clock import Clock
from ._dehydrate import DehydratePredicate, dehydrate, hydrate
from ._errors import ClientClosedError, InvalidOptionError
from ._events import EventStream
from ._keys import QueryKey, canonical_key
from ._l2 import L2Cache, L2Statistics
from ._l2_tier import ColdRead
from ._mutation import Mutation, MutationOptions
from ._observer import QueryObserver
from ._options import QueryClientConfig, QueryOptions
from ._owners import QueryOwners
from ._parts import ClientParts, require_trio
from ._query_cache import Predicate, QueryCache
from ._records import ClientStatistics, QueryRecord, query_records
from ._state import QueryState, Snapshot
from .fleet._counters import FleetStatistics
from .serializers import Serializer

T = TypeVar("T")
V = TypeVar("V")

_current_client: contextvars.ContextVar[QueryClient | None] = contextvars.ContextVar(
    "stackquery_current_client", default=None
)


def current_client() -> QueryClient | None:
    """Return the innermost query client open in this context, or ``None``."""
    return _current_client.get()


class QueryClient:
    """A cache of query results, one actor per key, for the life of a trio program.

    Use it as an async context manager (or through :func:`open_query_client`):
    entering opens the nursery that hosts every actor, fetch and timer;
    leaving cancels them all, so nothing outlives the block.

    Rules for every method: an async one is a checkpoint (except
    :meth:`fetch_query` on a fresh hit); an invalid key raises
    :class:`InvalidKeyError`; outside the ``async with``, all but the
    synchronous readers raise :class:`ClientClosedError`.  ``key`` matches
    every key that starts with it (``()``: all), or equals it if ``exact``,
    and for which ``predicate(key, state)`` is true.
    """

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
        self._cache = parts.cache
        self._hits = parts.cache.hits  # never rebound either
        self._events = parts.events
        self._fleet = parts.fleet
        self._owners: QueryOwners | None = None
        self._stack: AsyncExitStack | None = None
        self._token: contextvars.Token[QueryClient | None] | None = None
        self._closed = False

    async def __aenter__(self) -> QueryClient:
        require_trio()
        if self._stack is not None or self._closed:
            raise RuntimeError("a QueryClient can be entered only once")
        stack = AsyncExitStack()
        self._owners = await stack.enter_async_context(self._parts.running(self))
        self._stack = stack
        self._token = _current_client.set(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        if self._token is not None:
            with contextlib.suppress(ValueError):  # exited in another context than entered
                _current_client.reset(self._token)
            self._token = None
        self._closed = True
        stack, self._stack = self._stack, None
        return await stack.__aexit__(exc_type, exc, tb)

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

    async def fetch_query(self, options: QueryOptions[T]) -> T:
        """Return the key's data: at once if fresh, at once (and refetch) if stale, else fetch.

        A fresh hit does not checkpoint and does not read the clock: it is a
        dict lookup and a flag test, and cancellation is not checked.  A stale
        hit returns the stale data at once (after a checkpoint) and starts one
        background refetch (joined by every other stale reader).  On a cold key the caller waits
        for the key's one fetch, shared with every concurrent caller; a caller
        cancelled while waiting stops waiting, and the fetch goes on for the
        others and still lands in the cache.

        ``placeholder_data`` is never returned; ``enabled`` is not consulted
        (it governs observers only).

        Raises:
            TypeError: ``options`` is not a :class:`QueryOptions`.
            Exception: the fetch's error after its retries (or, within ``error_ttl``,
                the error remembered, without an origin call) when no data is served.
            QueryCancelledError: the fetch waited on was cancelled by
                ``cancel_queries`` or ``remove_queries``.
            ClientClosedError: the client is not open (fresh hits excepted).
        """
        snap: Snapshot | None = None  # its slow path below
        try:
            key_hash = options.key_hash
            found = self.snapshots[key_hash]  # not .get(): no call on a hit
        except KeyError:
            pass
        except AttributeError:
            got = type(options).__name__
            raise TypeError(f"options must be a QueryOptions, got {got}") from None
        else:
            if found.fresh_for is options.stale_time:  # `is`: an equal float goes the slow way
                self._hits[key_hash] = self._cache.use_bound
                return found.data  # type: ignore[no-any-return]
            snap = found
        owners = self._check_open()
        reply = owners.serve_or_claim(options, snap)
        if reply is True:  # fresh by the caller's own stale_time: a hit like above
            return self.snapshots[key_hash].data  # type: ignore[no-any-return]
        if reply is False:  # stale data, served at once: this snapshot now holds it
            data = self.snapshots[key_hash].data
            # A checkpoint: a loop of stale reads must let its refetch run (and cancellation in).
            await trio.lowlevel.checkpoint()
            return data  # type: ignore[no-any-return]
        if isinstance(reply, ColdRead):  # a cold key L2 may hold: read here, no actor
            return await owners.wait_cold(reply)  # type: ignore[no-any-return]
        # Awaited here, not in a helper: one frame less per parked caller (10,000 on a cold key).
        return await reply.wait()  # type: ignore[no-any-return]

    async def prefetch_query(self, options: QueryOptions[Any]) -> None:
        """Start a fetch of the key unless its data is fresh; never waits for it.

        The fetch's outcome lands in the cache; its error is never raised here.
        """
        self._check_open().prefetch(options)
        await trio.lowlevel.checkpoint()

    def watch(self, options: QueryOptions[T], *, notify_on: Any = "data") -> QueryObserver[T]:
        """Return a :class:`QueryObserver` of the key; it fetches once it has a subscriber.

        Args:
            options: the query, with the observer's ``select``,
                ``placeholder_data``, ``refetch_interval`` and ``enabled``.
            notify_on: ``"data"`` (the default) calls listeners when the
                status, the selected data or the error changes; ``"all"``
                also when the fetch status or staleness changes.

        Raises:
            InvalidOptionError: ``notify_on`` is neither ``"data"`` nor ``"all"``.
        """
        owners = self._check_open()
        if notify_on not in ("data", "all"):
            raise InvalidOptionError(f"notify_on must be 'data' or 'all', got {notify_on!r}")
        return QueryObserver(owners, options, notify_on=notify_on)

    def get_query_data(self, key: QueryKey) -> Any:
        """Return the key's data from L1, or ``None`` if it has none; synchronous."""
        snap = self.snapshots.get(canonical_key(key)[1])
        return snap.data if snap is not None else None

    def get_query_state(self, key: QueryKey) -> QueryState[Any] | None:
        """Return the key's :class:`QueryState` from L1, or ``None``; synchronous."""
        snap = self.snapshots.get(canonical_key(key)[1])
        return snap.state if snap is not None else None

    def is_fetching(self, key: QueryKey = (), *, exact: bool = False) -> int:
        """Return how many keys under ``key`` (or equal to it) have a fetch in flight or claimed."""
        owners = self._owners
        if owners is None or owners.closed:
            return 0
        hashes = [canonical_key(key)[1]] if exact else self._cache.matching(key, exact, None)
        return sum(owners.is_fetching(key_hash) for key_hash in hashes)

    async def set_query_data(
        self, key: QueryKey, updater: Any, *, updated_at: float | None = None
    ) -> Any:
        """Set the key's data to ``updater`` (or to ``updater(old_data)`` if callable).

        Works on a key not cached yet.  The data counts as fetched now (or at
        wall time ``updated_at``) and observers are told.  The updater gets
        ``None`` when the key has no data; to store a callable, return it from
        an updater.  Returns the data set.

        Raises:
            Exception: whatever ``updater`` raised (nothing is changed).
        """
        owners = self._check_open()
        _, key_hash = canonical_key(key)
        fn: Callable[[Any], Any] = updater if callable(updater) else (lambda _old: updater)
        return await owners.set_data(key_hash, fn, updated_at)

    async def invalidate_queries(
        self,
        key: QueryKey = (),
        *,
        exact: bool = False,
        predicate: Predicate | None = None,
        refetch: bool = True,
        wait: bool = False,
    ) -> int:
        """Mark matching keys invalidated; refetch those with observers.

        An invalidated key is served stale until refetched.  Returns
        once every match is marked; refetches run in the background, unless
        ``wait``: then it returns once the matched keys' fetches (the
        refetches included) have settled, as TanStack Query's
        ``invalidateQueries`` does; their errors are in the keys' states, not
        raised here.  A fetch in flight when its key is invalidated still
        lands, but not as fresh.  Returns how many keys matched.
        """
        owners = self._check_open()
        hashes = self._cache.matching(key, exact, predicate)
        await owners.invalidate_each(hashes, refetch=refetch)
        fleet = self._fleet
        if fleet is not None and fleet.broadcasts:
            fleet.announce_invalidation(key, exact=exact, chosen=hashes if predicate else None)
        if wait:
            await owners.fetches_settled(hashes)
        return len(hashes)

    async def cancel_queries(
        self,
        key: QueryKey = (),
        *,
        exact: bool = False,
        predicate: Predicate | None = None,
        revert: bool = True,
    ) -> int:
        """Cancel fetches in flight for matching keys; put back their previous state.

        Callers waiting on a cancelled fetch get :class:`QueryCancelledError`.
        Returns how many fetches were cancelled.
        """
        owners = self._check_open()
        return await owners.cancel_each(self._cache.matching(key, exact, predicate), revert=revert)

    async def remove_queries(
        self, key: QueryKey = (), *, exact: bool = False, predicate: Predicate | None = None
    ) -> int:
        """Drop matching keys from the cache (and from L2), cancelling their fetches.

        Returns how many keys were removed.
        """
        owners = self._check_open()
        return await owners.remove_each(self._cache.matching(key, exact, predicate))

    async def reset_queries(
        self, key: QueryKey = (), *, exact: bool = False, predicate: Predicate | None = None
    ) -> int:
        """Put matching keys back to their initial state; observed ones refetch.

        Returns how many keys were reset.
        """
        owners = self._check_open()
        return await owners.reset_each(self._cache.matching(key, exact, predicate))

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

    def mutation(self, options: MutationOptions[T, V]) -> Mutation[T, V]:
        """Return a :class:`Mutation` that runs ``options.mutation_fn`` on this client.

        Raises:
            TypeError: ``options`` is not a :class:`MutationOptions`.
        """
        owners = self._check_open()
        if not isinstance(options, MutationOptions):
            raise TypeError(f"options must be a MutationOptions, got {type(options).__name__}")
        retry_delay = self.config.retry_rule.delay
        return Mutation(options, owners=owners, clock=self.clock, default_retry_delay=retry_delay)

    def dehydrate(self, predicate: DehydratePredicate | None = None) -> dict[str, Any]:
        """Return the cached data as a dict for :meth:`hydrate`; synchronous, works once closed too.

        Raises:
            SerializationError: a value the serializer cannot encode.
        """
        return dehydrate(self.snapshots, self.serializer, predicate)

    async def hydrate(self, dehydrated: dict[str, Any]) -> int:
        """Load a :meth:`dehydrate` dict into L1; return how many keys were loaded.

        Raises:
            TypeError: ``dehydrated`` is not a dict.
            ValueError: ``dehydrated`` is malformed (the message names what and where).
        """
        self._check_open()
        return await hydrate(self, dehydrated, self.serializer)


@asynccontextmanager
async def open_query_client(config: QueryClientConfig | None = None) -> AsyncIterator[QueryClient]:
    """Open a :class:`QueryClient` for the duration of the ``async with`` block.

    Leaving the block lets pending L2 writes finish (bounded by
    ``config.shutdown_timeout``), then cancels every actor, fetch and timer.

    Raises:
        TypeError: ``config`` is not a :class:`QueryClientConfig`.
    """
    async with QueryClient(config) as client:
        yield client


__all__ = ["ClientStatistics", "QueryClient", "QueryRecord", "current_client", "open_query_client"]
