"""Fleet-wide single flight: one process calls the origin for a key, the others wait.

Before calling the origin for a key, a client takes a lease (``SET lease
token NX PX``); the others wait for the holder's value to land in L2 (woken
by its update message, polling as the fallback) instead of calling the
origin too.  The holder renews the lease while its fetch runs, writes L2,
announces, and releases with compare-and-delete.  A holder that dies loses
the lease when it expires and a waiter takes over.

This module knows the key's actor only as its caller: the actor takes a
lease here before its origin call.  What other processes *say* (pub/sub) is
:mod:`stackquery.fleet._fleet`'s business; it wakes waiters here through
:meth:`Leases.arrived`.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from backends import StorageError

from .._entry import MAX_CLOCK_SKEW, StoredEntry
from .._l2_tier import L2Tier
from .._options import QueryOptions
from .._state import Snapshot
from ._counters import FleetCounters

WAIT_LEASE_TIMES: Final = 3
"""A fetch waits for another process's lease at most this many lease times."""

if TYPE_CHECKING:
    from ._link import FleetRedis

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# A lease key without an expiry was not set by a stackquery client (their
# leases always expire): give it one, or every fetch of the key would wait.
_EXPIRE_FOREIGN = """
if redis.call('pttl', KEYS[1]) == -1 then
  return redis.call('pexpire', KEYS[1], ARGV[1])
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


class Leases:
    """The leases of one client: take, keep, end.

    Args:
        redis: the trio-native Redis client (the ``RedisStorage``'s own; a
            cluster's routes each lease to its key's node).
        tier: the client's L2 tier (values are read from and written to it).
        counters: the fleet's counts and error log, shared with the broadcast.
        node: this client's id in the fleet (lease tokens start with it).
        key_prefix: names the lease keys.
        lease_time: seconds a lease lives unless renewed.
        poll_interval: seconds between looks at L2 while waiting for another
            process's value.
        timeout: seconds a Redis call may take.
        single_flight: the client's ``single_flight`` setting.
    """

    def __init__(
        self,
        redis: FleetRedis,
        tier: L2Tier,
        counters: FleetCounters,
        *,
        node: str,
        key_prefix: str,
        lease_time: float,
        poll_interval: float,
        timeout: float,
        single_flight: bool | None,
    ) -> None:
        self._redis = redis
        self._tier = tier
        self._counters = counters
        self.node = node
        self._lease_prefix = f"{key_prefix}lease:"
        self.lease_time = lease_time
        self.poll_interval = poll_interval
        self._timeout = timeout
        self._single_flight = single_flight
        self._tokens = itertools.count()
        self._arrivals: dict[str, trio.Event] = {}
        self._landings: dict[str, tuple[trio.Event, float]] = {}
        """Leased values queued for L2 that their holder waits for (and their time)."""

    @property
    def longest_wait(self) -> float:
        """Seconds a fetch waits at most for another process's lease (3 x ``lease_time``)."""
        return WAIT_LEASE_TIMES * self.lease_time

    def single_flight(self, options: QueryOptions[Any]) -> bool:
        """Whether a fetch with ``options`` takes the key's lease before calling the origin."""
        if options.single_flight is not None:
            return options.single_flight
        return self._single_flight is not False

    def arrived(self, key_hash: str) -> None:
        """Another process announced new data for the key: wake whoever waits for it here."""
        arrival = self._arrivals.pop(key_hash, None)
        if arrival is not None:
            arrival.set()

    async def acquire_or_wait(
        self,
        key_hash: str,
        seen: float | None,
        read: Callable[[], Awaitable[StoredEntry | None]],
        *,
        query_timeout: float | None = None,
    ) -> Lease | StoredEntry | None:
        """Take the key's lease, or wait for the value of the process that holds it.

        The wait is bounded: by :attr:`longest_wait`, and by ``query_timeout``.  A
        lease that outlasts it (a holder stuck, or a forged lease key) no
        longer holds this process back: it calls the origin itself (counted
        in ``lease_wait_timeouts``).  A lease key without an expiry was set by
        no stackquery client; it is given ``lease_time`` to live (counted in
        ``foreign_leases``).

        Args:
            key_hash: the key.
            seen: ``data_updated_at`` of the data this client already has
                (``None``: none); only newer data in L2 ends a wait.
            read: reads the key's entry from L2.
            query_timeout: the query's own ``timeout`` (``None``: none); the
                wait never lasts longer.

        Returns:
            a :class:`Lease` (call the origin), the :class:`StoredEntry` another
            process produced (do not), or ``None`` when Redis cannot be reached
            or the wait ran out (call the origin: single-process behaviour).
        """
        longest = self.longest_wait
        if query_timeout is not None:
            longest = min(longest, query_timeout)
        try:
            return await self._acquire_or_wait(key_hash, seen, read, trio.current_time() + longest)
        finally:
            # One actor per key waits here at a time: nobody else needs it, and
            # an event left behind for a key never updated again would leak.
            self._arrivals.pop(key_hash, None)

    async def _acquire_or_wait(
        self,
        key_hash: str,
        seen: float | None,
        read: Callable[[], Awaitable[StoredEntry | None]],
        deadline: float,
    ) -> Lease | StoredEntry | None:
        counts = self._counters.counts
        waited = False
        while True:
            try:
                lease = await self._try_lease(key_hash)
            except (StorageError, trio.TooSlowError) as exc:
                self._counters.on_error("lease", exc)
                return None
            if lease is not None:
                # Double-check: the holder before us may have written and
                # released between our L2 read and our lease.
                entry = await read()
                if self._newer(entry, seen):
                    await self.release(lease)
                    return entry
                counts["takeovers" if waited else "leases_taken"] += 1
                return lease
            if not waited:
                counts["leases_waited"] += 1
                waited = True
                await self._expire_foreign(key_hash)
            left = deadline - trio.current_time()
            if left <= 0:
                counts["lease_wait_timeouts"] += 1
                return None
            arrival = self._arrivals.setdefault(key_hash, trio.Event())
            with trio.move_on_after(min(self.poll_interval, left)):
                await arrival.wait()
            entry = await read()
            if self._newer(entry, seen):
                return entry

    async def _try_lease(self, key_hash: str) -> Lease | None:
        token = f"{self.node}:{next(self._tokens)}"
        with trio.fail_after(self._timeout):
            reply = await self._redis.execute(
                "SET", self._lease_prefix + key_hash, token, "NX", "PX", _ms(self.lease_time)
            )
        return Lease(key_hash, token) if reply is not None else None

    async def _expire_foreign(self, key_hash: str) -> None:
        """Give the key's lease an expiry if it has none; never raises."""
        try:
            with trio.fail_after(self._timeout):
                expired = await self._redis.execute(
                    "EVAL", _EXPIRE_FOREIGN, 1, self._lease_prefix + key_hash, _ms(self.lease_time)
                )
        except (StorageError, trio.TooSlowError) as exc:
            self._counters.on_error("lease expiry", exc)
            return
        if expired == 1:
            self._counters.counts["foreign_leases"] += 1

    async def keep(self, lease: Lease) -> None:
        """Renew ``lease`` every third of its life until cancelled."""
        while True:
            await trio.sleep(self.lease_time / 3)
            try:
                with trio.fail_after(self._timeout):
                    await self._redis.execute(
                        "EVAL", _RENEW, 1, self._lease_prefix + lease.key_hash,
                        lease.token, _ms(self.lease_time),
                    )  # fmt: skip
            except (StorageError, trio.TooSlowError) as exc:
                self._counters.on_error("renew", exc)

    async def release(self, lease: Lease) -> None:
        """Release ``lease`` if this client still holds it; never raises."""
        try:
            with trio.fail_after(self._timeout):
                await self._redis.execute(
                    "EVAL", _RELEASE, 1, self._lease_prefix + lease.key_hash, lease.token
                )
        except (StorageError, trio.TooSlowError) as exc:
            self._counters.on_error("release", exc)

    def landed(self, items: list[tuple[str, float]]) -> None:
        """These (key hash, data_updated_at) entries landed in L2: wake a holder waiting for one."""
        for key_hash, updated_at in items:
            landing = self._landings.get(key_hash)
            if landing is not None and updated_at >= landing[1]:
                del self._landings[key_hash]
                landing[0].set()

    async def end_lease(self, lease: Lease, snap: Snapshot | None) -> None:
        """Queue the leased fetch's value for L2, wait until it landed, then release the lease.

        The value goes through the write-behind queue like every other write
        (coalesced with later writes of the key, retried while the store is
        down): it is never dropped.  The lease is released once the value
        landed (and was announced), so that no process takes the lease and
        calls the origin again before the value is there to be read; or
        after ``timeout`` at most (Redis down: the write stays queued and is
        announced when it lands).  Shielded: runs even when the fetch was
        cancelled.
        """
        with trio.CancelScope(shield=True):
            if snap is not None:
                await self._write_and_wait(snap)
            await self.release(lease)

    async def _write_and_wait(self, snap: Snapshot) -> None:
        state, key_hash = snap.state, snap.key_hash
        updated_at = state.data_updated_at
        ttl = self._tier.ttl(snap)
        if updated_at is None or ttl == 0:
            return
        # Invalidated in flight: stored as such, and no news for the fleet (a
        # waiter elsewhere must not take it as fresh): nothing to wait for.
        landing = None if state.is_invalidated else (trio.Event(), updated_at)
        if landing is not None:
            self._landings[key_hash] = landing
        try:
            queued = self._tier.l2.write_soon(
                key_hash,
                state.data,
                data_updated_at=updated_at,
                ttl=ttl,
                invalidated=state.is_invalidated,
            )
            if queued and landing is not None:
                with trio.move_on_after(self._timeout):
                    await landing[0].wait()
        finally:
            if landing is not None and self._landings.get(key_hash) is landing:
                del self._landings[key_hash]

    def _newer(self, entry: StoredEntry | None, seen: float | None) -> bool:
        """Whether ``entry`` is a value to take instead of calling the origin."""
        if entry is None or entry.invalidated:
            return False
        if entry.data_updated_at > self._tier.cache.clock.wall() + MAX_CLOCK_SKEW:
            return False  # stamped in the future: not another process's fetch
        return seen is None or entry.data_updated_at > seen


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


__all__ = ["Lease", "Leases"]
