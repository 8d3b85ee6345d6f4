"""A bounded inbox over a trio memory channel."""

from __future__ import annotations

from typing import Generic, TypeVar, final

import attrs
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

    Args:
        capacity: how many undelivered messages fit; must be at least 1.

    Raises:
        ValueError: if ``capacity`` is below 1.
    """

    __slots__ = ("_delivered", "_receive", "_send", "capacity")

    def __init__(self, capacity: int = 1024) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"mailbox capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._send, self._receive = trio.open_memory_channel[M](capacity)
        self._delivered = 0

    def tell_nowait(self, message: M) -> None:
        """Deliver ``message`` without blocking.

        Raises:
            MailboxFull: the mailbox holds ``capacity`` messages already.
            MailboxClosed: the mailbox was closed.
        """
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            raise MailboxFull(f"mailbox full ({self.capacity} messages queued)") from None
        except trio.ClosedResourceError:
            raise MailboxClosed("mailbox is closed") from None
        self._delivered += 1

    async def tell(self, message: M) -> None:
        """Deliver ``message``, waiting for room if the mailbox is full.

        Raises:
            MailboxClosed: the mailbox was closed.
        """
        try:
            await self._send.send(message)
        except trio.ClosedResourceError:
            raise MailboxClosed("mailbox is closed") from None
        self._delivered += 1

    async def receive(self) -> M:
        """Take the oldest message, waiting for one if the mailbox is empty."""
        return await self._receive.receive()

    def receive_nowait(self) -> M:
        """Take the oldest message.

        Raises:
            trio.WouldBlock: the mailbox is empty.
        """
        return self._receive.receive_nowait()

    def empty(self) -> bool:
        """Whether no message is waiting to be received."""
        return self._receive.statistics().current_buffer_used == 0

    def close(self) -> None:
        """Refuse further messages; those already queued can still be received."""
        self._send.close()

    def statistics(self) -> MailboxStatistics:
        """Return the mailbox's current :class:`MailboxStatistics`."""
        stats = self._send.statistics()
        return MailboxStatistics(
            queued=stats.current_buffer_used,
            capacity=self.capacity,
            senders_waiting=stats.tasks_waiting_send,
            delivered=self._delivered,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Mailbox queued={s.queued}/{s.capacity}>"
