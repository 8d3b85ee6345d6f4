"""A pub/sub subscription on a connection of its own: messages, key-tracking invalidations, PING.

Split out of :mod:`backends._redis_client` (which opens it): the client's
command path and a subscription share no state but the server's address.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, final

import trio

from ._errors import StorageClosedError, StorageError, StorageUnavailableError
from ._redis_connection import close_now, connection_error
from ._redis_sentinel import exchange
from ._redis_tracking import (
    INVALIDATE_CHANNEL,
    Invalidation,
    TrackingRefusedError,
    parse_invalidation,
    tracking_command,
)
from ._resp import NOT_ENOUGH_DATA, ReplyReader, new_reply_reader, pack_command

_PING: Final = pack_command(("PING",))


@final
class Subscription:
    """Messages on the channels of one :meth:`RedisClient.subscribe` block.

    An async iterator of ``(channel, data)`` pairs, both ``bytes``.  It has its
    own connection, which it checks with ``PING`` while a task waits for a
    message (see :meth:`RedisClient.subscribe`).  Once the connection is lost
    (closed by the server, silent past the pong deadline, or sending bytes
    that are not RESP), every wait raises ``StorageUnavailableError``.
    """

    def __init__(
        self, stream: trio.abc.Stream, reader: ReplyReader, *, ping_interval: float | None = None
    ) -> None:
        self._stream = stream
        self._reader = reader
        self._ping_interval = math.inf if ping_interval is None else ping_interval
        self._heard_at = trio.current_time()
        self._pong_due: float | None = None
        self._closed = False
        self._lost: BaseException | None = None
        self._tracking = False
        self._client_id: int | None = None
        self._tracker: trio.abc.Stream | None = None

    @property
    def connected(self) -> bool:
        """False once the subscription was closed or its connection is known to be lost."""
        return not self._closed and self._lost is None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[bytes, bytes]:
        """Wait for the next message and return ``(channel, data)``; skips invalidations.

        Raises:
            StorageUnavailableError: the connection is lost.
            StorageClosedError: the subscription or its client was closed.
        """
        while True:
            event = await self.next_event()
            if not isinstance(event, Invalidation):
                return event

    async def next_event(self) -> tuple[bytes, bytes] | Invalidation:
        """Wait for the next message, or (tracking) the server's next invalidation.

        Cancelled, nothing is lost: a message not returned yet stays buffered.

        Raises:
            StorageUnavailableError: the connection (or the tracking one) is lost.
            StorageClosedError: the subscription or its client was closed.
        """
        buffered = True
        while True:
            reply = self._next_reply()
            if reply is NOT_ENOUGH_DATA:
                self._reader.feed(await self._receive())
                buffered = False
                continue
            if isinstance(reply, list) and reply and reply[0] == b"message":
                if self._tracking and len(reply) == 3 and reply[1] == INVALIDATE_CHANNEL:
                    if buffered:
                        await trio.lowlevel.checkpoint()
                    return parse_invalidation(reply[2])
                if len(reply) != 3 or not all(isinstance(part, bytes) for part in reply):
                    raise self._lose(ValueError(f"malformed pub/sub message: {reply!r:.100}"))
                if buffered:
                    await trio.lowlevel.checkpoint()
                return reply[1], reply[2]
            if isinstance(reply, list) and reply and reply[0] == b"pong":
                self._pong_due = None
            # Anything else is a (un)subscribe confirmation, not a message.

    async def aclose(self) -> None:
        """Close the subscription's connection (and its tracking one); idempotent."""
        self._closed = True
        if self._tracker is not None:
            await trio.aclose_forcefully(self._tracker)
        await trio.aclose_forcefully(self._stream)

    async def _start(self, channels: Sequence[str | bytes], *, tracking: bool = False) -> None:
        if tracking:
            # The id first: a subscribed RESP2 connection accepts no CLIENT command.
            channels = [*channels, INVALIDATE_CHANNEL]
            await self._stream.send_all(
                pack_command(("CLIENT", "ID")) + pack_command(("SUBSCRIBE", *channels))
            )
            while (reply := self._next_reply()) is NOT_ENOUGH_DATA:
                self._reader.feed(await self._receive())
            if not isinstance(reply, int) or isinstance(reply, bool):
                raise StorageError(
                    f"redis CLIENT ID: unexpected reply {reply!r:.100}",
                    backend="RedisClient",
                    operation="subscribe",
                )
            self._client_id = reply
        else:
            await self._stream.send_all(pack_command(("SUBSCRIBE", *channels)))
        for _ in channels:
            while (reply := self._next_reply()) is NOT_ENOUGH_DATA:
                self._reader.feed(await self._receive())
            if isinstance(reply, Exception):  # an error reply (see RedisReply)
                raise StorageError(
                    f"redis subscribe failed: {reply}", backend="RedisClient", operation="subscribe"
                ) from reply

    async def _track(self, tracker: trio.abc.Stream, prefixes: Sequence[str]) -> None:
        """Turn tracking on for this subscription's id on ``tracker``, kept open from now on."""
        self._tracker = tracker
        assert self._client_id is not None
        reply = await exchange(
            tracker, tracking_command(self._client_id, prefixes), use_hiredis=False
        )
        if reply != b"OK":
            raise TrackingRefusedError(
                f"redis refused CLIENT TRACKING: {reply!r:.200}",
                backend="RedisClient",
                operation="subscribe",
            )
        self._tracking = True

    def _next_reply(self) -> object:
        try:
            return self._reader.gets()
        except Exception as exc:  # not RESP: nothing more on this stream can be trusted
            raise self._lose(exc) from None

    async def _receive(self) -> bytes | bytearray:
        """Receive some bytes, sending PING after a silence and giving up when no pong comes."""
        while True:
            if self._closed:
                raise StorageClosedError("the subscription is closed", backend="RedisClient")
            if self._lost is not None:
                raise self._lose(self._lost)
            due = self._heard_at + self._ping_interval if self._pong_due is None else self._pong_due
            with trio.move_on_at(due):
                try:
                    data = await self._stream.receive_some()
                except trio.ClosedResourceError as exc:
                    if self._lost is not None and not self._closed:  # dropped by _drop
                        raise self._lose(self._lost) from None
                    raise StorageClosedError(
                        "the subscription is closed", backend="RedisClient", operation="subscribe"
                    ) from exc
                except (OSError, trio.BrokenResourceError) as exc:
                    raise self._lose(exc) from None
                if not data:
                    raise self._lose(
                        ConnectionResetError("redis closed the subscription connection")
                    )
                self._heard_at = trio.current_time()
                return data
            if self._pong_due is not None:
                raise self._lose(TimeoutError(f"no answer to PING within {self._ping_interval} s"))
            tracker = self._tracker
            # Nothing is ever sent to the tracking connection: readable means closed.
            if isinstance(tracker, trio.SocketStream) and tracker.socket.is_readable():
                raise self._lose(ConnectionResetError("redis closed the tracking connection"))
            await self._ping()

    async def _ping(self) -> None:
        self._pong_due = trio.current_time() + self._ping_interval
        # Shielded: a PING half written would corrupt the stream.  A few
        # bytes, so only a dead connection makes it wait, up to the pong deadline.
        with trio.CancelScope(shield=True, deadline=self._pong_due):
            try:
                await self._stream.send_all(_PING)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._lost = exc

    def drop(self, cause: BaseException) -> None:
        """Lose the connection from outside (a failover): the waiting task and later waits raise.

        Synchronous; never raises.
        """
        if self._lost is None and not self._closed:
            self._lost = cause
            close_now(self._stream)
            if self._tracker is not None:
                close_now(self._tracker)

    def _lose(self, cause: BaseException) -> StorageUnavailableError:
        """Mark the connection lost, close its socket, and return the error to raise."""
        self._lost = cause
        close_now(self._stream)
        if self._tracker is not None:
            close_now(self._tracker)
        error = StorageUnavailableError(
            f"redis subscription lost: {cause!r}", backend="RedisClient", operation="subscribe"
        )
        error.__cause__ = cause
        return error


async def open_subscription(
    open_stream: Callable[[], Awaitable[trio.abc.Stream]],
    channels: Sequence[str | bytes],
    prefixes: Sequence[str] = (),
    *,
    use_hiredis: bool,
    ping_interval: float | None,
    confirm_within: float | None,
) -> Subscription:
    """Open a connection with ``open_stream``, subscribe it to ``channels``, and return it.

    With ``prefixes``, key tracking is turned on for them (``CLIENT TRACKING
    ... BCAST``) from a second connection, kept open by the subscription.
    Cancelled, whatever was opened is closed.

    Raises:
        StorageUnavailableError: the server could not be reached, or did not
            confirm the subscription within ``confirm_within`` seconds.
        TrackingRefusedError: the server refused ``CLIENT TRACKING``.
        StorageError: another refusal by the server.
    """
    with trio.move_on_after(confirm_within if confirm_within is not None else math.inf):
        try:
            stream = await open_stream()
        except Exception as exc:
            raise connection_error(exc, "subscribe") from exc
        subscription = Subscription(
            stream, new_reply_reader(use_hiredis=use_hiredis), ping_interval=ping_interval
        )
        try:
            await subscription._start(channels, tracking=bool(prefixes))
            if prefixes:
                try:
                    tracker = await open_stream()
                except Exception as exc:
                    raise connection_error(exc, "subscribe") from exc
                await subscription._track(tracker, prefixes)
        except BaseException:
            await subscription.aclose()
            raise
        return subscription
    cause = TimeoutError(f"redis did not confirm the subscription within {confirm_within} s")
    raise StorageUnavailableError(
        f"redis subscribe: {cause}", backend="RedisClient", operation="subscribe"
    ) from cause


__all__ = ["Subscription", "open_subscription"]
