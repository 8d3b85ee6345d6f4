"""ClientWide: the client's operations on many keys at once, and its client-level registries.

What :class:`~stackquery._client.QueryClient` does to every key under a
prefix (refetch, read or set their data, count fetches), reading a key's
data "even if stale" (``ensure_query_data``), and the two registries that
belong to the client rather than to a key: the query defaults by prefix
(:class:`~stackquery._query_defaults.QueryDefaults`) and the mutations in
flight with their scopes (:class:`~stackquery._mutation_runs.MutationRuns`).
The facade checks that it is open and delegates here; key changes still go
through :class:`~stackquery._owners.QueryOwners`, one key after the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import trio

from actors import Reply

from ._errors import InvalidOptionError
from ._keys import QueryKey, hash_matches, key_from_hash, prefix_hash
from ._mutation_runs import MutationRuns
from ._options import QueryOptions
from ._owners import QueryOwners
from ._query_cache import Predicate, QueryCache
from ._query_defaults import QueryDefaults

RefetchType = Literal["active", "inactive", "all"]
"""Which matching keys ``refetch_queries`` fetches: observed ones, unobserved ones, or both."""

_REFETCH_TYPES: Final = ("active", "inactive", "all")


class ClientWide:
    """Operations on many keys, and the client's defaults and mutation registries.

    Args:
        cache: the client's L1 table.
    """

    def __init__(self, cache: QueryCache) -> None:
        self._cache = cache
        self.defaults = QueryDefaults()
        """Option defaults by key prefix (``set_query_defaults``)."""
        self.mutations = MutationRuns()
        """Mutations in flight, and the queue of each mutation scope."""

    async def refetch(
        self,
        owners: QueryOwners,
        prefix: QueryKey,
        *,
        exact: bool,
        predicate: Predicate | None,
        type: RefetchType,
        wait: bool,
    ) -> int:
        """Fetch each matching key again (see ``QueryClient.refetch_queries``); return how many.

        Raises:
            InvalidOptionError: ``type`` is not ``"active"``, ``"inactive"`` or ``"all"``.
        """
        if type not in _REFETCH_TYPES:
            raise InvalidOptionError(
                f"type must be 'active', 'inactive' or 'all', got {type!r:.100}"
            )
        replies: list[Reply[Any]] = []
        for key_hash in self._cache.matching(prefix, exact, predicate):
            options = self._refetch_options(owners, key_hash, type)
            if options is not None:
                replies.append(owners.claim(options))
        await trio.lowlevel.checkpoint()
        if wait:
            for reply in replies:
                with contextlib.suppress(Exception):  # the error is the key's state
                    await reply.wait()
        return len(replies)

    def _refetch_options(
        self,
        owners: QueryOwners,
        key_hash: str,
        type: RefetchType,
    ) -> QueryOptions[Any] | None:
        """What to refetch the key with, or ``None`` when ``type`` or its state rules it out."""
        actor = owners.actor(key_hash)
        observed = actor.observed_options() if actor is not None else None
        if observed is not None:  # active: an enabled observer
            return observed if type != "inactive" else None
        if type == "active" or (actor is not None and actor.observers):
            return None  # inactive, or observed by disabled observers only (never refetched)
        # Unobserved: the options it was last read with; none for a key only set,
        # hydrated or taken from another process (no query_fn known here).
        return self._cache.last_options(key_hash)

    def queries_data(
        self, prefix: QueryKey, *, exact: bool, predicate: Predicate | None
    ) -> list[tuple[QueryKey, Any]]:
        """``(key, data)`` of each matching key that holds data, in the table's order."""
        return [
            (snap.key, snap.data)
            for _, snap in self._cache.matches(prefix, exact, predicate)
            if snap.has_data
        ]

    async def set_queries_data(
        self, owners: QueryOwners, prefix: QueryKey, updater: Any
    ) -> list[tuple[QueryKey, Any]]:
        """Set the data of each matching key that holds data; return ``(key, new data)`` pairs.

        Raises:
            Exception: whatever ``updater`` raised, for the key it raised for.
        """
        fn: Callable[[Any], Any] = updater if callable(updater) else (lambda _old: updater)
        done: list[tuple[QueryKey, Any]] = []
        for key_hash, snap in self._cache.matches(prefix, False, None):
            now = self._cache.get(key_hash)  # earlier keys' changes awaited: look again
            if now is None or not now.has_data:
                continue
            done.append((snap.key, await owners.set_data(key_hash, fn, None)))
        await trio.lowlevel.checkpoint()
        return done

    async def ensure(
        self,
        owners: QueryOwners,
        options: QueryOptions[Any],
        fetch: Callable[[QueryOptions[Any]], Awaitable[Any]],
        revalidate_if_stale: bool,
    ) -> Any:
        """The key's cached data, fresh or stale, else ``await fetch(options)``.

        Raises:
            TypeError: ``options`` is not a :class:`QueryOptions`.
        """
        if not isinstance(options, QueryOptions):
            raise TypeError(f"options must be a QueryOptions, got {type(options).__name__}")
        options = self.defaults.resolve(options)
        cache = self._cache
        key_hash = options.key_hash
        snap = cache.get(key_hash)
        if snap is None or not cache.servable(snap, options):
            return await fetch(options)
        cache.note_use(key_hash)  # a use, as a fresh hit records it
        if revalidate_if_stale and not cache.is_fresh(snap, options):
            owners.prefetch(options)
        await trio.lowlevel.checkpoint()
        return snap.data

    def fetching(
        self,
        owners: QueryOwners | None,
        prefix: QueryKey,
        *,
        exact: bool,
        predicate: Predicate | None,
    ) -> int:
        """How many matching keys have a fetch in flight or claimed (0 once closed)."""
        if owners is None or owners.closed:
            return 0
        # From the fetches, not the table: a claimed fetch may have no snapshot yet
        # (a predicate then sees the empty state).
        text = prefix_hash(prefix)
        hashes = [h for h in owners.fetching_keys() if hash_matches(h, text, exact=exact)]
        if predicate is None:
            return len(hashes)
        cache = self._cache
        return sum(bool(predicate(key_from_hash(h), cache.state(h))) for h in hashes)


__all__ = ["ClientWide", "RefetchType"]
