"""A small trio-native Redis client: any command, automatic pipelining, pub/sub.

It knows nothing about caching.  Commands of concurrent callers share one
connection and are written together (see :mod:`backends._redis_connection`);
replies are parsed by hiredis, or by redis-py's own parser without it.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Final, final

import attrs
import trio

from ._errors import StorageClosedError, StorageError, StorageUnavailableError
from ._redis_address import RedisAddress, open_redis_stream
from ._redis_connection import HandshakeRefused, MultiplexedConnection
from ._resp import (
    NOT_ENOUGH_DATA,
    CommandArg,
    RedisReply,
    ReplyReader,
    import_reply_parser,
    new_reply_reader,
    pack_command,
)

if TYPE_CHECKING:
    from redis.exceptions import RedisError

DEFAULT_TIMEOUT: Final = 5.0

# Commands that change the state of the connection itself: on a connection
# shared by every caller (and replaced after a drop) they would leak into
# other callers' commands or be lost on reconnect.
_CONNECTION_STATE_COMMANDS = frozenset(
    {
        "AUTH", "SELECT", "HELLO", "RESET", "QUIT", "MONITOR", "WATCH", "UNWATCH",
        "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE",
        "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
    }
)  # fmt: skip
_BLOCKING_COMMANDS = frozenset(
    {
        "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP",
        "BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT", "WAITAOF",
    }
)  # fmt: skip
_TRANSACTION_COMMANDS = frozenset({"MULTI", "EXEC", "DISCARD"})


class RedisReplyError(StorageError):
    """Redis answered a command with an error reply.

    Attributes:
        error: the reply as the exception redis-py raises for it
            (``ResponseError``, ``NoScriptError``, ``NoPermissionError`` ...);
            also the ``__cause__``.
    """

    def __init__(self, message: str, *, error: RedisError, operation: str = "") -> None:
        super().__init__(message, backend="RedisClient", operation=operation)
        self.error = error


def _reply_error(error: RedisError, operation: str) -> RedisReplyError:
    reply_error = RedisReplyError(
        f"redis {operation}: {type(error).__name__}: {error}", error=error, operation=operation
    )
    reply_error.__cause__ = error
    return reply_error


@attrs.frozen
class RedisClientStatistics:
    """A snapshot of a :class:`RedisClient`'s connection."""

    connected: bool
    """True while a connection is open."""
    queued: int
    """Requests waiting to be written."""
    in_flight: int
    """Requests written and not fully answered yet, including cancelled ones."""
    connections_made: int
    """Connections started so far (the first one, then one per reconnect)."""
    subscriptions: int
    """Open :meth:`RedisClient.subscribe` connections."""


@final
class RedisClient:
    """A trio-native Redis client over one automatically pipelined connection.

    Commands from concurrent tasks are written together and answered in
    order.  The connection opens on the first command; after it breaks (the
    server went away, a command timed out) the next command opens a new one.
    The client runs no background task, so it needs no nursery: use it as
    ``async with RedisClient.from_url(url) as redis:`` or call :meth:`aclose`.

    Every call is bounded by ``timeout`` (connecting included): when a
    command has waited that long, the server is taken to be gone, the
    connection is closed and every call waiting on it fails with
    :class:`StorageUnavailableError` (so a call queued behind a stuck one
    may fail sooner than its own ``timeout``).  The next call reconnects.

    Making a client imports redis-py (its reply parser and error classes,
    about 150 ms the first time), which importing :mod:`backends` does not;
    so the first connection does not block a running event loop for it.

    Args:
        address: where the server is and how to log in.
        timeout: seconds each call may take; ``None`` waits forever (then a
            server that stops reading can also delay a cancelled caller
            that is writing, see :meth:`execute`).
        use_hiredis: parse with hiredis when it is installed.

    Raises:
        ValueError: ``timeout`` is not a positive number or ``None``.
    """

    def __init__(
        self,
        address: RedisAddress,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        use_hiredis: bool = True,
    ) -> None:
        if timeout is not None and not (
            isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0
        ):
            raise ValueError(
                f"timeout must be a positive number of seconds or None, not {timeout!r}"
            )
        if timeout is not None and math.isinf(timeout):
            timeout = None
        import_reply_parser()
        self._address = address
        self._timeout = timeout
        self._use_hiredis = use_hiredis
        self._connection: MultiplexedConnection | None = None
        self._connections_made = 0
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        use_hiredis: bool = True,
    ) -> RedisClient:
        """Make a client for ``url`` (redis-py's URL syntax, see :meth:`RedisAddress.from_url`).

        Raises:
            ValueError: the URL or ``timeout`` is not valid.
        """
        address = RedisAddress.from_url(url, ssl_context=ssl_context)
        return cls(address, timeout=timeout, use_hiredis=use_hiredis)

    @property
    def address(self) -> RedisAddress:
        """Where this client connects."""
        return self._address

    @property
    def timeout(self) -> float | None:
        """Seconds each call may take, or ``None``."""
        return self._timeout

    async def execute(self, *args: CommandArg) -> RedisReply:
        """Run one command and return its reply.

        Any command works (``SET k v NX PX 500``, ``EVALSHA``, ``EVAL`` ...)
        except those that would change the shared connection for everybody.

        Cancelled before the command was written, it has no effect; after, the
        server still runs it and the reply is dropped when it arrives.  A caller
        that is writing queued commands (its own and others') when cancelled
        first finishes that write, for at most ``timeout``.

        Args:
            *args: the command name and its arguments.

        Returns:
            The reply: ``bytes`` for strings (``b"OK"`` for status replies),
            ``int``, ``None`` for nil, a list for arrays.

        Raises:
            RedisReplyError: the server answered with an error; its ``error``
                is redis-py's exception for it (``NoScriptError`` for an
                unknown script, ``ResponseError`` for a wrong type ...).
            StorageUnavailableError: the server could not be reached, the
                connection broke, or no reply came within ``timeout``.
            StorageError: the server refused the connection (bad password,
                bad database number).
            StorageClosedError: the client was closed.
            ValueError: the command is empty, or one a shared connection cannot
                run (``SUBSCRIBE``: use :meth:`subscribe`; ``MULTI``: use
                :meth:`pipeline`; ``SELECT``/``AUTH``: put them in the URL;
                blocking commands such as ``BLPOP``).
            TypeError: an argument is not text, bytes or a number.
        """
        payload = pack_command(args)
        name = _command_name(args[0])
        if name in _CONNECTION_STATE_COMMANDS or name in _TRANSACTION_COMMANDS:
            raise ValueError(_refusal(name))
        if name in _BLOCKING_COMMANDS:
            raise ValueError(_refusal(name))
        (reply,) = await self._current_connection().request(payload, 1, name)
        if isinstance(reply, Exception):  # an error reply (see RedisReply)
            raise _reply_error(reply, name)
        return reply

    async def pipeline(
        self, commands: Iterable[Sequence[CommandArg]], *, raise_on_error: bool = True
    ) -> list[RedisReply]:
        """Run several commands back to back and return their replies in order.

        The commands are written together and nobody else's command comes
        between them, so ``MULTI`` ... ``EXEC`` inside one pipeline is a
        transaction.  Under cancellation it behaves like :meth:`execute`.

        Args:
            commands: each a command name and its arguments.
            raise_on_error: raise the first error reply (after every reply was
                read); ``False`` returns error replies in place, as redis-py's
                exceptions (``redis.exceptions.ResponseError`` ...).

        Returns:
            One reply per command.

        Raises:
            RedisReplyError: a command failed and ``raise_on_error``.
            ValueError: a command is empty or not allowed (as for
                :meth:`execute`; ``MULTI`` is allowed here when every ``MULTI``
                is closed by ``EXEC`` or ``DISCARD`` within the pipeline).
            StorageUnavailableError, StorageError, StorageClosedError,
            TypeError: as for :meth:`execute`.
        """
        payloads: list[bytes] = []
        in_transaction = False
        for command in commands:
            payloads.append(pack_command(command))
            name = _command_name(command[0])
            if name in _CONNECTION_STATE_COMMANDS or name in _BLOCKING_COMMANDS:
                raise ValueError(_refusal(name))
            if name == "MULTI":
                if in_transaction:
                    raise ValueError("MULTI inside MULTI in a redis pipeline")
                in_transaction = True
            elif name in ("EXEC", "DISCARD"):
                if not in_transaction:
                    raise ValueError(f"{name} without MULTI in a redis pipeline")
                in_transaction = False
        if in_transaction:
            raise ValueError("a redis pipeline must close its MULTI with EXEC or DISCARD")
        if not payloads:
            await trio.lowlevel.checkpoint()
            return []
        replies = await self._current_connection().request(
            b"".join(payloads), len(payloads), "PIPELINE"
        )
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):  # an error reply (see RedisReply)
                    raise _reply_error(reply, "PIPELINE")
        return replies

    async def publish(self, channel: str | bytes, message: str | bytes) -> int:
        """Publish ``message`` on ``channel``; return how many subscribers got it.

        Raises:
            As :meth:`execute`.
        """
        reply = await self.execute("PUBLISH", channel, message)
        assert isinstance(reply, int)
        return reply

    @asynccontextmanager
    async def subscribe(self, *channels: str | bytes) -> AsyncIterator[Subscription]:
        """Open a dedicated connection subscribed to ``channels``.

        ``async with client.subscribe("events") as messages:`` then
        ``async for channel, data in messages:``.  The subscription is active
        when the block starts: a message published after that is received.
        Messages published while the connection was down are lost; a
        subscriber that must not miss anything treats a reconnect as "anything
        may have changed".

        Raises:
            ValueError: no channel given.
            StorageUnavailableError: the server could not be reached or did
                not confirm the subscription within ``timeout``.
            StorageError: the server refused the connection.
            StorageClosedError: the client is closed.
        """
        if not channels:
            raise ValueError("subscribe() needs at least one channel")
        if self._closed:
            raise StorageClosedError("the redis client is closed", backend="RedisClient")
        subscription = await self._open_subscription(channels)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            await subscription.aclose()

    def statistics(self) -> RedisClientStatistics:
        """Return a snapshot of the connection's state."""
        connection = self._connection
        usable = connection is not None and connection.usable
        return RedisClientStatistics(
            connected=usable and connection is not None and connection.is_open,
            queued=connection.queued if connection is not None and usable else 0,
            in_flight=connection.in_flight if connection is not None and usable else 0,
            connections_made=self._connections_made,
            subscriptions=len(self._subscriptions),
        )

    async def aclose(self) -> None:
        """Close the connection and every subscription; idempotent.

        Calls waiting on the connection fail with :class:`StorageClosedError`,
        and so does every later call.
        """
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None and connection.usable:
            connection.close()
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> RedisClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _current_connection(self) -> MultiplexedConnection:
        if self._closed:
            raise StorageClosedError("the redis client is closed", backend="RedisClient")
        connection = self._connection
        if connection is not None:
            if connection.usable:
                if not connection.looks_dead():
                    return connection
                connection.fail(ConnectionResetError("redis closed the idle connection"))
            else:
                # Broken, or left over from an earlier trio.run: its waiters
                # (if any) belonged to that run.
                connection.discard()
        connection = MultiplexedConnection(
            self._open_stream, self._timeout, use_hiredis=self._use_hiredis
        )
        self._connection = connection
        self._connections_made += 1
        return connection

    async def _open_stream(self) -> trio.abc.Stream:
        return await open_redis_stream(self._address, use_hiredis=self._use_hiredis)

    async def _open_subscription(self, channels: Sequence[str | bytes]) -> Subscription:
        with trio.move_on_after(self._timeout if self._timeout is not None else math.inf):
            try:
                stream = await self._open_stream()
            except (OSError, trio.BrokenResourceError) as exc:
                raise StorageUnavailableError(
                    f"redis subscribe: could not connect: {exc!r}",
                    backend="RedisClient",
                    operation="subscribe",
                ) from exc
            except HandshakeRefused as exc:
                raise StorageError(
                    f"redis subscribe: the server refused the connection: {exc}",
                    backend="RedisClient",
                    operation="subscribe",
                ) from exc
            subscription = Subscription(stream, new_reply_reader(use_hiredis=self._use_hiredis))
            try:
                await subscription._start(channels)
            except BaseException:
                await subscription.aclose()
                raise
            return subscription
        cause = TimeoutError(f"redis did not confirm the subscription within {self._timeout} s")
        raise StorageUnavailableError(
            f"redis subscribe: {cause}", backend="RedisClient", operation="subscribe"
        ) from cause


@final
class Subscription:
    """Messages on the channels of one :meth:`RedisClient.subscribe` block.

    An async iterator of ``(channel, data)`` pairs, both ``bytes``.  It has its
    own connection; on TLS, cancelling a wait for the next message may break
    that connection (the next wait then raises ``StorageUnavailableError``).
    """

    def __init__(self, stream: trio.abc.Stream, reader: ReplyReader) -> None:
        self._stream = stream
        self._reader = reader
        self._closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[bytes, bytes]:
        """Wait for the next message and return ``(channel, data)``.

        Raises:
            StorageUnavailableError: the connection broke.
            StorageClosedError: the subscription or its client was closed.
        """
        buffered = True
        while True:
            reply = self._reader.gets()
            if reply is NOT_ENOUGH_DATA:
                self._reader.feed(await self._receive())
                buffered = False
                continue
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                channel, data = reply[1], reply[2]
                assert isinstance(channel, bytes) and isinstance(data, bytes)
                if buffered:
                    await trio.lowlevel.checkpoint()
                return channel, data
            # Anything else is a (un)subscribe confirmation, not a message.

    async def aclose(self) -> None:
        """Close the subscription's connection; idempotent."""
        self._closed = True
        await trio.aclose_forcefully(self._stream)

    async def _start(self, channels: Sequence[str | bytes]) -> None:
        await self._stream.send_all(pack_command(("SUBSCRIBE", *channels)))
        for _ in channels:
            while (reply := self._reader.gets()) is NOT_ENOUGH_DATA:
                self._reader.feed(await self._receive())
            if isinstance(reply, Exception):  # an error reply (see RedisReply)
                raise StorageError(
                    f"redis subscribe failed: {reply}", backend="RedisClient", operation="subscribe"
                ) from reply

    async def _receive(self) -> bytes | bytearray:
        if self._closed:
            raise StorageClosedError("the subscription is closed", backend="RedisClient")
        try:
            data = await self._stream.receive_some()
        except trio.ClosedResourceError as exc:
            raise StorageClosedError(
                "the subscription is closed", backend="RedisClient", operation="subscribe"
            ) from exc
        except (OSError, trio.BrokenResourceError) as exc:
            raise StorageUnavailableError(
                f"redis subscription lost: {exc!r}", backend="RedisClient", operation="subscribe"
            ) from exc
        if not data:
            cause = ConnectionResetError("redis closed the subscription connection")
            raise StorageUnavailableError(
                f"redis subscription lost: {cause}", backend="RedisClient", operation="subscribe"
            ) from cause
        return data


def _command_name(name: CommandArg) -> str:
    if isinstance(name, str):
        return name.upper()
    if isinstance(name, bytes | bytearray | memoryview):
        return bytes(name).decode("utf-8", "replace").upper()
    return str(name)


def _refusal(name: str) -> str:
    if name in ("SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"):
        return f"{name} cannot run on the shared connection; use RedisClient.subscribe()"
    if name in ("SELECT", "AUTH"):
        return f"{name} cannot run on the shared connection; put it in the redis URL"
    if name in _TRANSACTION_COMMANDS:
        return f"{name} cannot run alone on the shared connection; use RedisClient.pipeline()"
    if name in _BLOCKING_COMMANDS:
        return f"{name} blocks the connection that every caller shares"
    return f"{name} would change the connection that every caller shares"
