"""``stackquery invalidate --sqlite PATH | --file DIR``: mark entries of a local store invalidated.

The entries under each query-key prefix are rewritten in place with their
invalidated flag set (value, fetch time and remaining TTL kept), so the next
client that reads one treats it as stale and refetches it.  This edits the
store only: a running process that holds the key in memory keeps its copy
until that goes stale by itself (a Redis store broadcasts invalidations to
running clients; local stores have no such channel).

An entry written by a running client between the read and the rewrite is
overwritten by the invalidated older one; the cost is one refetch, never a
stale value taken for fresh.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TextIO

import attrs
import trio

from .._entry import CorruptEntryError
from .._keys import key_from_hash
from ..admin._views import nearby_prefixes
from ._output import EXIT_OK, EXIT_PROBLEMS, CommandError, describe_prefixes
from ._stores import (
    DEFAULT_PREFIXES,
    EntryInfo,
    RawEntry,
    StoreKind,
    StoreTarget,
    decode_key,
    describe_entry,
    invalidated_copy,
    key_matches,
    open_local_store,
    parse_key_prefix,
)


@attrs.frozen
class StoreInvalidateReport:
    """What ``invalidate`` did to a local store."""

    target: StoreTarget
    key_prefixes: tuple[str, ...]
    """The query-key prefixes, as given (JSON)."""
    invalidated: int
    """Entries rewritten with the invalidated flag."""
    already_invalidated: int
    """Matching entries whose flag was set already (left as they were)."""
    expired: int
    """Matching entries that expired before they could be rewritten."""
    unreadable: tuple[EntryInfo, ...]
    """Matching keys whose values are not stackquery entries (left as they were)."""
    unmatched: tuple[tuple[str, tuple[dict[str, Any], ...]], ...] = ()
    """Each key prefix (as given) under which the store has no key, with the prefixes
    near it that it does have (``{"prefix": [...], "keys": count}``, most keys first)."""


async def unmatched_prefixes(
    walk: Callable[[], AsyncIterator[RawEntry]],
    prefix: str,
    key_prefixes: Sequence[str],
    matched: Sequence[int],
) -> tuple[tuple[str, tuple[dict[str, Any], ...]], ...]:
    """The key prefixes that matched no key, each with what the store has near it.

    Args:
        walk: yields every entry under ``prefix`` (walked only if a prefix matched nothing).
        prefix: the text in front of every canonical key in the store.
        key_prefixes: the query-key prefixes as given (JSON arrays).
        matched: how many keys each one matched.

    Raises:
        CommandError: the store could not be read.
    """
    if all(matched):
        return ()
    hashes = [
        key async for entry in walk() if (key := decode_key(entry.name[len(prefix) :])) is not None
    ]
    return tuple(
        (text, tuple(nearby_prefixes(hashes, key_from_hash(parse_key_prefix(text) + "]"))))
        for text, count in zip(key_prefixes, matched, strict=True)
        if count == 0
    )


async def invalidate_local_store(
    target: StoreTarget, key_prefixes: Sequence[str], *, prefix: str
) -> StoreInvalidateReport:
    """Set the invalidated flag of every entry under the query-key prefixes.

    Args:
        target: a SQLite or file store.
        key_prefixes: query-key prefixes as JSON arrays (``'["user"]'``); ``'[]'``
            is every key.
        prefix: the text in front of every canonical key in the store.

    Raises:
        CommandError: a key prefix is not a JSON array holding a valid key, or
            the store could not be opened, read or written.
    """
    if target.kind not in ("sqlite", "file"):
        raise CommandError(f"cannot edit a {target.kind} store directly")
    if not key_prefixes:
        raise CommandError("give at least one key prefix, such as '[\"user\"]'")
    hash_prefixes = [parse_key_prefix(text) for text in key_prefixes]
    invalidated = already = expired = 0
    unreadable: list[EntryInfo] = []
    async with open_local_store(target) as store:
        matches: dict[str, RawEntry] = {}
        counts = []
        for hash_prefix in hash_prefixes:
            count = 0
            # The text prefix narrows the walk; key_matches then drops ["users"] under ["user".
            async for entry in store.walk(prefix + hash_prefix):
                key = decode_key(entry.name[len(prefix) :])
                if key is not None and key_matches(key, hash_prefix):
                    matches[entry.name] = entry
                    count += 1
            counts.append(count)
        unmatched = await unmatched_prefixes(
            lambda: store.walk(prefix), prefix, key_prefixes, counts
        )
        for name in sorted(matches):
            entry = matches[name]
            try:
                rewritten = invalidated_copy(entry.value)
            except CorruptEntryError:
                unreadable.append(describe_entry(entry, prefix))
                continue
            if rewritten is None:
                already += 1
            elif await store.rewrite(entry, rewritten):
                invalidated += 1
            else:
                expired += 1
    return StoreInvalidateReport(
        target, tuple(key_prefixes), invalidated, already, expired, tuple(unreadable), unmatched
    )


def describe_report(report: StoreInvalidateReport) -> list[str]:
    """Return the lines ``invalidate`` prints for ``report``."""
    noun = "entry" if report.invalidated == 1 else "entries"
    under = " ".join(report.key_prefixes)
    where = report.target.describe()
    line = f"invalidated {report.invalidated} {noun} under {under} in the {where}"
    notes = []
    if report.already_invalidated:
        notes.append(f"{report.already_invalidated} already invalidated")
    if report.expired:
        notes.append(f"{report.expired} expired meanwhile")
    if report.unreadable:
        notes.append(f"{len(report.unreadable)} unreadable, left alone")
    if notes:
        line += f" ({', '.join(notes)})"
    lines = [line]
    lines += [f"  {info.name}: {info.status}: {info.problem}" for info in report.unreadable]
    lines += [
        f"  no entries under {text}; {describe_prefixes(near)}" for text, near in report.unmatched
    ]
    return lines


def run_store_invalidate(
    kind: StoreKind,
    location: str,
    key_prefixes: Sequence[str],
    *,
    prefix: str | None = None,
    out: TextIO,
) -> int:
    """Run ``stackquery invalidate`` on a SQLite or file store; return the exit code.

    Args:
        kind: ``"sqlite"`` or ``"file"``.
        location: the SQLite file, or the file store's directory.
        key_prefixes: query-key prefixes as JSON arrays (``'["user"]'``).
        prefix: the text in front of every canonical key (``None``: ``"sq:"``,
            the client's default ``key_prefix``).
        out: where the summary is printed.

    Returns:
        ``EXIT_PROBLEMS`` when some matching keys hold values that are not
        stackquery entries (they are left alone), or a key prefix matched no
        entry, else ``EXIT_OK``.

    Raises:
        CommandError: bad key prefix, or the store could not be opened, read or written.
    """
    target = StoreTarget(kind, location)
    key_prefix = DEFAULT_PREFIXES[kind] if prefix is None else prefix
    report = trio.run(
        functools.partial(invalidate_local_store, target, key_prefixes, prefix=key_prefix)
    )
    for line in describe_report(report):
        print(line, file=out)
    return EXIT_PROBLEMS if report.unreadable or report.unmatched else EXIT_OK
