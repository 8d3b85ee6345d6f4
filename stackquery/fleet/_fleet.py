"""Many processes on one Redis behaving like one cache: the broadcast.

Invalidations, removals and new data (a completed fetch, a
``set_query_data``) are published on one pub/sub channel named after the
whole key prefix and the database (:func:`~stackquery.fleet._link.channel_name`).
Receivers check each message (:mod:`~stackquery.fleet._wire`), then mark keys
invalidated (in L1 only: L2 is the sender's), drop them, or read the new
entry from L2 into L1 (observers see it without calling the origin).  New
data is announced only after its L2 write landed.  A message Redis could not
take is retried until it can.
Pub/sub drops messages while a connection is down, so on every
(re)subscription a client marks all of its L1 entries stale.  Both this and
single flight (``_leases``) degrade to single-process behaviour while Redis
is unreachable.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import trio

from backends import (
    Invalidation,
    RedisClient,
    RedisReplyError,
    StorageError,
    TrackingRefusedError,
)

from .._keys import QueryKey, prefix_hash
from .._l2_tier import L2Tier
from .._owners import QueryOwners
from .._query_cache import QueryCache
from .._retry import Backoff
from .._throttle import ThrottledWarning
from . import _apply, _wire
from ._counters import FleetCounters, FleetStatistics
from ._leases import Leases
from ._link import channel_name
from ._tracking import KeyTracking

if TYPE_CHECKING:
    from backends import SubscriptionEvents

    from ._link import FleetRedis

logger = logging.getLogger("stackquery.fleet")

MAX_PENDING_MESSAGES = 1000
"""Messages a client keeps for Redis while it cannot publish (past it: one "all stale")."""


class Fleet:
    """The client's link to the other processes on the same Redis.

    Args:
        redis: the trio-native Redis client (the ``RedisStorage``'s own; a
            cluster's routes each lease to its key's node).
        cache: the L1 table.
        tier: the L2 tier.
        key_prefix: the text in front of every key in Redis (the
            ``RedisStorage``'s prefix, then the client's ``key_prefix``):
            names the channel and the lease keys.
        db: the database number, in the channel's name (pub/sub channels
            are shared by every database of a server).
        lease_time: seconds a lease lives unless renewed.
        poll_interval: seconds between looks at L2 while waiting for another
            process's value.
        timeout: seconds a Redis call may take.
        broadcast: the client's ``broadcast`` setting (``False``: no pub/sub).
        single_flight: the client's ``single_flight`` setting.
        tracking: the client's ``redis_tracking`` setting (``None``: on with
            the broadcast; see :mod:`stackquery.fleet._tracking`).
    """

    def __init__(
        self,
        redis: FleetRedis,
        cache: QueryCache,
        tier: L2Tier,
        *,
        key_prefix: str,
        db: int,
        lease_time: float,
        poll_interval: float,
        timeout: float,
        broadcast: bool | None,
        single_flight: bool | None,
        tracking: bool | None = None,
    ) -> None:
        self._redis = redis
        self._cache = cache
        self._tier = tier
        self._owners: QueryOwners | None = None
        self.channel = channel_name(key_prefix, db)
        self.node = secrets.token_hex(8)
        self._timeout = timeout
        self.broadcasts = broadcast is not False
        self._outbox: list[bytes] = []
        self._outbox_ready = trio.Event()
        self._connected = False
        self._counters = FleetCounters()
        self._reject_log = ThrottledWarning(logger)
        self.tracking: KeyTracking | None = None
        if self.broadcasts and tracking is not False:
            # On a cluster the client tracks on every master (one subscription each).
            self.tracking = KeyTracking(cache, tier, self._counters, key_prefix=key_prefix)
        self.leases = Leases(
            redis,
            tier,
            self._counters,
            node=self.node,
            key_prefix=key_prefix,
            lease_time=lease_time,
            poll_interval=poll_interval,
            timeout=timeout,
            single_flight=single_flight,
        )

    def open(self, owners: QueryOwners) -> None:
        """Start applying the other processes' messages through ``owners``."""
        self._owners = owners

    def statistics(self) -> FleetStatistics:
        """Return the current :class:`FleetStatistics`."""
        return self._counters.statistics(
            connected=self._connected, tracking=self._connected and self.tracking is not None
        )

    # -- broadcast: sending ---------------------------------------------------------

    def written(self, items: list[tuple[str, float]]) -> None:
        """Entries landed in L2 (key hash, data_updated_at): wake lease holders, announce."""
        self.leases.landed(items)
        if self.broadcasts:
            self.announce_written(items)

    def announce_written(self, items: list[tuple[str, float]]) -> None:
        """New data for these keys landed in L2 (key hash, data_updated_at); synchronous."""
        for run in _wire.chunks([key_hash for key_hash, _ in items]):
            self._send(_wire.encode_update([items[i] for i in run], node=self.node))

    def announce_deleted(self, key_hashes: list[str]) -> None:
        """These keys were deleted from L2; synchronous."""
        for run in _wire.chunks(key_hashes):
            self._send(_wire.encode_delete([key_hashes[i] for i in run], node=self.node))

    def announce_invalidated(self, prefix: str | None, *, exact: bool, hashes: list[str]) -> None:
        """Keys were invalidated here: under a hash ``prefix``, or exactly ``hashes``."""
        if prefix is not None:
            self._send(_wire.encode_invalidate(prefix, exact=exact, hashes=[], node=self.node))
        for run in _wire.chunks(hashes):
            message = [hashes[i] for i in run]
            self._send(_wire.encode_invalidate(None, exact=exact, hashes=message, node=self.node))

    def announce_invalidation(
        self, key: QueryKey, *, exact: bool, chosen: list[str] | None
    ) -> None:
        """``invalidate_queries(key, exact=exact)`` ran here: tell the other processes.

        They may hold keys this one does not, so the key prefix goes out,
        unless a predicate ``chosen`` the keys: then exactly those.
        """
        if chosen is None:
            self.announce_invalidated(prefix_hash(key), exact=exact, hashes=[])
        elif chosen:
            self.announce_invalidated(None, exact=True, hashes=chosen)

    def _send(self, message: bytes) -> None:
        if len(self._outbox) >= MAX_PENDING_MESSAGES:
            # Redis has been out of reach for long: whatever was waiting, the
            # others must now take everything they hold as stale.
            self._counters.counts["overflows"] += 1
            message = _wire.encode_stale_all(node=self.node)
            self._outbox = []
        self._outbox.append(message)
        self._outbox_ready.set()

    async def run_publisher(self) -> None:
        """Publish queued messages, in order, until cancelled.

        A publish that fails because Redis cannot be reached (down, frozen,
        a half-open connection) is retried, with backoff and at once when the
        client reconnects, so that every invalidation reaches the processes
        that did not lose their own subscription (those that did mark all
        they hold stale when they subscribe again).  A publish that Redis
        refuses (an ACL) is counted and dropped.  Past
        :data:`MAX_PENDING_MESSAGES` waiting, the queue is replaced by one
        message telling every process to mark all it holds stale.
        """
        backoff = Backoff(first=0.1, cap=1.0)
        while True:
            while not self._outbox:
                await self._outbox_ready.wait()
                self._outbox_ready = trio.Event()
            outbox = self._outbox
            try:
                with trio.fail_after(self._timeout):
                    await self._redis.publish(self.channel, outbox[0])
            except RedisReplyError as exc:
                self._counters.on_error("publish", exc)
            except (StorageError, trio.TooSlowError) as exc:
                self._counters.on_error("publish", exc)
                await backoff.wait(wake=self._redis.wait_reconnected)
                continue
            else:
                self._counters.counts["published"] += 1
                backoff.reset()
            if outbox is self._outbox:  # not replaced by an "all stale" meanwhile
                del outbox[0]

    # -- broadcast: receiving -------------------------------------------------------

    async def run_subscriber(self) -> None:
        """Receive the other processes' messages until cancelled, resubscribing after a drop.

        Under Sentinel it also follows the sentinels' ``+switch-master``
        announcements, so that the subscription, the leases and the
        announcements move to a new master at once (see
        :meth:`backends.RedisClient.follow_failovers`).
        """
        redis = self._redis
        if not isinstance(redis, RedisClient):  # a cluster fails over by itself
            await self._subscribe_forever()
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(redis.follow_failovers, name="stackquery-fleet-failovers")
            await self._subscribe_forever()

    async def _subscribe_forever(self) -> None:
        owners = self._owners
        assert owners is not None, "open() the fleet before running its subscriber"
        backoff = Backoff(first=0.1, cap=5.0)
        while True:
            try:
                async with self._subscription() as messages:
                    self._connected = True
                    self._counters.counts["subscriptions"] += 1
                    backoff.reset()
                    # Messages published while we were not subscribed are lost.
                    owners.mark_all_stale()
                    while True:
                        event = await messages.next_event()
                        if isinstance(event, Invalidation):
                            await self._on_invalidation(owners, event)
                        else:
                            await self._on_message(owners, event[1])
            except TrackingRefusedError as exc:
                # An old server or an ACL: the broadcast goes on without tracking.
                self._counters.on_error("CLIENT TRACKING (now off)", exc)
                self.tracking = None
                continue
            except StorageError as exc:
                self._counters.on_error("subscribe", exc)
            finally:
                self._connected = False
            await backoff.wait()

    def _subscription(self) -> AbstractAsyncContextManager[SubscriptionEvents]:
        if self.tracking is None:
            return self._redis.subscribe(self.channel)
        return self._redis.subscribe_tracking(self.channel, prefixes=[self.tracking.prefix])

    async def _on_invalidation(self, owners: QueryOwners, invalidation: Invalidation) -> None:
        tracking = self.tracking
        if tracking is None:
            return
        try:
            await tracking.apply(owners, invalidation)
        except Exception as exc:  # the subscriber must outlive whatever the server said
            self._reject(exc, repr(invalidation.keys).encode()[:200])

    async def _on_message(self, owners: QueryOwners, data: bytes) -> None:
        # Anyone can publish on the channel: a message is checked field by field
        # before anything applies it, and whatever still fails applying it is
        # counted and logged, never raised: the subscriber must outlive it.
        try:
            message = _wire.parse_message(data)
        except _wire.MalformedMessageError as exc:
            self._reject(exc, data)
            return
        if message.node == self.node:
            return
        try:
            await self._apply(owners, message)
        except Exception as exc:
            self._reject(exc, data)
        else:
            self._counters.counts["received"] += 1

    async def _apply(self, owners: QueryOwners, message: _wire.Message) -> None:
        if isinstance(message, _wire.Invalidate):
            await _apply.apply_invalidation(
                self._cache, owners, message.prefix, message.exact, list(message.hashes)
            )
        elif isinstance(message, _wire.Delete):
            await _apply.apply_removal(owners, list(message.hashes))
        elif isinstance(message, _wire.StaleAll):
            owners.check_open()
            owners.mark_all_stale()
        elif isinstance(message, _wire.Update):
            for key_hash, _updated_at in message.items:
                self.leases.arrived(key_hash)
            await _apply.apply_update(self._cache, owners, self._tier, list(message.items))

    def _reject(self, error: Exception, data: bytes) -> None:
        self._counters.counts["rejected"] += 1
        self._reject_log.warning("fleet message rejected (%r): %r", error, data[:200])
