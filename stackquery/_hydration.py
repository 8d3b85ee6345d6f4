"""A cold key's L2 read, made in the task of the caller that asked for the key.

Reading L2 through the key's actor costs an actor activation and a fetch
task before the read even goes out; a key that L2 holds fresh needs neither.
So the first ``fetch_query`` of a cold key publishes the key as fetching,
records a :class:`Hydration` (the key's one read: later callers join its
reply) and awaits the L2 read itself.  When the read lands, :func:`land`
settles it without an actor when it can (fresh data), and hands the rest to
the key's actor (stale data to refetch, a miss to fetch) with
:meth:`~stackquery._query_actor.QueryActor.continue_fetch`, so the origin
call that follows never reads L2 again.

While the read is out the key has no actor, so the doors that change a
passivated key change its snapshot directly; :func:`land` reads what they
did from the snapshot: gone (removed, reset) cancels the waiters, invalidated
serves the data stale and refetches once, newer data set meanwhile wins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import trio

from actors import Reply

from . import _state
from ._entry import StoredEntry
from ._errors import ClientClosedError, QueryCancelledError
from ._options import QueryOptions

if TYPE_CHECKING:
    from ._client import QueryClient


@attrs.define(eq=False)
class Hydration:
    """One cold key's L2 read, started by a caller; the key's fetch until it lands."""

    options: QueryOptions[Any]
    previous: _state.Snapshot
    """The key's snapshot before it was published as fetching."""
    read: Reply[StoredEntry | None]
    reply: Reply[Any] = attrs.field(factory=Reply)
    """What every caller of the key waits on."""


def start_hydration(client: QueryClient, options: QueryOptions[Any]) -> Hydration:
    """Publish a cold key as fetching and ask L2 for it; synchronous."""
    l2 = client._l2
    assert l2 is not None
    previous = client._create_snapshot(options)
    client._publish(_state.fetching(previous, now=trio.current_time()))
    hydration = Hydration(options, previous, l2.read_soon(options.key_hash))
    client._hydrations[options.key_hash] = hydration
    return hydration


async def wait_hydrated(client: QueryClient, hydration: Hydration) -> Any:
    """Await the key's L2 read, land it, and return the key's data (or raise its fetch's error).

    Cancelled, the caller stops waiting; the read goes on in the client's
    nursery and still lands for the others.
    """
    try:
        entry = await hydration.read.wait()
    except BaseException:
        nursery = client._nursery
        if nursery is not None and not client._closed:
            nursery.start_soon(_land_later, client, hydration, name="stackquery-hydration")
        else:
            land(client, hydration, None)
        raise
    land(client, hydration, entry)
    reply = hydration.reply
    if reply.is_set:  # no second checkpoint: the read was one
        return reply.result_nowait()
    return await reply.wait()


async def _land_later(client: QueryClient, hydration: Hydration) -> None:
    land(client, hydration, await hydration.read.wait())


def land(client: QueryClient, hydration: Hydration, entry: StoredEntry | None) -> None:
    """Settle the key's fetch with what L2 held, or hand it on to the key's actor; synchronous."""
    options = hydration.options
    key_hash = options.key_hash
    if client._hydrations.get(key_hash) is not hydration:
        return  # cancelled by cancel_queries, which settled the waiters
    del client._hydrations[key_hash]
    reply = hydration.reply
    registry = client._registry
    if client._closed or registry is None:
        reply.set_error(ClientClosedError("the query client closed before the fetch finished"))
        return
    snap = client._table.get(key_hash)
    if snap is None:
        reply.set_error(
            QueryCancelledError("query fetch cancelled by remove_queries or reset_queries")
        )
        return
    if key_hash in registry:
        # An observer came while L2 was read and its actor owns the key now:
        # this read's waiters are served as a read of that key would be.
        _join_actor(client, options, reply)
        return
    invalidated = snap.is_invalidated
    if entry is not None:
        snap = client._apply_entry(key_hash, entry) or snap
    if not snap.has_data or client._too_old(snap, options):
        registry.activate(key_hash).continue_fetch(options, hydration.previous, reply)
        return
    now = trio.current_time()
    if invalidated and not snap.is_invalidated:
        # Invalidated while L2 was read: the stored data lands, not as fresh,
        # and the refetch that follows is the one the invalidation asked for.
        snap = client._publish(_state.invalidated(snap, now=now))
    if client._is_fresh(snap, options):
        client._publish(_state.idle(snap, now=now))
        reply.set_value(snap.data)
        return
    reply.set_value(snap.data)  # stale: served at once, refetched in the background
    registry.activate(key_hash).continue_fetch(options, hydration.previous, Reply())


def cancel_hydration(client: QueryClient, key_hash: str, *, revert: bool) -> bool:
    """Cancel the key's L2 read in flight, if any; return whether there was one."""
    hydration = client._hydrations.pop(key_hash, None)
    if hydration is None:
        return False
    snap = client._table.get(key_hash)
    if snap is not None:
        now = trio.current_time()
        new = (
            _state.restored(snap, hydration.previous, now=now)
            if revert
            else _state.idle(snap, now=now)
        )
        client._publish(new)
    hydration.reply.set_error(QueryCancelledError("query fetch cancelled by cancel_queries"))
    return True


def _join_actor(client: QueryClient, options: QueryOptions[Any], reply: Reply[Any]) -> None:
    outcome = client._serve_or_claim(options, None)
    if isinstance(outcome, bool):
        reply.set_value(client._table[options.key_hash].data)
        return
    assert isinstance(outcome, Reply)
    nursery = client._nursery
    assert nursery is not None
    nursery.start_soon(_forward, outcome, reply, name="stackquery-hydration-forward")


async def _forward(source: Reply[Any], target: Reply[Any]) -> None:
    try:
        value = await source.wait()
    except Exception as exc:
        target.set_error(exc)
    except BaseException:
        target.set_error(ClientClosedError("the query client closed before the fetch finished"))
        raise
    else:
        target.set_value(value)
