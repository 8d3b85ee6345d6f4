"""Many processes on one Redis behaving like one cache.

Two mechanisms, both optional and both degrading to single-process behaviour
while Redis is unreachable:

* **Broadcast.** Invalidations, removals and new data (a completed fetch, a
  ``set_query_data``) are published on one pub/sub channel under the
  client's ``key_prefix``.  Receivers mark keys invalidated, drop them, or
  read the new entry from L2 into L1 (observers see it without calling the
  origin).  New data is announced only after its L2 write landed.  Pub/sub
  drops messages while a connection is down, so on every (re)subscription a
  client marks all of its L1 entries stale.
* **Single flight.** Before calling the origin for a key, a client takes a
  lease (``SET lease token NX PX``); the others wait for the holder's value
  to land in L2 (woken by its update message, polling as the fallback)
  instead of calling the origin too.  The holder renews the lease while its
  fetch runs, writes L2, announces, and releases with compare-and-delete.  A
  holder that dies loses the lease when it expires and a waiter takes over.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from backends import StorageError

from .._entry import StoredEntry
from .._throttle import ThrottledWarning
from . import _apply as _fleet_apply

if TYPE_CHECKING:
    from backends import RedisClient

    from .._client import QueryClient
    from .._options import QueryOptions
    from .._state import Snapshot

logger = logging.getLogger("stackquery.fleet")

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


@attrs.frozen
class Lease:
    """This client holds the right to call the origin for one key."""

    key_hash: str
    token: str


@attrs.frozen
class FleetStatistics:
    """Counts of what the fleet layer did since the client opened."""

    connected: bool
    """Whether the pub/sub subscription is up now."""
    subscriptions: int
    """Times the subscription was (re)established."""
    published: int
    received: int
    leases_taken: int
    leases_waited: int
    """Fetches that waited for another process's value instead of calling the origin."""
    takeovers: int
    """Leases taken after waiting (the holder finished without a value, or died)."""
    errors: int


def channel_name(key_prefix: str) -> str:
    """The pub/sub channel of the clients sharing ``key_prefix``."""
    return f"{key_prefix}events"


def invalidate_message(prefix: str | None, *, exact: bool, hashes: list[str], node: str) -> bytes:
    """Encode an invalidation: of every key under ``prefix`` (a hash prefix), or of ``hashes``."""
    return orjson.dumps({"n": node, "op": "inv", "p": prefix, "x": exact, "k": hashes})


class Fleet:
    """The client's link to the other processes on the same Redis.

    Args:
        client: the query client it serves.
        redis: the trio-native Redis client (the ``RedisStorage``'s own).
        key_prefix: names the channel and the lease keys.
        lease_time: seconds a lease lives unless renewed.
        poll_interval: seconds between looks at L2 while waiting for another
            process's value.
    """

    def __init__(
        self,
        client: QueryClient,
        redis: RedisClient,
        *,
        key_prefix: str,
        lease_time: float,
        poll_interval: float,
    ) -> None:
        self._client = client
        self._redis = redis
        self.channel = channel_name(key_prefix)
        self._lease_prefix = f"{key_prefix}lease:"
        self.lease_time = lease_time
        self.poll_interval = poll_interval
        self.node = secrets.token_hex(8)
        self._tokens = itertools.count()
        self._outbox: list[bytes] = []
        self._outbox_ready = trio.Event()
        self._arrivals: dict[str, trio.Event] = {}
        self._connected = False
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "subscriptions",
                "published",
                "received",
                "leases_taken",
                "leases_waited",
                "takeovers",
                "errors",
            ),
            0,
        )
        self._error_log = ThrottledWarning(logger)

    def statistics(self) -> FleetStatistics:
        """Return the current :class:`FleetStatistics`."""
        return FleetStatistics(connected=self._connected, **self._counts)

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
                    with trio.fail_after(self._client.config.l2_timeout):
                        await self._redis.publish(self.channel, message)
                    self._counts["published"] += 1
                except (StorageError, trio.TooSlowError) as exc:
                    self._on_error("publish", exc)

    # -- broadcast: receiving -------------------------------------------------------

    async def run_subscriber(self) -> None:
        """Receive the other processes' messages until cancelled, resubscribing after a drop."""
        backoff = 0.1
        while True:
            try:
                async with self._redis.subscribe(self.channel) as messages:
                    self._connected = True
                    self._counts["subscriptions"] += 1
                    backoff = 0.1
                    # Messages published while we were not subscribed are lost.
                    _fleet_apply.mark_all_stale(self._client)
                    async for _channel, data in messages:
                        await self._on_message(data)
            except StorageError as exc:
                self._on_error("subscribe", exc)
            finally:
                self._connected = False
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _on_message(self, data: bytes) -> None:
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
        self._counts["received"] += 1
        client = self._client
        if op == "inv":
            await _fleet_apply.apply_invalidation(
                client, message.get("p"), bool(message.get("x")), keys
            )
        elif op == "del":
            await _fleet_apply.apply_removal(client, list(keys))
        elif op == "upd":
            for key_hash, _updated_at in keys:
                arrival = self._arrivals.pop(key_hash, None)
                if arrival is not None:
                    arrival.set()
            await _fleet_apply.apply_update(client, [(k, float(t)) for k, t in keys])

    def _on_error(self, operation: str, error: BaseException) -> None:
        self._counts["errors"] += 1
        self._error_log.warning("fleet %s failed: %r", operation, error)

    # -- single flight ---------------------------------------------------------------

    async def acquire_or_wait(
        self, key_hash: str, seen: float | None, read: Callable[[], Awaitable[StoredEntry | None]]
    ) -> Lease | StoredEntry | None:
        """Take the key's lease, or wait for the value of the process that holds it.

        Args:
            key_hash: the key.
            seen: ``data_updated_at`` of the data this client already has
                (``None``: none); only newer data in L2 ends a wait.
            read: reads the key's entry from L2.

        Returns:
            a :class:`Lease` (call the origin), the :class:`StoredEntry` another
            process produced (do not), or ``None`` when Redis cannot be reached
            (call the origin: single-process behaviour).
        """
        try:
            return await self._acquire_or_wait(key_hash, seen, read)
        finally:
            # One actor per key waits here at a time: nobody else needs it, and
            # an event left behind for a key never updated again would leak.
            self._arrivals.pop(key_hash, None)

    async def _acquire_or_wait(
        self, key_hash: str, seen: float | None, read: Callable[[], Awaitable[StoredEntry | None]]
    ) -> Lease | StoredEntry | None:
        waited = False
        while True:
            try:
                lease = await self._try_lease(key_hash)
            except (StorageError, trio.TooSlowError) as exc:
                self._on_error("lease", exc)
                return None
            if lease is not None:
                # Double-check: the holder before us may have written and
                # released between our L2 read and our lease.
                entry = await read()
                if _newer(entry, seen):
                    await self.release(lease)
                    return entry
                self._counts["takeovers" if waited else "leases_taken"] += 1
                return lease
            if not waited:
                self._counts["leases_waited"] += 1
                waited = True
            arrival = self._arrivals.setdefault(key_hash, trio.Event())
            with trio.move_on_after(self.poll_interval):
                await arrival.wait()
            entry = await read()
            if _newer(entry, seen):
                return entry

    def single_flight(self, options: QueryOptions[Any]) -> bool:
        """Whether a fetch with ``options`` takes the key's lease before calling the origin."""
        if options.single_flight is not None:
            return options.single_flight
        return self._client.config.single_flight is not False

    async def _try_lease(self, key_hash: str) -> Lease | None:
        token = f"{self.node}:{next(self._tokens)}"
        with trio.fail_after(self._client.config.l2_timeout):
            reply = await self._redis.execute(
                "SET", self._lease_prefix + key_hash, token, "NX", "PX", _ms(self.lease_time)
            )
        return Lease(key_hash, token) if reply is not None else None

    async def keep(self, lease: Lease) -> None:
        """Renew ``lease`` every third of its life until cancelled."""
        while True:
            await trio.sleep(self.lease_time / 3)
            try:
                with trio.fail_after(self._client.config.l2_timeout):
                    await self._redis.execute(
                        "EVAL", _RENEW, 1, self._lease_prefix + lease.key_hash,
                        lease.token, _ms(self.lease_time),
                    )  # fmt: skip
            except (StorageError, trio.TooSlowError) as exc:
                self._on_error("renew", exc)

    async def release(self, lease: Lease) -> None:
        """Release ``lease`` if this client still holds it; never raises."""
        try:
            with trio.fail_after(self._client.config.l2_timeout):
                await self._redis.execute(
                    "EVAL", _RELEASE, 1, self._lease_prefix + lease.key_hash, lease.token
                )
        except (StorageError, trio.TooSlowError) as exc:
            self._on_error("release", exc)

    async def end_lease(self, lease: Lease, snap: Snapshot | None) -> None:
        """Write the leased fetch's value to L2, announce it, then release the lease.

        In that order, so that no process can take the lease and call the
        origin again before the value is there to be read.  Shielded and
        bounded: runs even when the fetch was cancelled.
        """
        client = self._client
        l2 = client._l2
        assert l2 is not None
        with trio.CancelScope(shield=True), trio.move_on_after(2 * client.config.l2_timeout):
            state = snap.state if snap is not None else None
            if snap is not None and state is not None and state.data_updated_at is not None:
                ttl = client._l2_ttl(snap)
                # Invalidated in flight: stored as such, and no news for the fleet
                # (a waiter elsewhere must not take it as fresh).
                invalidated = state.is_invalidated
                written = ttl != 0 and await l2.write_now(
                    snap.key_hash,
                    state.data,
                    data_updated_at=state.data_updated_at,
                    ttl=ttl,
                    invalidated=invalidated,
                )
                if written and not invalidated and client.config.broadcast is not False:
                    self.announce_written([(snap.key_hash, state.data_updated_at)])
            await self.release(lease)


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


def _newer(entry: StoredEntry | None, seen: float | None) -> bool:
    if entry is None or entry.invalidated:
        return False
    return seen is None or entry.data_updated_at > seen


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
