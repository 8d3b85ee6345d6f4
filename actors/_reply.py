"""A one-shot outcome that many tasks wait on together."""

from __future__ import annotations

from collections.abc import Callable
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
    parking lot: fewer objects per parked caller, less for the cyclic garbage
    collector to walk when thousands wait.  The outcome is handed to each
    waiter as it is rescheduled, so a caller that awaits
    ``trio.lowlevel.wait_task_rescheduled(reply.park())`` itself (see
    :meth:`park`) gets it without a frame of :meth:`wait` on its stack.

    A waiter cancelled in :meth:`wait` stops waiting and leaves nothing behind;
    the outcome is still set for the others.
    """

    __slots__ = ("_done", "_error", "_tasks", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: T | None = None
        self._error: BaseException | None = None
        # Made by the first waiter: most replies are set before anyone parks on
        # them (a batch's keys), and a dict each is what the cyclic gc walks.
        self._tasks: dict[trio.lowlevel.Task, None] | None = None

    @property
    def waiters(self) -> int:
        """How many tasks are parked in :meth:`wait` right now."""
        return 0 if self._tasks is None else len(self._tasks)

    @property
    def is_set(self) -> bool:
        """Whether the outcome has been delivered."""
        return self._done

    def set_value(self, value: T) -> None:
        """Deliver ``value`` to every waiter, now and later.

        Raises:
            ReplyAlreadySet: an outcome was delivered before.
        """
        if self._done:
            raise ReplyAlreadySet("reply already holds an outcome")
        self._value = value
        self._wake_all()

    def set_error(self, error: BaseException) -> None:
        """Deliver ``error``, raised in every waiter, now and later.

        Each waiter raises the same exception object; its traceback grows with
        each raise, which is the price of not copying it.

        Raises:
            ReplyAlreadySet: an outcome was delivered before.
        """
        if self._done:
            raise ReplyAlreadySet("reply already holds an outcome")
        self._error = error
        self._wake_all()

    def _wake_all(self) -> None:
        self._done = True
        tasks, self._tasks = self._tasks, None
        if tasks is None:
            return
        reschedule = trio.lowlevel.reschedule
        error = self._error
        # One outcome per waiter: an outcome can be unwrapped only once.
        if error is not None:
            for task in tasks:
                reschedule(task, outcome.Error(error))
        else:
            value = self._value
            for task in tasks:
                reschedule(task, outcome.Value(value))

    async def wait(self) -> T:
        """Wait for the outcome and return its value or raise its error.

        If the outcome is already set this still checkpoints, like every trio
        function that returns normally.

        Raises:
            BaseException: whatever error was delivered with :meth:`set_error`.
        """
        if self._done:
            await trio.lowlevel.checkpoint()
            return self._unwrap()
        return await trio.lowlevel.wait_task_rescheduled(self.park())  # type: ignore[no-any-return]

    def park(self) -> Callable[[Any], trio.lowlevel.Abort]:
        """Count the current task as a waiter; return the abort function to park it with.

        For a caller that parks itself, one frame less than :meth:`wait`:
        ``await trio.lowlevel.wait_task_rescheduled(reply.park())`` returns
        the value or raises the error.  Cancelled there, the task stops
        waiting and leaves nothing behind.  Only on a reply without an
        outcome yet (see :attr:`is_set`): no task would ever wake it.
        """
        task = trio.lowlevel.current_task()
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = {}
        tasks[task] = None
        return _Abort(tasks, task)

    def result_nowait(self) -> T:
        """Return the value or raise the error without waiting.

        Raises:
            trio.WouldBlock: no outcome yet.
        """
        if not self._done:
            raise trio.WouldBlock
        return self._unwrap()

    def _unwrap(self) -> T:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


@final
class _Abort:
    """The abort function of one task parked on a :class:`Reply`.

    One small object rather than a closure (a function, its cells and their
    tuple): with thousands of waiters, that is what the cyclic garbage
    collector walks.
    """

    __slots__ = ("_task", "_tasks")

    def __init__(self, tasks: dict[trio.lowlevel.Task, None], task: trio.lowlevel.Task) -> None:
        # The reply's waiters as they are while the task is parked: once the
        # outcome is set the task is rescheduled, and trio never aborts it after.
        self._tasks = tasks
        self._task = task

    def __call__(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        del self._tasks[self._task]
        return trio.lowlevel.Abort.SUCCEEDED
