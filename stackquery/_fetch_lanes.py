"""FetchLanes: tasks that run a key's fetch, one at a time, when its actor has no task.

A fetch must be cancellable on its own (``cancel_queries``, ``remove_queries``,
``reset_queries``), so it runs in a cancel scope that holds it alone.  Entering
and leaving a trio cancel scope in a task costs about what spawning the task
does, and spawning a task for each fetch costs about as much again.  A lane is
a task of the client's nursery that runs one fetch at a time, in its own
body, inside one cancel scope entered once: the fetches that follow one
another through a lane share that scope and that task, and a fetch is handed
to a parked lane by rescheduling it, not by spawning a task.  Each fetch runs
in a copy of the context of the task that started it, as a task spawned
there would (see :func:`_serve`).

A lane whose fetch is cancelled ends with it; a lane that ran no fetch for a
whole period of :data:`LANE_IDLE` seconds ends (one sweeper task, alive while
lanes are, looks once a period), so an idle client keeps none.  When no lane
is free the fetch runs in the client's nursery in a cancel scope of its own,
and a lane is started for the fetches that follow (at most ``max_lanes`` of them).
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator
from typing import Any, final

import outcome
import trio

LANE_IDLE = 1.0
"""Seconds between the looks at whether a lane ran a fetch since the last one (if not, it ends)."""

_Job = tuple[Callable[..., Coroutine[Any, Any, object]], tuple[Any, ...], contextvars.Context]


@final
class Lane:
    """One task that runs one fetch at a time; made by :class:`FetchLanes`."""

    __slots__ = ("busy", "cancelled", "job", "parked", "scope", "task", "used")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        """The lane's task, once it runs."""
        self.scope: trio.CancelScope | None = None
        """The lane's cancel scope: cancelling it cancels the fetch it runs (and ends it)."""
        self.parked = False
        """Its task waits for a fetch (it is then among the free lanes)."""
        self.busy = False
        """A fetch was handed to it and has not ended."""
        self.used = False
        """A fetch ran in it since the sweeper last looked (it is not idle yet)."""
        self.cancelled = False
        self.job: _Job | None = None
        """The call handed to the lane, until its task takes it."""

    def cancel(self) -> None:
        """Cancel the lane's fetch; the lane ends with it.  Synchronous."""
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()

    def unpark(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        """The abort function of the lane's wait for a fetch: cancelled while waiting (the
        client closes, or the sweeper ends the lane), it is no longer free."""
        self.parked = False
        return trio.lowlevel.Abort.SUCCEEDED


@final
class FetchLanes:
    """The client's lanes: free ones to run a fetch in, and where to start more.

    Args:
        nursery: the client's nursery, where the lanes' tasks run.
        max_lanes: how many lanes may exist at once.
    """

    def __init__(self, nursery: trio.Nursery, max_lanes: int = 16) -> None:
        self._nursery = nursery
        self.max_lanes = max_lanes
        self._idle: list[Lane] = []
        """Parked lanes, the one parked last at the end."""
        self._lanes: list[Lane] = []
        """Lanes started and not ended."""
        self._sweeping = False

    def __len__(self) -> int:
        return len(self._lanes)

    def start_soon(
        self, async_fn: Callable[..., Coroutine[Any, Any, object]], *args: Any
    ) -> Lane | None:
        """Start ``async_fn(*args)`` in a free lane and return the lane, now busy.

        ``None`` when no lane is free: then nothing was started.  The call
        runs in a copy of the current context, as in a task spawned here.
        The lane is free again once the call returns; the call must never
        raise anything but cancellation (that would fail the client's nursery).
        """
        idle = self._idle
        while idle:
            lane = idle.pop()
            task = lane.task
            if not lane.parked or lane.cancelled or task is None:
                continue  # its task is ending (the client closes)
            lane.parked = False
            lane.busy = lane.used = True
            lane.job = (async_fn, args, contextvars.copy_context())
            trio.lowlevel.reschedule(task, _HANDED)
            return lane
        return None

    def add_lane(self) -> None:
        """Start one more lane for the fetches to come (none past ``max_lanes``)."""
        if len(self._lanes) >= self.max_lanes:
            return
        lane = Lane()
        self._lanes.append(lane)
        self._nursery.start_soon(self._host, lane, name="stackquery-fetch-lane")
        if not self._sweeping:
            self._sweeping = True
            self._nursery.start_soon(self._sweep, name="stackquery-fetch-lanes-sweeper")

    async def _host(self, lane: Lane) -> None:
        try:
            with trio.CancelScope() as scope:
                lane.scope = scope
                lane.task = trio.lowlevel.current_task()
                await _serve(lane, self._idle)
        finally:
            lane.cancelled = True
            lane.parked = False
            lane.scope = lane.task = None
            self._lanes.remove(lane)
            if lane in self._idle:
                self._idle.remove(lane)

    async def _sweep(self) -> None:
        """End each lane that ran no fetch for a whole period; return once none is left."""
        try:
            while any(not lane.cancelled for lane in self._lanes):
                await trio.sleep(LANE_IDLE)
                for lane in list(self._lanes):
                    if lane.parked and not lane.used:
                        # Parked, so among the free ones: taken out, nothing can reach it.
                        self._idle.remove(lane)
                        lane.cancel()
                    lane.used = lane.busy
        finally:
            self._sweeping = False


@final
class _Handed(outcome.Outcome[None]):
    """What a parked lane's task is rescheduled with when it is handed a call (the call
    itself is on the lane): one object for every hand-over, never unwrapped (see
    :func:`_serve`)."""

    __slots__ = ()

    def unwrap(self) -> None:
        return None

    def send(self, gen: Generator[Any, Any, object]) -> Any:
        return gen.send(None)

    async def asend(self, agen: AsyncGenerator[Any, Any]) -> Any:
        return await agen.asend(None)


_HANDED = _Handed()


def _park_message(abort: Callable[[Any], trio.lowlevel.Abort]) -> object:
    """What ``await trio.lowlevel.wait_task_rescheduled(abort)`` yields to trio's run loop,
    which only reads it: made once per lane, stepped by hand outside trio."""
    trap = trio.lowlevel.wait_task_rescheduled(abort)  # noqa: ASYNC105
    message = trap.send(None)
    trap.close()
    return message


@types.coroutine
def _serve(lane: Lane, idle: list[Lane]) -> Generator[Any, Any, None]:
    """The body of a lane's task: park among the free lanes, run the call handed over (to its
    end), again, until the lane is cancelled.

    One generator for the lane's life, stepped by trio as a task's coroutine is: a call
    handed over costs the lane one resumption, and no coroutine or outcome of its own to
    park again.  Each step of the call runs inside the context it was started from (what
    trio does for a task's coroutine, for one run by a lane: it sees that context).
    """
    park = _park_message(lane.unpark)
    while not lane.cancelled:
        # No checkpoint between the end of a call and parking: a lane is among the free
        # ones only while parked.
        lane.parked = True
        idle.append(lane)
        delivered = yield park
        if delivered is not _HANDED:  # cancelled while parked: this raises it
            delivered.unwrap()
        job, lane.job = lane.job, None
        assert job is not None  # handed over with the call
        async_fn, args, context = job
        coro = async_fn(*args)
        run = context.run
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                trap = run(coro.send, value) if error is None else run(coro.throw, error)
            except StopIteration:
                lane.busy = False
                break
            try:
                value = yield trap
                error = None
            except BaseException as exc:  # cancellation among them: delivered to the call
                value = None
                error = exc


__all__ = ["LANE_IDLE", "FetchLanes", "Lane"]
