"""A cold key's L2 read, made in the task of the caller that asked for the key.

Reading L2 through the key's actor costs an actor activation and a fetch
task before the read even goes out; a key that L2 holds fresh needs neither.
So the first ``fetch_query`` of a cold key publishes the key as fetching,
records a :class:`~stackquery._l2_tier.ColdRead` (the key's one read: later
callers join its reply) and, reading alone, awaits the L2 read itself.
Reads that go out together (concurrent callers of other cold keys,
``fetch_queries``' cold keys, claimed with no task of their own) share one
``get_many`` and are landed by one task per batch, whether their callers
still wait or not; those callers wait for the outcome only.  The cold keys
of one ``fetch_queries`` call are one :class:`~stackquery._l2_tier.BatchRead`,
not a read each: a key gets a ``ColdRead`` of its own only when something
else needs it (see ``L2Tier.cold_read``), and the others land straight into
the batch's values (:meth:`ColdReads._land_read`).  When a read lands,
:meth:`ColdReads.land` settles it without an actor when it can (fresh data),
and hands the rest to the key's actor (stale data to refetch, a miss to
fetch) with :meth:`~stackquery._query_actor.QueryActor.continue_fetch`, so
the origin call that follows never reads L2 again.

While the read is out the key has no actor, so the doors that change a
passivated key change its snapshot directly; :meth:`ColdReads.land` reads
what they did from the snapshot: invalidated serves the data stale and
refetches once, newer data set meanwhile wins.  A removal or a reset does
not wait for the read: it settles the read's waiters with
``QueryCancelledError`` at once (:meth:`ColdReads.abandon`), and what the
store answers later is dropped.  Every read started is settled exactly once:
by :meth:`ColdReads.land`, :meth:`ColdReads.cancel` or
:meth:`ColdReads.abandon`, whichever comes first, and a read started for a
key never replaces one that is still out unsettled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any

import attrs
import trio

from actors import Registry, Reply

from . import _state
from ._entry import MAX_CLOCK_SKEW, StoredEntry
from ._entry_batch import BatchEntries
from ._errors import ClientClosedError, QueryCancelledError
from ._l2_tier import BatchRead, ColdRead, L2Tier
from ._option_checks import UNSET
from ._options import QueryOptions
from ._query_actor import QueryActor
from ._query_cache import QueryCache
from ._remembered import Run


def _closed_error() -> ClientClosedError:
    return ClientClosedError("the query client closed before the fetch finished")


class ColdReads:
    """Starts, lands and cancels the cold keys' L2 reads made in callers' tasks.

    Args:
        cache: the L1 table.
        tier: the L2 tier (its ``cold_reads`` holds the reads out).
        registry: the keys' actors, for the fetches the reads hand on.
        nursery: the client's nursery, where a read whose caller was
            cancelled still lands.
    """

    def __init__(
        self,
        cache: QueryCache,
        tier: L2Tier,
        registry: Registry[str, QueryActor],
        nursery: trio.Nursery,
    ) -> None:
        self._cache = cache
        self._tier = tier
        self._registry = registry
        self._actor_keys = registry.keys()
        """The keys with an actor (a live view: a membership test in C, per key landed)."""
        self._nursery = nursery
        self.closed = False
        """Set when the client closes: a read landing then fails its waiters."""
        self._unlanded: list[ColdRead] = []
        """Batched reads started since the last lander took its list (see :meth:`_land_batch`)."""

    def get(self, key_hash: str) -> ColdRead | None:
        """The key's read in flight, or ``None`` (see :meth:`L2Tier.cold_read`)."""
        return self._tier.cold_read(key_hash)

    def start(self, options: QueryOptions[Any], *, alone: bool = True) -> ColdRead:
        """Publish a cold key as fetching and ask L2 for it; synchronous.

        ``alone``: the key is read by itself, from its caller's task if the
        store allows it; else (a batch) its read joins the next ``get_many``.

        Raises:
            Exception: whatever an ``initial_data`` factory raised.
        """
        cache = self._cache
        key_hash = options.key_hash
        stranded = self._tier.cold_read(key_hash)
        if stranded is not None:
            # Only a key dropped from L1 while its read was out is read again;
            # the drop did not go through abandon(), so the old read's waiters
            # hear of it here rather than never.
            self.abandon(stranded, why="remove_queries or reset_queries")
        # Made fetching at once, as the key's actor makes a cold key: it serves as
        # the snapshot from before the read too (cancel_queries puts back the same).
        previous = cache.create(options, fetching=True)
        l2 = self._tier.l2
        if alone and l2.can_read_now(key_hash):
            cold = ColdRead(options, previous, Reply(), direct=True)
        else:
            cold = ColdRead(options, previous, l2.read_soon(key_hash))
            if not self._unlanded:
                self._nursery.start_soon(self._land_batch, name="stackquery-hydration")
            self._unlanded.append(cold)
        self._tier.cold_reads[key_hash] = cold
        return cold

    async def wait(self, cold: ColdRead) -> Any:
        """Await the key's L2 read and return the key's data (or raise its fetch's error).

        Cancelled, the caller stops waiting; the read goes on in the client's
        nursery and still lands for the others.  Settled while the store has
        not answered (cancel_queries, a removal or a reset of the key), it
        returns that outcome at once.
        """
        reply = cold.reply
        if not cold.direct:
            # A batched read is landed by its batch's lander, whoever waits for
            # it: its callers wait for the outcome only (settle_early sets it
            # too), with no cancel scope of their own.
            return await reply.wait()
        # The one read, from this task: no hop through the reader, and one
        # cancel scope, both its timeout and settle_early's way in.
        l2 = self._tier.l2
        waiting = cold.waiting = l2.read_scope(self._cache.now())
        if reply.is_set:
            waiting.cancel()
        try:
            entry = await l2.read_now(cold.options.key_hash, waiting)
        except BaseException:
            # This caller's read ended with it; whoever shares the read (the
            # waiters, an actor's L2Tier.read) gets another, landed for them.
            if not self.closed:
                self._read_again(cold)
            else:
                cold.read.set_value(None)
                self.land(cold, None)
            raise
        if waiting.cancelled_caught and reply.is_set:
            self._read_again(cold)  # settled early: the store's answer was dropped
            return reply.result_nowait()
        cold.read.set_value(entry)
        self._land_one(cold, entry)
        if reply.is_set:  # no second checkpoint: the read was one
            return reply.result_nowait()
        return await reply.wait()

    def _read_again(self, cold: ColdRead) -> None:
        """A direct read ended without the store's answer: read again for whoever shares it."""
        read = self._tier.l2.read_soon(cold.options.key_hash)
        self._nursery.start_soon(self._read_for_others, cold, read, name="stackquery-hydration")

    async def _read_for_others(self, cold: ColdRead, read: Reply[StoredEntry | None]) -> None:
        """A direct read's caller left before the store answered: read again, then land."""
        try:
            entry = await read.wait()
        except BaseException:  # the client is closing
            cold.read.set_value(None)
            self.land(cold, None)
            raise
        cold.read.set_value(entry)
        self.land(cold, entry)

    async def _land_batch(self) -> None:
        """Land the batched reads started before this task ran, each once the store answers.

        One task per batch, not one per key: a batch's reads go out in one
        ``get_many`` and are answered together, so they are landed together,
        whether their callers still wait or not.  Reads started after this
        task took its list get a lander of their own.
        """
        reads, self._unlanded = self._unlanded, []
        left = reads
        try:
            while left:
                answered: list[ColdRead] = []
                unanswered: list[ColdRead] = []
                for cold in left:
                    (answered if cold.read.is_set else unanswered).append(cold)
                self._land_many(answered)
                left = unanswered
                if left:
                    # The earliest started is in the earliest batch out: when it
                    # is answered, so is the rest of its batch.
                    await left[0].read.wait()
        except BaseException:  # the client is closing: the waiters left hear of it
            for cold in reads:
                self.land(cold, None)  # nothing for those landed already
            raise

    def claim_many(
        self,
        options_list: list[QueryOptions[Any]],
        resolve: Callable[[QueryOptions[Any]], QueryOptions[Any]] | None = None,
        new_keys: list[str] | None = None,
    ) -> tuple[BatchRead | None, Sequence[int]]:
        """Start one L2 read of the cold keys of ``options_list``, as ``fetch_query`` would
        start each key's; synchronous.

        Returns the read (``None`` when no key is cold) and the places in
        ``options_list`` of the keys it reads, in the read's order; fetch the
        other keys as ``fetch_query`` does.  Once the read's ``landed`` is set,
        a key's outcome is its own :class:`ColdRead`'s ``reply`` if it has one
        in ``colds``, else its data in ``values``.  Cold: not in L1, no actor,
        no read out, no ``initial_data``; no key is cold once the client is
        closing.  The keys go out in the next ``get_many`` and are landed
        together, by a task of the client's.  ``resolve``: the client's query
        defaults, applied to each options first (they keep their keys).  A key
        listed twice is claimed once.  ``new_keys``: the keys' hashes, in order,
        when the caller has just found each listed once and none in L1 (not
        looked for again: a batch of new keys pays for that once).
        """
        if self.closed:
            return None, []
        snapshots = self._cache.snapshots
        registry = self._actor_keys
        cold_reads = self._tier.cold_reads
        if resolve is not None:
            options_list = [resolve(options) for options in options_list]
        count = len(options_list)
        if not count:
            return None, []
        keys = list(map(_key_hash, options_list)) if new_keys is None else new_keys
        # What start() does for each key of a batch, less its checks and together:
        # made fetching at once, its read in the next get_many.
        now = trio.current_time()
        made = None
        if (
            # Every key new, judged in C (a batch of cold keys, the common case); none
            # with initial_data, judged once a run of keys read alike as they are made.
            (
                new_keys is not None
                or (len(set(keys)) == count and snapshots.keys().isdisjoint(keys))
            )
            and registry.isdisjoint(keys)
            and cold_reads.keys().isdisjoint(keys)
        ):
            made = self._cache.create_fetching_many(options_list, keys, now)
            cold = options_list
            places: Sequence[int] = range(count)
        if made is None:
            cold, keys, places = self._cold_of(options_list)
            if not cold:
                return None, []
            made = self._cache.create_fetching_many(cold, keys, now)
            assert made is not None  # none of them has initial_data
        shapes, runs = made
        batch = BatchRead(keys, cold, shapes, _bounded(runs), now, self._tier.l2.read_batch(keys))
        cold_reads.update(zip(keys, repeat(batch)))
        self._nursery.start_soon(self._land_batch_read, batch, name="stackquery-hydration")
        return batch, places

    def _cold_of(
        self, options_list: list[QueryOptions[Any]]
    ) -> tuple[list[QueryOptions[Any]], list[str], list[int]]:
        """The cold keys of ``options_list`` (see :meth:`claim_many`), each once: their
        options, their hashes and their places."""
        snapshots = self._cache.snapshots
        registry = self._actor_keys
        cold_reads = self._tier.cold_reads
        cold: list[QueryOptions[Any]] = []
        keys: list[str] = []
        places: list[int] = []
        taken: set[str] = set()
        for place, options in enumerate(options_list):
            key_hash = options.key_hash
            if (
                options.initial_data is not UNSET
                or key_hash in snapshots
                or key_hash in registry
                or key_hash in cold_reads
                or key_hash in taken
            ):
                continue
            taken.add(key_hash)
            cold.append(options)
            keys.append(key_hash)
            places.append(place)
        return cold, keys, places

    async def _land_batch_read(self, batch: BatchRead) -> None:
        """Land ``batch`` once the store answers, whether its caller still waits or not."""
        try:
            entries = await batch.read.wait()
        except BaseException:  # the client is closing: the waiters left hear of it
            count = len(batch.keys)
            self._land_each(batch, BatchEntries.missing(count), range(count))
            batch.landed.set()
            raise
        self._land_read(batch, entries)
        batch.landed.set()

    def _land_read(self, batch: BatchRead, entries: BatchEntries) -> None:
        """Land what the store answered for ``batch``'s keys.

        A fresh entry of a key nothing touched during the read (see
        :meth:`QueryCache.land_fresh_many`) lands from here, its data in
        ``batch.values``.  Every other key gets a :class:`ColdRead` of its own and
        lands as a lone read lands.
        """
        if self.closed:
            self._land_each(batch, entries, range(len(batch.keys)))
            return
        values = batch.values = entries.values
        rest = self._cache.land_fresh_many(
            batch.keys,
            batch.bounded,
            batch.shapes,
            values,
            entries.times,
            self._tier.cold_reads,
            [batch] * len(values),
            self._actor_keys,
            MAX_CLOCK_SKEW,
        )
        if rest:
            self._land_each(batch, entries, rest)

    def _land_each(self, batch: BatchRead, entries: BatchEntries, places: Iterable[int]) -> None:
        """Land the keys of ``batch`` at ``places`` through a :class:`ColdRead` each, made
        now if the key has none (every key not landed from the batch has one after this)."""
        tier = self._tier
        cold_reads = tier.cold_reads
        keys = batch.keys
        colds = batch.colds
        reads: list[ColdRead] = []
        for place in places:
            cold = colds.get(place)
            if cold is None:
                key_hash = keys[place]
                if cold_reads.get(key_hash) is not batch:
                    continue  # landed from the batch already
                cold = tier.one_of(batch, key_hash)
            if not cold.read.is_set:
                cold.read.set_value(entries.entry(place))
            reads.append(cold)
        self._land_many(reads)

    def _land_many(self, reads: list[ColdRead]) -> None:
        """Land reads the store has answered, with what the batch shares (see :meth:`land`).

        A fresh entry of a key nothing touched during its read lands in fewer
        steps than :meth:`land` takes (see :meth:`QueryCache.land_fresh_many`);
        each other read is left to :meth:`land`.
        """
        if not reads:
            return
        if self.closed:
            for cold in reads:
                self.land(cold, cold.read.result_nowait())
            return
        values, rest = self._landed_fresh_of(reads)
        if not rest:
            for cold, value in zip(reads, values, strict=True):
                cold.reply.set_value(value)
            return
        left = set(rest)
        for place, cold in enumerate(reads):
            if place not in left:
                cold.reply.set_value(values[place])
        for place in rest:
            cold = reads[place]
            self.land(cold, cold.read.result_nowait())

    def _land_one(self, cold: ColdRead, entry: StoredEntry | None) -> None:
        """:meth:`_land_many` of one read (a caller's direct read)."""
        if self.closed:
            self.land(cold, entry)
            return
        values, rest = self._landed_fresh_of([cold], [entry])
        if rest:
            self.land(cold, entry)
            return
        cold.reply.set_value(values[0])

    def _landed_fresh_of(
        self, reads: list[ColdRead], entries: list[StoredEntry | None] | None = None
    ) -> tuple[list[Any], list[int]]:
        """Publish the fresh entries of lone reads of keys nothing touched (see
        :meth:`QueryCache.land_fresh_many`), with their entries (by default what each
        read's ``read`` was answered); return the entries' values by place, and the
        places of the reads not landed (a miss, an invalidated entry ...: :meth:`land`
        settles those)."""
        keys: list[str] = []
        bounded: list[int] = []
        shapes: list[_state.Shape] = []
        values: list[Any] = []
        times: list[float | None] = []
        # One loop, no comprehensions: a lone read (the most common caller) pays for each.
        for place, cold in enumerate(reads):
            entry = cold.read.result_nowait() if entries is None else entries[place]
            options = cold.options
            keys.append(options.key_hash)
            if options.max_age is not None or options.max_stale is not None:
                bounded.append(place)
            shapes.append(cold.previous.shape)
            if entry is None or entry.invalidated:
                values.append(None)
                times.append(None)
            else:
                values.append(entry.value)
                times.append(entry.data_updated_at)
        rest = self._cache.land_fresh_many(
            keys,
            bounded,
            shapes,
            values,
            times,
            self._tier.cold_reads,
            reads,
            self._actor_keys,
            MAX_CLOCK_SKEW,
        )
        return values, rest

    def land(self, cold: ColdRead, entry: StoredEntry | None) -> None:
        """Settle the key's fetch with what L2 held, or hand it on to the key's actor."""
        options = cold.options
        key_hash = options.key_hash
        cold_reads = self._tier.cold_reads
        if cold_reads.get(key_hash) is not cold:
            return  # settled already: cancel_queries, remove_queries, reset_queries
        del cold_reads[key_hash]
        reply = cold.reply
        registry = self._registry
        cache = self._cache
        if self.closed:
            reply.set_error(_closed_error())
            return
        snap = cache.get(key_hash)
        if snap is None:
            reply.set_error(
                QueryCancelledError("query fetch cancelled by remove_queries or reset_queries")
            )
            return
        actor = registry.get(key_hash)
        if actor is not None and actor.is_fetching:
            # The key's actor started a fetch of its own meanwhile: this read's
            # waiters are served as a read of that key would be.
            self._join_actor(options, reply)
            return
        invalidated = snap.is_invalidated
        now = trio.current_time()
        # The entry's snapshot is built once, idle (the common end: fresh data
        # served), and published once: bulk hydration pays per key.  Where the
        # fetch goes on (to the key's actor), it is published fetching again.
        landed = (
            self._tier.entry_snapshot(snap, entry, now=now, idle=True)
            if entry is not None
            else None
        )
        if landed is not None:
            snap = landed
        if not cache.servable(snap, options):
            if landed is not None:
                cache.publish(_state.still_fetching(landed))
            registry.activate(key_hash).continue_fetch(options, cold.previous, reply)
            return
        if invalidated and not snap.is_invalidated:
            # Invalidated while L2 was read: the stored data lands, not as fresh,
            # and the refetch that follows is the one the invalidation asked for.
            # L2 is told too (as the invalidation would have told it had the entry
            # been in L1): a failed refetch must not leave it fresh there.
            snap = _state.invalidated(snap, now=now)
            landed = snap
            self._tier.persist(snap)
        if cache.is_fresh(snap, options):
            cache.publish(snap if landed is not None else _state.idle(snap, now=now))
            reply.set_value(snap.data)
            if actor is not None:  # an observer came during the read
                actor.after_cold_read()
            return
        if landed is not None:
            cache.publish(_state.still_fetching(landed))
        reply.set_value(snap.data)  # stale: served at once, refetched in the background
        registry.activate(key_hash).continue_fetch(options, cold.previous, Reply())

    def cancel(self, key_hash: str, *, revert: bool) -> bool:
        """Cancel the key's L2 read in flight, if any; return whether there was one."""
        cold = self._tier.cold_read(key_hash)
        if cold is None:
            return False
        del self._tier.cold_reads[key_hash]
        cache = self._cache
        snap = cache.get(key_hash)
        if snap is not None:
            now = trio.current_time()
            new = (
                _state.restored(snap, cold.previous, now=now)
                if revert
                else _state.idle(snap, now=now)
            )
            cache.publish(new)
            actor = self._registry.get(key_hash)
            if actor is not None:  # an observer came during the read: it hears of the revert
                actor.after_cold_read(cancelled=True)
        cold.settle_early(QueryCancelledError("query fetch cancelled by cancel_queries"))
        return True

    def abandon(self, cold: ColdRead | None, *, why: str) -> None:
        """Settle ``cold``'s waiters with ``QueryCancelledError`` (its key was removed or reset).

        Nothing is done if ``cold`` is ``None`` or no longer the key's read
        (landed or settled already).  The key's snapshot is left alone: the
        removal or reset that abandons the read has changed it.  What the
        store answers later is dropped.
        """
        if cold is None:
            return
        cold_reads = self._tier.cold_reads
        key_hash = cold.options.key_hash
        if cold_reads.get(key_hash) is not cold:
            return
        del cold_reads[key_hash]
        cold.settle_early(QueryCancelledError(f"query fetch cancelled by {why}"))

    def _join_actor(self, options: QueryOptions[Any], reply: Reply[Any]) -> None:
        cache = self._cache
        actor = self._registry.activate(options.key_hash)
        snap = cache.get(options.key_hash)
        if snap is not None and cache.servable(snap, options):
            if cache.is_fresh(snap, options):
                cache.note_use(options.key_hash)
            else:
                actor.claim_fetch(options)  # stale: served, refetched in the background
            reply.set_value(snap.data)
            return
        self._nursery.start_soon(
            _forward, actor.claim_fetch(options), reply, name="stackquery-hydration-forward"
        )


@attrs.frozen
class BatchReads:
    """The cold reads of one ``fetch_queries`` call (a :class:`~stackquery._fetch_many.ColdBatch`).

    Each key's options are resolved with the client's query defaults first,
    as ``fetch_query`` resolves them.
    """

    reads: ColdReads
    resolve: Callable[[QueryOptions[Any]], QueryOptions[Any]] | None
    """The client's query defaults, or ``None`` when it has none."""

    def claim_many(
        self, options_list: list[QueryOptions[Any]], new_keys: list[str] | None = None
    ) -> tuple[BatchRead | None, Sequence[int]]:
        """See :meth:`ColdReads.claim_many`."""
        return self.reads.claim_many(options_list, self.resolve, new_keys)


_key_hash = attrgetter("key_hash")


def _bounded(runs: list[Run]) -> set[int]:
    """The places of the options with a ``max_age`` or a ``max_stale`` (usually none: looked
    for once a run of options read alike)."""
    bounded: set[int] = set()
    for start, end, like in runs:
        if like.max_age is not None or like.max_stale is not None:
            bounded.update(range(start, end))
    return bounded


async def _forward(source: Reply[Any], target: Reply[Any]) -> None:
    try:
        value = await source.wait()
    except Exception as exc:
        target.set_error(exc)
    except BaseException:
        target.set_error(_closed_error())
        raise
    else:
        target.set_value(value)


__all__ = ["BatchReads", "ColdReads"]
