"""QueryClient: the hot path, and the doors into each key's actor.

The fresh hit in :meth:`QueryClient.fetch_query` is the one path that matters
most for speed: one dict lookup of the key's canonical hash, one flag test,
no clock read, no message, no checkpoint.  Everything else (stale reads,
misses, changes) goes to the key's :class:`QueryActor`, or, for a key with no
running actor, applies the same pure transition from ``_state`` directly.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import attrs
import trio

from actors import Registry, Reply, Supervisor
from backends import RedisClient

from . import _state
from ._clock import Clock
from ._dehydrate import DehydratePredicate, dehydrate, hydrate
from ._entry import StoredEntry
from ._errors import ClientClosedError, InvalidOptionError
from ._events import CacheEventType, EventHub, EventStream
from ._fleet import Fleet, FleetStatistics, Lease
from ._keys import QueryKey, canonical_key, hash_matches, key_from_hash, prefix_hash
from ._l2 import L2Cache, L2Statistics
from ._mutation import Mutation, MutationOptions
from ._observer import QueryObserver
from ._options import UNSET, QueryClientConfig, QueryOptions
from ._query_actor import ApplyEntry, Cancel, Invalidate, QueryActor, Remove, Reset, SetData
from ._state import QueryState, Snapshot
from ._timers import KeyTimers
from .serializers import as_serializer
from .serializers import json as json_serializer

T = TypeVar("T")
V = TypeVar("V")
logger = logging.getLogger("stackquery.client")

_current_client: contextvars.ContextVar[QueryClient | None] = contextvars.ContextVar(
    "stackquery_current_client", default=None
)

Predicate = Callable[[QueryKey, QueryState[Any]], bool]


def current_client() -> QueryClient | None:
    """Return the innermost query client open in this context, or ``None``."""
    return _current_client.get()


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


class QueryClient:
    """A cache of query results, one actor per key, for the life of a trio program.

    Use it as an async context manager (or through :func:`open_query_client`):
    entering opens the nursery that hosts every actor, fetch and timer;
    leaving cancels them all, so nothing outlives the block.

    Every async method here is a checkpoint unless its docstring says
    otherwise; the one that says otherwise is :meth:`fetch_query` on a fresh
    hit.
    """

    def __init__(self, config: QueryClientConfig | None = None) -> None:
        if config is not None and not isinstance(config, QueryClientConfig):
            raise TypeError(f"config must be a QueryClientConfig, got {type(config).__name__}")
        self.config = config if config is not None else QueryClientConfig()
        self._table: dict[str, Snapshot] = {}
        # Keys read by fresh hits since their timer last looked, with a bound
        # on when: a hit stores a float the ticker keeps current (no clock
        # read, no allocation), precise to USE_CLOCK_RESOLUTION.
        self._hits: dict[str, float] = {}
        self._use_bound = 0.0
        self._timers = KeyTimers(self._on_timer)
        self._events = EventHub()
        self._stack: AsyncExitStack | None = None
        self._registry: Registry[str, QueryActor] | None = None
        self._supervisor: Supervisor | None = None
        self._nursery: trio.Nursery | None = None
        self._clock: Clock | None = None
        self._l2: L2Cache | None = None
        self._writer_scope = trio.CancelScope(shield=True)
        if self.config.storage is not None:
            serializer = self.config.serializer
            self._l2 = L2Cache(
                self.config.storage,
                as_serializer(serializer) if serializer is not None else json_serializer,
                self.config.key_prefix,
                self.config.l2_timeout,
            )
        self._fleet: Fleet | None = None
        redis = getattr(self.config.storage, "redis", None)
        wants_fleet = self.config.broadcast is not False or self.config.single_flight is not False
        if self._l2 is not None and isinstance(redis, RedisClient) and wants_fleet:
            self._fleet = Fleet(
                self,
                redis,
                key_prefix=self.config.key_prefix,
                lease_time=self.config.lease_time,
                poll_interval=self.config.lease_poll_interval,
            )
            if self.config.broadcast is not False:
                self._l2.on_written = self._fleet.announce_written
                self._l2.on_deleted = self._fleet.announce_deleted
        self._token: contextvars.Token[QueryClient | None] | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> QueryClient:
        if self._stack is not None or self._closed:
            raise RuntimeError("a QueryClient can be entered only once")
        stack = AsyncExitStack()
        nursery = await stack.enter_async_context(trio.open_nursery())
        self._nursery = nursery
        self._clock = Clock.start()
        self._supervisor = Supervisor(nursery, self.config.restart_intensity)
        self._registry = Registry(self._supervisor, lambda key_hash: QueryActor(self, key_hash))
        nursery.start_soon(self._timers.run, name="stackquery-timers")
        self._use_bound = trio.current_time() + USE_CLOCK_RESOLUTION
        nursery.start_soon(self._run_use_clock, name="stackquery-use-clock")
        if self._l2 is not None:
            nursery.start_soon(self._l2.run_reader, name="stackquery-l2-reader")
            nursery.start_soon(self._run_writer, name="stackquery-l2-writer")
        if self._fleet is not None and self.config.broadcast is not False:
            nursery.start_soon(self._fleet.run_subscriber, name="stackquery-fleet-subscriber")
            nursery.start_soon(self._fleet.run_publisher, name="stackquery-fleet-publisher")
        self._stack = stack
        self._token = _current_client.set(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None and self._nursery is not None
        if self._token is not None:
            with contextlib.suppress(ValueError):  # exited in another context than entered
                _current_client.reset(self._token)
            self._token = None
        try:
            await self._before_close()
        finally:
            self._closed = True
            self._events.close_all()
            self._nursery.cancel_scope.cancel()
            stack, self._stack = self._stack, None
            try:
                result = await stack.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                # The hidden nursery wraps the body's own exception in a group;
                # hand it back as the user raised it, so `except KeyError`
                # around the block works.  Anything else (an escalated actor
                # crash) stays a group: structured concurrency fails loudly.
                if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                    return False
                raise
        return result

    async def _run_writer(self) -> None:
        assert self._l2 is not None
        # Shielded until close: a block left by cancellation must still be able
        # to flush its writes, and the writer is the one who writes them.
        with self._writer_scope:
            await self._l2.run_writer()

    async def _before_close(self) -> None:
        """Let pending L2 writes land (bounded by ``shutdown_timeout``) before cancelling.

        Shielded: a block left by cancellation still gets its writes into L2.
        """
        if self._l2 is not None:
            try:
                with trio.CancelScope(shield=True):
                    await self._l2.flush(self.config.shutdown_timeout)
            finally:
                self._writer_scope.cancel()
        else:
            await trio.lowlevel.checkpoint()

    def _check_open(self) -> Registry[str, QueryActor]:
        if self._registry is None or self._closed:
            raise ClientClosedError("the query client is not open: use it inside `async with`")
        return self._registry

    @property
    def clock(self) -> Clock:
        """The client's clock (trio time mapped to wall time)."""
        if self._clock is None:
            raise ClientClosedError("the query client is not open: use it inside `async with`")
        return self._clock

    # -- reads ----------------------------------------------------------------

    async def fetch_query(self, options: QueryOptions[T]) -> T:
        """Return the key's data: at once if fresh, at once (and refetch) if stale, else fetch.

        A fresh hit does not checkpoint and does not read the clock: it is a
        dict lookup and a flag test, and cancellation is not checked.  A stale
        hit returns the stale data at once and starts one background refetch
        (joined by every other stale reader).  On a cold key the caller waits
        for the key's one fetch, shared with every concurrent caller; a caller
        cancelled while waiting stops waiting, and the fetch goes on for the
        others and still lands in the cache.

        ``placeholder_data`` is never returned; ``enabled`` is not consulted
        (it governs observers only).

        Raises:
            Exception: the error of the fetch, after its retries, when there
                is no data to serve.
            QueryCancelledError: the fetch waited on was cancelled by
                ``cancel_queries`` or ``remove_queries``.
            ClientClosedError: the client is not open (fresh hits excepted).
        """
        key_hash = options.key_hash
        snap = self._table.get(key_hash)
        # `is`, not `==`: an equal stale_time given as another float object
        # takes the slow path, which judges it correctly.
        if snap is not None and snap.fresh and snap.stale_time is options.stale_time:
            self._hits[key_hash] = self._use_bound
            return snap.data  # type: ignore[no-any-return]
        reply = self._serve_or_claim(options, snap)
        if reply is None:  # stale data, served at once: this snapshot now holds it
            return self._table[key_hash].data  # type: ignore[no-any-return]
        # Awaited here, not in a helper coroutine: one frame less per parked
        # caller, which counts when 10,000 callers wait on one cold key.
        return await reply.wait()  # type: ignore[no-any-return]

    def _serve_or_claim(
        self, options: QueryOptions[Any], snap: Snapshot | None
    ) -> Reply[Any] | None:
        """Decide a read that is not a plain fresh hit; synchronous.

        Returns ``None`` when the key's data can be served at once (fresh by
        the caller's own stale time, or stale with a refetch claimed), else
        the reply of the fetch to wait for.
        """
        registry = self._check_open()
        key_hash = options.key_hash
        if snap is None:
            snap = self._table.get(key_hash)
            if snap is None and options.initial_data is not UNSET and key_hash not in registry:
                snap = self._create_snapshot(options)
        if snap is not None and snap.has_data and not self._too_old(snap, options):
            if self._is_fresh(snap, options):  # fresh by another stale_time than the snapshot's
                self._hits[key_hash] = self._use_bound
            else:  # the refetch's publish records the use, exactly
                registry.activate(key_hash).claim_fetch(options)
            return None
        return registry.activate(key_hash).claim_fetch(options)

    async def prefetch_query(self, options: QueryOptions[Any]) -> None:
        """Start a fetch of the key unless its data is fresh; never waits for it.

        The fetch's outcome lands in the cache; its error is never raised here.

        Raises:
            ClientClosedError: the client is not open.
        """
        registry = self._check_open()
        snap = self._table.get(options.key_hash)
        if snap is None and options.initial_data is not UNSET and options.key_hash not in registry:
            snap = self._create_snapshot(options)
        if snap is None or not self._is_fresh(snap, options):
            registry.activate(options.key_hash).claim_fetch(options)
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
            ClientClosedError: the client is not open.
            InvalidOptionError: ``notify_on`` is neither ``"data"`` nor ``"all"``.
        """
        self._check_open()
        if notify_on not in ("data", "all"):
            raise InvalidOptionError(f"notify_on must be 'data' or 'all', got {notify_on!r}")
        return QueryObserver(self, options, notify_on=notify_on)

    def get_query_data(self, key: QueryKey) -> Any:
        """Return the key's data from L1, or ``None`` if it has none; synchronous.

        Raises:
            InvalidKeyError: ``key`` is not a valid query key.
        """
        snap = self._table.get(canonical_key(key)[1])
        return snap.data if snap is not None else None

    def get_query_state(self, key: QueryKey) -> QueryState[Any] | None:
        """Return the key's :class:`QueryState` from L1, or ``None``; synchronous.

        Raises:
            InvalidKeyError: ``key`` is not a valid query key.
        """
        snap = self._table.get(canonical_key(key)[1])
        return snap.state if snap is not None else None

    # -- changes ------------------------------------------------------------------

    async def set_query_data(
        self, key: QueryKey, updater: Any, *, updated_at: float | None = None
    ) -> Any:
        """Set the key's data to ``updater`` (or to ``updater(old_data)`` if callable).

        Works on a key not cached yet.  The data counts as fetched now (or at
        wall time ``updated_at``) and observers are told.  The updater gets
        ``None`` when the key has no data; to store a callable, return it from
        an updater.  Returns the data set.

        Raises:
            InvalidKeyError: ``key`` is not a valid query key.
            Exception: whatever ``updater`` raised (nothing is changed).
            ClientClosedError: the client is not open.
        """
        registry = self._check_open()
        _, key_hash = canonical_key(key)
        fn: Callable[[Any], Any] = updater if callable(updater) else (lambda _old: updater)
        actor = registry.get(key_hash)
        if actor is not None:
            return await registry.ask(key_hash, lambda r: SetData(fn, updated_at, r))
        await trio.lowlevel.checkpoint()
        if key_hash in self._table:
            return self._apply_set_data(key_hash, fn, updated_at, None)
        data = fn(None)  # before the key exists: an updater that raises leaves nothing behind
        self._create_snapshot_for_key(key_hash)
        return self._apply_set_data(key_hash, lambda _old: data, updated_at, None)

    async def invalidate_queries(
        self,
        key: QueryKey = (),
        *,
        exact: bool = False,
        predicate: Predicate | None = None,
        refetch: bool = True,
    ) -> int:
        """Mark matching keys invalidated; refetch those with observers.

        Matches keys that start with ``key`` (a tuple prefix; ``()`` is every
        key), or equal it if ``exact``, and for which ``predicate(key, state)``
        is true.  An invalidated key is served stale until refetched.  Returns
        once every match is marked; refetches run in the background.  A fetch
        in flight when its key is invalidated still lands, but not as fresh.
        Returns how many keys matched.

        Raises:
            InvalidKeyError: ``key`` is not a valid query key.
            ClientClosedError: the client is not open.
        """
        registry = self._check_open()
        matches = self._matches(key, exact, predicate)
        for key_hash, snap in matches:
            if key_hash in registry:
                await registry.ask(key_hash, lambda r: Invalidate(refetch, r))
            else:
                self._persist(self._publish(_state.invalidated(snap, now=trio.current_time())))
        if self._fleet is not None and self.config.broadcast is not False:
            # Other processes may hold keys this one does not: send the prefix,
            # unless a predicate chose the keys (then send exactly those).
            if predicate is None:
                self._fleet.announce_invalidated(prefix_hash(key), exact=exact, hashes=[])
            elif matches:
                self._fleet.announce_invalidated(None, exact=True, hashes=[h for h, _ in matches])
        await trio.lowlevel.checkpoint()
        return len(matches)

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

        Raises:
            InvalidKeyError: ``key`` is not a valid query key.
            ClientClosedError: the client is not open.
        """
        registry = self._check_open()
        count = 0
        for key_hash, _ in self._matches(key, exact, predicate):
            actor = registry.get(key_hash)
            if actor is not None and actor.is_fetching:
                count += 1
                await registry.ask(key_hash, lambda r: Cancel(revert, r))
        await trio.lowlevel.checkpoint()
        return count

    async def remove_queries(
        self, key: QueryKey = (), *, exact: bool = False, predicate: Predicate | None = None
    ) -> int:
        """Drop matching keys from the cache, cancelling their fetches.

        Returns how many keys were removed.

        Raises:
            InvalidKeyError: ``key`` is not a valid query key.
            ClientClosedError: the client is not open.
        """
        registry = self._check_open()
        count = 0
        for key_hash, _ in self._matches(key, exact, predicate):
            count += 1
            if key_hash in registry:
                await registry.ask(key_hash, Remove)
            else:
                self._drop(key_hash, delete_l2=True)
        await trio.lowlevel.checkpoint()
        return count

    async def reset_queries(
        self, key: QueryKey = (), *, exact: bool = False, predicate: Predicate | None = None
    ) -> int:
        """Put matching keys back to their initial state; observed ones refetch.

        Returns how many keys were reset.

        Raises:
            InvalidKeyError: ``key`` is not a valid query key.
            ClientClosedError: the client is not open.
        """
        registry = self._check_open()
        count = 0
        for key_hash, _ in self._matches(key, exact, predicate):
            count += 1
            if key_hash in registry:
                await registry.ask(key_hash, Reset)
            else:
                self._drop(key_hash, delete_l2=False)
        await trio.lowlevel.checkpoint()
        return count

    def events(self, *, buffer: int = 1000) -> EventStream:
        """Return a stream of :class:`CacheEvent` for every key, from now on.

        ``async for event in client.events(): ...``.  The stream buffers at
        most ``buffer`` unread events; past that the oldest are dropped and
        the next event read carries how many in ``missed``, so a slow consumer
        never slows the cache.  The stream ends when the client closes or
        the stream is closed (``aclose()`` / ``async with``).

        Raises:
            InvalidOptionError: ``buffer`` is below 1.
            ClientClosedError: the client is not open.
        """
        self._check_open()
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise InvalidOptionError(f"buffer must be an int >= 1, got {buffer!r}")
        return self._events.open(buffer)

    def snapshot(self) -> list[QueryRecord]:
        """Return one :class:`QueryRecord` per key in L1, for introspection; synchronous."""
        registry = self._registry
        now = trio.current_time() if self._clock is not None else 0.0
        wall = self._clock.wall(now) if self._clock is not None else 0.0
        records = []
        for key_hash, snap in self._table.items():
            actor = registry.get(key_hash) if registry is not None else None
            state = snap.state
            records.append(
                QueryRecord(
                    key=snap.key,
                    status=state.status,
                    fetch_status=state.fetch_status,
                    data_age=None
                    if state.data_updated_at is None
                    else wall - state.data_updated_at,
                    is_stale=not snap.fresh,
                    observers=len(actor.observers) if actor is not None else 0,
                    fetch_count=snap.fetch_count,
                    error_count=snap.error_count,
                    active=actor is not None,
                )
            )
        return records

    # -- mutations and warm restarts (the work is in _mutation and _dehydrate) ------

    def mutation(self, options: MutationOptions[T, V]) -> Mutation[T, V]:
        """Return a :class:`Mutation` that runs ``options.mutation_fn`` on this client.

        Raises:
            TypeError: ``options`` is not a :class:`MutationOptions`.
            ClientClosedError: the client is not open.
        """
        self._check_open()
        if not isinstance(options, MutationOptions):
            raise TypeError(f"options must be a MutationOptions, got {type(options).__name__}")
        return Mutation(self, options)

    def dehydrate(self, predicate: DehydratePredicate | None = None) -> dict[str, Any]:
        """Return the cached data as a dict a new client can :meth:`hydrate` from; synchronous.

        Takes every key with data for which ``predicate(key, state)`` is true
        (by default: every key whose status is ``success``).  Values go
        through the client's serializer; with the default json serializer the
        dict is JSON-safe, with another one each value is the base64 text of
        its bytes.  Works on a closed client too (to save after leaving the
        ``async with``).

        Raises:
            SerializationError: a value the serializer cannot encode (the
                message names its key); exclude it with ``predicate``.
        """
        return dehydrate(self, predicate)

    async def hydrate(self, dehydrated: dict[str, Any]) -> int:
        """Load the data of a :meth:`dehydrate` dict into L1; return how many keys were loaded.

        A key that already holds data as new as the saved data (by
        ``data_updated_at``) is left alone, also when a fetch lands while
        hydrating.  Loaded data counts as fetched at its saved time, so it is
        fresh for a query whose ``stale_time`` has not passed since; saved
        invalidations are kept (observed keys refetch).  Loaded data is
        written to L2 like data set with :meth:`set_query_data`.  The whole
        dict is checked before anything is loaded: a bad one changes nothing.
        Cancelled, the keys loaded so far stay loaded.

        Raises:
            TypeError: ``dehydrated`` is not a dict.
            ValueError: ``dehydrated`` is malformed (another version or
                serializer, a missing field, an invalid key, data that cannot
                be decoded); the message names what and where.
            ClientClosedError: the client is not open.
        """
        self._check_open()
        return await hydrate(self, dehydrated)

    def statistics(self) -> ClientStatistics:
        """Return the client's current :class:`ClientStatistics`."""
        registry = self._registry
        reg = registry.statistics() if registry is not None else None
        sup = self._supervisor.statistics() if self._supervisor is not None else None
        return ClientStatistics(
            queries=len(self._table),
            active_actors=reg.active if reg else 0,
            activations=reg.activations if reg else 0,
            passivations=reg.passivations if reg else 0,
            restarts=sup.restarts if sup else 0,
            timers=len(self._timers),
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._registry is not None else "new"
        return f"<QueryClient {state} queries={len(self._table)}>"

    # -- internals shared with the actor and the observer -------------------------

    def _matches(
        self, key: QueryKey, exact: bool, predicate: Predicate | None
    ) -> list[tuple[str, Snapshot]]:
        prefix = prefix_hash(key)
        return [
            (key_hash, snap)
            for key_hash, snap in list(self._table.items())
            if hash_matches(key_hash, prefix, exact=exact)
            and (predicate is None or predicate(snap.key, snap.state))
        ]

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

    def _retry_delay(self, options: QueryOptions[Any], attempt: int) -> float:
        delay = options.retry_delay if options.retry_delay is not None else self.config.retry_delay
        return float(delay(attempt)) if callable(delay) else float(delay)

    def _record_dedup(self, options: QueryOptions[Any]) -> None:
        """Hook for metrics: a caller joined a fetch already claimed."""

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
        if registry is not None and key_hash in registry:
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
            if (registry is not None and key_hash in registry) or hit_since:
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

    def l2_statistics(self) -> L2Statistics | None:
        """Return the second tier's :class:`L2Statistics`, or ``None`` without storage."""
        return self._l2.statistics() if self._l2 is not None else None

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
        entry = await l2.read(key_hash)
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

    # -- hooks for metrics ------------------------------------------------------------

    # -- the fleet (processes sharing one Redis) ---------------------------------------

    def fleet_statistics(self) -> FleetStatistics | None:
        """Return the :class:`FleetStatistics`, or ``None`` when the client has no fleet."""
        return self._fleet.statistics() if self._fleet is not None else None

    def _single_flight(self, options: QueryOptions[Any]) -> bool:
        if options.single_flight is not None:
            return options.single_flight
        return self.config.single_flight is not False

    async def _end_lease(self, lease: Lease, snap: Snapshot | None) -> None:
        """Write the leased fetch's value to L2, announce it, then release the lease.

        In that order, so that no process can take the lease and call the
        origin again before the value is there to be read.  Shielded and
        bounded: runs even when the fetch was cancelled.
        """
        fleet, l2 = self._fleet, self._l2
        assert fleet is not None and l2 is not None
        with trio.CancelScope(shield=True), trio.move_on_after(2 * self.config.l2_timeout):
            state = snap.state if snap is not None else None
            if snap is not None and state is not None and state.data_updated_at is not None:
                ttl = self._l2_ttl(snap)
                # Invalidated in flight: stored as such, and no news for the fleet
                # (a waiter elsewhere must not take it as fresh).
                invalidated = state.is_invalidated
                written = ttl != 0 and await l2.write_now(
                    snap.key_hash,
                    state.data,
                    data_updated_at=state.data_updated_at,
                    ttl=ttl,
                    invalidated=invalidated,
                )
                if written and not invalidated and self.config.broadcast is not False:
                    fleet.announce_written([(snap.key_hash, state.data_updated_at)])
            await fleet.release(lease)

    def _mark_all_stale(self) -> None:
        """Pub/sub was (re)connected: anything may have changed while it was down.

        Every entry with data is marked invalidated in L1 (not merely stale: a
        later call with another ``stale_time`` must not judge it fresh again
        from its timestamp), and observed keys refetch.  L2 is left alone: the
        other processes may hold newer data there, which the refetch finds.
        """
        now = trio.current_time()
        for key_hash, snap in list(self._table.items()):
            if snap.has_data and not snap.is_invalidated:
                self._table[key_hash] = _state.invalidated(snap, now=now)
        registry = self._registry
        if registry is None or self._closed:
            return
        for _, actor in registry.items():
            options = actor._observed_enabled()
            if options is not None:
                actor.claim_fetch(options)

    async def _apply_remote_invalidation(
        self, prefix: str | None, exact: bool, hashes: list[str]
    ) -> None:
        registry = self._check_open()
        if prefix is not None:
            targets = [h for h in list(self._table) if hash_matches(h, prefix, exact=exact)]
        else:
            targets = [h for h in hashes if h in self._table]
        # Persisted by every holder: the sender may not hold the key, and a
        # process that starts later must find the L2 entry invalidated too.
        for key_hash in targets:
            if key_hash in registry:
                await registry.ask(key_hash, lambda r: Invalidate(True, r))
            elif (snap := self._table.get(key_hash)) is not None:
                self._persist(self._publish(_state.invalidated(snap, now=trio.current_time())))

    async def _apply_remote_removal(self, hashes: list[str]) -> None:
        registry = self._check_open()
        for key_hash in hashes:
            if key_hash in registry:
                await registry.ask(key_hash, lambda r: Remove(r, delete_l2=False))
            else:
                self._drop(key_hash, delete_l2=False)

    async def _apply_remote_update(self, items: list[tuple[str, float]]) -> None:
        """Another process wrote new data for these keys: read it into L1 where it is newer."""
        registry = self._check_open()
        l2 = self._l2
        assert l2 is not None
        wanted = []
        for key_hash, updated_at in items:
            snap = self._table.get(key_hash)
            held = snap.data_updated_at if snap is not None else None
            if snap is not None and (held is None or held < updated_at):
                wanted.append(key_hash)
        entries: dict[str, StoredEntry | None] = {}

        async def read(key_hash: str) -> None:
            entries[key_hash] = await l2.read(key_hash)

        async with trio.open_nursery() as nursery:  # concurrent reads share one get_many
            for key_hash in wanted:
                nursery.start_soon(read, key_hash)
        for key_hash in wanted:
            entry = entries.get(key_hash)
            if entry is None:
                continue
            if key_hash in registry:
                await registry.ask(key_hash, lambda r, e=entry: ApplyEntry(e, r))  # type: ignore[misc]
            else:
                self._apply_entry(key_hash, entry)

    def _after_fetch_failure(self, options: QueryOptions[Any], error: BaseException) -> None:
        """A fetch failed for good: metrics go here."""

    # -- observers ------------------------------------------------------------------

    def _attach(self, observer: QueryObserver[Any]) -> None:
        registry = self._check_open()
        options = observer.options
        key_hash = options.key_hash
        # Seeded here, before the actor judges freshness: fresh initial_data needs no fetch.
        cold = key_hash not in self._table and key_hash not in registry
        if cold and options.initial_data is not UNSET:
            self._create_snapshot(options)
        registry.activate(key_hash).add_observer(observer)

    def _detach(self, observer: QueryObserver[Any]) -> None:
        registry = self._registry
        if registry is None or self._closed:
            return
        actor = registry.get(observer.options.key_hash)
        if actor is not None:
            actor.remove_observer(observer)

    def _observer_event(self, key_hash: str, *, added: bool) -> None:
        if not self._events.streams:
            return
        kind = CacheEventType.OBSERVER_ADDED if added else CacheEventType.OBSERVER_REMOVED
        snap = self._table.get(key_hash)
        if snap is not None:
            self._events.emit(kind, snap.key, snap.state)
        else:  # a cold key: its snapshot is made when its first fetch starts
            self._events.emit(kind, key_from_hash(key_hash), _EMPTY_STATE)

    def _current_state(self, key_hash: str) -> QueryState[Any]:
        snap = self._table.get(key_hash)
        return snap.state if snap is not None else _EMPTY_STATE


_EMPTY_STATE: QueryState[Any] = QueryState()


USE_CLOCK_RESOLUTION = 1.0
"""Seconds within which the last use of a key by fresh hits is known.

A fresh hit records an upper bound of "now" kept by a ticker, never an
earlier time, so a key read only by fresh hits leaves L1 between ``gc_time``
and ``gc_time`` + this after its last hit (other uses are exact).
"""


def _next_deadline(snap: Snapshot) -> float:
    """When the key's timer must next look at it: it goes stale, or its gc is due."""
    collect_at = snap.active_at + snap.gc_time
    if snap.fresh and snap.stale_at < collect_at:
        return snap.stale_at
    return collect_at


@asynccontextmanager
async def open_query_client(
    config: QueryClientConfig | None = None,
) -> AsyncIterator[QueryClient]:
    """Open a :class:`QueryClient` for the duration of the ``async with`` block.

    Leaving the block lets pending L2 writes finish (bounded by
    ``config.shutdown_timeout``), then cancels every actor, fetch and timer.

    Raises:
        TypeError: ``config`` is not a :class:`QueryClientConfig`.
    """
    async with QueryClient(config) as client:
        yield client


__all__ = ["ClientStatistics", "QueryClient", "QueryRecord", "current_client", "open_query_client"]
