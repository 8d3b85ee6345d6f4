"""One timer task for the whole client: a heap of deadlines."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any, final

import trio

logger = logging.getLogger("stackquery.timers")


@final
class TimerQueue:
    """Calls ``callback(arg)`` at a trio-time deadline, from one task.

    A key's staleness flag and its garbage collection are timers here rather
    than tasks per key: a heap entry costs about a hundred bytes, a sleeping
    task several KB.  Callbacks run synchronously in the timer task and must
    not block; one that raises is logged and the queue goes on.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = itertools.count()
        self._wakeup = trio.Event()
        self._waiting_until = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def call_at(self, deadline: float, callback: Callable[[Any], None], arg: Any) -> None:
        """Schedule ``callback(arg)`` for trio time ``deadline``; synchronous."""
        if deadline == math.inf:
            return
        heapq.heappush(self._heap, (deadline, next(self._seq), callback, arg))
        if deadline < self._waiting_until:
            self._wakeup.set()

    async def run(self) -> None:
        """Fire timers as they come due, until cancelled."""
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, callback, arg = heapq.heappop(heap)
                try:
                    callback(arg)
                except Exception:
                    logger.exception("timer callback %r(%r) raised", callback, arg)
            self._waiting_until = heap[0][0] if heap else math.inf
            self._wakeup = trio.Event()
            with trio.move_on_at(self._waiting_until):
                await self._wakeup.wait()
