"""``inspect --attach`` and ``invalidate --attach``: a running client, through its admin socket.

Unlike the store commands, these see what the process holds in memory: each
key's status, age, observers and fetch counts, and an invalidation reaches
the keys it holds (observed ones refetch at once), exactly as
``client.invalidate_queries`` called inside the process would.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO, TypeVar

import orjson
import trio

from ..admin import AdminConnection, AdminError, open_admin_connection
from ._output import (
    EXIT_OK,
    EXIT_PROBLEMS,
    Column,
    CommandError,
    describe_prefixes,
    format_duration,
    key_text,
    print_json,
    print_table,
)

T = TypeVar("T")

COLUMNS = (
    Column("KEY"),
    Column("STATUS"),
    Column("FETCH"),
    Column("AGE", "right"),
    Column("STALE"),
    Column("OBSERVERS", "right"),
    Column("FETCHES", "right"),
    Column("ERRORS", "right"),
    Column("ACTOR"),
)


def parse_key_prefix_json(text: str) -> list[Any]:
    """A KEY-PREFIX argument as the JSON array the endpoint takes.

    Raises:
        CommandError: ``text`` is not a JSON array (the endpoint checks the key itself).
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, list):
        raise CommandError(f"a key prefix is a JSON array such as '[\"user\"]', got {text!r}")
    return value


def talk(path: str, conversation: Callable[[AdminConnection], Awaitable[T]]) -> T:
    """Run ``conversation`` on a connection to the endpoint at ``path``; return its result.

    Raises:
        CommandError: nothing listens at ``path``, the connection broke, or the
            endpoint refused a request (the message is the endpoint's).
    """

    async def run() -> T:
        async with open_admin_connection(path) as connection:
            return await conversation(connection)

    try:
        return trio.run(run)
    except AdminError as exc:
        raise CommandError(str(exc)) from None


def snapshot_rows(reply: dict[str, Any]) -> list[list[str]]:
    """The table rows of a ``snapshot`` reply."""
    return [
        [
            key_text(record["key"]),
            record["status"] + (" (invalidated)" if record["invalidated"] else ""),
            record["fetch_status"],
            "-" if record["age"] is None else format_duration(record["age"]),
            "yes" if record["stale"] else "no",
            str(record["observers"]),
            str(record["fetches"]),
            str(record["errors"]),
            "running" if record["active"] else "-",
        ]
        for record in reply["keys"]
    ]


def snapshot_summary(reply: dict[str, Any], prefix: list[Any], path: str) -> str:
    """The line under the table: what matched, what the client holds, what is shown."""
    under = f"under {key_text(prefix)} in the client at {path}"
    matched = reply["matched"]
    if matched == 0:
        return f"no keys {under}; {describe_prefixes(reply.get('prefixes', []))}"
    summary = reply["summary"]
    noun = "key" if matched == 1 else "keys"
    line = (
        f"{matched} {noun} {under} ({reply['total']} in all): {summary['fetching']} fetching, "
        f"{summary['stale']} stale, {summary['error']} in error; observers: {summary['observers']}"
    )
    if reply["truncated"]:
        line += f"; showing the first {len(reply['keys'])} by key"
    return line


def run_attach_inspect(
    path: str,
    key_prefix: str | None,
    *,
    json_output: bool = False,
    limit: int | None = None,
    plain: bool = False,
    out: TextIO,
) -> int:
    """Run ``stackquery inspect --attach PATH [KEY-PREFIX]``; return the exit code.

    Returns:
        ``EXIT_PROBLEMS`` when a KEY-PREFIX was given and no key is under it,
        else ``EXIT_OK``.

    Raises:
        CommandError: a bad key prefix, or the endpoint could not be reached
            or refused the request.
    """
    prefix = parse_key_prefix_json(key_prefix) if key_prefix is not None else []
    arguments: dict[str, Any] = {"prefix": prefix}
    if limit is not None:
        arguments["limit"] = limit
    reply: dict[str, Any] = talk(path, lambda admin: admin.request("snapshot", **arguments))
    if json_output:
        print_json(reply, stream=out)
    else:
        if reply["keys"]:
            print_table(COLUMNS, snapshot_rows(reply), stream=out, plain=plain)
            print(file=out)
        print(snapshot_summary(reply, prefix, path), file=out)
    return EXIT_PROBLEMS if key_prefix is not None and reply["matched"] == 0 else EXIT_OK


async def _invalidate_each(
    admin: AdminConnection, prefixes: list[list[Any]], wait: bool
) -> list[dict[str, Any]]:
    op = "refetch" if wait else "invalidate"
    return [await admin.request(op, prefix=prefix) for prefix in prefixes]


def run_attach_invalidate(
    path: str, key_prefixes: Sequence[str], *, wait: bool = False, out: TextIO
) -> int:
    """Run ``stackquery invalidate --attach PATH KEY-PREFIX...``; return the exit code.

    Each prefix's keys are invalidated as ``client.invalidate_queries(prefix)``
    would (observed ones refetch in the background); with ``wait``, the command
    waits until their refetches settled (the endpoint's ``refetch`` op).

    Returns:
        ``EXIT_PROBLEMS`` when a prefix matched no key, or (``wait``) a
        refetch failed or did not settle in time, else ``EXIT_OK``.

    Raises:
        CommandError: a bad key prefix, or the endpoint could not be reached
            or refused the request.
    """
    prefixes = [parse_key_prefix_json(text) for text in key_prefixes]
    replies = talk(path, functools.partial(_invalidate_each, prefixes=prefixes, wait=wait))
    problems = False
    for prefix, reply in zip(prefixes, replies, strict=True):
        line, trouble = describe_invalidation(prefix, reply, path)
        problems |= trouble
        print(line, file=out)
    return EXIT_PROBLEMS if problems else EXIT_OK


def describe_invalidation(prefix: list[Any], reply: dict[str, Any], path: str) -> tuple[str, bool]:
    """The line ``invalidate --attach`` prints for one prefix, and whether it is a problem."""
    under = f"under {key_text(prefix)} in the client at {path}"
    matched = reply["matched"]
    if matched == 0:
        return f"no keys {under}; {describe_prefixes(reply.get('prefixes', []))}", True
    noun = "key" if matched == 1 else "keys"
    if "settled" not in reply:
        return f"invalidated {matched} {noun} {under} (observed ones refetch now)", False
    observed = reply["observed"]
    if observed:
        refetched = f"{observed} observed {'key' if observed == 1 else 'keys'} refetched"
    else:
        refetched = "none observed (they refetch at their next read)"
    line = f"invalidated {matched} {noun} {under}: {refetched}"
    trouble = False
    if reply["failed"]:
        line += f", {reply['failed']} failed"
        trouble = True
    if not reply["settled"]:
        line += "; some refetches had not settled when the wait ended"
        trouble = True
    return line, trouble
