"""Specification of ``actors.Mailbox``: a bounded FIFO with backpressure."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from actors import Mailbox, MailboxClosed, MailboxFull, MailboxStatistics


class TestOrderAndCapacity:
    def test_messages_come_out_in_the_order_they_went_in(self) -> None:
        """Messages are received first in, first out."""
        mailbox: Mailbox[int] = Mailbox(capacity=5)
        for n in range(5):
            mailbox.tell_nowait(n)
        assert [mailbox.receive_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]

    def test_default_capacity_is_1024(self) -> None:
        """A mailbox made without arguments holds 1024 messages."""
        assert Mailbox[int]().capacity == 1024

    @pytest.mark.parametrize("capacity", [0, -1])
    def test_capacity_below_one_is_refused(self, capacity: int) -> None:
        """A capacity below 1 raises ValueError naming the bad value."""
        with pytest.raises(
            ValueError, match=rf"^mailbox capacity must be an int >= 1, got {capacity}$"
        ):
            Mailbox[int](capacity)

    @pytest.mark.parametrize(("capacity", "shown"), [(1.5, "1.5"), ("8", "'8'")])
    def test_capacity_that_is_not_an_int_is_refused(self, capacity: object, shown: str) -> None:
        """A capacity that is not an int raises ValueError showing its repr."""
        with pytest.raises(
            ValueError, match=rf"^mailbox capacity must be an int >= 1, got {shown}$"
        ):
            Mailbox[int](capacity)  # type: ignore[arg-type]

    def test_tell_nowait_at_capacity_raises_mailbox_full(self) -> None:
        """A tell_nowait into a full mailbox raises MailboxFull and delivers nothing."""
        mailbox: Mailbox[str] = Mailbox(capacity=2)
        mailbox.tell_nowait("a")
        mailbox.tell_nowait("b")
        with pytest.raises(MailboxFull, match=r"^mailbox full \(2 messages queued\)$"):
            mailbox.tell_nowait("c")
        assert mailbox.statistics() == MailboxStatistics(
            queued=2, capacity=2, senders_waiting=0, delivered=2
        )
        assert [mailbox.receive_nowait(), mailbox.receive_nowait()] == ["a", "b"]
        assert mailbox.empty()

    def test_mailbox_full_is_a_would_block(self) -> None:
        """MailboxFull can be caught as trio.WouldBlock."""
        mailbox: Mailbox[str] = Mailbox(capacity=1)
        mailbox.tell_nowait("a")
        with pytest.raises(trio.WouldBlock):
            mailbox.tell_nowait("b")
        assert issubclass(MailboxFull, trio.WouldBlock)

    async def test_tell_nowait_does_not_checkpoint(self) -> None:
        """tell_nowait is synchronous and never yields to the scheduler."""
        mailbox: Mailbox[int] = Mailbox(capacity=1)
        with trio.testing.assert_no_checkpoints():
            mailbox.tell_nowait(1)

    def test_receive_nowait_on_empty_mailbox_raises_would_block(self) -> None:
        """receive_nowait on an empty mailbox raises trio.WouldBlock."""
        mailbox: Mailbox[int] = Mailbox(capacity=1)
        with pytest.raises(trio.WouldBlock):
            mailbox.receive_nowait()

    def test_empty_tracks_queued_messages(self) -> None:
        """empty() is True exactly when no message is queued."""
        mailbox: Mailbox[int] = Mailbox(capacity=1)
        assert mailbox.empty()
        mailbox.tell_nowait(1)
        assert not mailbox.empty()
        mailbox.receive_nowait()
        assert mailbox.empty()

    def test_repr_shows_queued_over_capacity(self) -> None:
        """repr shows how many messages are queued out of the capacity."""
        mailbox: Mailbox[int] = Mailbox(capacity=3)
        mailbox.tell_nowait(1)
        assert repr(mailbox) == "<Mailbox queued=1/3>"


class TestBackpressure:
    async def test_tell_waits_for_room_and_then_delivers(self) -> None:
        """await tell on a full mailbox parks until a receive makes room, then delivers."""
        mailbox: Mailbox[str] = Mailbox(capacity=1)
        mailbox.tell_nowait("first")
        delivered = trio.Event()

        async def sender() -> None:
            await mailbox.tell("second")
            delivered.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            assert not delivered.is_set()
            assert mailbox.statistics() == MailboxStatistics(
                queued=1, capacity=1, senders_waiting=1, delivered=1
            )
            assert mailbox.receive_nowait() == "first"
            await delivered.wait()
        assert mailbox.statistics() == MailboxStatistics(
            queued=1, capacity=1, senders_waiting=0, delivered=2
        )
        assert mailbox.receive_nowait() == "second"

    async def test_tell_cancelled_while_waiting_delivers_nothing(self) -> None:
        """A tell cancelled while parked on a full mailbox delivered nothing and left no waiter."""
        mailbox: Mailbox[str] = Mailbox(capacity=1)
        mailbox.tell_nowait("first")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mailbox.tell, "never")
            await trio.testing.wait_all_tasks_blocked()
            assert mailbox.statistics().senders_waiting == 1
            nursery.cancel_scope.cancel()
        assert mailbox.statistics() == MailboxStatistics(
            queued=1, capacity=1, senders_waiting=0, delivered=1
        )
        assert mailbox.receive_nowait() == "first"
        with pytest.raises(trio.WouldBlock):
            mailbox.receive_nowait()

    async def test_tell_with_room_is_a_checkpoint(self) -> None:
        """await tell checkpoints even when the mailbox has room."""
        mailbox: Mailbox[int] = Mailbox(capacity=1)
        with trio.testing.assert_checkpoints():
            await mailbox.tell(1)
        assert mailbox.receive_nowait() == 1

    async def test_receive_waits_for_a_message(self) -> None:
        """await receive parks on an empty mailbox and returns the next message told."""
        mailbox: Mailbox[str] = Mailbox(capacity=1)
        received: list[str] = []

        async def receiver() -> None:
            received.append(await mailbox.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            assert received == []
            mailbox.tell_nowait("hello")
        assert received == ["hello"]
        assert mailbox.empty()


class TestClose:
    def test_tell_nowait_after_close_raises_mailbox_closed(self) -> None:
        """tell_nowait on a closed mailbox raises MailboxClosed."""
        mailbox: Mailbox[int] = Mailbox(capacity=1)
        mailbox.close()
        with pytest.raises(MailboxClosed, match=r"^mailbox is closed$"):
            mailbox.tell_nowait(1)
        assert mailbox.statistics().delivered == 0

    async def test_tell_after_close_raises_mailbox_closed(self) -> None:
        """await tell on a closed mailbox raises MailboxClosed."""
        mailbox: Mailbox[int] = Mailbox(capacity=1)
        mailbox.close()
        with pytest.raises(MailboxClosed, match=r"^mailbox is closed$"):
            await mailbox.tell(1)

    def test_mailbox_closed_is_a_closed_resource_error(self) -> None:
        """MailboxClosed can be caught as trio.ClosedResourceError."""
        assert issubclass(MailboxClosed, trio.ClosedResourceError)

    def test_queued_messages_survive_close(self) -> None:
        """Messages queued before close() are still received, in order."""
        mailbox: Mailbox[int] = Mailbox(capacity=3)
        mailbox.tell_nowait(1)
        mailbox.tell_nowait(2)
        mailbox.close()
        assert [mailbox.receive_nowait(), mailbox.receive_nowait()] == [1, 2]
        assert mailbox.empty()


class TestStatistics:
    def test_fresh_mailbox_statistics(self) -> None:
        """A new mailbox reports nothing queued, waiting or delivered."""
        assert Mailbox[int](capacity=7).statistics() == MailboxStatistics(
            queued=0, capacity=7, senders_waiting=0, delivered=0
        )

    def test_delivered_counts_every_accepted_message_and_queued_only_unreceived(self) -> None:
        """delivered counts all accepted messages; queued drops as they are received."""
        mailbox: Mailbox[int] = Mailbox(capacity=4)
        for n in range(3):
            mailbox.tell_nowait(n)
        mailbox.receive_nowait()
        assert mailbox.statistics() == MailboxStatistics(
            queued=2, capacity=4, senders_waiting=0, delivered=3
        )

    def test_statistics_are_frozen(self) -> None:
        """A statistics snapshot cannot be modified."""
        stats = Mailbox[int](capacity=1).statistics()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            stats.queued = 5  # type: ignore[misc]
