"""QueryClient: the hot path, and the doors into each key's actor.

The fresh hit in :meth:`QueryClient.fetch_query` is the one path that matters
most for speed: one dict lookup of the key's canonical hash, one flag test,
no clock read, no message, no checkpoint.  Everything else (stale reads,
misses, changes) goes to the key's :class:`QueryActor`, or, for a key with no
running actor, applies the same pure transition from ``_state`` directly.
The L1 table itself (publishing, timers, eviction, L2 write-through) is the
:class:`~stackquery._table.QueryTable` half that ``QueryClient`` inherits.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
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
from ._errors import ClientClosedError, InvalidOptionError
from ._events import CacheEventType, EventHub, EventStream
from ._hydration import Hydration, cancel_hydration, start_hydration, wait_hydrated
from ._keys import QueryKey, canonical_key, hash_matches, key_from_hash, prefix_hash
from ._l2 import L2Cache, L2Statistics
from ._mutation import Mutation, MutationOptions
from ._observer import QueryObserver
from ._options import UNSET, QueryClientConfig, QueryOptions
from ._query_actor import Cancel, Invalidate, Message, QueryActor, Remove, Reset, SetData
from ._state import QueryState, Snapshot
from ._table import USE_CLOCK_RESOLUTION, QueryTable
from ._timers import KeyTimers
from .fleet._fleet import Fleet, FleetStatistics
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


class QueryClient(QueryTable):
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
        self._hydrations: dict[str, Hydration] = {}
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

    # -- reads ----------------------------------------------------------------

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
        if reply is True:  # fresh by the caller's own stale_time: a hit like above
            return self._table[key_hash].data  # type: ignore[no-any-return]
        if reply is False:  # stale data, served at once: this snapshot now holds it
            data = self._table[key_hash].data
            # A checkpoint, unlike a fresh hit: a loop of stale reads must let
            # the refetch it started run (and cancellation reach it).
            await trio.lowlevel.checkpoint()
            return data  # type: ignore[no-any-return]
        if isinstance(reply, Hydration):  # a cold key L2 may hold: read here, no actor
            return await wait_hydrated(self, reply)  # type: ignore[no-any-return]
        # Awaited here, not in a helper coroutine: one frame less per parked
        # caller, which counts when 10,000 callers wait on one cold key.
        return await reply.wait()  # type: ignore[no-any-return]

    def _serve_or_claim(
        self, options: QueryOptions[Any], snap: Snapshot | None
    ) -> Reply[Any] | bool | Hydration:
        """Decide a read that is not a plain fresh hit; synchronous.

        Returns ``True`` when the key's data is fresh by the caller's own
        stale time, ``False`` when it is stale and served at once with a
        refetch claimed, a :class:`Hydration` when the caller is to read a
        cold key from L2 itself, else the reply of the fetch to wait for.
        """
        registry = self._check_open()
        key_hash = options.key_hash
        if snap is None:
            snap = self._table.get(key_hash)
            if snap is None and key_hash not in registry:
                if options.initial_data is not UNSET:
                    snap = self._create_snapshot(options)
                elif self._l2 is not None:
                    return start_hydration(self, options)
        hydration = self._hydrations.get(key_hash)
        if snap is not None and snap.has_data and not self._too_old(snap, options):
            if self._is_fresh(snap, options):  # fresh by another stale_time than the snapshot's
                self._hits[key_hash] = self._use_bound
                return True
            if hydration is None:  # else the read in flight refetches if it must
                registry.activate(key_hash).claim_fetch(options)  # its publish records the use
            return False
        if hydration is not None:
            self._record_dedup(options)
            return hydration.reply
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
        # A key read from L2 by a caller is being fetched already.
        fetched = options.key_hash in self._hydrations
        if not fetched and (snap is None or not self._is_fresh(snap, options)):
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
        wait: bool = False,
    ) -> int:
        """Mark matching keys invalidated; refetch those with observers.

        Matches keys that start with ``key`` (a tuple prefix; ``()`` is every
        key), or equal it if ``exact``, and for which ``predicate(key, state)``
        is true.  An invalidated key is served stale until refetched.  Returns
        once every match is marked; refetches run in the background, unless
        ``wait``: then it returns once the matched keys' fetches (the
        refetches included) have settled, as TanStack Query's
        ``invalidateQueries`` does; their errors are in the keys' states, not
        raised here.  A fetch in flight when its key is invalidated still
        lands, but not as fresh.  Returns how many keys matched.

        Raises:
            InvalidKeyError: ``key`` is not a valid query key.
            ClientClosedError: the client is not open.
        """
        self._check_open()
        matches = self._matches(key, exact, predicate)
        await self._change_each(
            matches, lambda r: Invalidate(refetch, r), self._invalidate_passivated
        )
        if self._fleet is not None and self.config.broadcast is not False:
            # Other processes may hold keys this one does not: send the prefix,
            # unless a predicate chose the keys (then send exactly those).
            if predicate is None:
                self._fleet.announce_invalidated(prefix_hash(key), exact=exact, hashes=[])
            elif matches:
                self._fleet.announce_invalidated(None, exact=True, hashes=[h for h, _ in matches])
        if wait:
            for key_hash, _ in matches:
                await self._fetches_settled(key_hash)
        return len(matches)

    async def _fetches_settled(self, key_hash: str) -> None:
        """Wait until the key has no fetch in flight or claimed; never raises a fetch's error.

        The reply is looked up again after each wait: a fetch that ends may
        have claimed the next one (a refetch after an invalidation) before
        anyone wakes.
        """
        registry = self._check_open()
        while True:
            hydration = self._hydrations.get(key_hash)
            actor = registry.get(key_hash)
            if hydration is not None:
                reply: Reply[Any] | None = hydration.reply
            elif actor is not None:
                reply = actor.current_reply()
            else:
                return
            if reply is None:
                return
            with contextlib.suppress(Exception):
                await reply.wait()

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
            if cancel_hydration(self, key_hash, revert=revert):
                count += 1
                continue
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
        self._check_open()
        return await self._change_each(
            self._matches(key, exact, predicate),
            Remove,
            lambda key_hash, _: self._drop(key_hash, delete_l2=True),
        )

    async def reset_queries(
        self, key: QueryKey = (), *, exact: bool = False, predicate: Predicate | None = None
    ) -> int:
        """Put matching keys back to their initial state; observed ones refetch.

        Returns how many keys were reset.

        Raises:
            InvalidKeyError: ``key`` is not a valid query key.
            ClientClosedError: the client is not open.
        """
        self._check_open()
        return await self._change_each(
            self._matches(key, exact, predicate),
            Reset,
            lambda key_hash, _: self._drop(key_hash, delete_l2=False),
        )

    def _invalidate_passivated(self, key_hash: str, _matched: Snapshot) -> None:
        # The snapshot as it is now, not as it was matched: earlier keys' asks
        # awaited, and a set or a removal may have landed since.
        snap = self._table.get(key_hash)
        if snap is not None:
            self._persist(self._publish(_state.invalidated(snap, now=trio.current_time())))

    async def _change_each(
        self,
        matches: list[tuple[str, Snapshot]],
        message: Callable[[Reply[Any]], Message],
        passivated: Callable[[str, Snapshot], object],
    ) -> int:
        """Apply one change to each matching key; return how many there were.

        A key with a running actor gets ``message`` (its loop applies the
        change); a passivated key has nobody to race with, so ``passivated``
        applies the same change to its snapshot directly.
        """
        registry = self._check_open()
        for key_hash, snap in matches:
            if key_hash in registry:
                await registry.ask(key_hash, message)
            else:
                passivated(key_hash, snap)
        await trio.lowlevel.checkpoint()
        return len(matches)

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

    def _retry_delay(self, options: QueryOptions[Any], attempt: int) -> float:
        delay = options.retry_delay if options.retry_delay is not None else self.config.retry_delay
        return float(delay(attempt)) if callable(delay) else float(delay)

    def _record_dedup(self, options: QueryOptions[Any]) -> None:
        """Hook for metrics: a caller joined a fetch already claimed."""

    # -- L2 ---------------------------------------------------------------------------

    def l2_statistics(self) -> L2Statistics | None:
        """Return the second tier's :class:`L2Statistics`, or ``None`` without storage."""
        return self._l2.statistics() if self._l2 is not None else None

    # -- the fleet (processes sharing one Redis; the work is in _fleet and _fleet_apply) --

    def fleet_statistics(self) -> FleetStatistics | None:
        """Return the :class:`FleetStatistics`, or ``None`` when the client has no fleet."""
        return self._fleet.statistics() if self._fleet is not None else None

    # -- hooks for metrics ------------------------------------------------------------

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
