"""What the endpoint reports: the keys under a prefix, in chunks that let the client run.

The L1 table can hold a million keys; describing them all costs about 6 µs
each.  So every walk here goes through the table in chunks of
:data:`CHUNK` keys with a checkpoint between chunks: a big snapshot takes
longer, the client's other tasks (and fresh hits) never wait more than a chunk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

import orjson
import trio

from .._keys import QueryKey, hash_matches, prefix_hash
from .._owners import QueryOwners
from .._query_cache import QueryCache
from .._state import FetchStatus, Snapshot

CHUNK = 500
"""Keys described between two checkpoints (about 3 ms of work)."""

PREFIXES_SHOWN = 20
"""Prefixes a reply that matched nothing names, the most common first."""

Order = Literal["key", "fetches"]


def key_json(key_hash: str) -> Any:
    """The key as JSON (its canonical form); the hash itself if it does not parse."""
    try:
        return orjson.loads(key_hash)
    except orjson.JSONDecodeError:
        return key_hash


async def chunks(cache: QueryCache, hash_prefix: str) -> AsyncIterator[list[tuple[str, Snapshot]]]:
    """The keys under ``hash_prefix`` with their snapshots, a chunk at a time.

    A checkpoint follows each chunk.  The table's keys are copied first (a
    list of strings: about 2 ms for 100,000 keys); each key's snapshot is read
    when its chunk comes, and a key removed meanwhile is left out.
    """
    snapshots = cache.snapshots
    hashes = list(snapshots)
    for start in range(0, len(hashes), CHUNK):
        chunk = []
        for key_hash in hashes[start : start + CHUNK]:
            if hash_matches(key_hash, hash_prefix, exact=False):
                snap = snapshots.get(key_hash)
                if snap is not None:
                    chunk.append((key_hash, snap))
        yield chunk
        await trio.lowlevel.checkpoint()


def describe(
    key_hash: str, snap: Snapshot, observers: int, active: bool, now: float
) -> dict[str, Any]:
    """One key's record in a ``snapshot`` reply (``now``: wall time, for the age)."""
    updated = snap.data_updated_at
    return {
        "key": key_json(key_hash),
        "status": snap.status.value,
        "fetch_status": snap.fetch_status.value,
        "age": None if updated is None else now - updated,
        "stale": updated is not None and not snap.fresh,
        "invalidated": snap.is_invalidated,
        "observers": observers,
        "fetches": snap.fetch_count,
        "errors": snap.error_count,
        "active": active,
    }


def _empty_summary() -> Counter[str]:
    return Counter(dict.fromkeys(SUMMARY_FIELDS, 0))


SUMMARY_FIELDS = (
    "keys",
    "pending",
    "success",
    "error",
    "fetching",
    "stale",
    "invalidated",
    "observers",
    "active",
    "fetches",
    "errors",
)
"""The counts of a ``snapshot`` reply's ``summary``, over the keys that matched."""


async def snapshot(
    cache: QueryCache,
    owners: QueryOwners,
    key: QueryKey,
    *,
    limit: int,
    order: Order,
    now: float,
) -> dict[str, Any]:
    """The ``snapshot`` reply: the first ``limit`` keys under ``key`` in ``order``, and counts.

    ``order`` is ``"key"`` (canonical JSON text) or ``"fetches"`` (most
    fetched first).  ``prefixes`` is there when nothing matched.  The chosen
    keys are kept sorted chunk by chunk (a merge of two sorted runs), and
    described in chunks too, so no step holds the client up for long.
    """
    total = len(cache)
    summary = _empty_summary()
    best: list[tuple[int, str]] = []
    async for chunk in chunks(cache, prefix_hash(key)):
        new = []
        for key_hash, snap in chunk:
            actor = owners.actor(key_hash)
            _count(
                summary, snap, len(actor.observers) if actor is not None else 0, actor is not None
            )
            new.append((-snap.fetch_count if order == "fetches" else 0, key_hash))
        if new and limit:
            new.sort()
            best += new
            best.sort()
            del best[limit:]
    records = []
    for start in range(0, len(best), CHUNK):
        for _, key_hash in best[start : start + CHUNK]:
            current = cache.get(key_hash)
            if current is not None:  # else removed since it was counted
                actor = owners.actor(key_hash)
                watching = len(actor.observers) if actor is not None else 0
                records.append(describe(key_hash, current, watching, actor is not None, now))
        await trio.lowlevel.checkpoint()
    reply: dict[str, Any] = {
        "now": now,
        "total": total,
        "matched": summary["keys"],
        "truncated": summary["keys"] > len(records),
        "summary": dict(summary),
        "keys": records,
    }
    if summary["keys"] == 0:
        reply["prefixes"] = await found_prefixes(cache, key)
    return reply


def _count(summary: Counter[str], snap: Snapshot, observers: int, active: bool) -> None:
    summary["keys"] += 1
    summary[snap.status.value] += 1
    summary["fetching"] += snap.fetch_status is FetchStatus.FETCHING
    summary["stale"] += snap.data_updated_at is not None and not snap.fresh
    summary["invalidated"] += snap.is_invalidated
    summary["observers"] += observers
    summary["active"] += active
    summary["fetches"] += snap.fetch_count
    summary["errors"] += snap.error_count


async def found_prefixes(cache: QueryCache, key: QueryKey) -> list[dict[str, Any]]:
    """What there is near ``key``, for a reply that matched nothing under it.

    The longest shorter prefix of ``key`` that has keys under it (``()`` at
    worst), and its keys grouped one element deeper: ``[{"prefix": [...],
    "keys": count}]``, the :data:`PREFIXES_SHOWN` most common first.  Empty
    when the table is.
    """
    for depth in range(len(key) - 1, -1, -1):
        groups: Counter[str] = Counter()
        async for chunk in chunks(cache, prefix_hash(key[:depth])):
            groups.update(group_of(key_hash, depth + 1) for key_hash, _ in chunk)
        if groups:
            return top_prefixes(groups)
    return []


def nearby_prefixes(key_hashes: Iterable[str], key: QueryKey) -> list[dict[str, Any]]:
    """:func:`found_prefixes` over canonical key hashes (a store's keys), in one go."""
    hashes = list(key_hashes)
    for depth in range(len(key) - 1, -1, -1):
        under = prefix_hash(key[:depth])
        groups = Counter(
            group_of(key_hash, depth + 1)
            for key_hash in hashes
            if hash_matches(key_hash, under, exact=False)
        )
        if groups:
            return top_prefixes(groups)
    return []


def top_prefixes(groups: Counter[str]) -> list[dict[str, Any]]:
    """The :data:`PREFIXES_SHOWN` largest groups, most keys first, then by text."""
    top = sorted(groups.items(), key=lambda item: (-item[1], item[0]))[:PREFIXES_SHOWN]
    return [{"prefix": key_json(text), "keys": count} for text, count in top]


def group_of(key_hash: str, depth: int) -> str:
    """The canonical JSON of the key's first ``depth`` elements."""
    parsed = key_json(key_hash)
    if not isinstance(parsed, list):
        return key_hash
    return orjson.dumps(parsed[:depth]).decode()


def count_errors(cache: QueryCache, key_hashes: Iterable[str]) -> dict[str, int]:
    """Each key's failed-fetch count now (0 for a key no longer in the table)."""
    counts = {}
    for key_hash in key_hashes:
        snap = cache.get(key_hash)
        counts[key_hash] = snap.error_count if snap is not None else 0
    return counts


def is_observed(owners: QueryOwners, key_hash: str) -> bool:
    """Whether the key has observers now (they refetch it when it is invalidated)."""
    actor = owners.actor(key_hash)
    return actor is not None and bool(actor.observers)


__all__ = [
    "CHUNK",
    "SUMMARY_FIELDS",
    "Order",
    "chunks",
    "count_errors",
    "describe",
    "found_prefixes",
    "group_of",
    "is_observed",
    "key_json",
    "nearby_prefixes",
    "snapshot",
    "top_prefixes",
]
