"""The endpoint's memory of recent cache events: a bounded ring, and counts since it opened.

The ring is fed as the events happen: the endpoint sets :meth:`EventLog.record`
as the client's event hub's ``recorder``: no task, no buffer in between, about a
microsecond per event.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import attrs

from .._clock import Clock
from .._events import CacheEventType
from .._keys import QueryKey
from .._state import QueryState

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
        }


class EventLog:
    """The last ``size`` events of one client, and counts of every event since it opened.

    Args:
        size: events kept.
        clock: the client's clock, for the records' wall times.
    """

    def __init__(self, size: int, clock: Clock) -> None:
        self.size = size
        self._clock = clock
        self._ring: deque[EventRecord] = deque(maxlen=size)
        self._seq = 0
        self._counts: Counter[str] = Counter()

    def record(self, kind: CacheEventType, key: QueryKey, state: QueryState[Any] | None) -> None:
        """Keep the event in the ring (the oldest goes once it is full) and count it."""
        self._seq += 1
        counts = self._counts
        counts[kind.value] += 1
        error = None
        if kind is CacheEventType.FETCH_STARTED:
            # A fetch of a key with no data is a miss; one of a key with data, a refetch.
            cold = state is None or state.data_updated_at is None
            counts["fetch_cold" if cold else "refetch"] += 1
        elif kind is CacheEventType.FETCH_FAILED and state is not None and state.error is not None:
            error = f"{type(state.error).__name__}: {state.error}"[:_ERROR_TEXT]
        self._ring.append(
            EventRecord(
                seq=self._seq,
                at=self._clock.wall(),
                type=kind,
                key=key,
                status=state.status.value if state is not None else None,
                fetch_status=state.fetch_status.value if state is not None else None,
                invalidated=state.is_invalidated if state is not None else False,
                error=error,
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

    @property
    def seq(self) -> int:
        """The last event's ``seq`` (0 before the first)."""
        return self._seq

    def statistics(self) -> dict[str, Any]:
        """Counts since the endpoint opened: every event type, and misses, refetches and
        failures among the fetches; and the last ``seq``."""
        counts = {kind.value: self._counts[kind.value] for kind in CacheEventType}
        return {
            "seq": self._seq,
            "counts": counts,
            "fetches": {
                "cold": self._counts["fetch_cold"],
                "refetch": self._counts["refetch"],
                "failed": self._counts[CacheEventType.FETCH_FAILED.value],
            },
        }
