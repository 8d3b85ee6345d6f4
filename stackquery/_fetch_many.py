"""Many keys at once: ``QueryClient.fetch_queries`` and ``@cache.batch``'s ``many``.

Each key is fetched as ``fetch_query`` fetches it (fresh hit, stale hit and
refetch, or a wait on the key's one fetch), but the keys that are not fresh
start together.  ``fetch_queries``' cold keys (not in L1, L2 may hold them)
are claimed at once, without a task: their reads go out as one ``get_many``
and land together, and only the keys L2 misses (or holds stale) go on to
their actors.  Every other key gets a task, all started in the same run-loop
batch, so that their origin calls start together (which is what lets a batch
loader merge them).  Fresh keys are served inline, with no task and no
checkpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Protocol, TypeVar

import trio

from ._l2_tier import BatchRead
from ._options import QueryOptions
from ._state import Snapshot

T = TypeVar("T")

_JUST_OPTIONS = frozenset({QueryOptions})
_key_hash = attrgetter("key_hash")

FetchOne = Callable[[QueryOptions[Any]], Awaitable[Any]]
"""Fetches one key (``QueryClient.fetch_query`` or a decorator's wrapper of it)."""


def checked_options(options_list: Iterable[QueryOptions[Any]]) -> list[QueryOptions[Any]]:
    """Return ``options_list`` as a list, every item checked.

    Raises:
        TypeError: ``options_list`` is not iterable (or is a single ``QueryOptions``,
            a string or a mapping); an item is not a ``QueryOptions`` (the
            message names its position).
    """
    if isinstance(options_list, QueryOptions | str | bytes | Mapping):
        raise TypeError(
            f"options_list must be a list of QueryOptions, got {type(options_list).__name__}"
        )
    try:
        listed = list(options_list)
    except TypeError:
        got = type(options_list).__name__
        raise TypeError(f"options_list must be a list of QueryOptions, got {got}") from None
    if set(map(type, listed)) <= _JUST_OPTIONS:  # judged in C: no subclass, no stranger
        return listed
    for index, options in enumerate(listed):
        if not isinstance(options, QueryOptions):
            raise TypeError(
                f"options_list[{index}] must be a QueryOptions, got {type(options).__name__}"
            )
    return listed


async def fetch_all(
    snapshots: Mapping[str, Snapshot],
    options_list: list[QueryOptions[Any]],
    fetch_one: FetchOne,
    cold_reads: ColdBatch | None = None,
) -> list[Any]:
    """Fetch every key of ``options_list`` with ``fetch_one``; return their data in order.

    A key listed twice is fetched once (with the options listed first); both
    places get its data.  Fresh keys are read inline: a list of fresh keys
    only does not checkpoint, like a fresh hit of ``fetch_query``.  The other
    keys are fetched concurrently, and every one of them settles before this
    returns or raises.  With ``cold_reads``, the cold keys it claims (keys
    L2 may hold) are read from L2 together and landed together, with no
    task per key; the others go through ``fetch_one``.

    Cancelled, the caller stops waiting; the keys' fetches go on and land in
    the cache, as ``fetch_query``'s do.

    Raises:
        Exception: the first error (in list order) of a key's fetch, once every
            key has settled (as ``fetch_query`` would raise it for that key;
            the other keys' data is in the cache).
    """
    count = len(options_list)
    results: list[Any] = [None] * count
    key_hashes = list(map(_key_hash, options_list))
    first_of: dict[str, int] | None = None
    waiting: Sequence[int]
    if len(set(key_hashes)) == count and snapshots.keys().isdisjoint(key_hashes):
        # Judged in C: each key listed once, none in L1 (a batch of cold keys).
        waiting = range(count)
    else:
        first_of = {}
        waiting = []
        for index, options in enumerate(options_list):
            key_hash = key_hashes[index]
            if key_hash in first_of:
                continue
            first_of[key_hash] = index
            snap = snapshots.get(key_hash)
            if snap is not None and snap.fresh_for is options.stale_time:
                results[index] = snap.data
            else:
                waiting.append(index)
    errors: dict[int, Exception] = {}

    async def fetch_into(index: int) -> None:
        try:
            results[index] = await fetch_one(options_list[index])
        except Exception as exc:
            errors[index] = exc

    batch: BatchRead | None = None
    claimed: Sequence[int] = ()
    if cold_reads is not None and len(waiting) > 1:
        new_keys = key_hashes if first_of is None else None  # each once, none in L1
        batch, claimed, waiting = _claim_cold(cold_reads, options_list, waiting, new_keys)
    if len(waiting) == 1 and batch is None:
        await fetch_into(waiting[0])
    elif waiting or batch is not None:
        async with trio.open_nursery() as nursery:
            for index in waiting:
                nursery.start_soon(fetch_into, index)
            if batch is not None:
                await _wait_batch(batch, claimed, results, errors)
    if errors:
        raise errors[min(errors)]
    if first_of is not None and len(first_of) < count:
        for index, key_hash in enumerate(key_hashes):
            first = first_of[key_hash]
            if first != index:
                results[index] = results[first]
    return results


class ColdBatch(Protocol):
    """Reads cold keys from L2 for a batch (``ColdReads`` with the client's query defaults)."""

    def claim_many(
        self, options_list: list[QueryOptions[Any]], new_keys: list[str] | None = None
    ) -> tuple[BatchRead | None, Sequence[int]]:
        """Start one read of the cold keys; return it and their places in ``options_list``.

        ``new_keys``: the keys' hashes, in order, when the caller has just found each
        listed once and none in L1 (not looked for again)."""
        ...


def _claim_cold(
    cold_reads: ColdBatch,
    options_list: list[QueryOptions[Any]],
    waiting: Sequence[int],
    new_keys: list[str] | None,
) -> tuple[BatchRead | None, Sequence[int], Sequence[int]]:
    """The read of ``waiting``'s cold keys, their indexes (in its order), and the other
    keys of ``waiting``, fetched one by one.  ``new_keys``: see :meth:`ColdBatch.claim_many`
    (of every key of ``options_list``: passed on only when ``waiting`` is every key)."""
    every = len(waiting) == len(options_list)  # then waiting is every place, in order
    if every:
        batch, places = cold_reads.claim_many(options_list, new_keys)
    else:
        batch, places = cold_reads.claim_many([options_list[index] for index in waiting])
    if batch is None:
        return None, [], waiting
    claimed = places if every else [waiting[place] for place in places]
    if len(claimed) == len(waiting):
        return batch, claimed, []
    taken = set(places)
    rest = [index for place, index in enumerate(waiting) if place not in taken]
    return batch, claimed, rest


async def _wait_batch(
    batch: BatchRead, claimed: Sequence[int], results: list[Any], errors: dict[int, Exception]
) -> None:
    """Wait for the batch to land; then most keys' data is in it, the others' in their
    own reads' replies."""
    await batch.landed.wait()
    values = batch.values
    colds = batch.colds
    if not colds:
        if len(claimed) == len(results):  # every key, in order (claimed rises)
            results[:] = values
            return
        for place, index in enumerate(claimed):
            results[index] = values[place]
        return
    for place, index in enumerate(claimed):
        cold = colds.get(place)
        if cold is None:
            results[index] = values[place]
            continue
        reply = cold.reply
        try:
            # Not reply.wait() when set: it would checkpoint once per key.
            results[index] = reply.result_nowait() if reply.is_set else await reply.wait()
        except Exception as exc:
            errors[index] = exc


class _Fetcher(Protocol):
    """What :func:`fetch_queries` needs of its client (a ``QueryClient``)."""

    @property
    def snapshots(self) -> Mapping[str, Snapshot]: ...

    async def fetch_query(self, options: QueryOptions[T]) -> T: ...

    def _cold_batch(self) -> ColdBatch | None: ...


async def fetch_queries(self: _Fetcher, options_list: Iterable[QueryOptions[Any]]) -> list[Any]:
    """Fetch each query as ``fetch_query`` does, all at once; return their data in order.

    ``QueryClient.fetch_queries``.  A key listed twice is fetched once.  The
    keys that are not fresh start together, so the cold ones are read from
    L2 in one ``get_many`` (unless a read of other keys is out then: they
    wait for it and go in the next one).  A list of fresh keys only is
    served without a checkpoint, like a fresh hit of ``fetch_query``.

    Errors follow TanStack Query's ``fetchQuery``, per key: every key
    settles (its data or its error lands in the cache), then the first
    error in list order is raised.  To get each key's outcome instead, read
    ``get_query_state`` afterwards, or call ``fetch_query`` per key.

    Cancelled, the caller stops waiting; the keys' fetches go on for their
    other waiters and still land in the cache.

    Raises:
        TypeError: ``options_list`` is not a list (an iterable) of ``QueryOptions``.
        Exception: the first error, in list order, that ``fetch_query``
            raised for a key (its fetch's error after retries,
            ``QueryCancelledError``, ``ClientClosedError``).
    """
    listed = checked_options(options_list)
    return await fetch_all(self.snapshots, listed, self.fetch_query, self._cold_batch())


__all__ = ["ColdBatch", "FetchOne", "checked_options", "fetch_all", "fetch_queries"]
