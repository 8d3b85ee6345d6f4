"""FetchLanes: nurseries that run a key's fetch, one at a time, when its actor has no task.

A fetch must be cancellable on its own (``cancel_queries``, ``remove_queries``,
``reset_queries``), so it runs in a cancel scope that holds it alone.  Entering
and leaving a trio cancel scope in a task costs about what spawning the task
does, and a cold key's fetch paid it every time.  A lane is a nursery, hosted by
a task of the client's nursery, that runs one fetch at a time: the fetch's task
is spawned into it and cancelled through the lane's cancel scope, so the
fetches that follow one another through a lane share one scope, entered once.

A lane whose fetch is cancelled ends with it; a lane that ran no fetch for a
whole period of :data:`LANE_IDLE` seconds (it looks once a period) ends, so an
idle client keeps none.  When no lane is
free the fetch runs in the client's nursery in a cancel scope of its own, and a
lane is started for the fetches that follow (at most ``max_lanes`` of them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, final

import trio

LANE_IDLE = 1.0
"""Seconds between a lane's looks at whether it ran a fetch since the last one (if not, it ends)."""


@final
class Lane:
    """One nursery that runs one fetch at a time; made by :class:`FetchLanes`."""

    __slots__ = ("busy", "cancelled", "nursery", "used")

    def __init__(self) -> None:
        self.nursery: trio.Nursery | None = None
        """Open while the lane's task runs."""
        self.busy = False
        """A fetch runs in it."""
        self.used = False
        """A fetch ran in it since its task last looked (it is not idle yet)."""
        self.cancelled = False

    def cancel(self) -> None:
        """Cancel the lane's fetch; the lane ends with it.  Synchronous."""
        self.cancelled = True
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()


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
        self._lanes = 0
        """Lanes started and not ended."""

    def __len__(self) -> int:
        return self._lanes

    def start_soon(
        self, async_fn: Callable[..., Awaitable[object]], *args: Any, name: str
    ) -> Lane | None:
        """Start ``async_fn(*args)`` in a free lane and return the lane, now busy.

        ``None`` when no lane is free: then nothing was started.  The task
        must :meth:`release` the lane when it ends, and must never raise
        anything but cancellation (that would fail the client's nursery).
        """
        while self._idle:
            lane = self._idle.pop()
            nursery = lane.nursery
            if nursery is None or lane.cancelled:
                continue  # its task is ending (the client closes)
            try:
                nursery.start_soon(async_fn, *args, name=name)
            except RuntimeError:  # closed (the client closes): no lane then
                lane.cancelled = True
                continue
            lane.busy = lane.used = True
            return lane
        return None

    def release(self, lane: Lane) -> None:
        """The lane's fetch ended: the lane waits for the next one (unless cancelled)."""
        lane.busy = False
        if not lane.cancelled and lane.nursery is not None:
            self._idle.append(lane)

    def add_lane(self) -> None:
        """Start one more lane for the fetches to come (none past ``max_lanes``)."""
        if self._lanes >= self.max_lanes:
            return
        self._lanes += 1
        self._nursery.start_soon(self._host, Lane(), name="stackquery-fetch-lane")

    async def _host(self, lane: Lane) -> None:
        try:
            async with trio.open_nursery() as nursery:
                lane.nursery = nursery
                self._idle.append(lane)
                while True:
                    await trio.sleep(LANE_IDLE)
                    if not (lane.busy or lane.used):
                        break  # idle for a whole period
                    lane.used = False
                # No checkpoint since the test: the lane is idle, nothing runs in it.
                lane.cancelled = True
        finally:
            self._lanes -= 1
            lane.nursery = None
            if lane in self._idle:
                self._idle.remove(lane)


__all__ = ["LANE_IDLE", "FetchLanes", "Lane"]
