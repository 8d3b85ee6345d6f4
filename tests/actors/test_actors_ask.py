"""Specification of ``actors.ask``: request/reply to an actor, atomic under cancellation."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from actors import Mailbox, MailboxClosed, MailboxStatistics, Reply, ask


class Refused(Exception):
    """The error the test actor replies with."""


@attrs.frozen
class Add:
    """Add ``amount`` to the total, after ``gate`` opens if there is one; reply the new total."""

    amount: int
    reply: Reply[int]
    gate: trio.Event | None = None


@attrs.frozen
class Refuse:
    """Reply with a :class:`Refused` error."""

    reason: str
    reply: Reply[int]


@attrs.define(eq=False)
class Adder:
    """An actor keeping a running total; ``handled`` records every message it finished."""

    mailbox: Mailbox[Add | Refuse] = attrs.field(factory=lambda: Mailbox(capacity=1))
    total: int = 0
    handled: list[Add | Refuse] = attrs.field(factory=list)

    async def run(self) -> None:
        while True:
            message = await self.mailbox.receive()
            if isinstance(message, Refuse):
                message.reply.set_error(Refused(message.reason))
            else:
                if message.gate is not None:
                    await message.gate.wait()
                self.total += message.amount
                message.reply.set_value(self.total)
            self.handled.append(message)


class TestRoundTrip:
    async def test_ask_returns_the_actors_reply(self) -> None:
        """ask delivers the message built around a fresh Reply and returns what the actor set."""
        adder = Adder()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(adder.run)
            assert await ask(adder.mailbox, lambda reply: Add(5, reply)) == 5
            assert await ask(adder.mailbox, lambda reply: Add(2, reply)) == 7
            nursery.cancel_scope.cancel()
        assert adder.total == 7
        assert len(adder.handled) == 2

    async def test_actor_error_is_raised_in_the_asker(self) -> None:
        """An error the actor sets on the reply is raised by ask."""
        adder = Adder()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(adder.run)
            with pytest.raises(Refused, match=r"^not today$"):
                await ask(adder.mailbox, lambda reply: Refuse("not today", reply))
            assert await ask(adder.mailbox, lambda reply: Add(1, reply)) == 1
            nursery.cancel_scope.cancel()

    async def test_ask_on_a_closed_mailbox_raises_mailbox_closed(self) -> None:
        """ask to a closed mailbox raises MailboxClosed."""
        mailbox: Mailbox[Add] = Mailbox(capacity=1)
        mailbox.close()
        with pytest.raises(MailboxClosed, match=r"^mailbox is closed$"):
            await ask(mailbox, lambda reply: Add(1, reply))

    async def test_each_ask_gets_its_own_reply(self) -> None:
        """Every ask builds its message around a new, unset Reply."""
        mailbox: Mailbox[Add] = Mailbox(capacity=2)
        replies: list[Reply[int]] = []

        def make(reply: Reply[int]) -> Add:
            replies.append(reply)
            return Add(1, reply)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, mailbox, make)
            nursery.start_soon(ask, mailbox, make)
            await trio.testing.wait_all_tasks_blocked()
            assert len(replies) == 2
            assert replies[0] is not replies[1]
            assert [r.is_set for r in replies] == [False, False]
            assert [r.waiters for r in replies] == [1, 1]
            for reply in replies:
                reply.set_value(0)


class TestCancellation:
    async def test_cancelled_before_delivery_the_actor_never_sees_the_message(self) -> None:
        """An ask cancelled while waiting for room in a full mailbox delivered nothing."""
        adder = Adder()
        filler = Add(1, Reply())
        adder.mailbox.tell_nowait(filler)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, adder.mailbox, lambda reply: Add(100, reply))
            await trio.testing.wait_all_tasks_blocked()
            assert adder.mailbox.statistics().senders_waiting == 1
            nursery.cancel_scope.cancel()
        assert adder.mailbox.statistics() == MailboxStatistics(
            queued=1, capacity=1, senders_waiting=0, delivered=1
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(adder.run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert adder.handled == [filler]
        assert adder.total == 1

    async def test_cancelled_after_delivery_the_actor_still_handles_it(self) -> None:
        """An asker cancelled after delivery stops waiting; the actor completes the message."""
        adder = Adder()
        gate = trio.Event()
        async with trio.open_nursery() as actor_nursery:
            actor_nursery.start_soon(adder.run)
            with trio.CancelScope() as asker_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ask, adder.mailbox, lambda reply: Add(10, reply, gate))
                    await trio.testing.wait_all_tasks_blocked()
                    # Delivered and being handled: the actor is parked on the gate.
                    assert adder.mailbox.statistics().delivered == 1
                    assert adder.mailbox.empty()
                    asker_scope.cancel()
            assert asker_scope.cancelled_caught
            assert adder.total == 0
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert adder.total == 10
            assert len(adder.handled) == 1
            handled = adder.handled[0]
            assert isinstance(handled, Add)
            assert handled.reply.result_nowait() == 10
            assert handled.reply.waiters == 0
            assert await ask(adder.mailbox, lambda reply: Add(1, reply)) == 11
            actor_nursery.cancel_scope.cancel()

    async def test_ask_is_a_checkpoint(self) -> None:
        """ask checkpoints even when the reply is set at once."""
        adder = Adder()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(adder.run)
            with trio.testing.assert_checkpoints():
                await ask(adder.mailbox, lambda reply: Add(1, reply))
            nursery.cancel_scope.cancel()
