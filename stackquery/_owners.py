"""QueryOwners: every read and change of a key goes to whoever owns the key now.

A key is owned by its running :class:`~stackquery._query_actor.QueryActor`
(a fetch in flight, observers), by a caller's L2 read in flight
(``_hydration``), or by nobody: a passivated key is a snapshot in the L1
table, and a change to it is the same pure transition applied to the
snapshot directly, since there is no task to race with.  The client's public
methods and the fleet's messages both come through here, so each change is
written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import trio

from actors import Registry, Reply

from ._entry import StoredEntry
from ._errors import ClientClosedError
from ._hydration import ColdReads
from ._l2_tier import ColdRead, L2Tier
from ._messages import (
    ApplyEntry,
    Cancel,
    Invalidate,
    Message,
    Observer,
    Remove,
    Reset,
    SetData,
)
from ._option_checks import UNSET
from ._options import QueryOptions
from ._origin_guard import serve_stale_if_error
from ._query_actor import QueryActor
from ._query_cache import QueryCache
from ._state import QueryState, Snapshot


class QueryOwners:
    """Routes reads and changes of keys to their owners.

    Args:
        cache: the L1 table.
        registry: one actor per key while the key needs a task.
        tier: the L2 tier, or ``None`` without storage.
        cold_reads: the callers' cold L2 reads, or ``None`` without storage.
        nursery: the client's nursery.
    """

    def __init__(
        self,
        cache: QueryCache,
        registry: Registry[str, QueryActor],
        tier: L2Tier | None,
        cold_reads: ColdReads | None,
        nursery: trio.Nursery,
    ) -> None:
        self._cache = cache
        self._nursery = nursery
        self._registry = registry
        self._reserved = registry.keys()
        """The keys with an actor (a live view: ``key in`` it is a C-level test, where
        ``key in registry`` is a Python call)."""
        self._tier = tier
        self._cold_reads = cold_reads
        self.closed = False

    @property
    def cold_reads(self) -> ColdReads | None:
        """The callers' cold L2 reads (``fetch_queries`` batches its own), or ``None`` (no L2)."""
        return self._cold_reads

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: Any, name: str) -> None:
        """Run ``async_fn(*args)`` in the client's nursery (cancelled when the client closes)."""
        self._nursery.start_soon(async_fn, *args, name=name)

    def close(self) -> None:
        """The client is closing: nothing new is accepted, reads in flight fail their waiters."""
        self.closed = True
        if self._cold_reads is not None:
            self._cold_reads.closed = True

    def stop_actors(self) -> None:
        """Every task has ended: wake whoever still waits on an actor (its crash escalated)."""
        for _, actor in self._registry.items():
            actor.stop()
        if self._tier is not None:
            closed = ClientClosedError("the query client closed before the fetch finished")
            tier = self._tier
            for key_hash in list(tier.cold_reads):
                cold = tier.cold_read(key_hash)
                if cold is not None and not cold.reply.is_set:
                    cold.settle_early(closed)
            tier.cold_reads.clear()

    def check_open(self) -> Registry[str, QueryActor]:
        """Return the registry.

        Raises:
            ClientClosedError: the client is closed.
        """
        if self.closed:
            raise ClientClosedError("the query client is not open: use it inside `async with`")
        return self._registry

    # -- who owns a key ----------------------------------------------------------------

    def is_busy(self, key_hash: str) -> bool:
        """Whether the key has a running actor or a cold read in flight (not to be collected)."""
        tier = self._tier
        return key_hash in self._registry or (tier is not None and key_hash in tier.cold_reads)

    def actor(self, key_hash: str) -> QueryActor | None:
        """The key's running actor, or ``None``."""
        return self._registry.get(key_hash)

    def is_fetching(self, key_hash: str) -> bool:
        """Whether the key has a fetch in flight or claimed (a cold L2 read included)."""
        if self._cold_reads is not None and self._cold_reads.get(key_hash) is not None:
            return True
        actor = self._registry.get(key_hash)
        return actor is not None and actor.is_fetching

    def fetching_keys(self) -> set[str]:
        """Every key with a fetch in flight or claimed (a cold L2 read included)."""
        keys = {key_hash for key_hash, actor in self._registry.items() if actor.is_fetching}
        if self._tier is not None:
            keys.update(self._tier.cold_reads)
        return keys

    def current_reply(self, key_hash: str) -> Reply[Any] | None:
        """The reply of the key's fetch in flight or claimed, or ``None``."""
        cold = self._cold_reads.get(key_hash) if self._cold_reads is not None else None
        if cold is not None:
            return cold.reply
        actor = self._registry.get(key_hash)
        return actor.current_reply() if actor is not None else None

    # -- reads -----------------------------------------------------------------------------

    def serve_or_claim(
        self, options: QueryOptions[Any], snap: Snapshot | None
    ) -> Reply[Any] | bool | ColdRead:
        """Decide a read that is not a plain fresh hit; synchronous.

        Returns ``True`` when the key's data is fresh by the caller's own
        stale time, ``False`` when it is stale and served at once with a
        refetch claimed (or, while ``error_ttl`` holds the last error, none; past
        servable, within ``stale_if_error``), a :class:`ColdRead` when the caller is to read a
        cold key from L2 itself, else the reply of the fetch to wait for.

        Raises:
            ClientClosedError: the client is closed.
            Exception: whatever an ``initial_data`` factory raised; the key's last
                error while ``error_ttl`` holds it (no data to serve, no fetch out).
        """
        if self.closed:
            self.check_open()  # raises
        registry = self._registry
        cache = self._cache
        key_hash = options.key_hash
        cache.remember(options)
        if snap is None:
            snap = cache.snapshots.get(key_hash)
            if snap is None and key_hash not in self._reserved:
                if options.initial_data is not UNSET:
                    snap = cache.create(options)
                elif self._cold_reads is not None:
                    return self._cold_reads.start(options)
            if snap is None and self._cold_reads is None:
                # No data, no error remembered, no L2: the key's fetch (a cold key's first).
                return registry.reserve(key_hash).claim_fetch(options)
        cold = self._cold_reads.get(key_hash) if self._cold_reads is not None else None
        if snap is not None and cache.servable(snap, options):
            if cache.is_fresh(snap, options):  # fresh by another stale_time than the snapshot's
                cache.note_use(key_hash)
                return True
            # No refetch while a cold read is out (it refetches if it must) or while
            # error_ttl holds the last error (stale data is served, the origin spared).
            if cold is None and cache.remembered_error_of(snap) is None:
                registry.reserve(key_hash).claim_fetch(options)  # its publish records the use
            else:
                cache.note_use(key_hash)  # a use all the same (gc counts from it)
            return False
        if cold is not None:
            return cold.reply
        error = cache.remembered_error(key_hash) if snap is not None else None
        if error is not None and not self.is_fetching(key_hash):
            assert snap is not None
            if serve_stale_if_error(cache, snap, options, 1):
                # The remembered error stands for a fetch that failed: stale_if_error serves
                # this caller the last good data as it would that fetch's waiters.
                cache.note_use(key_hash)
                return False
            raise error
        return registry.reserve(key_hash).claim_fetch(options)

    def raise_remembered_error(self, key_hash: str) -> None:
        """Raise the key's last error if ``error_ttl`` still holds it and no fetch is out.

        Raises:
            BaseException: that error (the same object every caller in the window gets).
        """
        error = self._cache.remembered_error(key_hash)
        if error is not None and not self.is_fetching(key_hash):
            raise error

    def wait_cold(self, cold: ColdRead) -> Awaitable[Any]:
        """What awaits a cold read :meth:`serve_or_claim` handed out; see ``ColdReads.wait``.

        Not a coroutine of its own: every resumption of the read passes through
        each frame of its caller's await chain, and this one would only pass it on.
        """
        assert self._cold_reads is not None
        return self._cold_reads.wait(cold)

    def prefetch(self, options: QueryOptions[Any]) -> None:
        """Claim a fetch of the key unless its data is fresh or it is being fetched.

        Raises:
            ClientClosedError: the client is closed.
        """
        registry = self.check_open()
        cache = self._cache
        key_hash = options.key_hash
        cache.remember(options)
        snap = cache.get(key_hash)
        if snap is None and options.initial_data is not UNSET and key_hash not in registry:
            snap = cache.create(options)
        # A key read from L2 by a caller is being fetched already.
        fetched = self._cold_reads is not None and self._cold_reads.get(key_hash) is not None
        if fetched or cache.remembered_error(key_hash) is not None:
            return  # being fetched, or error_ttl spares the origin
        if snap is None or not cache.is_fresh(snap, options):
            registry.reserve(key_hash).claim_fetch(options)

    def claim(self, options: QueryOptions[Any]) -> Reply[Any]:
        """Return the reply of the key's fetch in flight, else of a new one (through its actor).

        Raises:
            ClientClosedError: the client is closed.
        """
        registry = self.check_open()
        self._cache.remember(options)
        cold = self._cold_reads.get(options.key_hash) if self._cold_reads is not None else None
        if cold is not None:  # a caller's cold L2 read is the key's fetch now
            return cold.reply
        return registry.reserve(options.key_hash).claim_fetch(options)

    async def fetches_settled(self, key_hashes: Iterable[str]) -> None:
        """Wait until none of the keys has a fetch in flight or claimed; never raises their errors.

        A key's reply is looked up again after each wait: a fetch that ends
        may have claimed the next one (a refetch after an invalidation)
        before anyone wakes.

        Raises:
            ClientClosedError: the client is closed.
        """
        for key_hash in key_hashes:
            while True:
                self.check_open()
                reply = self.current_reply(key_hash)
                if reply is None:
                    break
                with contextlib.suppress(Exception):
                    await reply.wait()

    # -- observers ------------------------------------------------------------------------

    def attach(self, observer: Observer) -> None:
        """Attach ``observer`` to its key's actor; it fetches if it must.

        Raises:
            ClientClosedError: the client is closed.
            Exception: whatever an ``initial_data`` factory raised.
        """
        registry = self.check_open()
        options = observer.options
        key_hash = options.key_hash
        cache = self._cache
        cache.remember(options)
        # Seeded here, before the actor judges freshness: fresh initial_data needs no fetch.
        cold = cache.get(key_hash) is None and key_hash not in registry
        if cold and options.initial_data is not UNSET:
            cache.create(options)
        registry.activate(key_hash).add_observer(observer)

    def detach(self, observer: Observer) -> None:
        """Detach ``observer`` from its key's actor (nothing once the client is closed)."""
        if self.closed:
            return
        actor = self._registry.get(observer.options.key_hash)
        if actor is not None:
            actor.remove_observer(observer)

    def state(self, key_hash: str) -> QueryState[Any]:
        """The key's current state."""
        return self._cache.state(key_hash)

    # -- changes ---------------------------------------------------------------------------

    async def _tell_or_apply(
        self,
        key_hash: str,
        message: Callable[[Reply[Any]], Message],
        passivated: Callable[[], object],
    ) -> Any:
        """Send ``message`` to the key's running actor, or apply ``passivated`` directly."""
        registry = self._registry
        if key_hash in registry:
            return await registry.ask(key_hash, message)
        return passivated()

    async def invalidate(
        self, key_hash: str, *, refetch: bool = True, persist: bool = True
    ) -> None:
        """Mark the key invalidated; its observers refetch if ``refetch``.

        The invalidated entry is written to L2 too if ``persist``; not for an
        invalidation another process made (L2 is its to write: our copy may
        be older than what it or a third process wrote there since).  A fetch
        in flight lands invalidated either way.
        """
        await self._tell_or_apply(
            key_hash,
            lambda r: Invalidate(refetch, r, persist),
            lambda: self._mark_invalidated(key_hash, persist=persist),
        )

    def _mark_invalidated(self, key_hash: str, *, persist: bool) -> None:
        # The snapshot as it is now: earlier keys' asks awaited, and a set
        # or a removal may have landed since the keys were matched.
        snap = self._cache.mark_invalidated(key_hash)
        if persist and snap is not None and self._tier is not None:
            self._tier.persist(snap)

    async def remove(self, key_hash: str, *, delete_l2: bool = True) -> None:
        """Drop the key from L1 (and from L2 if ``delete_l2``), cancelling its fetch."""
        cold = self._cold_reads.get(key_hash) if self._cold_reads is not None else None
        await self._tell_or_apply(
            key_hash,
            lambda r: Remove(r, delete_l2=delete_l2),
            lambda: self._drop(key_hash, delete_l2=delete_l2),
        )
        self._abandon(cold, why="remove_queries")

    def _abandon(self, cold: ColdRead | None, *, why: str) -> None:
        # The read out when the change was asked for, not one started since.
        if self._cold_reads is not None:
            self._cold_reads.abandon(cold, why=why)

    def _drop(self, key_hash: str, *, delete_l2: bool) -> None:
        self._cache.drop(key_hash)
        if delete_l2 and self._tier is not None:
            self._tier.delete_soon(key_hash)

    async def reset(self, key_hash: str) -> None:
        """Put the key back to its initial state; observed, it refetches."""
        cold = self._cold_reads.get(key_hash) if self._cold_reads is not None else None
        await self._tell_or_apply(key_hash, Reset, lambda: self._drop(key_hash, delete_l2=False))
        self._abandon(cold, why="reset_queries")

    async def apply_entry(self, key_hash: str, entry: StoredEntry) -> None:
        """Take an L2 entry another process wrote, unless L1 holds data as new."""
        tier = self._tier
        assert tier is not None
        await self._tell_or_apply(
            key_hash,
            lambda r: ApplyEntry(entry, r),
            lambda: tier.apply_entry(key_hash, entry),
        )

    async def set_data(
        self, key_hash: str, updater: Callable[[Any], Any], updated_at: float | None
    ) -> Any:
        """Set the key's data to ``updater(old)``; return it.

        Raises:
            Exception: whatever ``updater`` raised (nothing is changed).
        """
        registry = self._registry
        if key_hash in registry:
            return await registry.ask(key_hash, lambda r: SetData(updater, updated_at, r))
        await trio.lowlevel.checkpoint()
        cache = self._cache
        if cache.get(key_hash) is None:
            data = updater(None)  # before the key exists: an updater that raises leaves nothing
            updater = lambda _old: data  # noqa: E731
        snap = cache.set_data(key_hash, updater, updated_at, None)
        if self._tier is not None:
            self._tier.persist(snap)
        return snap.data

    async def cancel(self, key_hash: str, *, revert: bool) -> bool:
        """Cancel the key's fetch in flight; return whether there was one."""
        if self._cold_reads is not None and self._cold_reads.cancel(key_hash, revert=revert):
            return True
        actor = self._registry.get(key_hash)
        if actor is None or not actor.is_fetching:
            return False
        await self._registry.ask(key_hash, lambda r: Cancel(revert, r))
        return True

    # The client's changes to many keys: one key after the other, one checkpoint at the end.

    async def invalidate_each(self, key_hashes: Iterable[str], *, refetch: bool) -> None:
        """Invalidate each key (see :meth:`invalidate`)."""
        for key_hash in key_hashes:
            await self.invalidate(key_hash, refetch=refetch)
        await trio.lowlevel.checkpoint()

    async def remove_each(self, key_hashes: Sequence[str]) -> int:
        """Remove each key from L1 and L2 (see :meth:`remove`); return how many there were."""
        for key_hash in key_hashes:
            await self.remove(key_hash)
        await trio.lowlevel.checkpoint()
        return len(key_hashes)

    async def reset_each(self, key_hashes: Sequence[str]) -> int:
        """Reset each key (see :meth:`reset`); return how many there were."""
        for key_hash in key_hashes:
            await self.reset(key_hash)
        await trio.lowlevel.checkpoint()
        return len(key_hashes)

    async def cancel_each(self, key_hashes: Iterable[str], *, revert: bool) -> int:
        """Cancel each key's fetch (see :meth:`cancel`); return how many were cancelled."""
        count = 0
        for key_hash in key_hashes:
            count += await self.cancel(key_hash, revert=revert)
        await trio.lowlevel.checkpoint()
        return count

    def mark_stale(self, key_hashes: list[str]) -> int:
        """Mark these keys invalidated in L1 only; observed ones refetch.  Returns how many.

        For changes heard from the server (:mod:`stackquery.fleet._tracking`):
        L2 already holds whatever the change left (writing an invalidated
        entry back would be heard as one more change).  Keys without data,
        or already invalidated, are left alone.
        """
        marked = 0
        for key_hash in key_hashes:
            snap = self._cache.snapshots.get(key_hash)
            if snap is None or not snap.has_data or snap.is_invalidated:
                continue
            self._cache.mark_invalidated(key_hash)
            marked += 1
            actor = None if self.closed else self.actor(key_hash)
            if actor is not None:
                actor.notify()
                options = actor.observed_options()
                if options is not None:
                    actor.claim_fetch(options)
        return marked

    def mark_all_stale(self) -> None:
        """Anything may have changed (pub/sub was down): every key with data is invalidated.

        Invalidated in L1 (not merely stale: a later call with another
        ``stale_time`` must not judge it fresh again from its timestamp), and
        observed keys refetch.  L2 is left alone: other processes may hold
        newer data there, which the refetch finds.
        """
        self._cache.mark_all_invalidated()
        if self.closed:
            return
        for _, actor in self._registry.items():
            options = actor.observed_options()
            if options is not None:
                actor.claim_fetch(options)


__all__ = ["QueryOwners"]
