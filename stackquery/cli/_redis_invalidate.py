"""``stackquery invalidate --redis URL KEY-PREFIX...``: invalidate keys in a whole fleet.

Two things, in this order:

1. Every L2 entry under each query-key prefix is rewritten with its
   invalidated flag set (value, fetch time and TTL kept, ``SET ... KEEPTTL``),
   so a process that starts later, or reads the key from Redis later, takes
   it as stale and refetches.  The rewrite is a compare-and-set: an entry a
   running client replaced meanwhile is read again and flagged in turn.
2. The fleet's invalidation message is published on the clients' pub/sub
   channel, so every running client marks the keys it holds in memory
   invalidated (and refetches the observed ones), exactly as if
   ``invalidate_queries`` had been called in one of them.

Entries that are not stackquery entries are left alone, counted and named.
``--sqlite`` / ``--file`` (local stores, no running processes to tell) are in
:mod:`stackquery._cli_store_invalidate`.
"""

from __future__ import annotations

import argparse
import functools
import secrets
import sys
from collections.abc import Sequence
from typing import TextIO

import attrs
import trio

from backends import (
    RedisClient,
    RedisClusterClient,
    StorageError,
    StorageUnavailableError,
    redis_client_from_url,
)

from .._entry import CorruptEntryError
from ..fleet._link import channel_name
from ..fleet._wire import encode_invalidate
from ._output import EXIT_OK, EXIT_PROBLEMS, CommandError
from ._store_invalidate import StoreInvalidateReport, describe_report, unmatched_prefixes
from ._stores import (
    DEFAULT_PREFIXES,
    EntryInfo,
    RawEntry,
    StoreTarget,
    decode_key,
    describe_entry,
    invalidated_copy,
    key_matches,
    parse_key_prefix,
    redact_url,
    walk_redis,
)

CHANNEL_HELP = (
    "the fleet's pub/sub channel (default: the prefix, 'events:db' and the URL's database "
    f"number, as the clients name it: {channel_name(DEFAULT_PREFIXES['redis'], 0)} for db 0)"
)

_TIMEOUT = 5.0
# Times an entry is read again when a running client replaced it between our
# read and our rewrite; past that it is left to the published message.
_ATTEMPTS = 5

# Set the new value only if the entry is still the one that was read.
_COMPARE_AND_SET = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('set', KEYS[1], ARGV[2], 'KEEPTTL')
end
return false
"""


@attrs.frozen
class RedisInvalidateReport:
    """What ``invalidate --redis`` did."""

    store: StoreInvalidateReport
    """The entries rewritten in Redis (and those left alone)."""
    channel: str
    """The channel the invalidation was published on."""
    listeners: int
    """Subscribers of the channel that received it (running clients, roughly)."""
    busy: int
    """Entries replaced by running clients faster than they could be rewritten."""


def add_redis_invalidate_options(
    where: argparse._MutuallyExclusiveGroup, parser: argparse.ArgumentParser
) -> None:
    """Add ``--redis`` to the store choice of ``stackquery invalidate``, and ``--channel``."""
    where.add_argument(
        "--redis",
        metavar="URL",
        help="a Redis URL (redis://host:port/db, or redis+cluster://host:port,... for a "
        "cluster): rewrites the entries and tells every running client",
    )
    parser.add_argument("--channel", help=CHANNEL_HELP)


def run_redis_invalidate_command(args: argparse.Namespace) -> int:
    """Run ``stackquery invalidate --redis`` from parsed arguments; return the exit code.

    A :class:`CommandError` is printed on stderr as
    ``stackquery invalidate: error: ...`` and its exit code returned.
    """
    try:
        return run_redis_invalidate(
            args.redis,
            args.key_prefixes,
            prefix=args.prefix,
            channel=args.channel,
            out=sys.stdout,
        )
    except CommandError as exc:
        print(f"stackquery invalidate: error: {exc}", file=sys.stderr)
        return exc.exit_code


def run_redis_invalidate(
    url: str,
    key_prefixes: Sequence[str],
    *,
    prefix: str | None = None,
    channel: str | None = None,
    out: TextIO,
) -> int:
    """Run ``stackquery invalidate --redis``; print a summary; return the exit code.

    Args:
        url: the Redis the fleet shares.
        key_prefixes: query-key prefixes as JSON arrays (``'["user"]'``).
        prefix: the text in front of every canonical key in Redis (``None``:
            ``"sq:"``, the client's default ``key_prefix``).
        channel: the fleet's channel (``None``: the clients' channel for
            ``prefix`` and the URL's database, see :func:`channel_name`).
        out: where the summary is printed.

    Returns:
        ``EXIT_PROBLEMS`` when some matching keys hold values that are not
        stackquery entries (they are left alone), else ``EXIT_OK``.  A key
        prefix without entries in Redis is noted but not a problem: the
        published message still reaches the keys running clients hold.

    Raises:
        CommandError: a bad key prefix or URL, or Redis could not be reached or failed.
    """
    report = trio.run(
        functools.partial(
            invalidate_redis,
            url,
            key_prefixes,
            prefix=DEFAULT_PREFIXES["redis"] if prefix is None else prefix,
            channel=channel,
        )
    )
    for line in describe_redis_report(report):
        print(line, file=out)
    return EXIT_PROBLEMS if report.store.unreadable else EXIT_OK


def describe_redis_report(report: RedisInvalidateReport) -> list[str]:
    """Return the lines ``invalidate --redis`` prints for ``report``."""
    lines = describe_report(report.store)
    if report.busy:
        lines.append(
            f"  {report.busy} kept changing under running clients; the message covers them"
        )
    noun = "subscriber" if report.listeners == 1 else "subscribers"
    lines.append(f"published on {report.channel}: {report.listeners} {noun} got it")
    return lines


async def invalidate_redis(
    url: str, key_prefixes: Sequence[str], *, prefix: str, channel: str | None = None
) -> RedisInvalidateReport:
    """Flag the L2 entries under the query-key prefixes, then tell the running clients.

    Args:
        url: the Redis the fleet shares.
        key_prefixes: query-key prefixes as JSON arrays (``'["user"]'``); ``'[]'``
            is every key.
        prefix: the text in front of every canonical key in Redis.
        channel: the fleet's pub/sub channel (``None``: the clients' channel
            for ``prefix`` and the URL's database).

    Raises:
        CommandError: a bad key prefix or URL, or Redis could not be reached or failed.
    """
    if not key_prefixes:
        raise CommandError("give at least one key prefix, such as '[\"user\"]'")
    hash_prefixes = [parse_key_prefix(text) for text in key_prefixes]
    target = StoreTarget("redis", url)
    matches: dict[str, RawEntry] = {}
    counts = []
    for hash_prefix in hash_prefixes:
        count = 0
        # The text prefix narrows the SCAN; key_matches then drops ["users"] under ["user".
        async for entry in walk_redis(url, prefix + hash_prefix):
            key = decode_key(entry.name[len(prefix) :])
            if key is not None and key_matches(key, hash_prefix):
                matches[entry.name] = entry
                count += 1
        counts.append(count)
    unmatched = await unmatched_prefixes(
        lambda: walk_redis(url, prefix), prefix, key_prefixes, counts
    )
    outcomes = dict.fromkeys(("invalidated", "already", "expired", "busy"), 0)
    unreadable: list[EntryInfo] = []
    try:
        client = redis_client_from_url(url, timeout=_TIMEOUT)
    except ValueError as exc:
        raise CommandError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None
    where = redact_url(url)
    if channel is None:
        channel = channel_name(prefix, client.address.db)
    try:
        async with client:
            for name in sorted(matches):
                outcome = await _flag(client, matches[name])
                if outcome == "unreadable":
                    unreadable.append(describe_entry(matches[name], prefix))
                else:
                    outcomes[outcome] += 1
            node = f"cli:{secrets.token_hex(4)}"
            listeners = 0
            for hash_prefix in hash_prefixes:
                message = encode_invalidate(hash_prefix, exact=False, hashes=[], node=node)
                listeners = max(listeners, await client.publish(channel, message))
            if isinstance(client, RedisClusterClient):
                # A cluster node counts only its own subscribers: ask every node.
                listeners = await client.count_subscribers(channel)
    except StorageUnavailableError as exc:
        raise CommandError(f"cannot reach Redis at {where}: {exc}") from exc
    except StorageError as exc:
        raise CommandError(f"Redis at {where} failed: {exc}") from exc
    store = StoreInvalidateReport(
        target,
        tuple(key_prefixes),
        outcomes["invalidated"],
        outcomes["already"],
        outcomes["expired"],
        tuple(unreadable),
        unmatched,
    )
    return RedisInvalidateReport(store, channel, listeners, outcomes["busy"])


async def _flag(client: RedisClient | RedisClusterClient, entry: RawEntry) -> str:
    """Set one entry's invalidated flag; return what happened to it."""
    raw: bytes | None = entry.value
    for _ in range(_ATTEMPTS):
        if raw is None:
            return "expired"
        try:
            flagged = invalidated_copy(raw)
        except CorruptEntryError:
            return "unreadable"
        if flagged is None:
            return "already"
        if await client.execute("EVAL", _COMPARE_AND_SET, 1, entry.name, raw, flagged):
            return "invalidated"
        # A running client wrote the key since we read it: flag what is there now.
        reply = await client.execute("GET", entry.name)
        raw = reply if isinstance(reply, bytes) else None
    return "busy"
