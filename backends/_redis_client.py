"""A small trio-native Redis client: any command, automatic pipelining, pub/sub.

It knows nothing about caching.  Commands of concurrent callers share one
connection and are written together (see :mod:`backends._redis_connection`);
replies are parsed by hiredis, or by redis-py's own parser without it.
"""

from __future__ import annotations

import itertools
import math
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Final, final

import attrs
import trio

from ._errors import StorageClosedError, StorageError, StorageUnavailableError
from ._redis_address import RedisAddress, RedisConnector
from ._redis_connection import MultiplexedConnection, connection_error
from ._redis_sentinel import SentinelAddress, SentinelConnector, is_sentinel_url
from ._redis_subscription import Subscription, open_subscription
from ._redis_tracking import (
    tracking_command,
)
from ._resp import (
    CommandArg,
    RedisReply,
    import_reply_parser,
    pack_command,
)

if TYPE_CHECKING:
    from redis.exceptions import RedisError

DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_PING_INTERVAL: Final = 10.0

_SHARED = "the connection that every caller shares"

_TRANSACTION_COMMANDS: Final = frozenset({"MULTI", "EXEC", "DISCARD"})
_BLOCKING_COMMANDS: Final = (
    "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP",
    "BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT", "WAITAOF",
)  # fmt: skip

# Commands a shared connection cannot run, with why.  Most change the state
# of the connection itself: on a connection shared by every caller (and
# replaced after a drop) that state would leak into other callers' commands
# or be lost on reconnect.  Keyed by name, or by "NAME SUBCOMMAND".
_REFUSALS: Final[dict[str, str]] = {
    **dict.fromkeys(
        ("SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"),
        "cannot run on the shared connection; use RedisClient.subscribe()",
    ),
    **dict.fromkeys(
        ("UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"),
        "cannot run on the shared connection; leave the subscribe() block",
    ),
    **dict.fromkeys(
        ("SELECT", "AUTH"), "cannot run on the shared connection; put it in the redis URL"
    ),
    **dict.fromkeys(
        _TRANSACTION_COMMANDS,
        "cannot run alone on the shared connection; use RedisClient.pipeline()",
    ),
    **dict.fromkeys(
        ("SYNC", "PSYNC", "REPLCONF"), f"would turn {_SHARED} into a replication stream"
    ),
    **dict.fromkeys(("READONLY", "READWRITE"), f"would change the cluster read mode of {_SHARED}"),
    **dict.fromkeys((*_BLOCKING_COMMANDS, "XREAD BLOCK", "XREADGROUP BLOCK"), f"blocks {_SHARED}"),
    "HELLO": f"would change the protocol or the login of {_SHARED}",
    "RESET": f"would reset {_SHARED}",
    "QUIT": f"would close {_SHARED}",
    "MONITOR": f"would turn {_SHARED} into a stream of every command the server runs",
    "WATCH": f"would make other callers' transactions on {_SHARED} fail",
    "UNWATCH": f"would cancel other callers' WATCH on {_SHARED}",
    "ASKING": f"would apply to another caller's next command on {_SHARED}",
    "CLIENT REPLY": (
        f"would make the server skip replies on {_SHARED}, handing one caller's reply to another"
    ),
    "CLIENT TRACKING": f"would change the key tracking of {_SHARED}",
    "CLIENT CACHING": f"would change the key tracking of another caller's command on {_SHARED}",
    "CLIENT SETNAME": f"would rename {_SHARED} (and be lost on reconnect)",
    "CLIENT SETINFO": f"would change what {_SHARED} tells the server about its library",
    "CLIENT NO-EVICT": f"would change the eviction mode of {_SHARED}",
    "CLIENT NO-TOUCH": f"would change how every caller's reads on {_SHARED} touch keys",
}
# Names whose refusal depends on their arguments (a subcommand, an option).
_BY_ARGUMENTS: Final = frozenset({"CLIENT", "XREAD", "XREADGROUP"})
_PING: Final = pack_command(("PING",))


class RedisCommandRefusedError(ValueError):
    """A command that the connection every caller shares cannot run; nothing was sent.

    Attributes:
        command: the command as refused, upper case (``"SELECT"``, ``"CLIENT REPLY"``).
    """

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"{command} {reason}")
        self.command = command


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
    """Open :meth:`RedisClient.subscribe` connections not known to be lost."""


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
    That is also how a half-open connection (the server or a middlebox
    vanished without closing it) is found by commands; every TCP connection
    also has TCP keepalive on, which finds one that sits idle.

    Every connection announces itself with ``CLIENT SETINFO lib-name
    stackquery`` and ``lib-ver``, written with the rest of the handshake; a
    server that refuses it (older than Redis 7.2) is not asked again.

    A TLS certificate or host name that fails verification raises
    :class:`StorageTLSError`, and every later call raises it again without
    connecting: that is configuration to fix, not an outage to wait out.
    Make a new client with the right CA certificates or host name.

    Making a client imports redis-py (its reply parser and error classes,
    about 150 ms the first time), which importing :mod:`backends` does not;
    so the first connection does not block a running event loop for it.

    Args:
        address: where the server is and how to log in.
        timeout: seconds each call may take; ``None`` waits forever (then a
            server that stops reading can also delay a cancelled caller
            that is writing, see :meth:`execute`).
        ping_interval: seconds a :meth:`subscribe` connection may hear
            nothing before it sends ``PING``; when the pong has not come
            another ``ping_interval`` later, the subscription is lost.  So a
            deaf subscription is found within twice this (20 s by default).
            ``None`` never pings.
        use_hiredis: parse with hiredis when it is installed.

    Raises:
        ValueError: ``timeout`` or ``ping_interval`` is not a positive number or ``None``.
    """

    def __init__(
        self,
        address: RedisAddress | SentinelAddress,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        use_hiredis: bool = True,
    ) -> None:
        import_reply_parser()
        self._address = address
        self._timeout = _seconds_or_none("timeout", timeout)
        self._ping_interval = _seconds_or_none("ping_interval", ping_interval)
        self._use_hiredis = use_hiredis
        self._connector: RedisConnector | SentinelConnector
        if isinstance(address, SentinelAddress):
            self._connector = SentinelConnector(address, use_hiredis=use_hiredis)
        else:
            self._connector = RedisConnector(address, use_hiredis=use_hiredis)
        self._follows_master = isinstance(address, SentinelAddress)
        self._retired: list[MultiplexedConnection] = []
        """Connections to a former master, closed once their callers have their replies."""
        self._connection: MultiplexedConnection | None = None
        self._connections_made = 0
        self._subscriptions: set[Subscription] = set()
        self._connected_event = trio.Event()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ssl_context: ssl.SSLContext | None = None,
        use_hiredis: bool = True,
    ) -> RedisClient:
        """Make a client for ``url`` (redis-py's URL syntax, see :meth:`RedisAddress.from_url`).

        ``redis+sentinel://[user:pass@]host:port[,host:port...]/service_name[/db]``
        makes a client of the master that the sentinels name (see
        :mod:`backends._redis_sentinel`): it asks them on every (re)connect,
        reconnects when the master answers ``READONLY`` (the command is sent
        again, once, to the new master) and, while :meth:`follow_failovers`
        runs, as soon as a sentinel announces ``+switch-master``.

        Raises:
            ValueError: the URL, ``timeout`` or ``ping_interval`` is not valid.
        """
        address: RedisAddress | SentinelAddress
        if is_sentinel_url(url):
            if ssl_context is not None:
                raise ValueError("a redis+sentinel:// client does not support TLS")
            address = SentinelAddress.from_url(url)
        else:
            address = RedisAddress.from_url(url, ssl_context=ssl_context)
        return cls(address, timeout=timeout, ping_interval=ping_interval, use_hiredis=use_hiredis)

    @property
    def address(self) -> RedisAddress | SentinelAddress:
        """Where this client connects (the sentinels, for a ``redis+sentinel://`` client)."""
        return self._address

    @property
    def master(self) -> tuple[str, int] | None:
        """Under Sentinel: the master the last connection went to; else ``None``."""
        connector = self._connector
        return connector.master if isinstance(connector, SentinelConnector) else None

    async def follow_failovers(self) -> None:
        """Under Sentinel: reconnect to a new master as soon as a sentinel announces it; forever.

        Listens for ``+switch-master`` on the sentinels (one after another
        when one is lost); on an announcement for this client's service,
        retires the shared connection (calls already written on it still get
        their replies; new calls open a connection to the new master) and
        drops every subscription (its waiting task gets
        :class:`StorageUnavailableError`; subscribe again to follow).
        Without Sentinel it returns at once.  Cancel it to stop; it raises
        nothing else.
        """
        connector = self._connector
        if not isinstance(connector, SentinelConnector):
            await trio.lowlevel.checkpoint()
            return
        interval = self._ping_interval if self._ping_interval is not None else DEFAULT_PING_INTERVAL
        await connector.follow_switches(self._master_switched, interval)

    def _master_switched(self) -> None:
        connection = self._connection
        if connection is not None:
            self._retire(connection)
        cause = ConnectionResetError("the sentinels announced a new master")
        for subscription in self._subscriptions:
            subscription.drop(cause)

    def _retire(self, connection: MultiplexedConnection) -> None:
        """Send no new command on ``connection``; close it once its callers have their replies.

        Its callers are not failed: a command already written has run (or
        been refused) on the old master, whose answer they get.
        """
        if self._connection is connection:
            self._connection = None
        if connection.usable:
            if connection.idle:
                connection.close()
            elif connection not in self._retired:  # every READONLY caller retires it
                self._retired.append(connection)

    def _close_retired(self) -> None:
        for connection in list(self._retired):
            if not connection.usable:
                self._retired.remove(connection)
            elif connection.idle:
                connection.close()
                self._retired.remove(connection)

    @property
    def timeout(self) -> float | None:
        """Seconds each call may take, or ``None``."""
        return self._timeout

    @property
    def ping_interval(self) -> float | None:
        """Seconds of silence after which a subscription sends ``PING``, or ``None``."""
        return self._ping_interval

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
            StorageTLSError: the server's TLS certificate or host name failed
                verification, now or on an earlier call.
            StorageError: the server refused the connection (bad password,
                bad database number).
            StorageClosedError: the client was closed.
            RedisCommandRefusedError: (a ``ValueError``) the command would
                change or block the connection every caller shares
                (``SUBSCRIBE``: use :meth:`subscribe`; ``MULTI``: use
                :meth:`pipeline`; ``SELECT``/``AUTH``: put them in the URL;
                ``CLIENT REPLY``, ``CLIENT TRACKING``, ``CLIENT SETNAME``,
                ``HELLO``, ``RESET``, ``QUIT``, ``MONITOR``; blocking
                commands such as ``BLPOP`` or ``XREAD BLOCK``).  Nothing was sent.
            ValueError: the command is empty.
            TypeError: an argument is not text, bytes or a number.
        """
        payload = pack_command(args)
        name = _command_name(args[0])
        if name in _REFUSALS or name in _BY_ARGUMENTS:
            _check_command(name, args, in_pipeline=False)
        if self._follows_master:
            (reply,) = await self._request(payload, 1, name)
        else:  # the hot path: no extra frame
            (reply,) = await self._current_connection(name).request(payload, 1, name)
        if isinstance(reply, Exception):
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
            RedisCommandRefusedError: a command is not allowed (as for
                :meth:`execute`; ``MULTI`` is allowed here when every
                ``MULTI`` is closed by ``EXEC`` or ``DISCARD`` within the
                pipeline, and ``ASKING`` when a command follows it).
                Nothing was sent.
            ValueError: a command is empty, or ``MULTI`` is not balanced.
            StorageUnavailableError, StorageTLSError, StorageError,
            StorageClosedError, TypeError: as for :meth:`execute`.
        """
        payloads: list[bytes] = []
        in_transaction = False
        asking = False
        for command in commands:
            payloads.append(pack_command(command))
            name = _command_name(command[0])
            if asking or name == "ASKING":
                # ASKING applies to the next command only: allowed where that
                # command is this caller's own, the next one in the pipeline.
                asking = not asking
                if asking:
                    continue
            if name in _TRANSACTION_COMMANDS:
                if (name == "MULTI") == in_transaction:
                    problem = "MULTI inside MULTI" if in_transaction else f"{name} without MULTI"
                    raise ValueError(f"{problem} in a redis pipeline")
                in_transaction = name == "MULTI"
            elif name in _REFUSALS or name in _BY_ARGUMENTS:
                _check_command(name, command, in_pipeline=True)
        if in_transaction:
            raise ValueError("a redis pipeline must close its MULTI with EXEC or DISCARD")
        if asking:
            raise RedisCommandRefusedError("ASKING", _REFUSALS["ASKING"])
        if not payloads:
            await trio.lowlevel.checkpoint()
            return []
        replies = await self._request(b"".join(payloads), len(payloads), "PIPELINE")
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
        if not isinstance(reply, int):
            raise StorageError(
                f"redis PUBLISH: unexpected reply {reply!r:.100}",
                backend="RedisClient",
                operation="PUBLISH",
            )
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

        While a task waits for the next message, the subscription checks that
        the server still hears it: after ``ping_interval`` seconds of silence
        it sends ``PING``, and a pong that does not come within another
        ``ping_interval`` makes the wait raise :class:`StorageUnavailableError`,
        exactly as a connection the server closed does.  Subscribe again to
        reconnect.

        Raises:
            ValueError: no channel given.
            StorageUnavailableError: the server could not be reached or did
                not confirm the subscription within ``timeout``.
            StorageTLSError: the server's TLS certificate or host name failed
                verification, now or earlier.
            StorageError: the server refused the connection.
            StorageClosedError: the client is closed.
        """
        if not channels:
            raise ValueError("subscribe() needs at least one channel")
        async with self._subscribed(channels, ()) as subscription:
            yield subscription

    @asynccontextmanager
    async def subscribe_tracking(
        self, *channels: str | bytes, prefixes: Sequence[str]
    ) -> AsyncIterator[Subscription]:
        """As :meth:`subscribe`, also hearing of each change to a key under ``prefixes``.

        Server-assisted invalidation in broadcasting mode (see
        :mod:`backends._redis_tracking`): a write by anybody, an expiry, an
        eviction or a ``FLUSHDB`` of such a key arrives as an
        :class:`~backends._redis_tracking.Invalidation` from
        :meth:`Subscription.next_event` (``async for`` skips them).  The
        subscription has a second connection, the tracking one, and is lost
        when either is.  With no ``channels`` it hears the invalidations
        only (what a cluster opens on each of its masters).

        Raises:
            ValueError: no prefix, or overlapping prefixes.
            TrackingRefusedError: (a ``StorageError``) the server refused
                ``CLIENT TRACKING`` (older than Redis 6, or an ACL).
            StorageUnavailableError, StorageTLSError, StorageError,
            StorageClosedError: as for :meth:`subscribe`.
        """
        tracking_command(0, prefixes)  # bad prefixes fail here, before connecting
        async with self._subscribed(channels, prefixes) as subscription:
            yield subscription

    @asynccontextmanager
    async def _subscribed(
        self, channels: Sequence[str | bytes], prefixes: Sequence[str]
    ) -> AsyncIterator[Subscription]:
        self._check_can_connect("subscribe")
        subscription = await self._open_subscription(channels, prefixes)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            await subscription.aclose()

    async def wait_reconnected(self) -> None:
        """Wait until this client next opens a connection: the hook for code that backs off.

        Returns when a connection of this client (a command's, a pipeline's or
        a :meth:`subscribe`'s) completes its handshake after this call, that
        is once the server is reachable again.  It opens nothing itself, so it
        costs nothing while Redis is down.  A task backing off after a failure
        waits ``with trio.move_on_after(backoff): await redis.wait_reconnected()``
        and is woken as soon as any other task got through.

        It never returns at once, even while a connection is open: a failure
        on a healthy connection (an error reply, the caller's own timeout) is
        not cut short by it.  For the same reason a connection opened before
        the call does not count; call it right after the failure.

        Raises:
            StorageClosedError: the client is closed, or gets closed while waiting.
        """
        self._check_open()
        if self._connected_event.is_set():
            self._connected_event = trio.Event()
        await self._connected_event.wait()
        self._check_open()

    def statistics(self) -> RedisClientStatistics:
        """Return a snapshot of the connection's state."""
        connection = self._connection
        usable = connection is not None and connection.usable
        return RedisClientStatistics(
            connected=usable and connection is not None and connection.is_open,
            queued=connection.queued if connection is not None and usable else 0,
            in_flight=connection.in_flight if connection is not None and usable else 0,
            connections_made=self._connections_made,
            subscriptions=sum(subscription.connected for subscription in self._subscriptions),
        )

    async def aclose(self) -> None:
        """Close the connection and every subscription; idempotent.

        Calls waiting on the connection fail with :class:`StorageClosedError`,
        and so does every later call (:meth:`wait_reconnected` included).
        """
        self._closed = True
        self._connected_event.set()  # its waiters see the client closed
        connection, self._connection = self._connection, None
        if connection is not None and connection.usable:
            connection.close()
        for retired in self._retired:
            if retired.usable:
                retired.close()
        self._retired.clear()
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

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError("the redis client is closed", backend="RedisClient")

    def _check_can_connect(self, operation: str) -> None:
        """Raise if a new connection must not be opened: closed, or a rejected certificate."""
        self._check_open()
        failure = self._connector.certificate_failure
        if failure is not None:
            raise connection_error(failure, operation)

    async def _request(self, payload: bytes, expected: int, operation: str) -> list[RedisReply]:
        """Send and return the replies; under Sentinel, resend once to a new master on READONLY.

        Under Sentinel a command is also sent once more when the master closed
        its connection: Sentinel ends every client of a master it demotes
        (``CLIENT KILL TYPE normal``), and the new connection asks the
        sentinels where the master is now.  Every command stackquery sends may
        run twice (``SET``, ``GET``, ``UNLINK``, token-checked lease scripts).
        """
        connection = self._current_connection(operation)
        try:
            replies = await connection.request(payload, expected, operation)
        except StorageUnavailableError as exc:
            if not (self._follows_master and _closed_by_server(exc)):
                raise
            self._retire(connection)
            replies = await self._current_connection(operation).request(
                payload, expected, operation
            )
        if self._follows_master:
            if any(map(_is_readonly, replies)):
                # A demoted master refused it (nothing ran): reconnect, which
                # asks the sentinels, and send it once more, to the new master.
                self._retire(connection)
                replies = await self._current_connection(operation).request(
                    payload, expected, operation
                )
            if self._retired:
                self._close_retired()
        return replies

    def _current_connection(self, operation: str) -> MultiplexedConnection:
        self._check_open()
        connection = self._connection
        if connection is not None:
            if connection.usable:
                reason = connection.dead_reason()
                if reason is None:
                    return connection
                connection.fail(reason)
            else:
                # Broken, or left over from an earlier trio.run: its waiters
                # (if any) belonged to that run.
                connection.discard()
        self._check_can_connect(operation)
        connection = MultiplexedConnection(
            self._open_stream, self._timeout, use_hiredis=self._use_hiredis
        )
        self._connection = connection
        self._connections_made += 1
        return connection

    async def _open_stream(self) -> trio.abc.Stream:
        stream = await self._connector.open_stream()
        self._connected_event.set()
        return stream

    async def _open_subscription(
        self, channels: Sequence[str | bytes], prefixes: Sequence[str] = ()
    ) -> Subscription:
        return await open_subscription(
            self._open_stream,
            channels,
            prefixes,
            use_hiredis=self._use_hiredis,
            ping_interval=self._ping_interval,
            confirm_within=self._timeout,
        )


def _seconds_or_none(name: str, value: float | None) -> float | None:
    """Check a duration argument: a positive number of seconds, or ``None`` (infinite)."""
    if value is None:
        return None
    if not (isinstance(value, int | float) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds or None, not {value!r}")
    return None if math.isinf(value) else value


def _closed_by_server(error: StorageUnavailableError) -> bool:
    """Whether ``error`` is a connection the server closed (not a timeout nor a failed connect)."""
    cause = error.__cause__
    return isinstance(cause, ConnectionResetError | BrokenPipeError | trio.BrokenResourceError)


def _is_readonly(reply: RedisReply) -> bool:
    """Whether ``reply`` is the error of a replica (a demoted master) refusing a write."""
    # redis-py's parser turns "-READONLY ..." into its ReadOnlyError (named
    # here, so that plain clients never import redis.exceptions for it).
    return isinstance(reply, Exception) and type(reply).__name__ == "ReadOnlyError"


def _command_name(name: CommandArg) -> str:
    if isinstance(name, str):
        return name.upper()
    if isinstance(name, bytes | bytearray | memoryview):
        return bytes(name).decode("utf-8", "replace").upper()
    return str(name)


def _check_command(name: str, args: Sequence[CommandArg], *, in_pipeline: bool) -> None:
    """Raise RedisCommandRefusedError if the shared connection cannot run ``args``.

    ``name`` is ``args[0]`` upper-cased.  Transactions are allowed in a
    pipeline (the pipeline checks that they are balanced).
    """
    command = name
    if name == "CLIENT" and len(args) > 1:
        command = f"CLIENT {_command_name(args[1])}"
    elif name in ("XREAD", "XREADGROUP"):
        options = itertools.takewhile(lambda arg: arg != "STREAMS", map(_command_name, args[1:]))
        if "BLOCK" in options:
            command = f"{name} BLOCK"
    if in_pipeline and command in _TRANSACTION_COMMANDS:
        return
    reason = _REFUSALS.get(command)
    if reason is not None:
        raise RedisCommandRefusedError(command, reason)
