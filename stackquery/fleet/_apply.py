"""What the other processes' fleet messages do to this process's cache.

:class:`~stackquery._fleet.Fleet` receives the messages; these functions
apply them to the client's L1 (through each key's actor when it runs), the
way ``invalidate_queries`` and ``remove_queries`` apply local calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .. import _state
from .._entry import StoredEntry
from .._keys import hash_matches
from .._query_actor import ApplyEntry, Invalidate, Remove

if TYPE_CHECKING:
    from .._client import QueryClient


def mark_all_stale(client: QueryClient) -> None:
    """Pub/sub was (re)connected: anything may have changed while it was down.

    Every entry with data is marked invalidated in L1 (not merely stale: a
    later call with another ``stale_time`` must not judge it fresh again
    from its timestamp), and observed keys refetch.  L2 is left alone: the
    other processes may hold newer data there, which the refetch finds.
    """
    now = trio.current_time()
    for key_hash, snap in list(client._table.items()):
        if snap.has_data and not snap.is_invalidated:
            client._table[key_hash] = _state.invalidated(snap, now=now)
    registry = client._registry
    if registry is None or client._closed:
        return
    for _, actor in registry.items():
        options = actor._observed_enabled()
        if options is not None:
            actor.claim_fetch(options)


async def apply_invalidation(
    client: QueryClient, prefix: str | None, exact: bool, hashes: list[str]
) -> None:
    """Another process invalidated keys: under a hash ``prefix``, or exactly ``hashes``.

    Raises:
        ClientClosedError: the client is not open.
    """
    registry = client._check_open()
    if prefix is not None:
        targets = [h for h in list(client._table) if hash_matches(h, prefix, exact=exact)]
    else:
        targets = [h for h in hashes if h in client._table]
    # Persisted by every holder: the sender may not hold the key, and a
    # process that starts later must find the L2 entry invalidated too.
    for key_hash in targets:
        if key_hash in registry:
            await registry.ask(key_hash, lambda r: Invalidate(True, r))
        elif (snap := client._table.get(key_hash)) is not None:
            client._persist(client._publish(_state.invalidated(snap, now=trio.current_time())))


async def apply_removal(client: QueryClient, hashes: list[str]) -> None:
    """Another process deleted these keys from L2: drop them from L1 (L2 is done).

    Raises:
        ClientClosedError: the client is not open.
    """
    registry = client._check_open()
    for key_hash in hashes:
        if key_hash in registry:
            await registry.ask(key_hash, lambda r: Remove(r, delete_l2=False))
        else:
            client._drop(key_hash, delete_l2=False)


async def apply_update(client: QueryClient, items: list[tuple[str, float]]) -> None:
    """Another process wrote new data for these keys: read it into L1 where it is newer.

    Raises:
        ClientClosedError: the client is not open.
    """
    registry = client._check_open()
    l2 = client._l2
    assert l2 is not None
    wanted = []
    for key_hash, updated_at in items:
        snap = client._table.get(key_hash)
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
            client._apply_entry(key_hash, entry)
