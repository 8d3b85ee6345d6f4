"""Hearing every master of a Redis Cluster name the keys that changed: tracking per node.

``CLIENT TRACKING`` is each server's own business: a master tracks the keys
it holds and tells a connection of its own (the ``REDIRECT`` target must be
on the same server).  So :meth:`~backends.RedisClusterClient.subscribe_tracking`
opens on every master of the slot map what one server's subscription opens
(:meth:`~backends.RedisClient.subscribe_tracking` with no channel: a RESP2
connection subscribed to ``__redis__:invalidate``, and a tracking connection
that sent ``CLIENT TRACKING on REDIRECT <its id> BCAST PREFIX ...``), plus one
classic subscription to the channels on any node (classic pub/sub reaches
every node).  A :class:`ClusterSubscription` reads them all as one stream:
one task per connection hands each event over an unbuffered channel, so a
connection's events keep their order and nothing is read ahead of the reader.

What may change under it is who the masters are: a failover, a master added
or removed.  The subscription reads the slot map again every
``recheck_interval`` seconds, and looks at it at once whenever the client
reads it for its own reasons (a ``MOVED`` met by any command).  When the
masters are no longer the ones it tracks, or any one of its connections is
lost, the whole subscription is lost: its reader gets
``StorageUnavailableError``, subscribes again (on the masters of the day,
after reading the map afresh) and, as after any lost subscription, takes
everything it holds as stale, since writes on a master nobody tracked were
not heard.  Writes by a master's replicas do not exist (replicas are read-only),
so masters are all there is to track.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import final

import attrs
import trio

from ._cluster_slots import NodeAddress
from ._cluster_topology import ClusterTopology
from ._errors import StorageClosedError, StorageError, StorageUnavailableError
from ._redis_subscription import Subscription
from ._redis_tracking import Invalidation

Event = tuple[bytes, bytes] | Invalidation
"""A message on a channel, ``(channel, data)``, or a master's invalidation."""


@attrs.define(eq=False)
class _Merged:
    """The state the reading tasks and the :class:`ClusterSubscription` handle share."""

    send: trio.MemorySendChannel[Event | None]
    receive: trio.MemoryReceiveChannel[Event | None]
    parts: list[Subscription] = attrs.field(factory=list)
    lost: StorageError | None = None
    closed: bool = False

    def lose(self, error: StorageError) -> None:
        """The first loss wins; a reader waiting now is woken to raise it."""
        if self.lost is None and not self.closed:
            self.lost = error
            # A reader blocked in receive() takes the None; one that is not
            # waiting finds ``lost`` set before it waits.
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                self.send.send_nowait(None)


@final
class ClusterSubscription:
    """The channels' messages and every master's invalidations, as one subscription.

    Made by :meth:`~backends.RedisClusterClient.subscribe_tracking`; the same
    reading surface as :class:`~backends.Subscription` (``next_event``,
    ``async for``, ``connected``).
    """

    def __init__(self, merged: _Merged, masters: tuple[NodeAddress, ...]) -> None:
        self._merged = merged
        self.masters = masters
        """The masters tracked, ``(host, port)`` each, as the slot map named them."""

    @property
    def connected(self) -> bool:
        """False once closed, or once any of its connections is known to be lost."""
        merged = self._merged
        return (
            not merged.closed
            and merged.lost is None
            and all(part.connected for part in merged.parts)
        )

    def __aiter__(self) -> ClusterSubscription:
        return self

    async def __anext__(self) -> tuple[bytes, bytes]:
        """Wait for the next message and return ``(channel, data)``; skips invalidations.

        Raises:
            As :meth:`next_event`.
        """
        while True:
            event = await self.next_event()
            if not isinstance(event, Invalidation):
                return event

    async def next_event(self) -> Event:
        """Wait for the next message, or the next invalidation of any master.

        Cancelled, nothing is lost: an event not returned yet waits in its
        connection's task.

        Raises:
            StorageUnavailableError: a connection was lost (of any master, or
                the channels'), or the cluster's masters changed.
            StorageClosedError: the subscription or its client was closed.
        """
        merged = self._merged
        if merged.lost is None and not merged.closed:
            event = await merged.receive.receive()
            if event is not None:
                return event
        lost = merged.lost
        if merged.closed or isinstance(lost, StorageClosedError):
            raise StorageClosedError(
                "the subscription is closed", backend="RedisClusterClient", operation="subscribe"
            ) from lost
        assert lost is not None
        raise StorageUnavailableError(
            f"redis cluster subscription lost: {lost}",
            backend="RedisClusterClient",
            operation="subscribe",
        ) from lost


@asynccontextmanager
async def open_cluster_subscription(
    topology: ClusterTopology,
    track: Callable[[NodeAddress], AbstractAsyncContextManager[Subscription]],
    subscribe: Callable[[], AbstractAsyncContextManager[Subscription]] | None,
    *,
    recheck_interval: float | None,
    deadline: float,
) -> AsyncIterator[ClusterSubscription]:
    """Track every master (``track``) and subscribe the channels (``subscribe``), read as one.

    Args:
        topology: the client's slot map, read afresh first.
        track: opens the tracking subscription (no channel) on one master.
        subscribe: opens the classic subscription to the channels, or ``None``.
        recheck_interval: seconds between reads of the slot map (``None``:
            only when the client reads it anyway).
        deadline: ``trio.current_time()`` by which every slot must have a master.

    Raises:
        StorageUnavailableError: some slots have no master by ``deadline``, or
            a master (or the channels' node) could not be subscribed to.
        TrackingRefusedError: a master refused ``CLIENT TRACKING``.
        StorageError, StorageTLSError, StorageClosedError: as for subscribing
            to one server.
    """
    with contextlib.suppress(StorageError):
        # Subscribing again usually follows a change: do not trust the old map.
        await topology.refresh(topology.generation)
    masters = (await topology.complete(deadline)).primaries
    send, receive = trio.open_memory_channel[Event | None](0)
    merged = _Merged(send, receive)
    raised: BaseException | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            for master in masters:
                merged.parts.append(await stack.enter_async_context(track(master)))
            if subscribe is not None:
                merged.parts.append(await stack.enter_async_context(subscribe()))
            async with trio.open_nursery() as nursery:
                for part in merged.parts:
                    nursery.start_soon(_forward, merged, part)
                nursery.start_soon(_watch_masters, merged, topology, masters, recheck_interval)
                try:
                    yield ClusterSubscription(merged, masters)
                except BaseException as exc:
                    raised = exc
                    raise
                finally:
                    merged.closed = True
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The body's own exception, wrapped by the nursery: the tasks raise nothing.
        if raised is None or len(group.exceptions) != 1 or group.exceptions[0] is not raised:
            raise
    # Raised here, outside the handler: the group does not become its context.
    if raised is not None:
        raise raised


async def _forward(merged: _Merged, part: Subscription) -> None:
    """Hand ``part``'s events to the reader, one at a time, until it is lost."""
    try:
        while True:
            event = await part.next_event()
            await merged.send.send(event)
    except StorageError as exc:
        merged.lose(exc)


async def _watch_masters(
    merged: _Merged,
    topology: ClusterTopology,
    masters: Sequence[NodeAddress],
    recheck_interval: float | None,
) -> None:
    """Lose the subscription once the slot map names other masters than ``masters``."""
    tracked = set(masters)
    patience = math.inf if recheck_interval is None else recheck_interval
    while merged.lost is None:
        if topology.closed:
            merged.lose(StorageClosedError("the client is closed", backend="RedisClusterClient"))
            return
        generation = topology.generation
        with trio.move_on_after(patience):
            await topology.wait_read(generation)
        if topology.generation == generation:
            with contextlib.suppress(StorageError):
                await topology.refresh(generation)
        slot_map = topology.map
        if slot_map is not None and set(slot_map.primaries) != tracked:
            now = ", ".join(f"{host}:{port}" for host, port in slot_map.primaries)
            merged.lose(
                StorageUnavailableError(
                    f"redis cluster: the masters changed (now {now}); tracking them anew",
                    backend="RedisClusterClient",
                    operation="subscribe",
                )
            )


__all__ = ["ClusterSubscription", "Event", "open_cluster_subscription"]
