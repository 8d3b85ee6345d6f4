"""What one ``@cache.batch`` function does besides deciding: options per id, calls, removal.

Each id's options are built once per client and memoized (bounded by
:data:`MEMO_SIZE`): the id's ``query_fn`` is bound to the client's
:class:`~stackquery.decorators._batch_window.ClientBatches`, whose window
merges the ids' origin calls.  A fresh hit of ``f(id)`` (``_one_wrapper``) is
a lookup of the client, of the id's options and of its snapshot, and a flag
test, as for ``@cache``.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import trio

from backends import ops

from .._client import QueryClient
from .._errors import InvalidKeyError
from .._fetch_many import fetch_all
from .._keys import QueryKey, canonical_key, prefix_hash
from .._options import QueryOptions
from ._batch_window import BatchOrigin, ClientBatches, SkippedIdError
from ._cached_calls import fetch as fetch_again_if_removed
from ._run_clients import ClientChoice

MEMO_SIZE = 16384
"""Ids whose options a batch function remembers per client (oldest dropped first)."""


class BatchCalls:
    """Everything one batch function knows: its origin, key, times, client choice, memos."""

    def __init__(
        self,
        origin: BatchOrigin,
        template: str | None,
        *,
        ttl: float,
        stale: float,
        choice: ClientChoice,
    ) -> None:
        self.origin = origin
        self.name = origin.name
        self.template = template
        self.stale_time = ttl
        """The one float object every query of this function carries (compared by identity)."""
        self.lifetime = ttl + stale
        self.choice = choice
        self.resolve = choice.resolver()
        self.namespace_key: QueryKey = ("fn", origin.name)
        self.by_client: weakref.WeakKeyDictionary[QueryClient, ClientBatches] = (
            weakref.WeakKeyDictionary()
        )
        self.last: ClientBatches | None = None
        """The client used last, looked up first (one weakref call, not a dict lookup)."""

    # -- options -------------------------------------------------------------------

    def batches_for(self, client: QueryClient) -> ClientBatches:
        """Return this function's state on ``client``, made on first use."""
        last = self.last
        if last is not None and last.client_ref() is client:
            return last
        found = self.by_client.get(client)
        if found is None:
            found = self.by_client[client] = ClientBatches(self.origin, weakref.ref(client))
        self.last = found
        return found

    def key_of(self, item_id: Any) -> tuple[QueryKey, str]:
        """Return the id's query key and its hash.

        Raises:
            InvalidKeyError: the id cannot be part of a key.
        """
        parts = (item_id,) if self.template is None else (self.template, item_id)
        return canonical_key((*self.namespace_key, *parts))

    def options_for(self, batches: ClientBatches, item_id: Any) -> QueryOptions[Any]:
        """Return the id's options on ``batches``' client, memoized.

        Raises:
            InvalidKeyError: the id cannot be part of a key, or is not hashable.
        """
        memo = batches.options
        try:
            found = memo.get(item_id)
        except TypeError:
            raise InvalidKeyError(
                f"{self.name}(): an id must be hashable (it is a key of the function's "
                f"mapping), got {type(item_id).__name__}: {item_id!r}"
            ) from None
        if found is not None and found[0] is type(item_id):
            return found[1]
        query_key, _ = self.key_of(item_id)
        lifetime = self.lifetime
        options: QueryOptions[Any] = QueryOptions(
            query_key=query_key,
            query_fn=functools.partial(batches.load, item_id),
            stale_time=self.stale_time,
            gc_time=lifetime,
            max_age=None if lifetime == math.inf else lifetime,
            retry=0,  # retried per origin call, in the batch window
        )
        if found is None:
            if len(memo) >= MEMO_SIZE:
                del memo[next(iter(memo))]
            memo[item_id] = (type(item_id), options)
        return options

    # -- calls -------------------------------------------------------------------------

    async def one(self, client: QueryClient | None, item_id: Any) -> Any:
        """Everything but a fresh hit found by the wrapper."""
        if client is None:
            client = await self.choice.open()
        options = self.options_for(self.batches_for(client), item_id)
        return await self.fetch(client, options)

    async def fetch(self, client: QueryClient, options: QueryOptions[Any]) -> Any:
        """Fetch one id's query (again each time the id is removed meanwhile); a skipped id is
        ``None``."""
        try:
            return await fetch_again_if_removed(client, options)
        except SkippedIdError:
            return None

    async def one_measured(self, item_id: Any) -> Any:
        """A call of one id with metrics: hit, stale hit or miss, and the latency."""
        metrics = self.origin.metrics
        assert metrics is not None
        start = trio.current_time()
        try:
            client = self.resolve()
            if client is None:
                client = await self.choice.open()
            options = self.options_for(self.batches_for(client), item_id)
            snap = client.snapshots.get(options.key_hash)
            if snap is not None and snap.fresh_for is options.stale_time:
                metrics.record_hit(self.name)
                return snap.data
            self._record_read(client, options)
            return await self.fetch(client, options)
        finally:
            metrics.record_latency(self.name, "get", trio.current_time() - start)

    def _record_read(self, client: QueryClient, options: QueryOptions[Any]) -> None:
        """Tell the metrics whether reading the id is a hit, a stale hit or a miss."""
        metrics = self.origin.metrics
        assert metrics is not None
        snap = client.snapshots.get(options.key_hash)
        if snap is not None and snap.fresh_for is options.stale_time:
            metrics.record_hit(self.name)
        elif snap is not None and snap.has_data and not client.cache.too_old(snap, options):
            metrics.record_stale_hit(self.name)
        else:
            metrics.record_miss(self.name)

    async def many(self, ids: Iterable[Any]) -> list[Any]:
        """Return the values of ``ids`` in order; see :func:`batch`.

        Every id settles before this returns or raises.  Cancelled, the
        caller stops waiting; the ids' fetches go on and land in the cache.

        Raises:
            TypeError: ``ids`` is not an iterable of ids (a string is refused).
            InvalidKeyError: an id cannot be part of a key.
            Exception: the first error, in the order asked, of an id's fetch.
        """
        if isinstance(ids, str | bytes | Mapping) or not isinstance(ids, Iterable):
            raise TypeError(f"many() takes a list of ids, got {type(ids).__name__}")
        ids = list(ids)
        client = self.resolve()
        if client is None:
            client = await self.choice.open()
        batches = self.batches_for(client)
        options_list = [self.options_for(batches, item_id) for item_id in ids]
        if self.origin.metrics is not None:
            for options in options_list:
                self._record_read(client, options)
        fetch_one = functools.partial(self.fetch, client)
        return await fetch_all(client.snapshots, options_list, fetch_one)

    # -- invalidate / clear -------------------------------------------------------------

    async def invalidate(self, item_id: Any) -> None:
        """Remove the id's entry, from L1 and from the store.

        A call waiting on that id's fetch in flight starts a new fetch.
        Returns once the store's delete landed, or after the client's
        ``l2_timeout`` (the delete is retried in the background then).

        Raises:
            InvalidKeyError: the id cannot be part of a key.
        """
        query_key, key_hash = self.key_of(item_id)
        client = await self.choice.open()
        await client.remove_queries(query_key, exact=True)
        l2 = client.l2
        if l2 is not None:
            l2.delete_soon(key_hash)
            await _l2_settled(client)
        if self.origin.metrics is not None:
            self.origin.metrics.record_delete(self.name)

    async def clear(self) -> None:
        """Remove every entry of this function (and no other's), from L1 and from the store.

        Raises:
            StorageUnsupportedError: the store has no ``delete_prefix``.
            StorageError: the store failed (L1 is cleared already).
        """
        client = await self.choice.open()
        await client.remove_queries(self.namespace_key)
        for batches in list(self.by_client.values()):
            batches.options.clear()
        l2 = client.l2
        if l2 is not None:
            await _l2_settled(client)  # the deletes remove_queries queued go first
            # `,` ends the namespace: ("fn", "m.f") must not match ("fn", "m.f2").
            prefix = l2.key_prefix + prefix_hash(self.namespace_key) + ","
            await ops.delete_prefix(l2.store, prefix)
        if self.origin.metrics is not None:
            self.origin.metrics.record_delete(self.name)


def one_wrapper(calls: BatchCalls) -> Callable[[Any], Coroutine[Any, Any, Any]]:
    """Return ``f(id)``: the fresh hit inline, the rest in ``calls`` (all of it with metrics)."""
    if calls.origin.metrics is not None:
        measured = calls.one_measured

        async def cached_measured(item_id: Any, /) -> Any:
            return await measured(item_id)

        return cached_measured
    resolve = calls.resolve
    batches_for = calls.batches_for
    slow = calls.one

    async def cached(item_id: Any, /) -> Any:
        client = resolve()
        if client is not None:
            try:
                found = batches_for(client).options.get(item_id)
            except TypeError:
                found = None
            if found is not None and found[0] is type(item_id):
                options = found[1]
                snap = client.snapshots.get(options.key_hash)
                if snap is not None and snap.fresh_for is options.stale_time:
                    return snap.data
        return await slow(client, item_id)

    return cached


async def _l2_settled(client: QueryClient) -> None:
    """Wait (up to ``l2_timeout``) until the client's queued L2 writes and deletes landed."""
    l2 = client.l2
    assert l2 is not None
    with trio.move_on_after(client.config.l2_timeout):
        await l2.wait_drained()


__all__ = ["MEMO_SIZE", "BatchCalls", "one_wrapper"]
