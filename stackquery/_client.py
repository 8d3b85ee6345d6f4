"""QueryClient: the facade users call, and the hot path.

Its parts are built and run by :class:`~stackquery._parts.ClientParts`; its methods
check their input, then delegate, mostly to :class:`~stackquery._owners.QueryOwners`
(who owns a key).  The fresh hit in :meth:`QueryClient.fetch_query` is the path that
matters most for speed: one dict lookup of the key's canonical hash, one identity
test, one store of the key's use into its snapshot, no clock read, no message, no
checkpoint.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import trio

from ._client_base import ClientBase
from ._client_wide import RefetchType
from ._current import CALL_CLIENT, CURRENT_CLIENT
from ._dehydrate import hydrate
from ._errors import InvalidOptionError
from ._fetch_many import fetch_queries as _fetch_queries
from ._hydration import BatchReads
from ._keys import QueryKey, canonical_key
from ._l2_tier import ColdRead
from ._mutation import Mutation, MutationOptions
from ._observer import QueryObserver
from ._options import QueryClientConfig, QueryOptions
from ._parts import require_trio
from ._query_cache import Predicate
from ._records import ClientStatistics, QueryRecord
from ._state import QueryState, Snapshot

T = TypeVar("T")
V = TypeVar("V")

_current_client: contextvars.ContextVar[QueryClient | None] = CURRENT_CLIENT


def current_client() -> QueryClient | None:
    """Return the innermost query client open in this context, or ``None``."""
    return _current_client.get()


class QueryClient(ClientBase):
    """A cache of query results, one actor per key, for the life of a trio program.

    Use it as an async context manager (or through :func:`open_query_client`):
    entering opens the nursery that hosts every actor, fetch and timer;
    leaving cancels them all, so nothing outlives the block.

    Rules for every method: an async one is a checkpoint (except
    :meth:`fetch_query` on a fresh hit); an invalid key raises
    :class:`InvalidKeyError`; outside the ``async with``, all but the
    synchronous readers raise :class:`ClientClosedError`.  ``key`` (or
    ``prefix``) matches every key that starts with it (``()``: all), or
    equals it if ``exact``, and for which ``predicate(key, state)`` is true.
    Options a query leaves unset take the defaults of its key's prefix
    (:meth:`set_query_defaults`).  Its parts and the read-only answers
    (statistics, records, events) are in :class:`ClientBase`.
    """

    async def __aenter__(self) -> QueryClient:
        require_trio()
        if self._stack is not None or self._closed:
            raise RuntimeError("a QueryClient can be entered only once")
        stack = AsyncExitStack()
        self._owners = await stack.enter_async_context(self._parts.running(self))
        self._stack = stack
        self._token = _current_client.set(self)
        self._call_token = CALL_CLIENT.set(self)
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
        if self._call_token is not None:
            with contextlib.suppress(ValueError):
                CALL_CLIENT.reset(self._call_token)
            self._call_token = None
        self._closed = True
        stack, self._stack = self._stack, None
        return await stack.__aexit__(exc_type, exc, tb)

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
        found: Snapshot | None
        try:
            found = self.snapshots[options.key_hash]  # not .get(): no call on a hit
        except KeyError:
            found = None
        except AttributeError:
            raise TypeError(
                f"options must be a QueryOptions, got {type(options).__name__}"
            ) from None
        else:
            # `is`: an equal float goes the slow way.  The second test is a stale_time a
            # query default gave these options (memoized by the defaults).
            if found.fresh_for is options.stale_time or (
                (memo := options.defaults_memo) is not None
                and found.fresh_for is memo[1].stale_time
            ):
                found.hit = self.use_bound  # a use: the key's gc counts from it
                return found.data  # type: ignore[no-any-return]
        # Decided in a plain function: the locals of the rest stay out of this coroutine's
        # frame, which every hit makes and clears.
        awaited = self._miss(options, found)
        if awaited is None:  # stale data served: `found` holds it (a coroutine less a read)
            # A checkpoint: a loop of stale reads must let its refetch run (and cancellation in).
            await trio.lowlevel.checkpoint()
            return found.data  # type: ignore[union-attr,no-any-return]
        return await awaited

    def _miss(self, options: QueryOptions[T], snap: Snapshot | None) -> Awaitable[T] | None:
        """What ``fetch_query`` awaits when the key is not a plain fresh hit (see there);
        ``None``: ``snap`` holds stale data to serve after a checkpoint."""
        key_hash = options.key_hash
        owners = self._owners
        if owners is None:
            owners = self._check_open()  # raises; serve_or_claim refuses a closed client
        if self._wide.defaults.any_set:
            options = self._wide.defaults.resolve(options)
        reply = owners.serve_or_claim(options, snap)
        if reply is True:  # fresh by the caller's own stale_time: a hit like above
            return _at_once(self.snapshots[key_hash].data)
        if reply is False:  # stale data, served at once
            if snap is not None:
                # Serving it claimed a refetch at most, which keeps the data it publishes.
                return None
            # A key made just now (initial_data): the table's snapshot holds the data.
            return _after_checkpoint(self.snapshots[key_hash].data)
        if isinstance(reply, ColdRead):  # a cold key L2 may hold: read here, no actor
            return owners.wait_cold(reply)
        if reply.is_set:
            return reply.wait()
        # Awaited by fetch_query at once (the task parks in its frame, not in Reply.wait):
        # one frame less per parked caller (10,000 on a cold key), for the cyclic GC to walk.
        return reply.park()

    fetch_queries = _fetch_queries  # `await client.fetch_queries([opts, ...])`: see _fetch_many

    def _cold_batch(self) -> BatchReads | None:
        """What reads ``fetch_queries``' cold keys from L2 together (``None``: no L2, or closed)."""
        owners = self._owners
        if owners is None or owners.closed or owners.cold_reads is None:
            return None
        defaults = self._wide.defaults
        return BatchReads(owners.cold_reads, defaults.resolve if defaults else None)

    async def prefetch_query(self, options: QueryOptions[Any]) -> None:
        """Start a fetch of the key unless its data is fresh; never waits for it.

        The fetch's outcome lands in the cache; its error is never raised here.
        """
        self._check_open().prefetch(self._wide.defaults.resolve(options))
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
        return QueryObserver(owners, self._wide.defaults.resolve(options), notify_on=notify_on)

    def get_query_data(self, key: QueryKey) -> Any:
        """Return the key's data from L1, or ``None`` if it has none; synchronous."""
        snap = self.snapshots.get(canonical_key(key)[1])
        return snap.data if snap is not None else None

    def get_query_state(self, key: QueryKey) -> QueryState[Any] | None:
        """Return the key's :class:`QueryState` from L1, or ``None``; synchronous."""
        snap = self.snapshots.get(canonical_key(key)[1])
        return snap.state if snap is not None else None

    def is_fetching(
        self, prefix: QueryKey = (), *, exact: bool = False, predicate: Predicate | None = None
    ) -> int:
        """Return how many matching keys have a fetch in flight or claimed (0 when closed)."""
        return self._wide.fetching(self._owners, prefix, exact=exact, predicate=predicate)

    def is_mutating(self) -> int:
        """Return how many ``mutate`` calls have not returned yet (waiting for a scope too)."""
        return self._wide.mutations.running

    def get_queries_data(self, prefix: QueryKey = ()) -> list[tuple[QueryKey, Any]]:
        """Return ``(key, data)`` for each key under ``prefix`` holding data, from L1; sync."""
        return self._wide.queries_data(prefix, exact=False, predicate=None)

    async def set_queries_data(self, prefix: QueryKey, updater: Any) -> list[tuple[QueryKey, Any]]:
        """:meth:`set_query_data` on each key under ``prefix`` holding data (the others are
        left alone); return ``(key, data)`` pairs.  An ``updater`` that raises stops there:
        earlier keys keep their new data.

        Raises:
            Exception: whatever ``updater`` raised.
        """
        return await self._wide.set_queries_data(self._check_open(), prefix, updater)

    async def ensure_query_data(
        self, options: QueryOptions[T], *, revalidate_if_stale: bool = False
    ) -> T:
        """Return the key's cached data even if stale (refetched in the background if
        ``revalidate_if_stale``), else :meth:`fetch_query` it.

        Raises:
            TypeError: ``options`` is not a :class:`QueryOptions`.
            Exception: as :meth:`fetch_query`, when there is no data to serve.
        """
        owners = self._check_open()
        fetch = self.fetch_query
        return await self._wide.ensure(owners, options, fetch, revalidate_if_stale)  # type: ignore[no-any-return]

    def set_query_defaults(self, prefix: QueryKey, **options: Any) -> None:
        """Give every query under ``prefix`` these options unless it sets them; synchronous.

        The longest matching prefix wins per option; none: forget the prefix.

        Raises:
            InvalidOptionError: an unknown option, one that cannot be a default
                (``query_key``, ``query_fn``, ``enabled``), or a bad value.
        """
        self._wide.defaults.set(prefix, options)

    def get_query_defaults(self, key: QueryKey) -> dict[str, Any]:
        """Return the defaults a query with ``key`` gets (every matching prefix's, merged)."""
        return self._wide.defaults.get(key)

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

    async def refetch_queries(
        self,
        prefix: QueryKey = (),
        *,
        exact: bool = False,
        predicate: Predicate | None = None,
        type: RefetchType = "all",
        wait: bool = False,
    ) -> int:
        """Fetch matching keys again now, fresh or not, as TanStack's ``refetchQueries``.

        ``type``: ``"active"`` (observed by an enabled observer), ``"inactive"``
        or ``"all"``.  An unobserved key is fetched with the options it was last
        read with; one this client never read (only set, hydrated) is skipped, as
        is one whose observers are all disabled.  A key with a fetch in flight
        joins it.  ``wait``: return once the fetches settled (their errors are in
        the keys' states, not raised).  Returns how many keys were refetched.

        Raises:
            InvalidOptionError: ``type`` is not one of the three.
        """
        owners = self._check_open()
        return await self._wide.refetch(
            owners, prefix, exact=exact, predicate=predicate, type=type, wait=wait
        )

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

    def mutation(self, options: MutationOptions[T, V]) -> Mutation[T, V]:
        """Return a :class:`Mutation` that runs ``options.mutation_fn`` on this client.

        Raises:
            TypeError: ``options`` is not a :class:`MutationOptions`.
        """
        owners = self._check_open()
        if not isinstance(options, MutationOptions):
            raise TypeError(f"options must be a MutationOptions, got {type(options).__name__}")
        return Mutation(
            options,
            owners=owners,
            clock=self.clock,
            default_retry_delay=self.config.retry_rule.delay,
            runs=self._wide.mutations,
        )

    async def hydrate(self, dehydrated: dict[str, Any]) -> int:
        """Load a :meth:`dehydrate` dict into L1; return how many keys were loaded.

        Raises:
            TypeError: ``dehydrated`` is not a dict.
            ValueError: ``dehydrated`` is malformed (the message names what and where).
        """
        self._check_open()
        return await hydrate(self, dehydrated, self.serializer)


async def _at_once(data: T) -> T:
    return data


async def _after_checkpoint(data: T) -> T:
    await trio.lowlevel.checkpoint()
    return data


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
