"""A one-shot outcome that many tasks wait on together."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar, final

import outcome
import trio

T = TypeVar("T")


class ReplyAlreadySet(RuntimeError):
    """An outcome was delivered to a :class:`Reply` that already held one."""


@final
class Reply(Generic[T]):
    """A value or error delivered once, to any number of waiters.

    The actor that owns a piece of work sets the outcome once; every task
    parked in :meth:`wait` wakes with it.  Waking costs one reschedule per
    waiter, not a channel round trip each, so 10,000 callers joining one
    fetch cost a few microseconds apiece.  Waiters park on the reply itself
    (``trio.lowlevel.wait_task_rescheduled``), not on an ``Event`` and its
    parking lot, and through one awaitable shared by every waiter of every
    reply (see :meth:`park`): a parked caller costs the reply one list slot
    and no object of its own, so the cyclic garbage collector has less to
    walk, and runs less often, when thousands wait.  The outcome is handed
    to each waiter as it is rescheduled, so a caller that awaits
    ``reply.park()`` itself gets it without a frame of :meth:`wait` on its
    stack.

    A waiter cancelled in :meth:`wait` stops waiting and is no longer counted
    (the reply forgets it soon after: it keeps at most about four times as
    many tasks as are waiting, or 64); the outcome is still set for the others.
    """

    __slots__ = ("_error", "_tasks", "_traceback", "_value", "is_set")

    def __init__(self) -> None:
        self.is_set = False
        """Whether the outcome has been delivered.  Read it; only the reply sets it (an
        attribute, not a property: a cold key's caller asks, and a property is a call)."""
        self._value: T | None = None
        self._error: BaseException | None = None
        self._traceback: TracebackType | None = None
        # Made by the first waiter: most replies are set before anyone parks on
        # them (a batch's keys), and a list each is what the cyclic gc walks.  Every
        # task that parked here, and maybe left since: a task is parked here while its
        # custom_sleep_data is this reply (trio clears it when the task is rescheduled,
        # a cancelled one included), so that leaving takes no object of its own per task.
        self._tasks: list[trio.lowlevel.Task] | None = None

    @property
    def waiters(self) -> int:
        """How many tasks are parked in :meth:`wait` right now."""
        tasks = self._tasks
        if tasks is None:
            return 0
        return len({task for task in tasks if task.custom_sleep_data is self})

    def set_value(self, value: T, on_resume: Callable[[Reply[T]], object] | None = None) -> bool:
        """Deliver ``value`` to every waiter, now and later.

        Returns whether a task parked in :meth:`wait` was woken.  ``on_resume``,
        if given, is called once with this reply in the first woken task as it
        resumes, before it gets the outcome (so in a later scheduling batch than
        this call); it must not raise.

        Raises:
            ReplyAlreadySet: an outcome was delivered before.
        """
        if self.is_set:
            raise ReplyAlreadySet("reply already holds an outcome")
        self._value = value
        return self._wake_all(on_resume)

    def set_error(
        self, error: BaseException, on_resume: Callable[[Reply[T]], object] | None = None
    ) -> bool:
        """Deliver ``error``, raised in every waiter, now and later.

        Each waiter raises the same exception object (``is`` holds), with the
        traceback it had here followed by that waiter's own frames: the
        traceback is put back before each raise, so it never grows with the
        waiters (1,000 raises of one object would otherwise chain 1,000
        waiters' frames into it, and keep them alive).  A waiter that keeps
        the error past its next checkpoint sees the traceback of the latest
        raise.  Returns, and ``on_resume`` is, as in :meth:`set_value`.

        Raises:
            ReplyAlreadySet: an outcome was delivered before.
        """
        if self.is_set:
            raise ReplyAlreadySet("reply already holds an outcome")
        self._error = error
        self._traceback = error.__traceback__
        return self._wake_all(on_resume)

    def _wake_all(self, on_resume: Callable[[Reply[T]], object] | None) -> bool:
        self.is_set = True
        tasks, self._tasks = self._tasks, None
        if tasks is None:
            return False
        reschedule = trio.lowlevel.reschedule
        # One outcome for all the waiters (it can be unwrapped any number of times).
        delivered = _Delivered(self._value, self._error, self._traceback)
        if on_resume is not None:
            delivered.resumed = (on_resume, self)
        woke = False
        for task in tasks:
            # Not parked here any more (cancelled), or listed twice (cancelled, then parked
            # here again): rescheduling cleared custom_sleep_data.
            if task.custom_sleep_data is self:
                reschedule(task, delivered)
                woke = True
        return woke

    async def wait(self) -> T:
        """Wait for the outcome and return its value or raise its error.

        If the outcome is already set this still checkpoints, like every trio
        function that returns normally.

        Raises:
            BaseException: whatever error was delivered with :meth:`set_error`.
        """
        if self.is_set:
            await trio.lowlevel.checkpoint()
            return self._unwrap()
        return await self.park()

    def park(self) -> Awaitable[T]:
        """Count the current task as a waiter; return what it must await at once.

        For a caller that parks itself, one frame less than :meth:`wait`:
        ``await reply.park()`` returns the value or raises the error (a
        checkpoint, like ``trio.lowlevel.wait_task_rescheduled``).  Cancelled
        there, the task stops waiting, as in :meth:`wait`.  The task's
        ``custom_sleep_data`` is this reply while it waits.  Only on a reply
        without an outcome yet (see :attr:`is_set`): no task would ever wake
        it; and awaited at once, with no checkpoint between, as the task is
        counted as parked from this call on.
        """
        task = trio.lowlevel.current_task()
        task.custom_sleep_data = self
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = []
        tasks.append(task)
        count = len(tasks)
        if count >= _PRUNE_AT_LEAST and count & (count - 1) == 0:
            # Forget the tasks that left (cancelled), at each power of two (amortized): a
            # reply waited on for long by callers that give up does not keep them all.
            tasks[:] = [task for task in tasks if task.custom_sleep_data is self]
        return _PARKED  # type: ignore[return-value]

    def result_nowait(self) -> T:
        """Return the value or raise the error without waiting.

        Raises:
            trio.WouldBlock: no outcome yet.
        """
        if not self.is_set:
            raise trio.WouldBlock
        return self._unwrap()

    def _unwrap(self) -> T:
        error = self._error
        if error is not None:
            try:
                raise error.with_traceback(self._traceback)
            finally:
                del error  # no cycle through this frame, as in outcome.Error.unwrap
        return self._value  # type: ignore[return-value]


@final
class _Delivered(outcome.Outcome[Any]):
    """The outcome every waiter of one :class:`Reply` is rescheduled with.

    Unlike ``outcome.Value`` and ``outcome.Error``, it can be unwrapped any
    number of times: one object for all the waiters, not one each.  An error
    is raised with the traceback it was delivered with, so that each waiter's
    raise starts from it instead of from the last waiter's.
    """

    __slots__ = ("_error", "_traceback", "_value", "resumed")

    def __init__(
        self, value: Any, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._value = value
        self._error = error
        self._traceback = traceback
        self.resumed: tuple[Callable[[Any], object], Reply[Any]] | None = None
        """The ``on_resume`` of the reply's settling, and the reply, until the first
        waiter resumes (see :meth:`Reply.set_value`)."""

    def _first_resumes(self) -> None:
        resumed = self.resumed
        if resumed is not None:
            self.resumed = None
            resumed[0](resumed[1])

    def unwrap(self) -> Any:
        resumed = self.resumed
        if resumed is not None:  # _first_resumes written out: what a parked caller calls
            self.resumed = None
            resumed[0](resumed[1])
        error = self._error
        if error is None:
            return self._value
        try:
            raise error.with_traceback(self._traceback)
        finally:
            del error  # no cycle through this frame, as in outcome.Error.unwrap

    def send(self, gen: Generator[Any, Any, object]) -> Any:
        if self.resumed is not None:
            self._first_resumes()
        if self._error is None:
            return gen.send(self._value)
        return gen.throw(self._error.with_traceback(self._traceback))

    async def asend(self, agen: AsyncGenerator[Any, Any]) -> Any:
        if self.resumed is not None:
            self._first_resumes()
        if self._error is None:
            return await agen.asend(self._value)
        return await agen.athrow(self._error.with_traceback(self._traceback))


_PRUNE_AT_LEAST = 64
"""Tasks a reply lists before it first forgets those that left (then at 128, 256 ...)."""


def _leave(_raise_cancel: object) -> trio.lowlevel.Abort:
    """The abort function of every task parked on a :class:`Reply`.

    The task stays listed: trio clears its ``custom_sleep_data`` as it
    reschedules it with the cancellation, which is what tells the reply it
    left.  One function for all, rather than an object per parked task.
    """
    return trio.lowlevel.Abort.SUCCEEDED


def _trap_message(abort: Callable[[Any], trio.lowlevel.Abort]) -> object:
    """The message ``trio.lowlevel.wait_task_rescheduled(abort)`` yields to trio's run loop."""
    # Stepped by hand, once, outside trio: what it yields is all that is wanted of it.
    trap = trio.lowlevel.wait_task_rescheduled(abort)  # noqa: ASYNC105
    try:
        return trap.send(None)
    finally:
        trap.close()


_PARK_MESSAGE = _trap_message(_leave)
"""What a task parked on a :class:`Reply` hands trio's run loop: the loop only reads it."""


@final
class _Parked:
    """What every task parked on a :class:`Reply` awaits: one object for all of them.

    It does what ``await trio.lowlevel.wait_task_rescheduled(_leave)`` does,
    without its coroutine, the generator under it and the message with its
    dict that each call makes (four GC-tracked objects per parked caller,
    where the caller's own task, context and coroutines are five): it yields
    one message made once, and returns or raises the outcome trio resumes the
    task with (trio sends the ``Outcome`` in and leaves the unwrapping to the
    task).  It keeps no state: a task in ``await`` is either about to park
    (sent ``None``) or being woken (sent its outcome).

    That is trio's protocol between a task and its run loop, which its public
    traps are built on but which it does not document; the tests of
    :meth:`Reply.park` pin what is used of it.  A generator per waiter would
    wake each for ~2,500 instructions less (a ``StopIteration`` raised from
    Python costs more than a generator's return) but keep one tracked object
    more each: CPU even on 10,000 callers, 105 generation-0 collections
    instead of 92, nearer the full collection that 143 set off.
    """

    __slots__ = ()

    def __await__(self) -> _Parked:
        return self

    def __iter__(self) -> _Parked:
        return self

    def __next__(self) -> object:
        return _PARK_MESSAGE

    def send(self, delivered: outcome.Outcome[Any] | None) -> object:
        if delivered is None:
            return _PARK_MESSAGE
        try:
            value = delivered.unwrap()
        except StopIteration as error:
            # Raised here, it would end the await with its value, as a coroutine's return;
            # a coroutine turns it into this error instead (PEP 479), and so does this.
            raise RuntimeError("coroutine raised StopIteration") from error
        raise StopIteration(value)


_PARKED = _Parked()
