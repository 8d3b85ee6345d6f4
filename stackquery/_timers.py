"""One timer task for the whole client: a coarse wheel of keys, an exact heap near the deadlines."""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from typing import final

import trio

logger = logging.getLogger("stackquery.timers")

RESOLUTION = 1.0
"""Seconds a wheel bucket spans (the wheel only ever fires a key early, never late)."""


@final
class KeyTimers:
    """Calls ``fire(key_hash, deadline)`` at trio-time deadlines, from one task.

    A key's staleness flag and its garbage collection share one entry here
    rather than a task per key.  A million idle keys are a million pending
    entries, so an entry is kept small: most wait in a coarse wheel, a list
    of keys per :data:`RESOLUTION`-second bucket (8 bytes an entry; a
    ``(deadline, key)`` tuple in a heap costs about 65).  The owner keeps,
    per key, the deadline of the entry that counts (``Snapshot.timer_at``),
    and ``deadline_of(key_hash)`` tells it (``None``: no key): when a
    bucket's start comes, each of its keys whose deadline is in that bucket
    moves to an exact heap, which fires it at that deadline; the others
    were superseded (the key's deadline changed, and has an entry of its
    own) and are let go.  So only the keys due within the next bucket carry
    a tuple, and none fires late or early.

    ``fire`` is also called for a heap entry superseded after its move; the
    owner ignores a deadline that no longer counts.  ``fire`` runs
    synchronously in the timer task and must not block; one that raises is
    logged and the timers go on.
    """

    def __init__(
        self, fire: Callable[[str, float], None], deadline_of: Callable[[str], float | None]
    ) -> None:
        self._fire = fire
        self._deadline_of = deadline_of
        self._heap: list[tuple[float, str]] = []
        """Entries due before the end of the bucket the clock is in: exact order."""
        self._buckets: dict[int, list[str]] = {}
        """Bucket number -> the keys with an entry in it."""
        self._bucket_heap: list[int] = []
        """The numbers of the buckets in ``_buckets`` (and of some emptied since)."""
        self._in_buckets = 0
        self._moved_through = -math.inf
        """Buckets up to this number were moved to the heap: later pushes to them go there."""
        self._wakeup = trio.Event()
        self._waiting_until = math.inf
        self._nonempty: trio.Event | None = None
        """What :meth:`wait_nonempty` waits on, while it does: a push sets it then only
        (each cold key's landing pushes)."""

    def __len__(self) -> int:
        return len(self._heap) + self._in_buckets

    def push(self, deadline: float, key_hash: str) -> None:
        """Schedule ``fire(key_hash, deadline)`` for trio time ``deadline``; synchronous.

        The entry counts only if ``deadline_of(key_hash)`` says ``deadline`` when its
        bucket begins (the owner records it as it pushes).
        """
        if deadline == math.inf:
            return
        number = math.floor(deadline / RESOLUTION)
        if number <= self._moved_through:
            heapq.heappush(self._heap, (deadline, key_hash))
            due = deadline
        else:
            bucket = self._buckets.get(number)
            if bucket is None:
                bucket = self._buckets[number] = []
                heapq.heappush(self._bucket_heap, number)
            bucket.append(key_hash)
            self._in_buckets += 1
            due = number * RESOLUTION
        if self._nonempty is not None:
            self._nonempty.set()
            self._nonempty = None
        if due < self._waiting_until:
            self._wakeup.set()

    def push_many(self, deadlines: list[float], key_hashes: list[str]) -> None:
        """:meth:`push` of each deadline of ``deadlines`` for the key at the same place of
        ``key_hashes``; synchronous.

        A batch's keys mostly fall in a few buckets: each bucket is looked up
        once for a run of keys in it, and the timer task is woken once.

        Raises:
            ValueError: ``deadlines`` and ``key_hashes`` are not as long.
        """
        if len(deadlines) == 1 == len(key_hashes):
            # One entry (a lone read's landing): push's steps are a third of the batch's.
            self.push(deadlines[0], key_hashes[0])
            return
        buckets, heap = self._buckets, self._heap
        moved_through = self._moved_through
        last = max(deadlines, default=math.inf)
        # Judged in C: every deadline in one bucket still to come (keys landed together,
        # stamped within the same second), its keys added at once.
        if (
            last != math.inf
            and (number := math.floor(min(deadlines) / RESOLUTION)) > moved_through
            and number == math.floor(last / RESOLUTION)
        ):
            if len(key_hashes) != len(deadlines):
                raise ValueError("push_many: as many deadlines as keys are needed")
            found = buckets.get(number)
            if found is None:
                found = buckets[number] = []
                heapq.heappush(self._bucket_heap, number)
            found += key_hashes
            self._in_buckets += len(key_hashes)
            due = number * RESOLUTION
        else:
            last_number: int | None = None
            bucket: list[str] = []
            due = math.inf
            floor = math.floor
            pushed = 0
            for deadline, key_hash in zip(deadlines, key_hashes, strict=True):
                if deadline == math.inf:
                    continue
                number = floor(deadline / RESOLUTION)
                if number <= moved_through:
                    heapq.heappush(heap, (deadline, key_hash))
                    if deadline < due:
                        due = deadline
                    continue
                if number != last_number:
                    found = buckets.get(number)
                    if found is None:
                        found = buckets[number] = []
                        heapq.heappush(self._bucket_heap, number)
                    bucket, last_number = found, number
                    if number * RESOLUTION < due:
                        due = number * RESOLUTION
                bucket.append(key_hash)
                pushed += 1
            self._in_buckets += pushed
            if due == math.inf:
                return
        if self._nonempty is not None:
            self._nonempty.set()
            self._nonempty = None
        if due < self._waiting_until:
            self._wakeup.set()

    def compact(self) -> None:
        """Drop the entries that no longer count (``deadline_of`` gives another); synchronous.

        For the owner to call when many entries no longer count (their keys
        were dropped): otherwise they stay until their bucket or deadline comes.
        """
        deadline_of = self._deadline_of
        heap = self._heap
        # In place: run() holds this list.
        heap[:] = [entry for entry in heap if deadline_of(entry[1]) == entry[0]]
        heapq.heapify(heap)
        count = 0
        for number, bucket in list(self._buckets.items()):
            kept = [key for key in bucket if self._counts_in(key, number)]
            if kept:
                self._buckets[number] = kept
                count += len(kept)
            else:
                del self._buckets[number]  # its number stays in _bucket_heap, skipped later
        self._in_buckets = count

    def _counts_in(self, key_hash: str, number: int) -> bool:
        """Whether the key's deadline that counts falls in bucket ``number``."""
        return _bucket_of(self._deadline_of(key_hash)) == number

    async def wait_nonempty(self) -> None:
        """Return once at least one entry is pending."""
        while not len(self):
            nonempty = self._nonempty = trio.Event()
            await nonempty.wait()

    def _move_due_buckets(self, now: float) -> None:
        """Move the entries of every bucket that has begun by ``now`` to the exact heap."""
        numbers, buckets, heap = self._bucket_heap, self._buckets, self._heap
        current = math.floor(now / RESOLUTION)
        while numbers and numbers[0] <= current:
            number = heapq.heappop(numbers)
            bucket = buckets.pop(number, None)
            if bucket is None:
                continue
            self._in_buckets -= len(bucket)
            deadline_of = self._deadline_of
            for key_hash in bucket:
                deadline = deadline_of(key_hash)
                # A key twice in one bucket (its deadline moved within it) moves twice:
                # the second firing no longer counts, and the owner ignores it.
                if deadline is not None and _bucket_of(deadline) == number:
                    heapq.heappush(heap, (deadline, key_hash))
        self._moved_through = max(self._moved_through, current)

    def _next_due(self) -> float:
        numbers, buckets = self._bucket_heap, self._buckets
        while numbers and numbers[0] not in buckets:
            heapq.heappop(numbers)  # emptied by a compaction
        due = numbers[0] * RESOLUTION if numbers else math.inf
        heap = self._heap
        return min(due, heap[0][0]) if heap else due

    async def run(self) -> None:
        """Fire entries as they come due, until cancelled."""
        heap = self._heap
        while True:
            now = trio.current_time()
            self._move_due_buckets(now)
            while heap and heap[0][0] <= now:
                deadline, key_hash = heapq.heappop(heap)
                try:
                    self._fire(key_hash, deadline)
                except Exception:
                    logger.exception("timer of key %s raised", key_hash)
            self._waiting_until = self._next_due()
            self._wakeup = trio.Event()
            with trio.move_on_at(self._waiting_until):
                await self._wakeup.wait()


def _bucket_of(deadline: float | None) -> int | None:
    """The number of the bucket ``deadline`` falls in; ``None`` for no deadline or ``inf``."""
    if deadline is None or deadline == math.inf:
        return None
    return math.floor(deadline / RESOLUTION)
