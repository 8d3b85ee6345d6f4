"""QueryObserver: listeners and update streams on one key, through ``select``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import trio

from ._option_checks import UNSET
from ._options import QueryOptions
from ._state import QueryState, QueryStatus

if TYPE_CHECKING:
    from ._owners import QueryOwners

T = TypeVar("T")
logger = logging.getLogger("stackquery.observer")

Listener = Callable[[QueryState[Any]], object]


class LatestState:
    """An async iterator of states that keeps only the newest unread one.

    A slow consumer sees the latest state, never a backlog: memory stays one
    state however far behind it falls.
    """

    def __init__(self) -> None:
        self._state: QueryState[Any] | None = None
        self._event = trio.Event()
        self._closed = False

    def put(self, state: QueryState[Any]) -> None:
        self._state = state
        self._event.set()

    def close(self) -> None:
        """End the iteration once the state not read yet (if any) is read."""
        self._closed = True
        self._event.set()

    def __aiter__(self) -> LatestState:
        return self

    async def __anext__(self) -> QueryState[Any]:
        while self._state is None:
            if self._closed:
                await trio.lowlevel.checkpoint()
                raise StopAsyncIteration
            self._event = trio.Event()
            await self._event.wait()
        else:
            await trio.lowlevel.checkpoint()
        state, self._state = self._state, None
        return state


class QueryObserver(Generic[T]):
    """Watches one key for listeners and update streams.

    The observer keeps the key's actor alive (and its ``refetch_interval``
    running) while it has at least one listener or open update stream; the
    first one fetches the key if its data is missing or stale and
    ``enabled``.  Listeners see the key's state with ``data`` mapped through
    ``select`` (or ``placeholder_data`` while the key has none).  Made by
    :meth:`QueryClient.watch`.
    """

    def __init__(self, owners: QueryOwners, options: QueryOptions[T], *, notify_on: str) -> None:
        self._owners = owners
        self.options = options
        self._notify_all = notify_on == "all"
        self._listeners: list[Listener] = []
        self._streams: list[LatestState] = []
        self._last: QueryState[Any] | None = None
        self._select_in: Any = UNSET
        self._select_out: Any = UNSET

    @property
    def subscribed(self) -> bool:
        """Whether the observer has a listener or an open update stream."""
        return bool(self._listeners or self._streams)

    def get_current_state(self) -> QueryState[Any]:
        """Return the key's state as this observer's listeners see it; synchronous."""
        return self._view(self._owners.state(self.options.key_hash))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(state)`` now, then on each change; return ``unsubscribe``.

        Synchronous.  The first subscriber attaches the observer to its key
        (fetching it if needed); ``unsubscribe`` is idempotent, and
        subscribing again after it works like the first time.  A listener
        that raises is logged and stays subscribed; it never re-runs the
        fetch and never stops the other listeners.

        Raises:
            TypeError: ``listener`` is not callable.
            ClientClosedError: the client is not open.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        first = not self.subscribed
        if first:
            self._owners.attach(self)  # may raise: then nothing was subscribed
        self._listeners.append(listener)
        state = self.get_current_state()
        if self._last is None or first:
            self._last = state
        self._call(listener, state)
        done = False

        def unsubscribe() -> None:
            nonlocal done
            if done:
                return
            done = True
            self._listeners.remove(listener)
            if not self.subscribed:
                self._last = None
                self._owners.detach(self)

        return unsubscribe

    @asynccontextmanager
    async def updates(self) -> AsyncIterator[LatestState]:
        """Open a stream of states: the current one first, then each change.

        The stream keeps only the newest unread state.  Leaving the block
        unsubscribes.

        Raises:
            ClientClosedError: the client is not open.
        """
        stream = LatestState()
        first = not self.subscribed
        self._streams.append(stream)
        try:
            if first:
                self._owners.attach(self)
            state = self.get_current_state()
            if self._last is None or first:
                self._last = state
            stream.put(state)
            yield stream
        finally:
            self._streams.remove(stream)
            if not self.subscribed:
                self._last = None
                self._owners.detach(self)

    async def refetch(self) -> QueryState[Any]:
        """Fetch the key now (joining a fetch in flight) and return the observer's state.

        The fetch's error is not raised: it is in the returned state.
        """
        reply = self._owners.claim(self.options)
        with contextlib.suppress(Exception):
            await reply.wait()
        return self.get_current_state()

    def on_state(self, state: QueryState[Any]) -> None:
        """Called by the key's actor on each change of the key's state."""
        view = self._view(state)
        last = self._last
        if last is not None and not self._changed(last, view):
            return
        self._last = view
        for listener in list(self._listeners):
            self._call(listener, view)
        for stream in self._streams:
            stream.put(view)

    def on_close(self) -> None:
        """Called when the client closes: every ``updates()`` stream ends."""
        for stream in self._streams:
            stream.close()

    def _changed(self, old: QueryState[Any], new: QueryState[Any]) -> bool:
        if self._notify_all:
            return not _same(old, new)
        return (
            old.status is not new.status
            or old.error is not new.error
            or old.is_placeholder_data != new.is_placeholder_data
            or not _same_data(old.data, new.data)
        )

    def _view(self, state: QueryState[Any]) -> QueryState[Any]:
        options = self.options
        if not state.has_data:
            if options.placeholder_data is UNSET or state.status is QueryStatus.ERROR:
                return state
            try:
                placeholder = options.placeholder_data
                data = placeholder() if callable(placeholder) else placeholder
                return attrs.evolve(state, data=self._select(data), is_placeholder_data=True)
            except Exception:
                # The user's code must not reach the actor that called us.
                logger.exception("placeholder_data or select of query %r raised", options.query_key)
                return state
        if options.select is None:
            return state
        try:
            return attrs.evolve(state, data=self._select(state.data))
        except Exception as exc:
            logger.exception("select of query %r raised", options.query_key)
            return attrs.evolve(state, status=QueryStatus.ERROR, error=exc, data=None)

    def _select(self, data: Any) -> Any:
        select = self.options.select
        if select is None:
            return data
        if data is self._select_in:
            return self._select_out
        out = select(data)
        self._select_in, self._select_out = data, out
        return out

    def _call(self, listener: Listener, state: QueryState[Any]) -> None:
        try:
            listener(state)
        except Exception:
            logger.exception("listener %r of query %r raised", listener, self.options.query_key)


def _same_data(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _same(a: QueryState[Any], b: QueryState[Any]) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False
