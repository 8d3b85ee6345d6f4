"""Many processes on one Redis behaving like one cache: the broadcast.

Invalidations, removals and new data (a completed fetch, a
``set_query_data``) are published on one pub/sub channel under the client's
``key_prefix``.  Receivers mark keys invalidated, drop them, or read the new
entry from L2 into L1 (observers see it without calling the origin).  New
data is announced only after its L2 write landed.  Pub/sub drops messages
while a connection is down, so on every (re)subscription a client marks all
of its L1 entries stale.  Both this and single flight (``_leases``) degrade
to single-process behaviour while Redis is unreachable.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import orjson
import trio

from backends import StorageError

from .._keys import QueryKey, prefix_hash
from .._l2_tier import L2Tier
from .._owners import QueryOwners
from .._query_cache import QueryCache
from .._retry import Backoff
from . import _apply
from ._counters import FleetCounters, FleetStatistics
from ._leases import Leases

if TYPE_CHECKING:
    from backends import RedisClient

logger = logging.getLogger("stackquery.fleet")


def channel_name(key_prefix: str) -> str:
    """The pub/sub channel of the clients sharing ``key_prefix``."""
    return f"{key_prefix}events"


def invalidate_message(prefix: str | None, *, exact: bool, hashes: list[str], node: str) -> bytes:
    """Encode an invalidation: of every key under ``prefix`` (a hash prefix), or of ``hashes``."""
    return orjson.dumps({"n": node, "op": "inv", "p": prefix, "x": exact, "k": hashes})


class Fleet:
    """The client's link to the other processes on the same Redis.

    Args:
        redis: the trio-native Redis client (the ``RedisStorage``'s own).
        cache: the L1 table.
        tier: the L2 tier.
        key_prefix: names the channel and the lease keys.
        lease_time: seconds a lease lives unless renewed.
        poll_interval: seconds between looks at L2 while waiting for another
            process's value.
        timeout: seconds a Redis call may take.
        broadcast: the client's ``broadcast`` setting (``False``: no pub/sub).
        single_flight: the client's ``single_flight`` setting.
    """

    def __init__(
        self,
        redis: RedisClient,
        cache: QueryCache,
        tier: L2Tier,
        *,
        key_prefix: str,
        lease_time: float,
        poll_interval: float,
        timeout: float,
        broadcast: bool | None,
        single_flight: bool | None,
    ) -> None:
        self._redis = redis
        self._cache = cache
        self._tier = tier
        self._owners: QueryOwners | None = None
        self.channel = channel_name(key_prefix)
        self.node = secrets.token_hex(8)
        self._timeout = timeout
        self.broadcasts = broadcast is not False
        self._outbox: list[bytes] = []
        self._outbox_ready = trio.Event()
        self._connected = False
        self._counters = FleetCounters()
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
            announce=self.announce_written if self.broadcasts else None,
        )

    def open(self, owners: QueryOwners) -> None:
        """Start applying the other processes' messages through ``owners``."""
        self._owners = owners

    def statistics(self) -> FleetStatistics:
        """Return the current :class:`FleetStatistics`."""
        return self._counters.statistics(connected=self._connected)

    # -- broadcast: sending ---------------------------------------------------------

    def announce_written(self, items: list[tuple[str, float]]) -> None:
        """New data for these keys landed in L2 (key hash, data_updated_at); synchronous."""
        self._send({"n": self.node, "op": "upd", "k": items})

    def announce_deleted(self, key_hashes: list[str]) -> None:
        """These keys were deleted from L2; synchronous."""
        self._send({"n": self.node, "op": "del", "k": key_hashes})

    def announce_invalidated(self, prefix: str | None, *, exact: bool, hashes: list[str]) -> None:
        """Keys were invalidated here: under a hash ``prefix``, or exactly ``hashes``."""
        self._outbox.append(invalidate_message(prefix, exact=exact, hashes=hashes, node=self.node))
        self._outbox_ready.set()

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

    def _send(self, message: dict[str, Any]) -> None:
        self._outbox.append(orjson.dumps(message))
        self._outbox_ready.set()

    async def run_publisher(self) -> None:
        """Publish queued messages until cancelled; a failed publish is counted and dropped.

        Dropping is safe: a receiver that misses a message serves its copy
        stale-while-revalidate at worst, and treats every reconnect as "all
        stale".
        """
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready = trio.Event()
            batch, self._outbox = self._outbox, []
            for message in batch:
                try:
                    with trio.fail_after(self._timeout):
                        await self._redis.publish(self.channel, message)
                    self._counters.counts["published"] += 1
                except (StorageError, trio.TooSlowError) as exc:
                    self._counters.on_error("publish", exc)

    # -- broadcast: receiving -------------------------------------------------------

    async def run_subscriber(self) -> None:
        """Receive the other processes' messages until cancelled, resubscribing after a drop."""
        owners = self._owners
        assert owners is not None, "open() the fleet before running its subscriber"
        backoff = Backoff(first=0.1, cap=5.0)
        while True:
            try:
                async with self._redis.subscribe(self.channel) as messages:
                    self._connected = True
                    self._counters.counts["subscriptions"] += 1
                    backoff.reset()
                    # Messages published while we were not subscribed are lost.
                    owners.mark_all_stale()
                    async for _channel, data in messages:
                        await self._on_message(owners, data)
            except StorageError as exc:
                self._counters.on_error("subscribe", exc)
            finally:
                self._connected = False
            await backoff.wait()

    async def _on_message(self, owners: QueryOwners, data: bytes) -> None:
        message = parse_message(data)
        if message is None:
            # Anyone can publish on the channel: a foreign or damaged message
            # must not reach the code that applies it (and crash the client).
            logger.warning("ignoring a malformed fleet message: %r", data[:200])
            return
        node, op = message["n"], message["op"]
        keys: Any = message.get("k")
        if node == self.node:
            return
        self._counters.counts["received"] += 1
        if op == "inv":
            await _apply.apply_invalidation(
                self._cache, owners, message.get("p"), bool(message.get("x")), keys
            )
        elif op == "del":
            await _apply.apply_removal(owners, list(keys))
        elif op == "upd":
            for key_hash, _updated_at in keys:
                self.leases.arrived(key_hash)
            await _apply.apply_update(
                self._cache, owners, self._tier, [(k, float(t)) for k, t in keys]
            )


def parse_message(data: bytes) -> dict[str, Any] | None:
    """Return the message in ``data`` if it is well formed for its operation, else ``None``.

    An operation this version does not know is well formed (a newer client's
    message): it is received and ignored.
    """
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not (
        isinstance(message, dict)
        and isinstance(message.get("n"), str)
        and isinstance(message.get("op"), str)
    ):
        return None
    op, keys = message["op"], message.get("k")
    if op in ("inv", "del"):
        well_formed = isinstance(keys, list) and all(isinstance(k, str) for k in keys)
        if op == "inv":
            prefix, exact = message.get("p"), message.get("x", False)
            well_formed = well_formed and isinstance(prefix, str | None) and isinstance(exact, bool)
    elif op == "upd":
        well_formed = isinstance(keys, list) and all(
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], int | float)
            and not isinstance(item[1], bool)
            for item in keys
        )
    else:
        well_formed = True
    return message if well_formed else None
