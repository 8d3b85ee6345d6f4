"""A bounded inbox: a deque, its one parked receiver, and senders waiting for room."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar, final

import attrs
import outcome
import trio

M = TypeVar("M")


class MailboxFull(trio.WouldBlock):
    """``tell_nowait`` found the mailbox at capacity; the message was not delivered.

    A full inbox means its actor is not keeping up.  Dropping the message
    silently would lose state changes and blocking a synchronous caller is
    impossible, so the sender decides: retry later, shed, or use ``await
    tell()`` to wait for room.
    """


class MailboxClosed(trio.ClosedResourceError):
    """The mailbox was closed; its actor is gone for good."""


@attrs.frozen
class MailboxStatistics:
    """A point-in-time view of a mailbox."""

    queued: int
    """Messages delivered and not yet received."""
    capacity: int
    """How many messages fit before ``tell_nowait`` raises :class:`MailboxFull`."""
    senders_waiting: int
    """Tasks parked in ``await tell()`` waiting for room."""
    delivered: int
    """Messages accepted since the mailbox was made."""


@final
class Mailbox(Generic[M]):
    """A bounded FIFO of messages for one actor.

    Senders call :meth:`tell_nowait` (never blocks, raises :class:`MailboxFull`
    at capacity) or :meth:`tell` (waits for room: backpressure).  The owning
    actor calls :meth:`receive` and :meth:`receive_nowait`.  Both operations are
    atomic with respect to cancellation, as trio's memory channels are: a
    cancelled ``tell`` delivered nothing, a cancelled ``receive`` took nothing.

    A deque and the one parked receiver, rather than a memory-channel pair:
    a key's actor is made on every cold fetch, and the channel pair was most
    of what making one cost.

    Args:
        capacity: how many undelivered messages fit; must be at least 1.

    Raises:
        ValueError: if ``capacity`` is below 1.
    """

    __slots__ = ("_closed", "_delivered", "_queue", "_receiver", "_senders", "capacity")

    def __init__(self, capacity: int = 1024) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"mailbox capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._queue: deque[M] = deque()
        self._receiver: trio.lowlevel.Task | None = None
        """The actor's task, parked in :meth:`receive` on an empty mailbox."""
        self._senders: dict[trio.lowlevel.Task, M] = {}
        """Tasks parked in :meth:`tell` on a full mailbox, with their messages, oldest first."""
        self._closed = False
        self._delivered = 0

    def tell_nowait(self, message: M) -> None:
        """Deliver ``message`` without blocking.

        Raises:
            MailboxFull: the mailbox holds ``capacity`` messages already.
            MailboxClosed: the mailbox was closed.
        """
        if self._closed:
            raise MailboxClosed("mailbox is closed")
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            trio.lowlevel.reschedule(receiver, outcome.Value(message))
        elif len(self._queue) < self.capacity:
            self._queue.append(message)
        else:
            raise MailboxFull(f"mailbox full ({self.capacity} messages queued)")
        self._delivered += 1

    async def tell(self, message: M) -> None:
        """Deliver ``message``, waiting for room if the mailbox is full.

        Raises:
            MailboxClosed: the mailbox was closed (before or while waiting).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.tell_nowait(message)
        except MailboxFull:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        task = trio.lowlevel.current_task()
        self._senders[task] = message

        def abort(_raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            del self._senders[task]
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def receive(self) -> M:
        """Take the oldest message, waiting for one if the mailbox is empty.

        Raises:
            trio.EndOfChannel: the mailbox is closed and empty.
            trio.BusyResourceError: another task is already waiting to receive.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            message = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return message
        if self._receiver is not None:
            raise trio.BusyResourceError("another task is receiving from this mailbox")
        task = self._receiver = trio.lowlevel.current_task()

        def abort(_raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            if self._receiver is task:
                self._receiver = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]

    def receive_nowait(self) -> M:
        """Take the oldest message.

        Raises:
            trio.WouldBlock: the mailbox is empty.
            trio.EndOfChannel: the mailbox is closed and empty.
        """
        queue = self._queue
        if not queue:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        message = queue.popleft()
        if self._senders:  # room now: the oldest waiting sender's message goes in
            task = next(iter(self._senders))  # a dict keeps insertion order: the oldest
            waiting = self._senders.pop(task)
            queue.append(waiting)
            self._delivered += 1
            trio.lowlevel.reschedule(task)
        return message

    def empty(self) -> bool:
        """Whether no message is waiting to be received."""
        return not self._queue

    def close(self) -> None:
        """Refuse further messages; those already queued can still be received.

        Senders waiting for room get :class:`MailboxClosed`; a receiver
        waiting on the empty mailbox gets ``trio.EndOfChannel``.
        """
        if self._closed:
            return
        self._closed = True
        if self._senders:
            senders, self._senders = self._senders, {}
            for task in senders:
                trio.lowlevel.reschedule(task, outcome.Error(MailboxClosed("mailbox is closed")))
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            trio.lowlevel.reschedule(receiver, outcome.Error(trio.EndOfChannel()))

    def statistics(self) -> MailboxStatistics:
        """Return the mailbox's current :class:`MailboxStatistics`."""
        return MailboxStatistics(
            queued=len(self._queue),
            capacity=self.capacity,
            senders_waiting=len(self._senders),
            delivered=self._delivered,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Mailbox queued={s.queued}/{s.capacity}>"
