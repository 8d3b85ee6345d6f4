"""Cache events: what happened to which key, for operators and dashboards."""

from __future__ import annotations

import enum
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

import attrs
import trio

from ._errors import InvalidOptionError
from ._keys import QueryKey
from ._state import FetchStatus, QueryState, QueryStatus, Snapshot


class CacheEventType(enum.Enum):
    """The kinds of :class:`CacheEvent`."""

    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"
    OBSERVER_ADDED = "observer_added"
    OBSERVER_REMOVED = "observer_removed"
    FETCH_STARTED = "fetch_started"
    FETCH_FAILED = "fetch_failed"
    STALE_IF_ERROR = "stale_if_error"
    """A fetch of data past its max age failed: its callers got the last good data."""
    CIRCUIT_OPENED = "circuit_opened"
    """A call of this key's origin opened its circuit breaker."""
    CIRCUIT_HALF_OPENED = "circuit_half_opened"
    """This key's call was let through its open breaker as a probe."""
    CIRCUIT_CLOSED = "circuit_closed"
    """This key's probe succeeded: its breaker closed."""


@attrs.frozen
class CacheEvent:
    """One thing that happened to one key."""

    type: CacheEventType
    key: QueryKey
    state: QueryState[Any] | None
    """The key's state after the event (``None`` once removed)."""
    missed: int = 0
    """Events this stream dropped just before this one because its consumer was slow."""


class EventStream:
    """An async iterator of :class:`CacheEvent`, with a bounded buffer.

    A consumer that falls behind never slows the cache down: past
    ``buffer`` unread events the oldest are dropped, and the next event read
    says in ``missed`` how many.  Made by :meth:`QueryClient.events`; close it
    with ``aclose()`` or ``async with`` (dropping every reference closes it too).
    """

    def __init__(self, hub: EventHub, buffer: int) -> None:
        self._hub = hub
        self._queue: deque[CacheEvent] = deque()
        self._buffer = buffer
        self._missed = 0
        self._event = trio.Event()
        self._closed = False

    def _put(self, event: CacheEvent) -> None:
        if len(self._queue) >= self._buffer:
            self._queue.popleft()
            self._missed += 1
        self._queue.append(event)
        self._event.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> CacheEvent:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            # Renewed only once set: another task may be waiting on the
            # current one, and must be woken by the next event or the close.
            if self._event.is_set():
                self._event = trio.Event()
            await self._event.wait()
        else:
            await trio.lowlevel.checkpoint()
        event = self._queue.popleft()
        if self._missed:
            event, self._missed = attrs.evolve(event, missed=self._missed), 0
        return event

    async def aclose(self) -> None:
        """Stop receiving events; the iteration ends after the buffered ones."""
        self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        self._closed = True
        self._hub.streams.discard(self)
        self._hub.refresh_listening()
        self._event.set()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


Recorder = Callable[[CacheEventType, QueryKey, "QueryState[Any] | None"], None]
"""Takes every event as it happens (the attach endpoint's ring); must not block or raise."""


class EventHub:
    """Fans events out to the open :class:`EventStream` objects of one client, and its recorder."""

    def __init__(self) -> None:
        self.streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._recorder: Recorder | None = None
        # A plain attribute, not a property nor len(self.streams): a WeakSet's len() costs
        # ~0.7 µs, a property read a Python call, and this is asked four times per cold key.
        self.listening = False
        """Whether anyone takes events (a stream, the recorder): else none are built.
        Read it; it is set by :meth:`refresh_listening`."""

    @property
    def recorder(self) -> Recorder | None:
        """Takes every event as it happens (the attach endpoint's ring), if set."""
        return self._recorder

    @recorder.setter
    def recorder(self, recorder: Recorder | None) -> None:
        self._recorder = recorder
        self.refresh_listening()

    def refresh_listening(self) -> None:
        """Set the flag :attr:`listening` reads; after any change of streams or recorder.

        A stream dropped without being closed leaves the flag set until the
        next change: events are then built for no one, nothing is lost.
        """
        self.listening = self._recorder is not None or len(self.streams) > 0

    def open(self, buffer: int) -> EventStream:
        """Open a stream that buffers at most ``buffer`` unread events.

        Raises:
            InvalidOptionError: ``buffer`` is not an int >= 1.
        """
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise InvalidOptionError(f"buffer must be an int >= 1, got {buffer!r}")
        stream = EventStream(self, buffer)
        self.streams.add(stream)
        self.refresh_listening()
        return stream

    def close_all(self) -> None:
        for stream in list(self.streams):
            stream._close()

    def emit(self, type: CacheEventType, key: QueryKey, state: QueryState[Any] | None) -> None:
        if self.streams:
            event = CacheEvent(type, key, state)
            for stream in list(self.streams):
                stream._put(event)
        if self._recorder is not None:
            self._recorder(type, key, state)

    def published(self, old: Snapshot | None, new: Snapshot) -> None:
        """Emit the events that going from ``old`` to ``new`` means."""
        key, state = new.key, new.state
        if old is None:
            self.emit(CacheEventType.ADDED, key, state)
            if not new.has_data:
                return
        was_idle = old is None or old.fetch_status is FetchStatus.IDLE
        if was_idle and new.fetch_status is FetchStatus.FETCHING:
            self.emit(CacheEventType.FETCH_STARTED, key, state)
        if new.status is QueryStatus.ERROR and (
            old is None or old.error_updated_at != new.error_updated_at
        ):
            self.emit(CacheEventType.FETCH_FAILED, key, state)
        if new.has_data and (
            old is None
            or old.data_updated_at != new.data_updated_at
            or old.is_invalidated != new.is_invalidated
        ):
            self.emit(CacheEventType.UPDATED, key, state)
