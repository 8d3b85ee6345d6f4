"""The other end of the attach endpoint: a connection that sends requests and reads replies.

What ``stackquery top / inspect / invalidate --attach`` use, and what a
script can use: ``async with open_admin_connection(path) as admin: await
admin.request("snapshot", prefix=["user"])``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import orjson
import trio

from .._errors import StackqueryError
from ._protocol import encode, receive_line

MAX_REPLY_LINE: Final = 64 * 1024 * 1024
"""Bytes a reply line may hold (a snapshot of 10,000 keys is about 1.5 MB)."""


class AdminError(StackqueryError):
    """The endpoint refused a request, or could not be talked to.

    Attributes:
        code: the error reply's code (``bad_request``, ``unknown_op``, ``busy`` ...),
            or ``unreachable`` / ``broken`` when there was no reply.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class AdminConnection:
    """One connection to a client's attach endpoint; requests go one at a time.

    Made by :func:`open_admin_connection`.
    """

    def __init__(self, stream: trio.SocketStream, path: str) -> None:
        self.path = path
        self._stream = stream
        self._buffer = bytearray()
        self._lock = trio.Lock()

    async def request(self, op: str, **arguments: Any) -> Any:
        """Send ``{"op": op, **arguments}`` and return the reply's ``result``.

        Raises:
            AdminError: the endpoint answered with an error (its code and
                message), closed the connection, or sent what is not a reply.
            TypeError: an argument cannot be sent as JSON.
        """
        async with self._lock:
            try:
                await self._stream.send_all(encode({"op": op, **arguments}))
                line = await receive_line(self._stream, self._buffer, MAX_REPLY_LINE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise AdminError(f"the connection to {self.path} broke: {exc}", "broken") from exc
        if line is None:
            raise AdminError(f"{self.path} closed the connection", "broken")
        try:
            reply = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise AdminError(f"{self.path} sent what is not JSON: {exc}", "broken") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            raise AdminError(f"{self.path} sent what is not a reply: {line[:200]!r}", "broken")
        if not reply["ok"]:
            error = reply.get("error") or {}
            raise AdminError(str(error.get("message", "?")), str(error.get("code", "?")))
        return reply.get("result")

    async def aclose(self) -> None:
        """Close the connection."""
        await self._stream.aclose()


@asynccontextmanager
async def open_admin_connection(path: str | os.PathLike[str]) -> AsyncIterator[AdminConnection]:
    """Connect to the attach endpoint at ``path`` for the duration of the block.

    Raises:
        AdminError: nothing listens at ``path`` (code ``unreachable``).
    """
    where = os.fspath(path)
    try:
        stream = await trio.open_unix_socket(where)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise AdminError(f"cannot attach to {where}: {reason}", "unreachable") from exc
    connection = AdminConnection(stream, where)
    try:
        yield connection
    finally:
        await trio.aclose_forcefully(stream)


__all__ = ["MAX_REPLY_LINE", "AdminConnection", "AdminError", "open_admin_connection"]
