"""One timer task for the whole client: a heap of (deadline, key) pairs."""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from typing import final

import trio

logger = logging.getLogger("stackquery.timers")


@final
class KeyTimers:
    """Calls ``fire(key_hash, deadline)`` at trio-time deadlines, from one task.

    A key's staleness flag and its garbage collection share one entry here
    rather than a task per key: a ``(deadline, key_hash)`` pair costs about
    90 bytes, a sleeping task several KB.  The owner keeps, per key, the
    deadline of the entry that counts (``Snapshot.timer_at``) and ignores the
    others when they fire.  ``fire`` runs synchronously in the timer task and
    must not block; one that raises is logged and the timers go on.
    """

    def __init__(self, fire: Callable[[str, float], None]) -> None:
        self._fire = fire
        self._heap: list[tuple[float, str]] = []
        self._wakeup = trio.Event()
        self._waiting_until = math.inf
        self._nonempty = trio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, deadline: float, key_hash: str) -> None:
        """Schedule ``fire(key_hash, deadline)`` for trio time ``deadline``; synchronous."""
        if deadline == math.inf:
            return
        heapq.heappush(self._heap, (deadline, key_hash))
        self._nonempty.set()
        if deadline < self._waiting_until:
            self._wakeup.set()

    def compact(self, keep: Callable[[float, str], bool]) -> None:
        """Drop the entries for which ``keep(deadline, key_hash)`` is false; synchronous.

        For the owner to call when many entries no longer count (their keys
        were dropped): otherwise they stay until their deadline comes.
        """
        heap = self._heap
        heap[:] = [entry for entry in heap if keep(*entry)]  # in place: run() holds this list
        heapq.heapify(heap)

    async def wait_nonempty(self) -> None:
        """Return once at least one entry is pending."""
        while not self._heap:
            self._nonempty = trio.Event()
            await self._nonempty.wait()

    async def run(self) -> None:
        """Fire entries as they come due, until cancelled."""
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                deadline, key_hash = heapq.heappop(heap)
                try:
                    self._fire(key_hash, deadline)
                except Exception:
                    logger.exception("timer of key %s raised", key_hash)
            self._waiting_until = heap[0][0] if heap else math.inf
            self._wakeup = trio.Event()
            with trio.move_on_at(self._waiting_until):
                await self._wakeup.wait()
