"""Commands through a user's ``redis.asyncio.Redis`` client, bridged by trio-asyncio.

The slower path (about 3x the native client per unbatched command, see
``tests/benchmarks/redis_bridge.py``), for programs that already own a
redis-py asyncio client.  It needs a running trio-asyncio loop:
``async with trio_asyncio.open_loop():`` around the code that uses it.

Importing trio-asyncio patches asyncio's event-loop functions for the whole
process, so this module is imported only when :class:`RedisStorage` is given
such a client, never with the package.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, final

import redis.asyncio
import redis.exceptions
import trio_asyncio  # type: ignore[import-untyped]

from ._resp import CommandArg, RedisReply

UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
"""redis-py's errors that mean Redis could not be reached."""

REPLY_ERRORS: tuple[type[Exception], ...] = (redis.exceptions.ResponseError,)
"""redis-py's errors for a command Redis answered with an error reply."""


@final
class AsyncioRedisCommands:
    """``execute`` and ``pipeline`` over a ``redis.asyncio.Redis`` client.

    Replies are what redis-py returns after its response callbacks (``SET``
    gives ``True``, ``SCAN`` a ``(cursor, keys)`` pair, text when the client
    decodes responses); cancellation is redis-py's (it drops the connection
    of a cancelled command).  The client is the caller's: it is not closed here.
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client

    async def execute(self, *args: CommandArg) -> RedisReply:
        """Run one command through redis-py.

        Raises:
            RuntimeError: no trio-asyncio loop is running.
            redis.exceptions.RedisError: as redis-py raises it.
        """
        _require_loop()
        reply: RedisReply = await trio_asyncio.aio_as_trio(self._client.execute_command)(*args)
        return reply

    async def pipeline(
        self, commands: Iterable[Sequence[CommandArg]], *, raise_on_error: bool = True
    ) -> list[RedisReply]:
        """Run several commands in one redis-py pipeline (no transaction).

        Raises:
            RuntimeError: no trio-asyncio loop is running.
            redis.exceptions.RedisError: as redis-py raises it.
        """
        _require_loop()
        batch = [tuple(command) for command in commands]

        async def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for command in batch:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=raise_on_error)
            return replies

        replies: list[RedisReply] = await trio_asyncio.aio_as_trio(run)()
        return replies

    async def aclose(self) -> None:
        """Do nothing: the redis.asyncio client belongs to the caller."""


def _require_loop() -> None:
    if trio_asyncio.current_loop.get() is None:
        raise RuntimeError(
            "a redis.asyncio client needs a running trio-asyncio loop: "
            "wrap the program in `async with trio_asyncio.open_loop():`"
        )
