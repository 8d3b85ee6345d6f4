"""Specification of ``actors.Reply``: one outcome, delivered once to many waiters."""

from __future__ import annotations

import gc
import traceback
import weakref

import pytest
import trio
import trio.testing

from actors import Reply, ReplyAlreadySet
from tests.parked_cost import tracked_per_parked_task


class Boom(Exception):
    """The error an actor delivers in these tests."""


def origin_error() -> Boom:
    """A ``Boom`` raised (and caught) in a function of its own, as an origin's error is."""
    try:
        raise Boom("origin down")
    except Boom as exc:
        return exc


def frames(error: BaseException) -> list[str]:
    """The function names in ``error``'s traceback, outermost first."""
    return [entry.name for entry in traceback.extract_tb(error.__traceback__)]


async def raise_in_waiters(error: Boom, count: int) -> list[tuple[BaseException, list[str]]]:
    """Park ``count`` tasks in ``wait()`` of one reply, set ``error``; return what each
    caught, with its traceback (see :func:`frames`) as it was when caught."""
    reply: Reply[str] = Reply()
    caught: list[tuple[BaseException, list[str]]] = []

    async def waiter() -> None:
        try:
            await reply.wait()
        except Boom as exc:
            caught.append((exc, frames(exc)))

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        reply.set_error(error)
    return caught


class TestOutcome:
    async def test_one_value_wakes_a_thousand_waiters(self) -> None:
        """1,000 tasks parked in wait() all return the one value set."""
        reply: Reply[str] = Reply()
        results: list[str] = []

        async def waiter() -> None:
            results.append(await reply.wait())

        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert reply.waiters == 1000
            reply.set_value("done")
        assert results == ["done"] * 1000
        assert reply.waiters == 0

    async def test_one_error_is_raised_in_every_waiter(self) -> None:
        """An error set once is raised, as the same object, in every waiter."""
        error = Boom("origin down")
        caught = await raise_in_waiters(error, 100)
        assert len(caught) == 100
        assert all(exc is error for exc, _ in caught)

    async def test_an_error_raised_in_1000_waiters_keeps_a_traceback_of_one(self) -> None:
        """Each of 1,000 waiters gets the error with its own frames and the origin's, not
        with the frames of the waiters woken before it; so does the error afterwards."""
        error = origin_error()
        caught = await raise_in_waiters(error, 1000)
        assert len(caught) == 1000
        assert all(exc is error for exc, _ in caught)
        seen = [names for _, names in caught]
        assert seen[0][0] == "waiter"
        assert seen[0][-1] == "origin_error"
        assert len(seen[0]) <= 6
        assert all(names == seen[0] for names in seen)
        assert frames(error) == seen[0]

    async def test_an_error_raised_to_1000_late_readers_keeps_a_traceback_of_one(self) -> None:
        """wait() and result_nowait() after set_error, 1,000 times each: the traceback holds
        the last reader's frames and the origin's, never the earlier readers'."""
        reply: Reply[str] = Reply()
        reply.set_error(origin_error())
        seen: list[list[str]] = []

        async def late_reader() -> None:
            try:
                await reply.wait()
            except Boom as exc:
                seen.append(frames(exc))
            try:
                reply.result_nowait()
            except Boom as exc:
                seen.append(frames(exc))

        for _ in range(1000):
            await late_reader()
        assert len(seen) == 2000
        assert seen[0][0] == seen[1][0] == "late_reader"
        assert seen[0][-1] == seen[1][-1] == "origin_error"
        assert all(names == seen[n % 2] for n, names in enumerate(seen))

    async def test_none_is_a_value(self) -> None:
        """set_value(None) delivers None rather than leaving the reply unset."""
        reply: Reply[int | None] = Reply()
        reply.set_value(None)
        assert reply.is_set
        assert await reply.wait() is None
        assert reply.result_nowait() is None

    async def test_stop_iteration_is_raised_as_a_coroutine_raises_it(self) -> None:
        """A StopIteration delivered as the error reaches a parked waiter as the
        RuntimeError a coroutine turns it into, never as a value returned."""
        reply: Reply[str] = Reply()
        caught: list[BaseException] = []

        async def waiter() -> None:
            try:
                await reply.wait()
            except RuntimeError as exc:
                caught.append(exc)

        error = StopIteration("not a value")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            reply.set_error(error)
        assert [str(exc) for exc in caught] == ["coroutine raised StopIteration"]
        assert caught[0].__cause__ is error

    async def test_wait_after_the_outcome_returns_it(self) -> None:
        """A waiter arriving after set_value gets the value without parking."""
        reply: Reply[int] = Reply()
        reply.set_value(42)
        assert await reply.wait() == 42
        assert reply.waiters == 0

    async def test_wait_after_an_error_raises_it(self) -> None:
        """A waiter arriving after set_error raises the error."""
        reply: Reply[int] = Reply()
        reply.set_error(Boom("late"))
        with pytest.raises(Boom, match=r"^late$"):
            await reply.wait()

    async def test_wait_on_a_set_reply_still_checkpoints(self) -> None:
        """wait() checkpoints even when the outcome is already there."""
        reply: Reply[int] = Reply()
        reply.set_value(1)
        with trio.testing.assert_checkpoints():
            await reply.wait()

    async def test_wait_on_a_set_reply_can_be_cancelled(self) -> None:
        """wait() under a cancelled scope raises Cancelled even if the outcome is set."""
        reply: Reply[int] = Reply()
        reply.set_value(1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await reply.wait()
            pytest.fail("wait() returned under a cancelled scope")
        assert scope.cancelled_caught


class TestParkedCost:
    async def test_a_parked_task_costs_no_tracked_object_of_its_own(self) -> None:
        """1,000 tasks parked in ``await reply.park()`` add no GC-tracked object to what
        their tasks were before they ran (a wait_task_rescheduled each added four)."""
        reply: Reply[str] = Reply()

        async def parks() -> None:
            await reply.park()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(parks)  # the reply's list of tasks, made by the first
            await trio.testing.wait_all_tasks_blocked()
            assert await tracked_per_parked_task(nursery, parks, 1000) < 0.1
            reply.set_value("done")

    @pytest.mark.parametrize("outcome", ["value", "error"])
    async def test_park_wakes_with_the_outcome_and_stops_on_cancel(self, outcome: str) -> None:
        """``await reply.park()`` returns the value or raises the error, and is a cancel
        point that leaves the reply."""
        reply: Reply[str] = Reply()
        seen: list[object] = []
        cancelled = trio.CancelScope()
        error = Boom("down")

        async def parks() -> None:
            try:
                seen.append(await reply.park())
            except Boom as exc:
                seen.append(exc)

        async def gives_up() -> None:
            with cancelled:
                await reply.park()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(parks)
            nursery.start_soon(gives_up)
            await trio.testing.wait_all_tasks_blocked()
            cancelled.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert reply.waiters == 1
            if outcome == "value":
                reply.set_value("up")
            else:
                reply.set_error(error)
        assert seen == (["up"] if outcome == "value" else [error])
        assert cancelled.cancelled_caught


class TestSetOnce:
    def test_is_set_follows_the_outcome(self) -> None:
        """is_set is False before the outcome and True after."""
        reply: Reply[int] = Reply()
        assert not reply.is_set
        reply.set_value(1)
        assert reply.is_set

    @pytest.mark.parametrize("first", ["value", "error"])
    @pytest.mark.parametrize("second", ["value", "error"])
    def test_second_outcome_raises_reply_already_set(self, first: str, second: str) -> None:
        """Any second set_value/set_error raises ReplyAlreadySet and keeps the first outcome."""
        reply: Reply[int] = Reply()
        if first == "value":
            reply.set_value(1)
        else:
            reply.set_error(Boom("first"))
        with pytest.raises(ReplyAlreadySet, match=r"^reply already holds an outcome$"):
            if second == "value":
                reply.set_value(2)
            else:
                reply.set_error(Boom("second"))
        if first == "value":
            assert reply.result_nowait() == 1
        else:
            with pytest.raises(Boom, match=r"^first$"):
                reply.result_nowait()

    def test_reply_already_set_is_a_runtime_error(self) -> None:
        """ReplyAlreadySet can be caught as RuntimeError."""
        assert issubclass(ReplyAlreadySet, RuntimeError)


class TestOnResume:
    @pytest.mark.parametrize("outcome", ["value", "error"])
    async def test_on_resume_runs_once_in_the_first_waiter_before_it_sees_the_outcome(
        self, outcome: str
    ) -> None:
        """set_value/set_error return True when they woke a waiter; on_resume runs once, with
        the reply, in the first waiter to resume, before the outcome reaches it."""
        reply: Reply[str] = Reply()
        seen: list[object] = []

        def on_resume(settled: Reply[str]) -> None:
            seen.append(settled)
            seen.append(trio.lowlevel.current_task().name)

        async def waiter(name: str) -> None:
            try:
                seen.append(await reply.wait())
            except Boom as exc:
                seen.append(exc)

        async with trio.open_nursery() as nursery:
            for name in ("a", "b", "c"):
                nursery.start_soon(waiter, name, name=name)
            await trio.testing.wait_all_tasks_blocked()
            error = Boom("down")
            if outcome == "value":
                assert reply.set_value("done", on_resume) is True
            else:
                assert reply.set_error(error, on_resume) is True
            assert seen == []  # not in the task that set it
        expected = "done" if outcome == "value" else error
        assert seen[0] is reply
        assert seen[1] in {"a", "b", "c"}
        assert seen[2:] == [expected] * 3

    async def test_without_a_waiter_nothing_is_woken_and_on_resume_never_runs(self) -> None:
        """Set with no task parked (or only cancelled ones), it returns False, and a later
        wait() does not run on_resume."""
        calls: list[object] = []
        reply: Reply[int] = Reply()
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await reply.wait()
        assert reply.set_value(1, calls.append) is False
        assert await reply.wait() == 1
        assert calls == []


class TestNowait:
    def test_result_nowait_before_the_outcome_raises_would_block(self) -> None:
        """result_nowait on an unset reply raises trio.WouldBlock."""
        reply: Reply[int] = Reply()
        with pytest.raises(trio.WouldBlock):
            reply.result_nowait()

    def test_result_nowait_returns_the_value(self) -> None:
        """result_nowait returns the value once set."""
        reply: Reply[int] = Reply()
        reply.set_value(7)
        assert reply.result_nowait() == 7

    def test_result_nowait_raises_the_error(self) -> None:
        """result_nowait raises the error once set."""
        reply: Reply[int] = Reply()
        reply.set_error(Boom("nope"))
        with pytest.raises(Boom, match=r"^nope$"):
            reply.result_nowait()

    async def test_setting_and_reading_do_not_checkpoint(self) -> None:
        """set_value and result_nowait never yield to the scheduler."""
        reply: Reply[int] = Reply()
        with trio.testing.assert_no_checkpoints():
            reply.set_value(3)
            assert reply.result_nowait() == 3


class CancellableWaiter:
    """A task body that waits on a reply inside a cancel scope the test can cancel."""

    def __init__(self, reply: Reply[str]) -> None:
        self.reply = reply
        self.scope = trio.CancelScope()
        self.outcome = "pending"

    async def __call__(self) -> None:
        with self.scope:
            await self.reply.wait()
            self.outcome = "returned"
            return
        self.outcome = "cancelled"


class TestCancelledWaiter:
    async def test_cancelled_waiter_leaves_the_count_and_the_others_get_the_value(self) -> None:
        """A waiter cancelled in wait() drops out of waiters; the rest still get the value."""
        reply: Reply[str] = Reply()
        results: list[str] = []
        cancelled = CancellableWaiter(reply)

        async def waiter() -> None:
            results.append(await reply.wait())

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter)
            nursery.start_soon(cancelled)
            await trio.testing.wait_all_tasks_blocked()
            assert reply.waiters == 4
            cancelled.scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert reply.waiters == 3
            assert cancelled.outcome == "cancelled"
            reply.set_value("ok")
        assert results == ["ok", "ok", "ok"]
        assert reply.waiters == 0

    async def test_cancelled_waiter_does_not_stop_an_error_reaching_the_others(self) -> None:
        """After one waiter is cancelled, set_error still raises in the remaining waiters."""
        reply: Reply[str] = Reply()
        caught: list[str] = []
        cancelled = CancellableWaiter(reply)

        async def waiter() -> None:
            try:
                await reply.wait()
            except Boom as exc:
                caught.append(str(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
            nursery.start_soon(cancelled)
            await trio.testing.wait_all_tasks_blocked()
            assert reply.waiters == 3
            cancelled.scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert reply.waiters == 2
            reply.set_error(Boom("failed"))
        assert caught == ["failed", "failed"]
        assert cancelled.outcome == "cancelled"

    async def test_1000_waiters_giving_up_in_turn_are_not_all_kept(self) -> None:
        """Waiters cancelled one after another while one waits on: the reply keeps
        at most 64 tasks that left, so the others can be collected."""
        reply: Reply[str] = Reply()
        results: list[str] = []
        left: list[weakref.ref[trio.lowlevel.Task]] = []

        async def stays() -> None:
            results.append(await reply.wait())

        async def gives_up() -> None:
            left.append(weakref.ref(trio.lowlevel.current_task()))
            with trio.move_on_after(1.0):
                await reply.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stays)
            for _ in range(1000):
                async with trio.open_nursery() as one:
                    one.start_soon(gives_up)
                    await trio.testing.wait_all_tasks_blocked()
                    one.cancel_scope.cancel()
            assert reply.waiters == 1
            gc.collect()
            assert sum(ref() is not None for ref in left) <= 64
            reply.set_value("done")
        assert results == ["done"]
