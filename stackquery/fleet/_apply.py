"""What the other processes' fleet messages do to this process's cache.

:class:`~stackquery.fleet._fleet.Fleet` receives the messages; these
functions apply them through :class:`~stackquery._owners.QueryOwners`, the
way ``invalidate_queries`` and ``remove_queries`` apply local calls.
"""

from __future__ import annotations

import trio

from .._entry import StoredEntry
from .._keys import hash_matches
from .._l2_tier import L2Tier
from .._owners import QueryOwners
from .._query_cache import QueryCache


async def apply_invalidation(
    cache: QueryCache, owners: QueryOwners, prefix: str | None, exact: bool, hashes: list[str]
) -> None:
    """Another process invalidated keys: under a hash ``prefix``, or exactly ``hashes``.

    Marked in L1 only (observed keys refetch): L2 is the sender's to write.
    Our copy may be older than what another process wrote to L2 meanwhile,
    and every holder writing it back would clobber that newer data.

    Raises:
        ClientClosedError: the client is not open.
    """
    owners.check_open()
    if prefix is not None:
        targets = [h for h in list(cache.snapshots) if hash_matches(h, prefix, exact=exact)]
    else:
        targets = [h for h in hashes if h in cache.snapshots]
    for key_hash in targets:
        await owners.invalidate(key_hash, persist=False)


async def apply_removal(owners: QueryOwners, hashes: list[str]) -> None:
    """Another process deleted these keys from L2: drop them from L1 (L2 is done).

    Raises:
        ClientClosedError: the client is not open.
    """
    owners.check_open()
    for key_hash in hashes:
        await owners.remove(key_hash, delete_l2=False)


async def apply_update(
    cache: QueryCache, owners: QueryOwners, tier: L2Tier, items: list[tuple[str, float]]
) -> None:
    """Another process wrote new data for these keys: read it into L1 where it is newer.

    Raises:
        ClientClosedError: the client is not open.
    """
    owners.check_open()
    wanted = []
    for key_hash, updated_at in items:
        snap = cache.get(key_hash)
        held = snap.data_updated_at if snap is not None else None
        if snap is not None and (held is None or held < updated_at):
            wanted.append(key_hash)
    entries: dict[str, StoredEntry | None] = {}

    async def read(key_hash: str) -> None:
        entries[key_hash] = await tier.l2.read(key_hash)

    async with trio.open_nursery() as nursery:  # concurrent reads share one get_many
        for key_hash in wanted:
            nursery.start_soon(read, key_hash)
    for key_hash in wanted:
        entry = entries.get(key_hash)
        if entry is not None:
            await owners.apply_entry(key_hash, entry)
