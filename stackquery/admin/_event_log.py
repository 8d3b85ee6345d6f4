"""The endpoint's memory of recent cache events: a bounded ring, and counts since it opened."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import attrs

from .._clock import Clock
from .._events import CacheEvent, CacheEventType, EventStream
from .._keys import QueryKey

_ERROR_TEXT = 200
"""Characters of a failed fetch's error kept in its event."""


@attrs.frozen
class EventRecord:
    """One cache event as the endpoint keeps it: no data, only what an operator reads."""

    seq: int
    """1 for the first event the endpoint saw, then one more for each."""
    at: float
    """Wall time the endpoint recorded it (within a task switch of when it happened)."""
    type: CacheEventType
    key: QueryKey
    status: str | None
    """The key's status after the event (``None`` once removed)."""
    fetch_status: str | None
    invalidated: bool
    error: str | None
    """``Type: message`` of a failed fetch's error, cut to 200 characters."""
    missed: int
    """Events dropped just before this one because the endpoint fell behind."""

    def as_json(self) -> dict[str, Any]:
        """The record as the ``events`` reply carries it."""
        return {
            "seq": self.seq,
            "at": self.at,
            "type": self.type.value,
            "key": self.key,
            "status": self.status,
            "fetch_status": self.fetch_status,
            "invalidated": self.invalidated,
            "error": self.error,
            "missed": self.missed,
        }


class EventLog:
    """The last ``size`` events of one client, and counts of every event since it opened.

    Fed by :meth:`run` from an :class:`EventStream` of the client's event hub
    whose buffer is as large as the ring, so a burst is dropped (and counted
    in ``missed``) rather than stored twice.

    Args:
        size: events kept.
        clock: the client's clock, for the records' wall times.
    """

    def __init__(self, size: int, clock: Clock) -> None:
        self.size = size
        self._clock = clock
        self._ring: deque[EventRecord] = deque(maxlen=size)
        self._seq = 0
        self._missed = 0
        self._counts: Counter[str] = Counter()

    async def run(self, stream: EventStream) -> None:
        """Record every event ``stream`` yields until it ends (the client closed)."""
        async with stream:
            async for event in stream:
                self.record(event)

    def record(self, event: CacheEvent) -> None:
        """Keep ``event`` in the ring and count it."""
        self._seq += 1
        self._missed += event.missed
        state = event.state
        kind = event.type
        counts = self._counts
        counts[kind.value] += 1
        error = None
        if kind is CacheEventType.FETCH_STARTED:
            # A fetch of a key with no data is a miss; one of a key with data, a refetch.
            counts[
                "fetch_cold" if state is None or state.data_updated_at is None else "refetch"
            ] += 1
        elif kind is CacheEventType.FETCH_FAILED and state is not None and state.error is not None:
            error = f"{type(state.error).__name__}: {state.error}"[:_ERROR_TEXT]
        self._ring.append(
            EventRecord(
                seq=self._seq,
                at=self._clock.wall(),
                type=kind,
                key=event.key,
                status=state.status.value if state is not None else None,
                fetch_status=state.fetch_status.value if state is not None else None,
                invalidated=state.is_invalidated if state is not None else False,
                error=error,
                missed=event.missed,
            )
        )

    def recent(self, limit: int, after: int) -> list[EventRecord]:
        """The last ``limit`` events with a ``seq`` above ``after``, oldest first."""
        if limit == 0:
            return []
        chosen: list[EventRecord] = []
        for record in reversed(self._ring):
            if record.seq <= after or len(chosen) == limit:
                break
            chosen.append(record)
        chosen.reverse()
        return chosen

    def statistics(self) -> dict[str, Any]:
        """Counts since the endpoint opened: every event type, misses and refetches among
        the fetches started, events missed; and the last ``seq``."""
        counts = {kind.value: self._counts[kind.value] for kind in CacheEventType}
        return {
            "seq": self._seq,
            "missed": self._missed,
            "counts": counts,
            "fetches": {
                "cold": self._counts["fetch_cold"],
                "refetch": self._counts["refetch"],
                "failed": self._counts[CacheEventType.FETCH_FAILED.value],
            },
        }
