"""One Redis connection shared by many trio tasks, pipelined automatically.

There is no background task.  The callers themselves do the connection's
work, taking turns at three roles: the *connector* opens the stream, the
*sender* writes every queued command in one ``send_all``, the *receiver* reads
and hands replies out in order.  A caller with nothing to do parks; a caller
leaving a role wakes one parked caller that can take it over.  Commands queued
while a write is in progress go out together in the next write, so concurrent
callers are pipelined without anybody asking for it.  (Measured against the
textbook design with a writer task and a reader task, see
``tests/benchmarks/redis_bridge.py``: within a few µs per command, and no
nursery to own, nothing to leak.)

Cancellation (the invariants the tests check):

* A request cancelled before its bytes were handed to the stream is removed
  from the queue: the server never sees it.
* A request cancelled after that stays in the reply queue; its reply is still
  read and dropped in its turn, so every other caller gets exactly its own reply.
* Writes are shielded (a half-written command would corrupt the stream for
  everybody).  Reads on a plain socket are atomic under cancellation and are
  not shielded; reads on TLS are.

Timeouts: every request carries a deadline.  Whoever does I/O bounds it by
the deadline of the oldest request not answered yet (replies come in order,
so nothing can be answered before it); when that passes the server is taken
to be gone, the connection breaks, and every request on it fails.
"""

from __future__ import annotations

import enum
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

import attrs
import trio

from ._errors import StorageClosedError, StorageError, StorageTLSError, StorageUnavailableError
from ._resp import NOT_ENOUGH_DATA, RedisReply, ReplyReader, new_reply_reader

_RECEIVE_SIZE = 65536

StreamOpener = Callable[[], Awaitable[trio.abc.Stream]]
"""Opens a stream that is connected, authenticated and on the right database."""


class ConnectionClosed(Exception):
    """The owner closed the connection (the cause of a StorageClosedError)."""


class HandshakeRefused(Exception):
    """The server answered the connection handshake (AUTH, SELECT) with an error."""


class _State(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    OPEN = "open"
    BROKEN = "broken"


class _Request:
    """One caller's commands: written together, answered by ``expected`` replies."""

    # A plain class: one is made per call, on the hot path.
    __slots__ = (
        "deadline", "done", "expected", "failure", "parked", "payload", "replies", "sent", "task",
    )  # fmt: skip

    def __init__(self, payload: bytes, expected: int, deadline: float, parked: _Parked) -> None:
        self.payload = payload
        self.expected = expected
        self.deadline = deadline
        self.replies: list[RedisReply] = []
        self.sent = False
        self.done = False
        self.failure: BaseException | None = None
        self.task: trio.lowlevel.Task | None = None
        self.parked = parked

    def park(self) -> None:
        """Mark the calling task as the one to wake for this request (it parks next)."""
        self.task = trio.lowlevel.current_task()
        self.parked.count += 1

    def unpark(self) -> trio.lowlevel.Task | None:
        """Forget the parked task, if any, and return it (to reschedule, or not)."""
        task, self.task = self.task, None
        if task is not None:
            self.parked.count -= 1
        return task

    def abort(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        """Let a cancelled caller go: nobody may reschedule it any more."""
        self.unpark()
        return trio.lowlevel.Abort.SUCCEEDED


class _Parked:
    """How many of a connection's callers are parked (their request's ``task`` set).

    Kept exact by :meth:`_Request.park` and :meth:`_Request.unpark`, the only
    places a ``task`` is set or cleared, so that a hand-over with
    nobody to wake costs nothing: callers cancelled together (a client closed
    with 10,000 commands in flight) each hand over as they leave, and a scan
    of the requests they abandoned, each time, made that quadratic.  Counted
    high it only scans as before; it is never decremented for a task not set.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


@attrs.define(eq=False)
class MultiplexedConnection:
    """A connection (opened on first use) that many tasks send commands over.

    Once broken (the stream failed, the owner closed it) it stays broken: the
    owner makes a new one for the next call.
    """

    _opener: StreamOpener
    _timeout: float | None
    _use_hiredis: bool = True
    _state: _State = attrs.field(default=_State.NEW, init=False)
    _stream: trio.abc.Stream | None = attrs.field(default=None, init=False)
    _atomic_receive: bool = attrs.field(default=True, init=False)
    _reader: ReplyReader = attrs.field(init=False)
    # Insertion-ordered, with O(1) removal of a request cancelled before it was sent.
    _unsent: dict[_Request, None] = attrs.field(factory=dict, init=False)
    _pending: deque[_Request] = attrs.field(factory=deque, init=False)
    _sending: bool = attrs.field(default=False, init=False)
    _receiving: bool = attrs.field(default=False, init=False)
    _woken_by_replies: int = attrs.field(default=0, init=False)
    _parked: _Parked = attrs.field(factory=_Parked, init=False)
    _token: trio.lowlevel.TrioToken = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._reader = new_reply_reader(use_hiredis=self._use_hiredis)
        self._token = trio.lowlevel.current_trio_token()

    @property
    def usable(self) -> bool:
        """False once broken, or when it belongs to another ``trio.run``."""
        if self._state is _State.BROKEN:
            return False
        try:
            return trio.lowlevel.current_trio_token() is self._token
        except RuntimeError:
            return False

    @property
    def idle(self) -> bool:
        """True when nobody is queued, waiting for a reply, or using the stream."""
        return not (self._unsent or self._pending or self._sending or self._receiving)

    @property
    def queued(self) -> int:
        """Requests waiting to be written."""
        return len(self._unsent)

    @property
    def in_flight(self) -> int:
        """Requests written whose replies have not all been read (abandoned ones too)."""
        return len(self._pending)

    @property
    def is_open(self) -> bool:
        """True while the stream is open."""
        return self._state is _State.OPEN

    def dead_reason(self) -> BaseException | None:
        """Why this open connection should not be used again, or ``None`` if it may be.

        Checked before a call reuses the connection, so that the call is not
        the one that finds out:

        * idle, with a readable plain socket: the server closed it (or sent
          junk) while nobody used it;
        * the oldest unanswered request is past its deadline and nobody is
          reading: its callers gave up (cancelled by their own, shorter
          deadlines) on a server that stopped answering, a half-open
          connection perhaps.  A new caller's request would inherit that
          deadline and fail at once.
        """
        if self._state is not _State.OPEN:
            return None
        if self._pending:
            if not self._receiving and self._pending[0].deadline <= trio.current_time():
                return TimeoutError(f"no reply from redis within {self._timeout} s")
            return None
        stream = self._stream
        # TLS may legitimately have unread bytes (session tickets): not checked.
        if self.idle and isinstance(stream, trio.SocketStream) and stream.socket.is_readable():
            return ConnectionResetError("redis closed the idle connection")
        return None

    async def request(self, payload: bytes, expected: int, operation: str) -> list[RedisReply]:
        """Send ``payload`` (``expected`` commands) and return their replies in order.

        Cancelled before the payload was written, the request has no effect;
        after, the server still runs it, and its replies are dropped.

        Raises:
            StorageUnavailableError: the connection could not be opened or broke
                before all replies arrived.
            StorageTLSError: the server's TLS certificate or host name failed verification.
            StorageError: the server refused the connection handshake.
            StorageClosedError: the connection was closed by its owner.
        """
        deadline = math.inf if self._timeout is None else trio.current_time() + self._timeout
        request = _Request(payload, expected, deadline, self._parked)
        self._unsent[request] = None
        try:
            while not request.done:
                state = self._state
                if state is _State.OPEN and self._unsent and not self._sending:
                    await self._send()
                    # A cancelled sender must not go on writing other callers'
                    # commands forever: it leaves here and hands the role over.
                    await trio.lowlevel.checkpoint_if_cancelled()
                elif state is _State.OPEN and request.sent and not self._receiving:
                    await self._receive()
                elif state is _State.NEW:
                    await self._connect()
                else:
                    request.park()
                    await trio.lowlevel.wait_task_rescheduled(request.abort)
        except BaseException:
            # Usually unparked already (woken, or abort()); not if the coroutine was
            # closed while parked.
            request.unpark()
            # Unsent: forget it, the server never hears of it.  Sent: it stays
            # in _pending so that its reply is read (and dropped) in its turn.
            self._unsent.pop(request, None)
            raise
        finally:
            self._hand_over()
        if request.failure is not None:
            raise connection_error(request.failure, operation)
        return request.replies

    def fail(self, cause: BaseException) -> None:
        """Break the connection now: every waiting request fails with ``cause``."""
        self._break(cause)

    def close(self) -> None:
        """Close the connection; waiting requests fail with StorageClosedError."""
        self._break(ConnectionClosed("the redis client was closed"))

    def discard(self) -> None:
        """Close the socket of a connection left over from an earlier ``trio.run``.

        Its callers' tasks belonged to that run and are gone: nobody is woken.
        """
        self._state = _State.BROKEN
        self._pending.clear()
        self._unsent.clear()
        if self._stream is not None:
            close_now(self._stream)
            self._stream = None

    async def _connect(self) -> None:
        self._state = _State.CONNECTING
        try:
            with trio.CancelScope(deadline=self._oldest_deadline()) as scope:
                stream = await self._opener()
            if scope.cancelled_caught:
                self._break(TimeoutError(f"could not connect to redis within {self._timeout} s"))
                return
        except Exception as exc:
            self._break(exc)
            return
        except BaseException:
            # Cancelled: nothing half-open is left (the opener closes its
            # stream); another queued caller retries.
            if self._state is _State.CONNECTING:
                self._state = _State.NEW
            raise
        if self._state is not _State.CONNECTING:  # closed while we were connecting
            close_now(stream)
            return
        self._stream = stream
        self._atomic_receive = isinstance(stream, trio.SocketStream)
        self._state = _State.OPEN

    async def _send(self) -> None:
        stream = self._stream
        assert stream is not None
        self._sending = True
        try:
            if self._woken_by_replies:
                # Callers just woken by their replies are about to queue their
                # next commands: let them, and write everything in one go.
                # Two yields, because trio runs each batch of runnable tasks in
                # a random direction: after one, this task may still run
                # before the callers woken in the same batch as itself.
                await trio.lowlevel.cancel_shielded_checkpoint()
                await trio.lowlevel.cancel_shielded_checkpoint()
                if self._state is not _State.OPEN:
                    return
            self._woken_by_replies = 0
            batch = list(self._unsent)
            if not batch:  # every queued caller was cancelled while we yielded
                return
            self._unsent.clear()
            for request in batch:
                request.sent = True
            self._pending.extend(batch)
            payload = batch[0].payload if len(batch) == 1 else b"".join(r.payload for r in batch)
            with trio.CancelScope(shield=True, deadline=self._oldest_deadline()) as scope:
                await stream.send_all(payload)
            if scope.cancelled_caught:
                self._break(TimeoutError(f"could not write to redis within {self._timeout} s"))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._break(exc)
        finally:
            self._sending = False

    async def _receive(self) -> None:
        stream = self._stream
        assert stream is not None
        self._receiving = True
        try:
            # Only TLS needs the shield: a plain socket's receive is atomic
            # under cancellation, a TLS stream's may leave it unusable.
            with trio.CancelScope(
                deadline=self._oldest_deadline(), shield=not self._atomic_receive
            ) as scope:
                data = await stream.receive_some(_RECEIVE_SIZE)
            if scope.cancelled_caught:
                self._break(TimeoutError(f"no reply from redis within {self._timeout} s"))
                return
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._break(exc)
            return
        finally:
            self._receiving = False
        if not data:
            self._break(ConnectionResetError("redis closed the connection"))
            return
        try:
            self._reader.feed(data)
            while (reply := self._reader.gets()) is not NOT_ENOUGH_DATA:
                self._deliver(reply)
        except Exception as exc:  # a protocol error: nothing on this stream can be trusted
            self._break(exc)

    def _deliver(self, reply: RedisReply) -> None:
        if not self._pending:
            raise ConnectionError(f"redis sent a reply nobody asked for: {reply!r:.100}")
        request = self._pending[0]
        request.replies.append(reply)
        if len(request.replies) == request.expected:
            self._pending.popleft()
            request.done = True
            if request.task is not None:
                self._woken_by_replies += 1
                _wake(request)

    def _hand_over(self) -> None:
        """Wake a parked caller for each role left without anybody to do it."""
        if not self._parked.count:
            return  # nobody to wake
        state = self._state
        if state is _State.OPEN:
            if self._unsent and not self._sending:
                _wake_first(self._unsent)
            if self._pending and not self._receiving:
                _wake_first(self._pending)
        elif state is _State.NEW:
            _wake_first(self._unsent)

    def _break(self, cause: BaseException) -> None:
        if self._state is _State.BROKEN:
            return
        self._state = _State.BROKEN
        failed = [*self._pending, *self._unsent]
        self._pending.clear()
        self._unsent.clear()
        for request in failed:
            request.failure = cause
            request.done = True
            _wake(request)
        if self._stream is not None:
            close_now(self._stream)
            self._stream = None

    def _oldest_deadline(self) -> float:
        """The deadline of the oldest request not answered yet (FIFO: the first)."""
        if self._pending:
            return self._pending[0].deadline
        for request in self._unsent:
            return request.deadline
        return math.inf


def _wake(request: _Request) -> None:
    task = request.unpark()
    if task is not None:
        trio.lowlevel.reschedule(task)


def _wake_first(requests: Iterable[_Request]) -> None:
    for request in requests:
        if request.task is not None:
            _wake(request)
            return


def close_now(stream: trio.abc.Stream) -> None:
    """Close the socket under ``stream`` synchronously, waking its users.

    trio's socket ``close()`` notifies any task blocked on the socket (it gets
    ``ClosedResourceError``), which is what a break needs; ``aclose()`` would
    need an await where there is none.
    """
    transport = stream
    while isinstance(transport, trio.SSLStream):
        transport = transport.transport_stream
    if isinstance(transport, trio.SocketStream):
        transport.socket.close()


def connection_error(cause: BaseException, operation: str) -> StorageError:
    """Translate why a connection failed into the storage error a caller of ``operation`` gets.

    The one place that decides what a connection failure means: closed by
    its owner, a refused handshake, a rejected certificate (permanent), or
    an outage (transient).  ``cause`` becomes the ``__cause__``.
    """
    backend = "RedisClient"
    error: StorageError
    if isinstance(cause, ssl.SSLCertVerificationError):
        error = StorageTLSError(
            f"redis {operation}: TLS certificate or hostname verification failed: "
            f"{cause.verify_message or cause}; not retried until the TLS settings or "
            "the server's certificate are fixed",
            backend=backend,
            operation=operation,
        )
    elif isinstance(cause, ConnectionClosed):
        error = StorageClosedError(
            f"redis {operation}: the client is closed", backend=backend, operation=operation
        )
    elif isinstance(cause, HandshakeRefused):
        error = StorageError(
            f"redis {operation}: the server refused the connection: {cause}",
            backend=backend,
            operation=operation,
        )
    else:
        error = StorageUnavailableError(
            f"redis {operation}: connection lost: {cause!r}", backend=backend, operation=operation
        )
    error.__cause__ = cause
    return error
